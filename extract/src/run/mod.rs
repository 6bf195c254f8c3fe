//! Orchestration: check every input, prove parity on the probes, run the
//! statements chunk by chunk (resumable), assemble the cache, write the manifest.
//! Each step lives in a file of its own: [`options`] and [`preflight`] (the
//! checks), [`resume`] (the run's identity), [`manifest`], [`forward_loop`] with
//! its [`progress`], and [`summary`] (the closing lines); [`context`] is what they
//! share.

mod context;
mod forward_loop;
mod manifest;
pub mod options;
pub mod preflight;
mod progress;
pub(crate) mod resume;
pub mod summary;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use schemas::{Manifest, Pooling, Timings, MANIFEST_FILE};

use crate::inputs::batch::BatchPlan;
use crate::inputs::dataset::{self, Dataset};
use crate::inputs::tokenize::{self, TextTokenizer};
use crate::model::forward::Forward;
use crate::model::graph;
use crate::model::model_dir::{self, ModelDir};
use crate::model::probe;
use crate::model::runtime::{DeviceChoice, Runtime};
use crate::run::context::RunContext;
use crate::run::forward_loop::Work;
use crate::run::options::Options;
use crate::run::preflight::Created;
use crate::run::resume::Earlier;
use crate::run::summary::Summary;
use crate::store::assemble;
use crate::store::chunks::{self, Partial, Settings};

fn now() -> String {
    chrono::Local::now().to_rfc3339()
}

/// Runs the whole extraction.
pub fn run(opts: &Options) -> Result<Summary> {
    let poolings = opts.checked_poolings()?;
    let data = dataset::load(&opts.dataset)?;
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| model_dir::default_name(&opts.model));
    preflight::check_name(&name)?;
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
    preflight::check_outside_model(&opts.out, &cache_dir, &opts.model)?;
    preflight::check_root(&opts.out)?;
    preflight::check_partial(&cache_dir)?;
    let created = Created::before(&cache_dir);
    // Taken before anything slow (hashing the weights, creating the session), so a
    // second writer is refused at once.
    let lock = created.on_error(schemas::CacheLock::acquire(&cache_dir).map_err(Into::into))?;
    let result = run_locked(opts, &data, &name, &cache_dir, &poolings);
    // Leave nothing behind unless finished chunks are worth resuming.
    let result = if preflight::has_chunks(&cache_dir) {
        result
    } else {
        created.on_error(result)
    };
    drop(lock);
    let summary = result?;
    schemas::write_root_card(&opts.out)?;
    Ok(summary)
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
    let key = resume::run_key(opts, data, &model, poolings);
    // The statements this cache holds, by global id (= index into data.statements).
    let ids: Vec<u32> = match opts.shard {
        Some(shard) => shard.ids(data.statements.len()),
        None => (0..data.statements.len() as u32).collect(),
    };
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let verified = manifest_path.is_file();
    let mut earlier_start = None;
    if verified {
        // Hashed first: the manifest is compared with the files as they are now.
        let (hashed, seconds) = timed(|| model.verify_files());
        hashed?;
        timings.hashing = seconds;
        match resume::earlier_run(cache_dir, &key)? {
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
    let whole = BatchPlan::new(&all, &lengths, opts.batching, ids.len());
    preflight::check_memory(&whole, &lengths, &model, poolings.len())?;
    preflight::check_disk(cache_dir, data, &ids, &model, poolings.len())?;
    let mut rt = open_session(&model, opts.device, !verified, &mut timings)?;
    let settings = Settings {
        execution_provider: rt.provider.to_string(),
        batch_size: opts.batching.batch_size as u32,
        max_tokens: opts.batching.max_tokens.map(|t| t as u32),
    };
    let ctx = RunContext {
        opts,
        data,
        name,
        cache_dir,
        poolings,
        model: &model,
        tok: &tok,
        tokens: &tokens,
        ids: &ids,
        settings: &settings,
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
    let mut m = manifest::under_way(&ctx, &rt, &started)?;
    place.apply(&mut m.model);
    m.run.parity = Some(parity.clone());
    m.run.shard = opts.shard.map(|s| s.info(ids.len() as u32));
    schemas::write_manifest(&manifest_path, &m)?;

    let work = forward_loop::work(&ctx, &mut rt, &mut fwd, &mut partial)
        .inspect_err(|_| save_held(&mut partial))?;
    finish(&ctx, partial, &mut m, &work, &mut timings, run_start)?;
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
    ctx: &RunContext,
    mut partial: Partial,
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
    let cache_dir = ctx.cache_dir;
    let t = Instant::now();
    let sidecar = assemble::from_chunks(&partial, cache_dir, ctx.ids, m)
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
