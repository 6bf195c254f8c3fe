//! Orchestration: check every input, prove parity on the probes, run the
//! statements chunk by chunk (resumable), assemble the cache, write the manifest.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{
    DatasetInfo, Manifest, ModelInfo, Pooling, RunInfo, StatementRow, MANIFEST_FILE, SCHEMA_VERSION,
};

use crate::batch;
use crate::chunks::{Partial, RunKey};
use crate::dataset::{self, Dataset, Statement};
use crate::model_dir::{Dtype, ModelDir};
use crate::probe;
use crate::runtime::{DeviceChoice, Runtime};
use crate::tokenize::{self, TextTokenizer};

#[derive(Debug, Clone)]
pub struct Options {
    pub model: PathBuf,
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub name: Option<String>,
    pub device: DeviceChoice,
    pub batch_size: usize,
    pub poolings: Vec<Pooling>,
}

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
    pub probe: Option<probe::ProbeReport>,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        if self.already_complete {
            return vec![format!(
                "{}: already holds a complete cache for this model, dataset and poolings; nothing to do",
                self.cache_dir.display()
            )];
        }
        let mut v = Vec::new();
        if let Some(p) = &self.probe {
            if p.n_probes > 0 {
                v.push(format!(
                    "parity: {} probe(s) agree with transformers (max |diff| embeddings {:.1e}, NLL {:.1e})",
                    p.n_probes, p.max_emb_diff, p.max_nll_diff
                ));
            } else {
                v.push("parity: export.json holds no probes; not checked".to_string());
            }
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
        v.push(format!("cache: {}", self.cache_dir.display()));
        v
    }
}

fn describe(s: &Statement) -> String {
    format!(
        "statement {} (category '{}', pair {}, side {})",
        s.id,
        s.category,
        s.pair_index,
        s.side.as_str()
    )
}

fn now() -> String {
    chrono::Local::now().to_rfc3339()
}

/// Runs the whole extraction.
pub fn run(opts: &Options) -> Result<Summary> {
    if opts.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut poolings: Vec<Pooling> = Vec::new();
    for p in &opts.poolings {
        if !poolings.contains(p) {
            poolings.push(*p);
        }
    }
    if poolings.is_empty() {
        bail!("--poolings lists no pooling (mean, mean_skip_first, last)");
    }
    let data = dataset::load(&opts.dataset)?;
    let model = ModelDir::open(&opts.model)?;
    let name = opts.name.clone().unwrap_or_else(|| model.default_name());
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("--name '{name}' is not a usable folder name");
    }
    let cache_dir = opts.out.join(&name);
    let key = RunKey::new(
        &model.onnx_sha256,
        &model.tokenizer_sha256,
        &data.sha256,
        &poolings,
        model.export.n_layers,
        model.export.hidden_size,
    );
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let mut earlier_start = None;
    if manifest_path.is_file() {
        let m = Manifest::read(&manifest_path)?;
        let found = RunKey::new(
            &m.model.onnx_sha256,
            &m.model.tokenizer_sha256,
            &m.dataset.sha256,
            &m.poolings(&manifest_path)?,
            m.model.n_layers,
            m.model.hidden_size,
        );
        let diff = found.differences(&key);
        if !diff.is_empty() {
            bail!(
                "{} holds a cache of other inputs ({} differ); pick another --name or delete that folder",
                cache_dir.display(),
                diff.join(", ")
            );
        }
        if m.complete {
            schemas::validate_cache(&cache_dir)?;
            return Ok(Summary {
                cache_dir,
                already_complete: true,
                n_statements: data.statements.len(),
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
            });
        }
        earlier_start = Some(m.run.started);
    }

    let tok = TextTokenizer::from_file(&model.tokenizer)?;
    let ids = tokenize::tokenize_all(
        &tok,
        &data.statements,
        &poolings,
        model.export.max_positions,
    )?;
    let session_start = Instant::now();
    let mut rt = Runtime::new(&model, opts.device)?;
    let session_seconds = session_start.elapsed().as_secs_f64();
    let probe_report = probe::check(&mut rt, &model, &tok, opts.batch_size)?;

    let created = !cache_dir.exists();
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let result = work(
        opts,
        &data,
        &model,
        &name,
        &cache_dir,
        &key,
        &ids,
        &mut rt,
        &poolings,
        earlier_start,
    );
    match result {
        Ok((n_run, n_resumed, seconds)) => Ok(Summary {
            cache_dir,
            already_complete: false,
            n_statements: data.statements.len(),
            n_layers: model.export.n_layers,
            n_run,
            n_resumed,
            seconds,
            session_seconds,
            provider: rt.provider.to_string(),
            provider_note: rt.provider_note.clone(),
            device_name: rt.device_name.clone(),
            ort_version: rt.ort_version.clone(),
            probe: Some(probe_report),
        }),
        Err(e) => {
            // Leave nothing behind unless finished chunks are worth resuming.
            let partial = cache_dir.join(crate::chunks::PARTIAL_DIR);
            let has_chunks = std::fs::read_dir(&partial)
                .map(|d| {
                    d.filter_map(|e| e.ok()).any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with(".statements.parquet")
                    })
                })
                .unwrap_or(false);
            if created && !has_chunks {
                let _ = std::fs::remove_dir_all(&cache_dir);
            }
            Err(e)
        }
    }
}

fn manifest(
    data: &Dataset,
    model: &ModelDir,
    name: &str,
    rt: &Runtime,
    batch_size: usize,
    poolings: &[Pooling],
    started: &str,
) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        complete: false,
        model: ModelInfo {
            id: model.export.source.model.clone(),
            revision: model.export.source.revision.clone(),
            display_name: name.to_string(),
            n_layers: model.export.n_layers,
            hidden_size: model.export.hidden_size,
            n_parameters: model.export.n_parameters,
            dtype: model.dtype.as_str().to_string(),
            onnx_sha256: model.onnx_sha256.clone(),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
        },
        dataset: DatasetInfo {
            path: data.path.display().to_string(),
            sha256: data.sha256.clone(),
            categories: data.categories.clone(),
            n_pairs: data.n_pairs,
            n_statements: data.statements.len() as u32,
        },
        run: RunInfo {
            tool: format!("extract {}", env!("CARGO_PKG_VERSION")),
            onnxruntime_version: rt.ort_version.clone(),
            execution_provider: rt.provider.to_string(),
            device_name: rt.device_name.clone(),
            batch_size: batch_size as u32,
            poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
            started: started.to_string(),
            finished: None,
        },
        files: BTreeMap::new(),
    }
}

/// Progress on a terminal bar, else a plain line now and then.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    last_line: Instant,
}

impl Progress {
    fn new(total: usize, done: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} statements {per_sec} eta {eta}")
            {
                b.set_style(style);
            }
            b.set_position(done as u64);
            b
        });
        Progress {
            bar,
            total,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, done: usize, rate: f64) {
        match &self.bar {
            Some(b) => b.set_position(done as u64),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) || done == self.total {
                    eprintln!("extract: {done}/{} statements ({rate:.1}/s)", self.total);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn work(
    opts: &Options,
    data: &Dataset,
    model: &ModelDir,
    name: &str,
    cache_dir: &Path,
    key: &RunKey,
    ids: &[Vec<i64>],
    rt: &mut Runtime,
    poolings: &[Pooling],
    earlier_start: Option<String>,
) -> Result<(usize, usize, f64)> {
    let started = earlier_start.unwrap_or_else(now);
    let mut m = manifest(data, model, name, rt, opts.batch_size, poolings, &started);
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    schemas::write_manifest(&manifest_path, &m)?;

    let mut partial = Partial::open(cache_dir, key, &data.statements)?;
    let done = partial.done();
    let n = data.statements.len();
    let todo: Vec<usize> = (0..n).filter(|i| !done.contains(&(*i as u32))).collect();
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let chunk = batch::chunk_size(n, opts.batch_size);
    // Sorted by length, then cut into chunks of whole batches.
    let order = batch::by_length(&todo, &lengths);

    let t0 = Instant::now();
    let mut progress = Progress::new(n, done.len());
    let mut n_run = 0usize;
    // Test hook: fail after this many chunks, as an interruption would (tests/resume.rs).
    let stop_after: Option<usize> = std::env::var("EXTRACT_TEST_STOP_AFTER_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (chunk_no, chunk_items) in order.chunks(chunk).enumerate() {
        if stop_after == Some(chunk_no) {
            bail!("stopped after {chunk_no} chunk(s) as EXTRACT_TEST_STOP_AFTER_CHUNKS asks; rerun to resume");
        }
        let mut items: Vec<(StatementRow, Vec<f32>)> = Vec::with_capacity(chunk_items.len());
        for group in chunk_items.chunks(opts.batch_size) {
            let seqs: Vec<&[i64]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            let out = rt.run_batch(&batch::pad(&seqs), poolings)?;
            for (row, (&i, pooled)) in group.iter().zip(out.pooled).enumerate() {
                let s = &data.statements[i];
                let nll = out.nll_sum[row];
                let bad_layer = pooled
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|p| p / (poolings.len() * model.export.hidden_size as usize));
                if !nll.is_finite() || bad_layer.is_some() {
                    let what = match bad_layer {
                        Some(l) => format!("hidden states at layer {l}"),
                        None => "the NLL".to_string(),
                    };
                    let hint = if model.dtype == Dtype::F16 {
                        " (float16 overflow? export in float32)"
                    } else {
                        ""
                    };
                    bail!(
                        "{} ({} tokens): NaN or infinite values in {what}{hint}",
                        describe(s),
                        lengths[i]
                    );
                }
                items.push((
                    StatementRow {
                        statement_id: s.id,
                        category: s.category.clone(),
                        pair_index: s.pair_index,
                        side: s.side,
                        text: s.text.clone(),
                        n_tokens: lengths[i] as u32,
                        nll_sum: nll,
                        n_predicted: out.n_predicted[row],
                    },
                    pooled,
                ));
            }
        }
        n_run += items.len();
        partial.write_chunk(items)?;
        progress.update(
            done.len() + n_run,
            n_run as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        );
    }
    progress.finish();
    let seconds = t0.elapsed().as_secs_f64();

    let (st, emb) = partial.assemble(cache_dir, n)?;
    m.files.insert(schemas::STATEMENTS_FILE.to_string(), st);
    m.files.insert(schemas::EMBEDDINGS_FILE.to_string(), emb);
    m.complete = true;
    m.run.finished = Some(now());
    schemas::write_manifest(&manifest_path, &m)?;
    partial.remove()?;
    Ok((n_run, done.len(), seconds))
}
