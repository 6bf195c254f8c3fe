//! Orchestration: check every input, prove parity on the probes, run the
//! statements chunk by chunk (resumable), assemble the cache, write the manifest.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{
    DatasetInfo, Manifest, ModelInfo, ParityInfo, Pooling, RunInfo, StatementRow, MANIFEST_FILE,
    SCHEMA_VERSION,
};

use crate::batch::{self, Batching};
use crate::checkpoint::CheckpointFlags;
use crate::chunks::{self, Partial, RunKey, Settings};
use crate::dataset::{self, Dataset, Statement};
use crate::lock::CacheLock;
use crate::model_dir::{self, Dtype, ModelDir};
use crate::probe;
use crate::runtime::{DeviceChoice, Runtime};
use crate::shard::Shard;
use crate::tokenize::{self, TextTokenizer};

#[derive(Debug, Clone)]
pub struct Options {
    pub model: PathBuf,
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub name: Option<String>,
    pub device: DeviceChoice,
    pub batching: Batching,
    pub poolings: Vec<Pooling>,
    /// Resume chunks made with another provider or batching.
    pub force_resume: bool,
    /// Multiplies the parity bound of the probe check (>= 1).
    pub parity_slack: f64,
    /// Extract only this slice of the pairs, into `NAME.shard-I-of-N`.
    pub shard: Option<Shard>,
    /// Series, size and revision for the manifest (defaults from export.json).
    pub checkpoint: CheckpointFlags,
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
    pub probe: Option<ParityInfo>,
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
            v.push(format!(
                "parity: {} probe(s) agree with transformers (largest relative error: embeddings {:.1e}, NLL {:.1e}; bound {:.1e})",
                p.n_probes, p.max_embedding_error, p.max_nll_error, p.bound
            ));
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

/// Cache folder names that would collide with the contract's own names or hide
/// the cache from readers (which skip dot folders).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reserved = [
        MANIFEST_FILE,
        schemas::STATEMENTS_FILE,
        schemas::EMBEDDINGS_FILE,
    ];
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || reserved.contains(&name)
    {
        bail!("--name '{name}' is not usable as a cache folder name (no leading '.', no path separators, not a contract file name)");
    }
    Ok(())
}

/// Runs the whole extraction.
pub fn run(opts: &Options) -> Result<Summary> {
    if opts.batching.max_rows == 0 || opts.batching.max_tokens == Some(0) {
        bail!("--batch-size and --max-tokens must be at least 1");
    }
    if !(opts.parity_slack.is_finite() && opts.parity_slack >= 1.0) {
        bail!(
            "--parity-slack {} must be a finite number >= 1 (a multiple of the parity bound)",
            opts.parity_slack
        );
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
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| model_dir::default_name(&opts.model));
    check_name(&name)?;
    let name = match opts.shard {
        Some(shard) => shard.folder_name(&name),
        None => name,
    };
    if !opts.model.is_dir() {
        bail!("model directory {} does not exist", opts.model.display());
    }
    let cache_dir = opts.out.join(&name);
    let created = !cache_dir.exists();
    // Taken before anything slow (hashing the weights, creating the session), so a
    // second writer is refused at once.
    let lock = CacheLock::acquire(&cache_dir)?;
    let result = run_locked(opts, &data, &name, &cache_dir, &poolings);
    if result.is_err() && created && !has_chunks(&cache_dir) {
        // Leave nothing behind unless finished chunks are worth resuming.
        let _ = std::fs::remove_dir_all(&cache_dir);
    }
    drop(lock);
    result
}

fn has_chunks(cache_dir: &Path) -> bool {
    std::fs::read_dir(cache_dir.join(chunks::PARTIAL_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(".statements.parquet")
            })
        })
        .unwrap_or(false)
}

fn run_locked(
    opts: &Options,
    data: &Dataset,
    name: &str,
    cache_dir: &Path,
    poolings: &[Pooling],
) -> Result<Summary> {
    let model = ModelDir::open(&opts.model)?;
    let place = opts.checkpoint.resolve(&model)?;
    let key = RunKey {
        model_files: model.files.clone(),
        dtype: model.dtype.as_str().to_string(),
        dataset_sha256: data.sha256.clone(),
        poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
        n_layers: model.export.n_layers,
        hidden_size: model.export.hidden_size,
        shard: opts.shard.map(|s| (s.index, s.count)),
    };
    // The statements this cache holds, by global id (= index into data.statements).
    let ids: Vec<u32> = match opts.shard {
        Some(shard) => shard.ids(data.statements.len()),
        None => (0..data.statements.len() as u32).collect(),
    };
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let mut earlier_start = None;
    if manifest_path.is_file() {
        let m = Manifest::read(&manifest_path)?;
        let found = key_of(&m, &manifest_path)?;
        // A cache from before every model file was recorded names only these two.
        let mut comparable = key.clone();
        if m.model.files.is_empty() {
            comparable
                .model_files
                .retain(|name, _| found.model_files.contains_key(name));
        }
        let diff = found.differences(&comparable);
        if !diff.is_empty() {
            bail!(
                "{} holds a cache of other inputs ({} differ); pick another --name or delete that folder",
                cache_dir.display(),
                diff.join(", ")
            );
        }
        if m.complete {
            schemas::validate_cache(cache_dir).map_err(|e| {
                anyhow::anyhow!(
                    "{e}; the cache is marked complete but broken: delete {} and rerun",
                    cache_dir.display()
                )
            })?;
            chunks::remove_leftovers(cache_dir)?;
            return Ok(Summary {
                cache_dir: cache_dir.to_path_buf(),
                already_complete: true,
                n_statements: ids.len(),
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
    schemas::remove_temp_files(cache_dir)?;

    let tok = TextTokenizer::from_file(&model.tokenizer)?;
    let tokens =
        tokenize::tokenize_all(&tok, &data.statements, poolings, model.export.max_positions)?;
    let session_start = Instant::now();
    let mut rt = Runtime::new(&model, opts.device)?;
    let session_seconds = session_start.elapsed().as_secs_f64();
    let settings = Settings {
        execution_provider: rt.provider.to_string(),
        batch_size: opts.batching.max_rows as u32,
        max_tokens: opts.batching.max_tokens.map(|t| t as u32),
    };
    let mut partial = Partial::open(
        cache_dir,
        &key,
        &settings,
        opts.force_resume,
        &data.statements,
    )?;
    let parity = probe::check(&mut rt, &model, &tok, opts.batching, opts.parity_slack)?;
    let started = earlier_start.unwrap_or_else(now);
    let mut m = manifest(data, &model, &tok, name, &rt, &settings, poolings, &started)?;
    place.apply(&mut m.model);
    m.run.parity = Some(parity.clone());
    m.run.shard = opts.shard.map(|s| s.info(ids.len() as u32));
    schemas::write_manifest(&manifest_path, &m)?;

    let (n_run, n_resumed, seconds) = work(
        opts,
        data,
        &model,
        &tokens,
        &ids,
        &mut rt,
        &settings,
        poolings,
        &mut partial,
    )?;
    let (st, emb) = partial.assemble(cache_dir, &ids)?;
    m.files.insert(schemas::STATEMENTS_FILE.to_string(), st);
    m.files.insert(schemas::EMBEDDINGS_FILE.to_string(), emb);
    m.run.chunks = partial.chunk_infos();
    m.complete = true;
    m.run.finished = Some(now());
    schemas::write_manifest(&manifest_path, &m)?;
    partial.remove()?;
    Ok(Summary {
        cache_dir: cache_dir.to_path_buf(),
        already_complete: false,
        n_statements: ids.len(),
        n_layers: model.export.n_layers,
        n_run,
        n_resumed,
        seconds,
        session_seconds,
        provider: rt.provider.to_string(),
        provider_note: rt.provider_note.clone(),
        device_name: rt.device_name.clone(),
        ort_version: rt.ort_version.clone(),
        probe: Some(parity),
    })
}

/// The inputs a manifest records, in [`RunKey`] form. Caches written before every
/// model file was recorded name only the graph and the tokenizer.
pub(crate) fn key_of(m: &Manifest, path: &Path) -> Result<RunKey> {
    let model_files = if m.model.files.is_empty() {
        BTreeMap::from([
            ("model.onnx".to_string(), m.model.onnx_sha256.clone()),
            (
                "tokenizer.json".to_string(),
                m.model.tokenizer_sha256.clone(),
            ),
        ])
    } else {
        m.model.files.clone()
    };
    Ok(RunKey {
        model_files,
        dtype: m.model.dtype.clone(),
        dataset_sha256: m.dataset.sha256.clone(),
        poolings: m
            .poolings(path)?
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        n_layers: m.model.n_layers,
        hidden_size: m.model.hidden_size,
        shard: m.run.shard.map(|s| (s.index, s.count)),
    })
}

#[allow(clippy::too_many_arguments)]
fn manifest(
    data: &Dataset,
    model: &ModelDir,
    tok: &TextTokenizer,
    name: &str,
    rt: &Runtime,
    settings: &Settings,
    poolings: &[Pooling],
    started: &str,
) -> Result<Manifest> {
    Ok(Manifest {
        schema_version: SCHEMA_VERSION,
        complete: false,
        model: ModelInfo {
            id: model.export.source.model.clone(),
            // Set by the caller from `Place`, with series, size and step.
            revision: None,
            display_name: name.to_string(),
            n_layers: model.export.n_layers,
            hidden_size: model.export.hidden_size,
            n_parameters: model.export.n_parameters,
            dtype: model.dtype.as_str().to_string(),
            onnx_sha256: model.onnx_sha256.clone(),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
            files: model.files.clone(),
            adds_bos: Some(tok.adds_bos()?),
            series: None,
            size: None,
            step: None,
        },
        dataset: DatasetInfo {
            path: data.path.display().to_string(),
            sha256: data.sha256.clone(),
            categories: data.categories.clone(),
            n_pairs: data.n_pairs,
            n_statements: data.statements.len() as u32,
            statements_sha256: Some(schemas::statements_digest(
                data.statements.iter().map(|s| (s.id, s.text.as_str())),
            )),
        },
        run: RunInfo {
            tool: format!("extract {}", env!("CARGO_PKG_VERSION")),
            onnxruntime_version: rt.ort_version.clone(),
            execution_provider: rt.provider.to_string(),
            device_name: rt.device_name.clone(),
            batch_size: settings.batch_size,
            max_tokens: settings.max_tokens,
            poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
            started: started.to_string(),
            finished: None,
            parity: None,
            chunks: Vec::new(),
            shard: None,
        },
        files: BTreeMap::new(),
    })
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

/// Runs the statements not yet done, chunk by chunk; returns (run now, resumed, seconds).
#[allow(clippy::too_many_arguments)]
fn work(
    opts: &Options,
    data: &Dataset,
    model: &ModelDir,
    tokens: &[Vec<i64>],
    ids: &[u32],
    rt: &mut Runtime,
    settings: &Settings,
    poolings: &[Pooling],
    partial: &mut Partial,
) -> Result<(usize, usize, f64)> {
    let done = partial.done();
    let n = ids.len();
    let todo: Vec<usize> = ids
        .iter()
        .filter(|i| !done.contains(i))
        .map(|&i| i as usize)
        .collect();
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let plan = batch::chunks(batch::plan(&todo, &lengths, opts.batching), n);

    let t0 = Instant::now();
    let mut progress = Progress::new(n, done.len());
    let mut n_run = 0usize;
    for chunk in plan {
        let mut items: Vec<(StatementRow, Vec<f32>)> = Vec::new();
        for group in chunk {
            let seqs: Vec<&[i64]> = group.iter().map(|&i| tokens[i].as_slice()).collect();
            let out = rt.run_batch(&batch::pad(&seqs), poolings)?;
            for (row, (&i, pooled)) in group.iter().zip(out.pooled).enumerate() {
                let s = &data.statements[i];
                let nll = out.nll_sum[row];
                check_finite(s, lengths[i], nll, &pooled, poolings.len(), model)?;
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
        partial.write_chunk(items, settings, &rt.device_name)?;
        progress.update(
            done.len() + n_run,
            n_run as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        );
    }
    progress.finish();
    Ok((n_run, done.len(), t0.elapsed().as_secs_f64()))
}

/// A NaN or infinity anywhere would poison every statistic downstream: refuse it
/// naming the statement and the layer.
fn check_finite(
    s: &Statement,
    n_tokens: usize,
    nll: f64,
    pooled: &[f32],
    n_poolings: usize,
    model: &ModelDir,
) -> Result<()> {
    let bad_layer = pooled
        .iter()
        .position(|x| !x.is_finite())
        .map(|p| p / (n_poolings * model.export.hidden_size as usize));
    if nll.is_finite() && bad_layer.is_none() {
        return Ok(());
    }
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
        "{} ({n_tokens} tokens): NaN or infinite values in {what}{hint}",
        describe(s)
    )
}
