//! Tokenization with the model's own `tokenizer.json` (HF tokenizers), giving
//! transformers' `input_ids` (special tokens added as the tokenizer defines).

use std::path::Path;

use anyhow::{bail, Result};
use schemas::Pooling;
use tokenizers::Tokenizer;

use crate::inputs::dataset::Statement;

pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| {
            anyhow::anyhow!("{}: not a usable tokenizers JSON ({e})", path.display())
        })?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Whether the tokenizer puts special tokens (a BOS) before the text: Gemma's
    /// and LLaMA's do, Pythia's does not. `mean_skip_first` then drops the BOS
    /// instead of the first real token.
    pub fn adds_bos(&self) -> Result<bool> {
        let probe = "The";
        let with = self.encode(probe)?;
        let without = self
            .inner
            .encode(probe, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {probe:?}: {e}"))?;
        let without: Vec<i64> = without.get_ids().iter().map(|&i| i64::from(i)).collect();
        // Special tokens prepended: the text's own tokens end the sequence.
        Ok(with.len() > without.len() && with.ends_with(&without))
    }
}

/// Fewest tokens a statement needs: the NLL predicts tokens 1.., so it needs 2,
/// and each pooling has its own minimum.
pub fn min_tokens(poolings: &[Pooling]) -> (usize, String) {
    let mut need = 2;
    let mut why = vec!["the NLL needs at least 2".to_string()];
    for p in poolings {
        if p.min_tokens() > 1 {
            why.push(format!("{p} needs at least {}", p.min_tokens()));
        }
        need = need.max(p.min_tokens());
    }
    (need, why.join(", "))
}

/// Tokenizes every statement and checks its length against the run's needs and
/// the model's context, and its token ids against `vocab`: the rows of the model's
/// embedding table, with where that number comes from.
pub fn tokenize_all(
    tok: &TextTokenizer,
    statements: &[Statement],
    poolings: &[Pooling],
    (max_positions, vocab): (u64, Option<(u64, &str)>),
) -> Result<Vec<Vec<i64>>> {
    let (need, why) = min_tokens(poolings);
    let mut out = Vec::with_capacity(statements.len());
    for s in statements {
        let ids = tok.encode(&s.text)?;
        // Checked here, before any forward pass: ONNX Runtime's Gather would name a
        // graph node only after the earlier chunks ran, and CUDA may not check at all.
        if let Some((n_vocab, source)) = vocab {
            if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as u64 >= n_vocab) {
                bail!(
                    "{} has token id {id}, outside the model's vocabulary of {n_vocab} ({source}): the model folder's tokenizer.json does not belong to its graph; export the model again",
                    s.describe()
                );
            }
        }
        if ids.len() < need {
            bail!("{} has {} token(s); {why}", s.describe(), ids.len());
        }
        if ids.len() as u64 > max_positions {
            bail!(
                "{} has {} tokens, more than the model's max_positions ({max_positions})",
                s.describe(),
                ids.len()
            );
        }
        out.push(ids);
    }
    Ok(out)
}
