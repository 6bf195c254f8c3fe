//! Parity pre-check: the probe statements of `export.json` (transformers'
//! outputs recorded at export time) go through this session as one right-padded
//! batch, as the real work is run, and must agree before a long run starts.
//!
//! The rule is [`crate::model::parity`]: each pooled vector within a bound relative to its
//! own scale, derived from the dtype's roundoff, against export.json's float64 values
//! where it has them (allowing at least transformers' own error there), else against
//! transformers'. `--parity-slack` widens it, and the manifest records the slack and
//! the errors seen, against transformers always and against float64 where judged so.

use anyhow::{bail, Result};
use schemas::{Float64Parity, ParityInfo, Pooling};

use crate::inputs::batch;
use crate::inputs::tokenize::TextTokenizer;
use crate::model::forward::Forward;
use crate::model::model_dir::{Dtype, ModelDir, Probe};
use crate::model::parity;
use crate::model::runtime::Runtime;

/// One pooling's recorded vectors, per layer: transformers' (float32) and float64's.
type References<'a> = (Option<&'a Vec<Vec<f32>>>, Option<&'a Vec<Vec<f64>>>);

/// Transformers' values and, where export.json has them, float64's for one pooling.
fn references(p: &Probe, pooling: Pooling) -> References<'_> {
    let truth = p.float64.as_ref();
    match pooling {
        Pooling::Mean => (p.mean.as_ref(), truth.and_then(|t| t.mean.as_ref())),
        Pooling::MeanSkipFirst => (
            p.mean_skip_first.as_ref(),
            truth.and_then(|t| t.mean_skip_first.as_ref()),
        ),
        Pooling::Last => (p.last.as_ref(), truth.and_then(|t| t.last.as_ref())),
    }
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(50).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// What to do when the rule refuses, for the error message; `limit` names what
/// `allowed` is ("the bound" or the allowance against float64).
fn next_step(error: f64, allowed: f64, limit: &str) -> String {
    if !error.is_finite() {
        return "the graph gives a value that is not finite (NaN or infinity), which no --parity-slack accepts: export the model again (in float32 if float16 overflows)".to_string();
    }
    format!(
        "{:.1}x {limit}; if model.onnx comes from other weights than export.json's probes, re-export it with scripts/export; if this is rounding (another kernel or card), rerun with --parity-slack {:.0} to accept errors up to that multiple of {limit}",
        error / allowed,
        (error / allowed).ceil().max(2.0)
    )
}

/// The parity rule with this run's dtype and `--parity-slack`.
struct Rule<'a> {
    dtype: Dtype,
    slack: f64,
    what: &'a dyn Fn(&str) -> String,
}

/// Where export.json has no float64 probes, the rule is the bound against transformers.
const NO_FLOAT64: &str = "export.json holds no float64 probes (an older export), so the rule is the bound against transformers' values";

impl Rule<'_> {
    fn bound(&self) -> f64 {
        parity::bound(self.dtype) * self.slack
    }

    /// Judges one value (a pooled vector's or the NLL's relative errors): ours against
    /// transformers' (`old`, the rule without float64) and, with `truth` = (ours against
    /// float64, transformers' against float64), against the truth. `describe` says what
    /// differs for the message. Updates the report.
    fn judge(
        &self,
        report: &mut ParityInfo,
        (old, truth): (f64, Option<(f64, f64)>),
        nll: bool,
        describe: &dyn Fn() -> String,
    ) -> Result<()> {
        let dtype = self.dtype.as_str();
        let Some((ours, own)) = truth else {
            let bound = self.bound();
            if old > bound {
                bail!(
                    "{} (relative error {old:.2e} > {bound:.2e}, {dtype}; {NO_FLOAT64}): {}",
                    describe(),
                    next_step(old, bound, "the bound")
                );
            }
            return Ok(());
        };
        let allowed = parity::allowed(self.dtype, own) * self.slack;
        if ours > allowed {
            bail!(
                "{} (relative error {ours:.2e} from float64 > {allowed:.2e} allowed, {dtype}: the larger of the bound {:.2e} and {}x transformers' own error {own:.2e}, times the slack {}; against transformers' {dtype} values, the rule before float64 probes: {old:.2e}): {}",
                describe(),
                parity::bound(self.dtype),
                parity::TRANSFORMERS_FACTOR,
                self.slack,
                next_step(ours, allowed, "what the rule allows")
            );
        }
        let f = report.float64.get_or_insert_with(|| Float64Parity {
            transformers_factor: parity::TRANSFORMERS_FACTOR,
            ..Default::default()
        });
        let (mine, theirs) = if nll {
            (&mut f.max_nll_error, &mut f.max_transformers_nll_error)
        } else {
            (
                &mut f.max_embedding_error,
                &mut f.max_transformers_embedding_error,
            )
        };
        *mine = mine.max(ours);
        *theirs = theirs.max(own);
        f.max_of_allowed = f.max_of_allowed.max(ours / allowed);
        Ok(())
    }
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
    let (l1, h) = (
        model.export.n_layers as usize + 1,
        model.export.hidden_size as usize,
    );
    let ids = probe_tokens(model, tok)?;
    let mut report = ParityInfo {
        n_probes: probes.len(),
        bound: parity::bound(model.dtype) * slack,
        slack,
        ..Default::default()
    };
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let all: Vec<usize> = (0..probes.len()).collect();
    let poolings = Pooling::ALL;
    let group = batch::by_length(&all, &lengths);
    let seqs: Vec<&[i64]> = group.iter().map(|&i| ids[i].as_slice()).collect();
    let out = fwd.pass(rt, batch::pad(&seqs), &poolings)?;
    let mut pooled = Vec::new();
    for (row, &i) in group.iter().enumerate() {
        pooled.clear();
        out.pooled_row(row, &poolings, &mut pooled);
        let p = &probes[i];
        let n = lengths[i];
        let what = |q: &str| format!("parity probe {i} ({:?}, {n} tokens): {q}", short(&p.text));
        let rule = Rule {
            dtype: model.dtype,
            slack,
            what: &what,
        };
        if n >= 2 {
            let nll = out.nll_sum[row] / f64::from(out.n_predicted[row]);
            let old = parity::nll_error(nll, p.nll);
            let truth = p.float64.as_ref().map(|t| {
                (
                    parity::nll_error(nll, t.nll),
                    parity::nll_error(p.nll, t.nll),
                )
            });
            let describe = || {
                let truth = p
                    .float64
                    .as_ref()
                    .map_or(String::new(), |t| format!(", {:.6} in float64", t.nll));
                format!(
                    "{} is {nll:.6} here but {:.6} in transformers{truth}",
                    what("NLL"),
                    p.nll
                )
            };
            rule.judge(&mut report, (old, truth), true, &describe)?;
            report.max_nll_error = report.max_nll_error.max(old);
        }
        pooled_errors(p, &pooled, n, (l1, h), &rule, &mut report)?;
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

/// Fails unless a reference holds `l1` layers of `h` values.
fn check_shape<T>(
    refv: &[Vec<T>],
    (l1, h): (usize, usize),
    pooling: Pooling,
    source: &str,
    what: &dyn Fn(&str) -> String,
) -> Result<()> {
    if refv.len() != l1 {
        bail!(
            "{}: export.json holds {} layers of {source}{pooling}, the model has {l1}",
            what("reference"),
            refv.len()
        );
    }
    if let Some((l, r)) = refv.iter().enumerate().find(|(_, r)| r.len() != h) {
        bail!(
            "{}: export.json's {source}{pooling} at layer {l} has {} values, hidden size is {h}",
            what("reference"),
            r.len()
        );
    }
    Ok(())
}

/// Checks one probe's pooled vectors (`[layer][pooling][hidden]`, every pooling of
/// [`Pooling::ALL`]) against export.json's references by `rule`, and records the
/// largest errors in `report`. `n` is the probe's token count.
fn pooled_errors(
    p: &Probe,
    pooled: &[f32],
    n: usize,
    (l1, h): (usize, usize),
    rule: &Rule,
    report: &mut ParityInfo,
) -> Result<()> {
    let poolings = Pooling::ALL;
    for (k, &pooling) in poolings.iter().enumerate() {
        let (Some(refv), truth) = references(p, pooling) else {
            continue;
        };
        if n < pooling.min_tokens() {
            continue;
        }
        check_shape(refv, (l1, h), pooling, "", rule.what)?;
        if let Some(t) = truth {
            check_shape(t, (l1, h), pooling, "float64 ", rule.what)?;
        }
        for (l, r) in refv.iter().enumerate() {
            let ours = &pooled[(l * poolings.len() + k) * h..][..h];
            let e = parity::vector_error(ours, r);
            let truth = truth.map(|t| {
                let ours_t = parity::vector_error(ours, &t[l]);
                (ours_t, parity::vector_error(r, &t[l]).relative)
            });
            let describe = || {
                match &truth {
                None => format!(
                    "{} differs from transformers at layer {l}, dimension {}: {} vs {}, the vector's scale {:.4e}",
                    (rule.what)(pooling.as_str()), e.dim, ours[e.dim], r[e.dim], e.scale
                ),
                Some((t, _)) => format!(
                    "{} differs from float64 at layer {l}, dimension {}: {} vs {} (transformers {}), the vector's scale {:.4e}",
                    (rule.what)(pooling.as_str()), t.dim, ours[t.dim], truth_value(p, pooling, l, t.dim), r[t.dim], t.scale
                ),
            }
            };
            rule.judge(
                report,
                (e.relative, truth.map(|(t, own)| (t.relative, own))),
                false,
                &describe,
            )?;
            report.max_embedding_error = report.max_embedding_error.max(e.relative);
        }
    }
    Ok(())
}

/// The float64 value of one dimension, for messages.
fn truth_value(p: &Probe, pooling: Pooling, layer: usize, dim: usize) -> f64 {
    references(p, pooling).1.map_or(f64::NAN, |t| t[layer][dim])
}
