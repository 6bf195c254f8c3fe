//! Parity pre-check: the probe statements of `export.json` (transformers'
//! outputs recorded at export time) go through this session as one right-padded
//! batch, as the real work is run, and must agree before a long run starts.
//!
//! The rule is [`crate::parity`]: each pooled vector within a bound relative to its
//! own scale, derived from the dtype's roundoff. `--parity-slack` widens it, and the
//! manifest records the slack and the errors seen.

use anyhow::{bail, Result};
use schemas::{ParityInfo, Pooling};

use crate::batch;
use crate::forward::Forward;
use crate::model_dir::{ModelDir, Probe};
use crate::parity;
use crate::runtime::Runtime;
use crate::tokenize::TextTokenizer;

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

/// What to do when the rule refuses, for the error message.
fn next_step(error: f64, bound: f64) -> String {
    if !error.is_finite() {
        return "the graph gives a value that is not finite (NaN or infinity), which no --parity-slack accepts: export the model again (in float32 if float16 overflows)".to_string();
    }
    format!(
        "{:.1}x the bound; if model.onnx comes from other weights than export.json's probes, re-export it with scripts/export; if this is rounding (another kernel or card), rerun with --parity-slack {:.0} to accept errors up to that multiple of the bound",
        error / bound,
        (error / bound).ceil().max(2.0)
    )
}

/// Runs every probe and compares input_ids exactly, the NLL and each pooling at
/// every layer under the parity rule, widened by `slack`.
pub fn check(
    rt: &mut Runtime,
    fwd: &mut Forward,
    model: &ModelDir,
    tok: &TextTokenizer,
    slack: f64,
) -> Result<ParityInfo> {
    let probes = &model.export.probes;
    let bound = parity::bound(model.dtype) * slack;
    let dtype = model.dtype.as_str();
    let (l1, h) = (
        model.export.n_layers as usize + 1,
        model.export.hidden_size as usize,
    );
    let ids = probe_tokens(model, tok)?;
    let mut report = ParityInfo {
        n_probes: probes.len(),
        bound,
        slack,
        ..Default::default()
    };
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let all: Vec<usize> = (0..probes.len()).collect();
    let poolings = Pooling::ALL;
    let group = batch::by_length(&all, &lengths);
    let seqs: Vec<&[i64]> = group.iter().map(|&i| ids[i].as_slice()).collect();
    let out = fwd.run(rt, batch::pad(&seqs), &poolings)?;
    let mut pooled = Vec::new();
    for (row, &i) in group.iter().enumerate() {
        pooled.clear();
        out.pooled_row(row, &poolings, &mut pooled);
        let p = &probes[i];
        let n = lengths[i];
        let what = |q: &str| format!("parity probe {i} ({:?}, {n} tokens): {q}", short(&p.text));
        if n >= 2 {
            let nll = out.nll_sum[row] / f64::from(out.n_predicted[row]);
            let e = parity::nll_error(nll, p.nll);
            if e > bound {
                bail!(
                    "{} is {nll:.6} here but {:.6} in transformers (relative error {e:.2e} > {bound:.2e}, {dtype}): {}",
                    what("NLL"), p.nll, next_step(e, bound)
                );
            }
            report.max_nll_error = report.max_nll_error.max(e);
        }
        let errors = pooled_errors(p, &pooled, n, (l1, h), (bound, dtype), &what)?;
        report.max_embedding_error = report.max_embedding_error.max(errors);
    }
    Ok(report)
}

/// Each probe's token ids, which must be transformers' (else tokenizer.json is not
/// the export's) and fit the model.
fn probe_tokens(model: &ModelDir, tok: &TextTokenizer) -> Result<Vec<Vec<i64>>> {
    let mut ids = Vec::with_capacity(model.export.probes.len());
    for (i, p) in model.export.probes.iter().enumerate() {
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
    Ok(ids)
}

/// Checks one probe's pooled vectors (`[layer][pooling][hidden]`, every pooling of
/// [`Pooling::ALL`]) against export.json's references; returns the largest relative
/// error. `n` is the probe's token count, `what` names the probe in errors.
fn pooled_errors(
    p: &Probe,
    pooled: &[f32],
    n: usize,
    (l1, h): (usize, usize),
    (bound, dtype): (f64, &str),
    what: &dyn Fn(&str) -> String,
) -> Result<f64> {
    let poolings = Pooling::ALL;
    let mut largest = 0.0f64;
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
                bail!(
                    "{}: export.json's {pooling} at layer {l} has {} values, hidden size is {h}",
                    what("reference"),
                    r.len()
                );
            }
            let ours = &pooled[(l * poolings.len() + k) * h..][..h];
            let e = parity::vector_error(ours, r);
            if e.relative > bound {
                bail!(
                    "{} differs from transformers at layer {l}, dimension {}: {} vs {} (relative error {:.2e} of the vector's scale {:.4e} > {bound:.2e}, {dtype}): {}",
                    what(pooling.as_str()), e.dim, ours[e.dim], r[e.dim], e.relative, e.scale, next_step(e.relative, bound)
                );
            }
            largest = largest.max(e.relative);
        }
    }
    Ok(largest)
}
