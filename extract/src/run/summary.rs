//! The closing lines of a run: what it extracted, how fast, on what, and where.

use std::path::{Path, PathBuf};

use schemas::{Manifest, ParityInfo, Timings};

use crate::model::model_dir::ModelDir;

/// What happened, for the closing lines.
#[derive(Debug, Clone)]
pub struct Summary {
    pub cache_dir: PathBuf,
    /// The cache was already complete for these inputs: nothing was run.
    pub already_complete: bool,
    pub n_statements: usize,
    pub n_layers: u32,
    /// Statements run now (fewer than `n_statements` when resumed).
    pub n_run: usize,
    pub n_resumed: usize,
    pub seconds: f64,
    /// Loading the ONNX graph and weights into a session: on a GPU this, not the
    /// forward passes, dominates a run over a few hundred statements.
    pub session_seconds: f64,
    pub provider: String,
    pub provider_note: String,
    pub device_name: String,
    pub ort_version: String,
    pub probe: Option<ParityInfo>,
    pub timings: Option<Timings>,
}

impl Summary {
    pub(crate) fn already_complete(
        cache_dir: &Path,
        n_statements: usize,
        model: &ModelDir,
        m: Manifest,
    ) -> Self {
        Summary {
            cache_dir: cache_dir.to_path_buf(),
            already_complete: true,
            n_statements,
            n_layers: model.export.n_layers,
            n_run: 0,
            n_resumed: 0,
            seconds: 0.0,
            session_seconds: 0.0,
            provider: m.run.execution_provider,
            provider_note: String::new(),
            device_name: m.run.device_name,
            ort_version: m.run.onnxruntime_version,
            probe: None,
            timings: None,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        if self.already_complete {
            return vec![format!(
                "{}: already holds a complete cache for this model, dataset and poolings; nothing to do",
                self.cache_dir.display()
            )];
        }
        let mut v = Vec::new();
        if let Some(p) = &self.probe {
            v.push(match &p.float64 {
                None => format!(
                    "parity: {} probe(s) agree with transformers (largest relative error: embeddings {:.1e}, NLL {:.1e}; bound {:.1e})",
                    p.n_probes, p.max_embedding_error, p.max_nll_error, p.bound
                ),
                Some(f) => format!(
                    "parity: {} probe(s) agree with float64 (largest relative error: embeddings {:.1e}, NLL {:.1e}, {:.2} of what the rule allows; transformers' own: embeddings {:.1e}, NLL {:.1e}; against transformers: embeddings {:.1e}, NLL {:.1e}; bound {:.1e})",
                    p.n_probes, f.max_embedding_error, f.max_nll_error, f.max_of_allowed,
                    f.max_transformers_embedding_error, f.max_transformers_nll_error,
                    p.max_embedding_error, p.max_nll_error, p.bound
                ),
            });
        }
        let rate = if self.seconds > 0.0 {
            self.n_run as f64 / self.seconds
        } else {
            0.0
        };
        v.push(format!(
            "extracted {} statements x {} layers ({} run now{}) in {:.1} s: {:.1} statements/s",
            self.n_statements,
            self.n_layers + 1,
            self.n_run,
            if self.n_resumed > 0 {
                format!(", {} resumed from an earlier run", self.n_resumed)
            } else {
                String::new()
            },
            self.seconds,
            rate
        ));
        v.push(format!(
            "execution provider: {} ({}) on {}, ONNX Runtime {}; session created in {:.2} s",
            self.provider,
            self.provider_note,
            self.device_name,
            self.ort_version,
            self.session_seconds
        ));
        if let Some(t) = &self.timings {
            v.push(format!(
                "time (s): session {:.2}, hashing {:.2}, probes {:.2}, forward {:.2}, host reduction {:.2}, sidecar {:.2}, writing {:.2}; total {:.2} (forward and host work overlap)",
                t.session, t.hashing, t.probes, t.forward, t.host_reduction, t.sidecar, t.writing, t.total
            ));
        }
        v.push(format!("cache: {}", self.cache_dir.display()));
        v
    }
}
