//! Orchestration: check every input, prove parity on the probes, run the
//! statements chunk by chunk (resumable), assemble the cache, write the manifest.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{
    DatasetInfo, Manifest, ModelInfo, ParityInfo, Pooling, RunInfo, Side, Timings, MANIFEST_FILE,
    SCHEMA_VERSION,
};

use crate::inputs::batch::{self, Batching, Padded};
use crate::inputs::dataset::{self, Dataset};
use crate::inputs::grid_place::PlaceFlags;
use crate::inputs::shard::Shard;
use crate::inputs::tokenize::{self, TextTokenizer};
use crate::model::forward::Forward;
use crate::model::graph;
use crate::model::model_dir::{self, ModelDir};
use crate::model::probe;
use crate::model::runtime::{DeviceChoice, Runtime};
use crate::store::chunks::{self, Partial, RunKey, Settings};
use crate::store::host_thread::{self, Host, HostTimes, Msg};

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
    pub place: PlaceFlags,
    /// Save finished chunks to disk at least this often (zero: each as it finishes).
    pub save_every: Duration,
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
    pub timings: Option<Timings>,
}

impl Summary {
    fn already_complete(
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
        schemas::GRAMS_FILE,
        // the root card's name: a folder so named would hide the root's listing
        schemas::CARD_FILE,
    ];
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || reserved.contains(&name)
    {
        bail!("--name '{name}' is not usable as a cache folder name (no leading '.', no path separators, not a contract file name)");
    }
    // analyze selects folders with a comma-separated --models, and a control character
    // (a newline) breaks the report's lines and the CSV.
    if name.contains(',') || name.chars().any(char::is_control) {
        bail!("--name {name:?}: no commas (analyze --models NAME,... could never select it) and no control characters");
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
    model_dir::check_is_dir(&opts.model)?;
    if let Some(shard) = opts.shard {
        if shard.ids(data.statements.len()).is_empty() {
            bail!(
                "--shard {shard}: the dataset has {} pairs, so this shard holds none; use at most {} shards",
                data.n_pairs,
                data.n_pairs
            );
        }
    }
    let cache_dir = opts.out.join(&name);
    if resolved(&cache_dir).starts_with(resolved(&opts.model)) {
        bail!(
            "--out {}: the cache folder {} would lie in the model folder {}; write the cache outside it (e.g. --out cache)",
            opts.out.display(),
            cache_dir.display(),
            opts.model.display()
        );
    }
    check_root(&opts.out)?;
    check_partial(&cache_dir)?;
    let created = Created::before(&cache_dir);
    // Taken before anything slow (hashing the weights, creating the session), so a
    // second writer is refused at once.
    let lock = created.on_error(schemas::CacheLock::acquire(&cache_dir).map_err(Into::into))?;
    let result = run_locked(opts, &data, &name, &cache_dir, &poolings);
    // Leave nothing behind unless finished chunks are worth resuming.
    let result = if has_chunks(&cache_dir) {
        result
    } else {
        created.on_error(result)
    };
    drop(lock);
    let summary = result?;
    schemas::write_root_card(&opts.out)?;
    Ok(summary)
}

/// The folders that creating a cache folder makes (it and the parents it lacks), so
/// that a refused run removes what it made and nothing else.
pub(crate) struct Created(Vec<PathBuf>);

impl Created {
    /// Before `cache_dir` is created: the folders missing on its path, deepest first.
    pub(crate) fn before(cache_dir: &Path) -> Created {
        Created(
            cache_dir
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
                .map(Path::to_path_buf)
                .collect(),
        )
    }

    /// On an error, removes the cache folder if this run created it, then each
    /// parent it created while empty.
    pub(crate) fn on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            if let Some((cache_dir, parents)) = self.0.split_first() {
                let _ = std::fs::remove_dir_all(cache_dir);
                for dir in parents {
                    if std::fs::remove_dir(dir).is_err() {
                        break;
                    }
                }
            }
        }
        result
    }
}

/// Refuses a cache root inside a model's cache folder (one holding a manifest or a
/// lock): the new cache would be taken for a stray folder of that one, and analyze
/// would never find it.
pub(crate) fn check_root(out: &Path) -> Result<()> {
    let root = resolved(out);
    if let Some(cache) = root.ancestors().find(|d| {
        d.join(schemas::LOCK_FILE).is_file() || Manifest::read(&d.join(MANIFEST_FILE)).is_ok()
    }) {
        bail!(
            "--out {} lies in {}, a model's cache folder; caches go in a root folder of their own, one folder per model (e.g. --out {})",
            out.display(),
            cache.display(),
            cache.parent().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(())
}

/// `.partial` is the folder of an interrupted run: anything else there is refused
/// before the lock is taken (it failed as "File exists").
fn check_partial(cache_dir: &Path) -> Result<()> {
    let partial = cache_dir.join(chunks::PARTIAL_DIR);
    if partial.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        bail!(
            "{}: is a file, not the folder of an interrupted extraction that extract keeps there; move it away or delete it",
            partial.display()
        );
    }
    Ok(())
}

/// `path` with its longest existing prefix made canonical (symlinks, `..`), the rest
/// appended: comparable with another such path before the folders exist.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut p = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(p) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                p = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
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

// Long: the run's steps in the order a reader checks them against the resume rules
// (inputs, earlier run, session, probes, manifest, work, assembly); each is one call.
fn run_locked(
    opts: &Options,
    data: &Dataset,
    name: &str,
    cache_dir: &Path,
    poolings: &[Pooling],
) -> Result<Summary> {
    let run_start = Instant::now();
    let mut timings = Timings::default();
    let model = ModelDir::open(&opts.model)?;
    let source = &model.export.source;
    let place = opts.place.resolve(
        &source.model,
        source.revision.as_deref(),
        &model.dir.join("export.json"),
    )?;
    let key = run_key(opts, data, &model, poolings);
    // The statements this cache holds, by global id (= index into data.statements).
    let ids: Vec<u32> = match opts.shard {
        Some(shard) => shard.ids(data.statements.len()),
        None => (0..data.statements.len() as u32).collect(),
    };
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let verified = manifest_path.is_file();
    let mut earlier_start = None;
    if verified {
        match earlier_run(cache_dir, &model, &key, &mut timings)? {
            Earlier::Complete(m) => {
                chunks::remove_leftovers(cache_dir)?;
                return Ok(Summary::already_complete(cache_dir, ids.len(), &model, *m));
            }
            Earlier::Started(started) => earlier_start = Some(started),
        }
    }
    schemas::remove_temp_files(cache_dir)?;

    let tok = TextTokenizer::from_file(&model.tokenizer)?;
    let vocab = match model.export.vocab_size {
        Some(v) => Some((v, "export.json's vocab_size")),
        None => graph::embedding_rows(&model.onnx)?
            .map(|v| (v, "the rows of model.onnx's embedding table")),
    };
    let tokens = tokenize::tokenize_all(
        &tok,
        &data.statements,
        poolings,
        (model.export.max_positions, vocab),
    )?;
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let all: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let whole = batch::chunks(batch::plan(&all, &lengths, opts.batching), ids.len());
    check_memory(&whole, &lengths, &model, poolings.len())?;
    check_disk(cache_dir, data, &ids, &model, poolings.len())?;
    let mut rt = open_session(&model, opts.device, !verified, &mut timings)?;
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
    let mut fwd = Forward::new(&rt)?;
    let (parity, probe_seconds) =
        timed(|| probe::check(&mut rt, &mut fwd, &model, &tok, opts.parity_slack));
    let parity = parity?;
    timings.probes = probe_seconds;
    let started = earlier_start.unwrap_or_else(now);
    let mut m = manifest(data, &model, &tok, name, &rt, &settings, poolings, &started)?;
    place.apply(&mut m.model);
    m.run.parity = Some(parity.clone());
    m.run.shard = opts.shard.map(|s| s.info(ids.len() as u32));
    schemas::write_manifest(&manifest_path, &m)?;

    let work = work(
        opts,
        data,
        &model,
        &tokens,
        &ids,
        &mut rt,
        &mut fwd,
        &settings,
        poolings,
        &mut partial,
    )
    .inspect_err(|_| save_held(&mut partial))?;
    finish(
        partial,
        cache_dir,
        &ids,
        &mut m,
        &work,
        &mut timings,
        run_start,
    )?;
    Ok(Summary {
        cache_dir: cache_dir.to_path_buf(),
        already_complete: false,
        n_statements: ids.len(),
        n_layers: model.export.n_layers,
        n_run: work.host.n_run,
        n_resumed: work.n_resumed,
        seconds: work.seconds,
        session_seconds: timings.session,
        provider: rt.provider.to_string(),
        provider_note: rt.provider_note.clone(),
        device_name: rt.device_name.clone(),
        ort_version: rt.ort_version.clone(),
        probe: Some(parity),
        timings: Some(timings),
    })
}

/// What a cache must have been made from to be resumed or reused.
fn run_key(opts: &Options, data: &Dataset, model: &ModelDir, poolings: &[Pooling]) -> RunKey {
    RunKey {
        model_files: model.files.clone(),
        dtype: model.dtype.as_str().to_string(),
        dataset_sha256: data.sha256.clone(),
        poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
        n_layers: model.export.n_layers,
        hidden_size: model.export.hidden_size,
        shard: opts.shard.map(|s| (s.index, s.count)),
    }
}

/// A cache folder that already has a manifest.
enum Earlier {
    /// Complete and valid for these inputs: nothing to run.
    Complete(Box<Manifest>),
    /// Started at this time; its chunks are resumed.
    Started(String),
}

/// Checks an earlier run's manifest against these inputs (hashing the model files
/// first, into `timings.hashing`): refused when made from others.
fn earlier_run(
    cache_dir: &Path,
    model: &ModelDir,
    key: &RunKey,
    timings: &mut Timings,
) -> Result<Earlier> {
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let (hashed, seconds) = timed(|| model.verify_files());
    hashed?;
    timings.hashing = seconds;
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
    if !m.complete {
        return Ok(Earlier::Started(m.run.started));
    }
    schemas::validate_cache(cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}; the cache is marked complete but broken: delete {} and rerun",
            cache_dir.display()
        )
    })?;
    Ok(Earlier::Complete(Box::new(m)))
}

/// Creates the session. A fresh run (`hash`) hashes the weights while ONNX Runtime
/// loads them; a resumed one hashed them already, to compare with the manifest.
fn open_session(
    model: &ModelDir,
    device: DeviceChoice,
    hash: bool,
    timings: &mut Timings,
) -> Result<Runtime> {
    let (rt, hashed) = std::thread::scope(|s| {
        let hashing = hash.then(|| s.spawn(|| timed(|| model.verify_files())));
        let rt = timed(|| Runtime::new(model, device));
        let hashed = hashing.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (rt, hashed)
    });
    if let Some((result, seconds)) = hashed {
        // An altered file explains a session that fails to load, not the reverse.
        result?;
        timings.hashing = seconds;
    }
    let (rt, seconds) = rt;
    timings.session = seconds;
    rt
}

/// Saves the chunks held in memory after a failure, so a rerun resumes from them.
/// Best effort: the failure (a full disk) may stop this too, and its error is the
/// one to report.
fn save_held(partial: &mut Partial) {
    if partial.held_floats() > 0 {
        if let Err(e) = partial.save() {
            eprintln!("extract: could not save the finished chunks: {e:#}");
        }
    }
}

/// Assembles the final files from the chunks and writes the manifest that says complete.
fn finish(
    mut partial: Partial,
    cache_dir: &Path,
    ids: &[u32],
    m: &mut Manifest,
    work: &Work,
    timings: &mut Timings,
    run_start: Instant,
) -> Result<()> {
    timings.forward = work.forward;
    timings.host_reduction = work.host.reduction.as_secs_f64();
    // The sidecar is computed from each layer as the final files are assembled, and
    // listed only by the manifest that says complete: a kill up to here leaves it
    // unlisted, and the resumed run computes it again from the same embeddings.
    let t = Instant::now();
    let sidecar = partial
        .assemble(cache_dir, ids, m)
        .inspect_err(|_| save_held(&mut partial))?;
    // The sidecar's thread runs alongside the assembly's writing: its busy time is
    // inside the assembly's wall clock, not added to it.
    timings.sidecar = sidecar.as_secs_f64();
    let assembled = t.elapsed().as_secs_f64();
    m.run.chunks = partial.chunk_infos();
    m.complete = true;
    m.run.finished = Some(now());
    timings.writing = work.host.writing.as_secs_f64() + assembled;
    timings.total = run_start.elapsed().as_secs_f64();
    m.run.timings_s = Some(*timings);
    schemas::write_card(cache_dir, m)?;
    schemas::write_manifest(&cache_dir.join(MANIFEST_FILE), m)?;
    partial.remove()
}

/// `f`'s result and how long it took, in seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
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
            timings_s: None,
        },
        files: BTreeMap::new(),
        grams: None,
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

/// Refuses, before the model is loaded, a batching whose buffers would not fit in
/// memory (estimated on the whole run's batches, a bound for a resumed one): while
/// running, the output sets in flight ([`host_thread::QUEUE_DEPTH`] queued, one running,
/// one being read), the token states a token-states graph returns, the rows of the
/// largest chunk the writer is filling and the finished ones it holds until they are
/// saved; then, assembling, a few copies of one layer of every statement.
fn check_memory(
    plan: &[Vec<Vec<usize>>],
    lengths: &[usize],
    model: &ModelDir,
    n_poolings: usize,
) -> Result<()> {
    let Some(available) = schemas::available_memory() else {
        return Ok(());
    };
    let shape = OutputShape {
        layers: u64::from(model.export.n_layers) + 1,
        hidden: u64::from(model.export.hidden_size),
        token_states: model.layout == model_dir::Layout::TokenStates,
    };
    memory_fits(plan, lengths, shape, n_poolings, available)
}

/// What a graph returns per statement, for [`memory_fits`].
#[derive(Debug, Clone, Copy)]
struct OutputShape {
    /// Hidden states: transformer blocks + 1.
    layers: u64,
    hidden: u64,
    /// Token-level states (`--token-states` export), not pooled ones.
    token_states: bool,
}

/// [`check_memory`] with `available` bytes.
fn memory_fits(
    plan: &[Vec<Vec<usize>>],
    lengths: &[usize],
    shape: OutputShape,
    n_poolings: usize,
    available: u64,
) -> Result<()> {
    let layer_bytes = shape.layers * shape.hidden * 4;
    let batches = plan.iter().flatten();
    let rows = batches.clone().map(Vec::len).max().unwrap_or(0) as u64;
    let tokens = batches
        .map(|g| g.len() * g.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .max()
        .unwrap_or(0) as u64;
    let chunk_rows = plan
        .iter()
        .map(|c| c.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(0) as u64;
    let in_flight = (host_thread::QUEUE_DEPTH as u64 + 2) * rows * 3 * layer_bytes;
    let token_states = if shape.token_states {
        tokens * layer_bytes
    } else {
        0
    };
    let n_statements = plan.iter().flatten().map(Vec::len).sum::<usize>() as u64;
    // Finished chunks held until they are saved, up to the writer's limit.
    let held = (n_statements * n_poolings as u64 * layer_bytes)
        .min(4 * host_thread::hold_floats(Some(available)) as u64);
    let running = in_flight + token_states + chunk_rows * n_poolings as u64 * layer_bytes + held;
    // Assembling, one layer of every statement is held four times: being read and
    // put in order, queued, in the sidecar's hands and in the file writer's.
    let assembling = 4 * n_statements * n_poolings as u64 * shape.hidden * 4;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if running > available {
        bail!(
            "batches of up to {rows} statements ({tokens} tokens) at {} layers x {} hidden need about {:.1} GiB of host memory for their outputs, more than the {:.1} GiB available; lower --batch-size or --max-tokens",
            shape.layers,
            shape.hidden,
            gib(running),
            gib(available)
        );
    }
    if assembling > available {
        bail!(
            "assembling embeddings.parquet holds one layer of all {n_statements} statements a few times over: about {:.1} GiB at hidden {} x {n_poolings} pooling(s), more than the {:.1} GiB available; run it on a machine with more memory, or store fewer --poolings",
            gib(assembling),
            shape.hidden,
            gib(available)
        );
    }
    Ok(())
}

/// Refuses, before the model is loaded, a run whose files would not fit on the disk
/// (see [`DiskEstimate`]), less what `.partial` already holds from an earlier run.
fn check_disk(
    cache_dir: &Path,
    data: &Dataset,
    ids: &[u32],
    model: &ModelDir,
    n_poolings: usize,
) -> Result<()> {
    let Some(free) = schemas::available_disk(cache_dir) else {
        return Ok(());
    };
    let estimate = DiskEstimate::of(data, ids, model, n_poolings);
    estimate.fits(cache_dir, free, dir_bytes(&cache_dir.join(".partial")))
}

/// What a run writes: its embeddings and its compact statistics (the smaller form of
/// each category, as `grams.parquet` keeps it), in bytes, estimated from the shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskEstimate {
    pub embeddings: u64,
    pub sidecar: u64,
}

impl DiskEstimate {
    /// For the statements `ids` of `data` through `model`'s shape.
    pub fn of(data: &Dataset, ids: &[u32], model: &ModelDir, n_poolings: usize) -> Self {
        let (layers, hidden) = (
            u64::from(model.export.n_layers) + 1,
            model.export.hidden_size as usize,
        );
        let mut pairs: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in ids {
            let s = &data.statements[i as usize];
            if s.side == Side::A {
                *pairs.entry(s.category.as_str()).or_default() += 1;
            }
        }
        let sidecar_layer: u64 = pairs
            .values()
            .map(|&n| {
                let n64 = n as u64;
                // The statement geometry: four float64 per statement, and the layer's
                // mean on a row kept as vectors.
                let geometry = 8 * n64 * 8;
                geometry
                    + if schemas::gram::keeps_vectors(n, hidden) {
                        2 * n64 * hidden as u64 * 4 + hidden as u64 * 8
                    } else {
                        (n64 * (n64 + 1) + n64 * n64) * 8
                    }
            })
            .sum();
        DiskEstimate {
            // float32 values and each row's statement id and layer.
            embeddings: ids.len() as u64 * layers * n_poolings as u64 * (hidden as u64 * 4 + 8),
            sidecar: sidecar_layer * layers * n_poolings as u64,
        }
    }

    /// The peak on disk: the embeddings twice (written as chunks under `.partial`,
    /// then assembled; the chunks go once the cache is complete) and the sidecar.
    pub fn peak(&self) -> u64 {
        2 * self.embeddings + self.sidecar
    }

    /// Refuses where `free` bytes (with `written` already in `.partial`) are less
    /// than the peak, naming the folder and the sizes.
    pub fn fits(&self, cache_dir: &Path, free: u64, written: u64) -> Result<()> {
        let need = self.peak().saturating_sub(written);
        if need > free {
            bail!(
                "{}: this run needs about {} of disk (embeddings {}, written first as chunks under .partial and then assembled, and the compact statistics {}), more than the {} free there; free some space or choose another --out",
                cache_dir.display(),
                bytes(need),
                bytes(self.embeddings),
                bytes(self.sidecar),
                bytes(free)
            );
        }
        Ok(())
    }
}

/// A size in the unit that shows its digits: GB down to 0.1 GB, then MB, then KB.
fn bytes(b: u64) -> String {
    let b = b as f64;
    match [(1e9, "GB"), (1e6, "MB")]
        .iter()
        .find(|(unit, _)| b >= 0.1 * unit)
    {
        Some((unit, name)) => format!("{:.1} {name}", b / unit),
        None => format!("{:.1} KB", b / 1e3),
    }
}

/// Bytes of the files directly in `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What [`work`] did.
/// Padded up front (a few bytes per token), so the device never waits for the host
/// between two batches.
fn pad_all(plan: &[Vec<Vec<usize>>], tokens: &[Vec<i64>]) -> Vec<Vec<Padded>> {
    plan.iter()
        .map(|chunk| {
            chunk
                .iter()
                .map(|group| {
                    let seqs: Vec<&[i64]> = group.iter().map(|&i| tokens[i].as_slice()).collect();
                    batch::pad(&seqs)
                })
                .collect()
        })
        .collect()
}

/// Runs every batch and queues its outputs for the writer, chunk by chunk; returns
/// the time spent inside the session.
fn feed(
    plan: Vec<Vec<Vec<usize>>>,
    padded: Vec<Vec<Padded>>,
    rt: &mut Runtime,
    fwd: &mut Forward,
    poolings: &[Pooling],
    queue: &SyncSender<Msg>,
) -> Result<Duration> {
    let mut forward = Duration::ZERO;
    for (chunk, batches) in plan.into_iter().zip(padded) {
        for (group, batch) in chunk.into_iter().zip(batches) {
            let t = Instant::now();
            let out = fwd.run(rt, batch, poolings)?;
            forward += t.elapsed();
            // A closed queue means the writer failed: its error is the one to report.
            if queue.send(Msg::Batch { group, out }).is_err() {
                return Ok(forward);
            }
        }
        if queue.send(Msg::EndChunk).is_err() {
            return Ok(forward);
        }
    }
    Ok(forward)
}

struct Work {
    host: HostTimes,
    n_resumed: usize,
    /// Seconds inside the session's run calls.
    forward: f64,
    /// Wall clock of the whole loop, until the last chunk was written.
    seconds: f64,
}

/// Runs the statements not yet done, chunk by chunk: the device here, the host's
/// reduction and writing on the writer thread behind a bounded queue.
#[allow(clippy::too_many_arguments)]
fn work(
    opts: &Options,
    data: &Dataset,
    model: &ModelDir,
    tokens: &[Vec<i64>],
    ids: &[u32],
    rt: &mut Runtime,
    fwd: &mut Forward,
    settings: &Settings,
    poolings: &[Pooling],
    partial: &mut Partial,
) -> Result<Work> {
    let done = partial.done();
    let n = ids.len();
    let todo: Vec<usize> = ids
        .iter()
        .filter(|i| !done.contains(i))
        .map(|&i| i as usize)
        .collect();
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let plan = batch::chunks(batch::plan(&todo, &lengths, opts.batching), n);
    let padded = pad_all(&plan, tokens);
    // The forward loop holds the runtime mutably, so the writer gets its own copy.
    let device_name = rt.device_name.clone();
    let host = Host {
        data,
        lengths: &lengths,
        poolings,
        model,
        settings,
        device_name: &device_name,
        save_every: opts.save_every,
        hold_floats: host_thread::hold_floats(schemas::available_memory()),
    };

    let t0 = Instant::now();
    let mut progress = Progress::new(n, done.len());
    let recycle = fwd.recycler();
    let (queue, from_device) = sync_channel::<Msg>(host_thread::QUEUE_DEPTH);
    let (forward, host_times) = std::thread::scope(|s| {
        let written = s.spawn(|| {
            host_thread::run(&host, from_device, partial, recycle, |n_run| {
                let rate = n_run as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                progress.update(done.len() + n_run, rate);
            })
        });
        let sent = feed(plan, padded, rt, fwd, poolings, &queue);
        drop(queue);
        let host_times = written
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (sent, host_times)
    });
    let host_times = host_times?;
    let forward = forward?;
    progress.finish();
    Ok(Work {
        host: host_times,
        n_resumed: done.len(),
        forward: forward.as_secs_f64(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` statements of 5 tokens in batches of `rows`, 30 chunks.
    fn plan(n: usize, rows: usize) -> (Vec<Vec<Vec<usize>>>, Vec<usize>) {
        let lengths = vec![5; n];
        let all: Vec<usize> = (0..n).collect();
        let batches = batch::plan(&all, &lengths, Batching::rows(rows));
        (batch::chunks(batches, n), lengths)
    }

    const WIDE: OutputShape = OutputShape {
        layers: 37,
        hidden: 5120,
        token_states: false,
    };

    #[test]
    fn what_fits_passes() {
        let (p, lengths) = plan(460, 32);
        memory_fits(&p, &lengths, WIDE, 3, 8 << 30).unwrap();
    }

    #[test]
    fn wide_batches_name_the_batch_flags() {
        let (p, lengths) = plan(460, 4096);
        let e = memory_fits(&p, &lengths, WIDE, 3, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--batch-size") && e.contains("host memory"),
            "{e}"
        );
    }

    /// Held chunks are capped, but assembling needs one layer of every statement:
    /// 100,000 statements at hidden 5120, 3 poolings, about 23 GiB.
    #[test]
    fn many_statements_name_the_assembly() {
        let (p, lengths) = plan(100_000, 32);
        let e = memory_fits(&p, &lengths, WIDE, 3, 16 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("assembling embeddings.parquet") && e.contains("100000 statements"),
            "{e}"
        );
    }

    /// A small disk's sizes show their digits ("0.0 GB ... the 0.0 GB free" said nothing).
    #[test]
    fn sizes_show_their_digits() {
        assert_eq!(bytes(2_345_000_000), "2.3 GB");
        assert_eq!(bytes(100_000_000), "0.1 GB");
        assert_eq!(bytes(99_000_000), "99.0 MB");
        assert_eq!(bytes(120_000), "0.1 MB");
        assert_eq!(bytes(12_300), "12.3 KB");
        assert_eq!(bytes(0), "0.0 KB");
    }
}
