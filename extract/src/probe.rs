//! Parity pre-check: the probe statements of `export.json` (transformers'
//! outputs recorded at export time) go through this session, batched and
//! padded like the real work, and must agree before a long run starts.
//!
//! Tolerances: float32 models must match to 1e-4 absolute on every pooled
//! value and on the NLL (measured: ~2e-6). float16 models cannot: ONNX Runtime
//! and PyTorch order their half-precision reductions differently and round
//! intermediate results to 11-bit mantissas, so each value carries a relative
//! error of a few 1e-3 that grows with the activation scale (late Pythia layers
//! reach hundreds). There the bound is 2e-2 times the vector's scale
//! (max(1, max |reference|)) on embeddings and 1e-2 absolute on the NLL,
//! which is still far below the differences between statements that the
//! analysis measures.

use anyhow::{bail, Result};
use schemas::Pooling;

use crate::batch;
use crate::model_dir::{Dtype, ModelDir, Probe};
use crate::runtime::Runtime;
use crate::tokenize::TextTokenizer;

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Embedding bound per vector: `emb * max(1, max |reference|)` if `relative`, else `emb`.
    pub emb: f64,
    pub relative: bool,
    pub nll: f64,
}

impl Tolerance {
    pub fn for_dtype(dtype: Dtype) -> Tolerance {
        match dtype {
            Dtype::F32 => Tolerance {
                emb: 1e-4,
                relative: false,
                nll: 1e-4,
            },
            Dtype::F16 => Tolerance {
                emb: 2e-2,
                relative: true,
                nll: 1e-2,
            },
        }
    }
}

/// What the check saw, for the summary.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub n_probes: usize,
    pub max_emb_diff: f64,
    pub max_nll_diff: f64,
}

fn reference(p: &Probe, pooling: Pooling) -> Option<&Vec<Vec<f32>>> {
    match pooling {
        Pooling::Mean => p.mean.as_ref(),
        Pooling::MeanSkipFirst => p.mean_skip_first.as_ref(),
        Pooling::Last => p.last.as_ref(),
    }
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(50).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Runs every probe and compares input_ids exactly, the NLL and each pooling at
/// every layer within [`Tolerance::for_dtype`].
pub fn check(
    rt: &mut Runtime,
    model: &ModelDir,
    tok: &TextTokenizer,
    batch_size: usize,
) -> Result<ProbeReport> {
    let probes = &model.export.probes;
    let tol = Tolerance::for_dtype(model.dtype);
    let (l1, h) = (
        model.export.n_layers as usize + 1,
        model.export.hidden_size as usize,
    );
    let mut ids = Vec::with_capacity(probes.len());
    for (i, p) in probes.iter().enumerate() {
        let ours = tok.encode(&p.text)?;
        if ours != p.input_ids {
            bail!(
                "parity probe {i} ({:?}): input_ids {:?} differ from transformers' {:?}: tokenizer.json does not match the export",
                short(&p.text), ours, p.input_ids
            );
        }
        if ours.is_empty() || ours.len() as u64 > model.export.max_positions {
            bail!(
                "parity probe {i} ({:?}) has {} tokens and cannot be run",
                short(&p.text),
                ours.len()
            );
        }
        ids.push(ours);
    }
    let mut report = ProbeReport {
        n_probes: probes.len(),
        ..Default::default()
    };
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let all: Vec<usize> = (0..probes.len()).collect();
    let poolings = Pooling::ALL;
    for group in batch::plan(&all, &lengths, batch_size) {
        let seqs: Vec<&[i64]> = group.iter().map(|&i| ids[i].as_slice()).collect();
        let out = rt.run_batch(&batch::pad(&seqs), &poolings)?;
        for (row, &i) in group.iter().enumerate() {
            let p = &probes[i];
            let n = lengths[i];
            let what =
                |q: &str| format!("parity probe {i} ({:?}, {n} tokens): {q}", short(&p.text));
            if n >= 2 {
                let nll = out.nll_sum[row] / f64::from(out.n_predicted[row]);
                let d = (nll - p.nll).abs();
                if !d.is_finite() || d > tol.nll {
                    bail!("{} is {nll:.6} here but {:.6} in transformers (|diff| {d:.2e} > {:.0e}, {})",
                        what("NLL"), p.nll, tol.nll, model.dtype.as_str());
                }
                report.max_nll_diff = report.max_nll_diff.max(d);
            }
            for (k, &pooling) in poolings.iter().enumerate() {
                let Some(refv) = reference(p, pooling) else {
                    continue;
                };
                if n < pooling.min_tokens() {
                    continue;
                }
                if refv.len() != l1 {
                    bail!(
                        "{}: export.json holds {} layers of {pooling}, the model has {l1}",
                        what("reference"),
                        refv.len()
                    );
                }
                for (l, r) in refv.iter().enumerate() {
                    if r.len() != h {
                        bail!("{}: export.json's {pooling} at layer {l} has {} values, hidden size is {h}", what("reference"), r.len());
                    }
                    let ours = &out.pooled[row][(l * poolings.len() + k) * h..][..h];
                    let scale = if tol.relative {
                        r.iter().fold(1.0f64, |m, &x| m.max(f64::from(x).abs()))
                    } else {
                        1.0
                    };
                    let (mut worst, mut at) = (0.0f64, 0usize);
                    for (j, (&a, &b)) in ours.iter().zip(r).enumerate() {
                        let d = (f64::from(a) - f64::from(b)).abs();
                        if !d.is_finite() || d > worst || d.is_nan() {
                            worst = if d.is_finite() { d } else { f64::INFINITY };
                            at = j;
                        }
                    }
                    if worst > tol.emb * scale {
                        bail!(
                            "{} differs from transformers at layer {l}, dimension {at}: {} vs {} (|diff| {worst:.2e} > {:.1e}, {})",
                            what(pooling.as_str()), ours[at], r[at], tol.emb * scale, model.dtype.as_str()
                        );
                    }
                    report.max_emb_diff = report.max_emb_diff.max(worst / scale);
                }
            }
        }
    }
    Ok(report)
}
