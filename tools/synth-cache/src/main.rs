//! `synth-cache`: writes a synthetic cache (through schemas' writers) with real
//! structure, deterministic from a seed, for tests and benchmarks.
//!
//! Each model gets a shared direction `u` and one direction per category and side.
//! A statement's vector at layer l is `u + a * v_{c,S} + noise`, where the side
//! coefficient `a` moves with the category's preference times a layer profile
//! `k(t)` (a bump at a model-dependent depth, a negative lobe near the top), so
//! UA correlates with preference positively mid-depth and negatively late.
//! With `--massive count:scale`, a few fixed dimensions carry values in the
//! thousands in every statement, as in trained LMs: cosines then sit near 1 and
//! float32 arithmetic shows in the sixth digit of r. With `--rogue DEPTH`, the
//! layers around DEPTH get one rogue dimension (a value about 50 times every other
//! part's norm, the same in every statement) while the planted directions give way
//! to noise scaled with each statement's side and pair preference: the raw cosines
//! then rank UA by those norms, which centring takes away, so the raw |r| peak sits at DEPTH and the
//! centred one at the planted profile's own peak (the geometry's robustness test).
//!
//! `synth-cache --help` lists the options.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use clap::Parser;
use rayon::prelude::*;
use schemas::{
    write_manifest, write_statements, DatasetInfo, EmbeddingsWriter, GramsWriter, Manifest,
    ModelInfo, Pooling, RunInfo, Side, StatementRow, EMBEDDINGS_FILE, MANIFEST_FILE,
    SCHEMA_VERSION, STATEMENTS_FILE,
};

/// The default `--models`: the Pythia sizes the seed studies, `pythia-SIZE:layers:hidden:params`,
/// from the one Pythia shape table (which the Python tools read too).
static DEFAULT_MODELS: LazyLock<String> = LazyLock::new(|| {
    pythia_study_models(include_str!("../../../python/uatools/pythia_shapes.json"))
});

fn pythia_study_models(table: &str) -> String {
    let t: serde_json::Value = serde_json::from_str(table).expect("pythia_shapes.json is JSON");
    let sizes = t["study_sizes"]
        .as_array()
        .expect("pythia_shapes.json: study_sizes");
    let specs: Vec<String> = sizes
        .iter()
        .map(|size| {
            let size = size.as_str().expect("pythia_shapes.json: a size label");
            let d = &t["sizes"][size];
            format!(
                "pythia-{size}:{}:{}:{}",
                d["num_hidden_layers"], d["hidden_size"], d["n_params"]
            )
        })
        .collect();
    specs.join(",")
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn stream(parts: &[u64]) -> u64 {
    let mut s = 0x1234_5678_9abc_def0u64;
    for &p in parts {
        s ^= p.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        splitmix(&mut s);
    }
    s
}

/// Approximately standard normal (Irwin–Hall of four 16-bit uniforms): fast and deterministic.
fn normal(state: &mut u64) -> f64 {
    let x = splitmix(state);
    let s: f64 = (0..4)
        .map(|k| ((x >> (16 * k)) & 0xffff) as f64 / 65535.0)
        .sum();
    (s - 2.0) * 3f64.sqrt()
}

fn unit_vector(hidden: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let v: Vec<f64> = (0..hidden).map(|_| normal(&mut s)).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

#[derive(Clone)]
struct Spec {
    name: String,
    layers: u32,
    hidden: usize,
    params: Option<u64>,
}

/// `name:layers:hidden[:params]`
fn parse_spec(m: &str) -> Result<Spec, String> {
    let f: Vec<&str> = m.split(':').collect();
    if !(3..=4).contains(&f.len()) {
        return Err(format!(
            "model spec '{m}' must be name:layers:hidden[:params]"
        ));
    }
    let num = |what: &str, v: &str| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("model spec '{m}': {what} '{v}' is not a whole number"))
    };
    Ok(Spec {
        name: f[0].to_string(),
        layers: num("layers", f[1])? as u32,
        hidden: num("hidden", f[2])? as usize,
        params: f.get(3).map(|p| num("params", p)).transpose()?,
    })
}

/// Massive activations as trained LMs have them: `count` fixed dimensions whose
/// value is about `scale` in every statement (`count:scale`).
#[derive(Clone, Copy)]
struct Massive {
    count: usize,
    scale: f64,
}

fn parse_massive(s: &str) -> Result<Massive, String> {
    let (c, v) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' must be count:scale, e.g. 3:3000"))?;
    let count = c.parse().map_err(|_| format!("'{c}' is not a count"))?;
    let scale: f64 = v.parse().map_err(|_| format!("'{v}' is not a number"))?;
    if !scale.is_finite() {
        return Err(format!("scale '{v}' must be finite"));
    }
    Ok(Massive { count, scale })
}

/// Writes a synthetic cache (one folder per model) with a planted UA–preference
/// structure, deterministic from --seed.
#[derive(Parser)]
#[command(
    name = "synth-cache",
    version,
    about = "Writes a synthetic cache with a planted UA-preference structure (tests and benchmarks)"
)]
struct Args {
    /// Cache folder to write (one folder per model).
    #[arg(long)]
    out: PathBuf,
    /// Models as name:layers:hidden[:params], comma-separated (default: the four Pythia shapes).
    #[arg(long, value_delimiter = ',', value_parser = parse_spec, default_value = DEFAULT_MODELS.as_str())]
    models: Vec<Spec>,
    /// Pairs per category, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "30,20,50,50,50,30")]
    categories: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mean,mean_skip_first,last"
    )]
    poolings: Vec<Pooling>,
    /// Names the synthetic dataset (part of its sha256).
    #[arg(long, default_value = "synthetic-v1")]
    dataset_tag: String,
    /// Leave n_parameters out of the manifests (analyze then orders by n_layers·hidden²).
    #[arg(long)]
    no_params: bool,
    /// Plant massive activations: count:scale (e.g. 3:3000), in every layer after the first.
    #[arg(long, value_parser = parse_massive)]
    massive: Option<Massive>,
    /// Plant a rogue dimension around this depth (a fraction, e.g. 0.6) that makes the
    /// raw cosines follow the statements' norms there.
    #[arg(long)]
    rogue: Option<f64>,
    /// Grid mode: training steps, comma-separated; one cache per (model, step),
    /// named NAME-stepN, with series, size, revision and step in its manifest.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<u64>>,
    /// Grid mode: the step from which the |r| peak sits at its final depth; before
    /// it the peak lies 40 to 25 points deeper [default: the middle listed step].
    #[arg(long)]
    settle_step: Option<u64>,
    /// Leave out the compact statistics (grams.parquet), as in a cache made before extract wrote them.
    #[arg(long, conflicts_with = "compact_only")]
    no_grams: bool,
    /// Write statements, grams.parquet and the manifest only, no embeddings.parquet
    /// (a compact-only cache): the sidecar is computed from the same float32 vectors
    /// the embeddings would hold, so a grid of caches fits on disk.
    #[arg(long)]
    compact_only: bool,
    /// Plant one leverage category: category 0's latent preference becomes K and every
    /// other's 0, so that one point far from a cluster makes r (the influence flags' tests)
    #[arg(long, value_name = "K")]
    leverage: Option<f64>,
    /// Plant a flat layer profile: the same side coefficient at every layer, so r is
    /// about equal at every depth and no peak can be placed (the plateau's tests).
    #[arg(long, conflicts_with = "steps")]
    flat: bool,
}

/// Where one cache sits in the grid: None in ladder mode.
#[derive(Clone, Copy)]
struct Checkpoint {
    step: u64,
    settle_step: u64,
}

/// Depth (fraction) of the positive bump of model `mi`'s layer profile: fixed in
/// ladder mode; in grid mode `drift` deeper before the settle step, moving from 0.40
/// to 0.25 as training goes on (always beyond the seed's 10-point threshold), and
/// at its final depth from the settle step on.
fn bump_center(mi: usize, checkpoint: Option<Checkpoint>) -> f64 {
    let fin = 0.3 + 0.04 * mi as f64;
    let drift = match checkpoint {
        Some(c) if c.step < c.settle_step => {
            0.40 - 0.15 * c.step as f64 / c.settle_step.max(1) as f64
        }
        _ => 0.0,
    };
    fin + drift
}

/// A stand-in for the sha256 of model.onnx: sha256 of the model's spec, seed and step.
fn model_hash(spec: &Spec, seed: u64, checkpoint: Option<Checkpoint>) -> String {
    use sha2::{Digest, Sha256};
    let step = checkpoint.map_or(String::new(), |c| format!("|step{}", c.step));
    let text = format!(
        "synthetic|{}|{}|{}|{seed}{step}",
        spec.name, spec.layers, spec.hidden
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What every cache of one run shares: the dataset.
struct Shared {
    cat_names: Vec<String>,
    n_pairs: usize,
    sha256: String,
    /// Latent per-category preference, shared by every model (same dataset).
    latent: Vec<f64>,
}

fn shared(args: &Args) -> Shared {
    use std::fmt::Write;
    let desc = format!("{}|{:?}|{}", args.dataset_tag, args.categories, args.seed);
    let mut h = 0u64;
    let mut sha256 = String::new();
    for (i, b) in desc.bytes().enumerate() {
        h = stream(&[h, b as u64, i as u64]);
    }
    for k in 0..4 {
        let _ = write!(sha256, "{:016x}", stream(&[h, k]));
    }
    let mut s = stream(&[args.seed, 1]);
    Shared {
        cat_names: (0..args.categories.len())
            .map(|c| format!("category_{c}"))
            .collect(),
        n_pairs: args.categories.iter().sum(),
        sha256,
        latent: match args.leverage {
            Some(k) => (0..args.categories.len())
                .map(|c| if c == 0 { k } else { 0.0 })
                .collect(),
            None => args.categories.iter().map(|_| normal(&mut s)).collect(),
        },
    }
}

/// The checkpoints to write per model: one without a step in ladder mode.
fn checkpoints(args: &Args) -> Result<Vec<Option<Checkpoint>>> {
    let Some(steps) = &args.steps else {
        return Ok(vec![None]);
    };
    if steps.is_empty() {
        anyhow::bail!("--steps lists no step");
    }
    let settle_step = args.settle_step.unwrap_or(steps[steps.len() / 2]);
    Ok(steps
        .iter()
        .map(|&step| Some(Checkpoint { step, settle_step }))
        .collect())
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.no_params {
        for m in &mut args.models {
            m.params = None;
        }
    }
    let shared = shared(&args);
    for (mi, spec) in args.models.iter().enumerate() {
        for checkpoint in checkpoints(&args)? {
            let dir = write_cache(&args, &shared, mi, spec, checkpoint)?;
            println!("wrote {}", dir.display());
        }
    }
    Ok(())
}

/// One cache: statements, embeddings, then the manifest.
fn write_cache(
    args: &Args,
    shared: &Shared,
    mi: usize,
    spec: &Spec,
    checkpoint: Option<Checkpoint>,
) -> Result<PathBuf> {
    let name = match checkpoint {
        Some(c) => format!("{}-step{}", spec.name, c.step),
        None => spec.name.clone(),
    };
    let dir = args.out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    // Ladder caches keep the streams they always had; checkpoints get their own.
    let mseed = match checkpoint {
        Some(c) => stream(&[args.seed, 100 + mi as u64, 1 + c.step]),
        None => stream(&[args.seed, 100 + mi as u64]),
    };
    let (rows, cat_of, prefs) = statements(args, shared, mseed);
    let st_entry = write_statements(&dir.join(STATEMENTS_FILE), &rows)?;
    let (profile, drive) = plant(mi, spec, checkpoint, args.flat, &cat_of, prefs);
    let planted = Planted::new(args, spec, mseed, profile, &cat_of, drive);
    let mut manifest = manifest(args, shared, spec, &name, &rows);
    manifest.model.onnx_sha256 = model_hash(spec, args.seed, checkpoint);
    if let Some(c) = checkpoint {
        place(&mut manifest.model, spec, c);
    }
    manifest.files.insert(STATEMENTS_FILE.to_string(), st_entry);
    if args.compact_only {
        schemas::add_compact_grams(&dir, &mut manifest, |layer| {
            Ok(args
                .poolings
                .iter()
                .copied()
                .zip(planted.layer(layer))
                .collect())
        })?;
    } else {
        // The sidecar streams from the vectors as they are written, as extract's does.
        let mut grams = (!args.no_grams)
            .then(|| GramsWriter::create(&dir, &manifest, &rows))
            .transpose()?;
        let entry = embeddings(&planted, &dir, grams.as_mut())?;
        manifest.files.insert(EMBEDDINGS_FILE.to_string(), entry);
        if let Some(grams) = grams {
            grams.finish(&mut manifest)?;
        }
    }
    write_manifest(&dir.join(MANIFEST_FILE), &manifest)?;
    Ok(dir)
}

/// The layer profile and what each statement's side coefficient follows. In grid
/// mode the peak must be the |r| peak of every step and of nearly every pair
/// resample, for the settling step's CI to find the planted one: no late lobe (r is
/// a correlation, so even a weak lobe can rival the bump in |r|), a narrower bump
/// (on a wide one r is near 1 over many layers and the resampled peak wanders among
/// them), and a side coefficient that follows each pair's own preference, so a
/// resample's UA follows its resampled preferences (with the category means it
/// would not, and a step's chance correlation at the other layers could win).
/// `--flat` (ladder mode only) makes the profile 1 at every depth.
fn plant(
    mi: usize,
    spec: &Spec,
    checkpoint: Option<Checkpoint>,
    flat: bool,
    cat_of: &[usize],
    prefs: Prefs,
) -> (Profile, Vec<f64>) {
    let center = bump_center(mi, checkpoint);
    match checkpoint {
        Some(_) => (
            Profile {
                center,
                // About 1.5 layer spacings: narrow, but never between two layers.
                width: (1.5 / f64::from(spec.layers)).clamp(0.06, 0.12),
                lobe: 0.0,
            },
            prefs.pair,
        ),
        None => (
            Profile {
                center,
                // Infinitely wide: k(t) = 1 at every depth.
                width: if flat { f64::INFINITY } else { 0.12 },
                lobe: if flat { 0.0 } else { 0.8 },
            },
            cat_of.iter().map(|&c| prefs.category[c]).collect(),
        ),
    }
}

/// Series and size as extract derives them from a model id (else `synthetic` and
/// the spec's name), the checkpoint's revision and step.
fn place(m: &mut ModelInfo, spec: &Spec, c: Checkpoint) {
    let (series, size) = schemas::checkpoint::series_and_size(&spec.name)
        .unwrap_or_else(|| ("synthetic".into(), spec.name.clone()));
    m.series = Some(series);
    m.size = Some(size);
    m.revision = Some(format!("step{}", c.step));
    m.step = Some(c.step);
}

/// Statements: pairs in category order, A then B; returns the rows, each row's
/// category and the preferences.
fn statements(args: &Args, shared: &Shared, mseed: u64) -> (Vec<StatementRow>, Vec<usize>, Prefs) {
    let mut rows = Vec::new();
    let mut cat_of = Vec::new();
    let mut s = stream(&[mseed, 2]);
    let mut prefs = Prefs {
        category: vec![0.0; args.categories.len()],
        pair: Vec::new(),
    };
    for (c, &n) in args.categories.iter().enumerate() {
        let cat = &shared.cat_names[c];
        for i in 0..n {
            let nll_a = 3.0 + 0.4 * normal(&mut s);
            let pref = 0.5 * shared.latent[c] + 0.7 * normal(&mut s);
            prefs.category[c] += pref / n as f64;
            for (side, nll) in [(Side::A, nll_a), (Side::B, nll_a + pref)] {
                let n_tokens = 6 + (splitmix(&mut s) % 15) as u32;
                rows.push(StatementRow {
                    statement_id: rows.len() as u32,
                    category: cat.clone(),
                    pair_index: i as u32,
                    side,
                    text: format!("synthetic statement {i} of {cat} side {}", side.as_str()),
                    n_tokens,
                    nll_sum: nll * f64::from(n_tokens - 1),
                    n_predicted: n_tokens - 1,
                });
                cat_of.push(c);
                prefs.pair.push(pref);
            }
        }
    }
    (rows, cat_of, prefs)
}

/// Mean preference per category, and each statement's pair preference.
struct Prefs {
    category: Vec<f64>,
    pair: Vec<f64>,
}

/// The layer profile `k(t)`: a bump of `width` at `center`, a negative lobe of
/// depth `lobe` at 0.85.
#[derive(Clone, Copy)]
struct Profile {
    center: f64,
    width: f64,
    lobe: f64,
}

impl Profile {
    fn at(self, t: f64) -> f64 {
        (-((t - self.center) / self.width).powi(2)).exp()
            - self.lobe * (-((t - 0.85) / 0.12).powi(2)).exp()
    }
}

/// One model's planted vectors: a statement's vector at layer l is
/// `u + a * v_{c,S} + noise`, with the side coefficient `a` following the layer
/// profile around its centre.
struct Planted<'a> {
    args: &'a Args,
    hidden: usize,
    layers: u32,
    mseed: u64,
    profile: Profile,
    u: Vec<f64>,
    /// Per category, the A and B directions.
    dirs: Vec<[Vec<f64>; 2]>,
    cat_of: &'a [usize],
    /// Per statement, the preference its side coefficient follows.
    drive: Vec<f64>,
}

impl<'a> Planted<'a> {
    fn new(
        args: &'a Args,
        spec: &Spec,
        mseed: u64,
        profile: Profile,
        cat_of: &'a [usize],
        drive: Vec<f64>,
    ) -> Self {
        let hidden = spec.hidden;
        let dirs = (0..args.categories.len())
            .map(|c| [0, 1].map(|side| unit_vector(hidden, stream(&[mseed, 4, c as u64, side]))))
            .collect();
        Planted {
            args,
            hidden,
            layers: spec.layers,
            mseed,
            profile,
            u: unit_vector(hidden, stream(&[mseed, 3])),
            dirs,
            cat_of,
            drive,
        }
    }

    /// One layer's `n_statements x hidden` matrix per pooling of `--poolings`.
    fn layer(&self, layer: u32) -> Vec<Vec<f32>> {
        let k = self.profile.at(f64::from(layer) / f64::from(self.layers));
        self.args
            .poolings
            .par_iter()
            .map(|&p| {
                let mut block = vec![0f32; self.cat_of.len() * self.hidden];
                block
                    .par_chunks_mut(self.hidden)
                    .enumerate()
                    .for_each(|(i, out)| self.statement(out, i, layer, p, k));
                block
            })
            .collect()
    }

    fn statement(&self, out: &mut [f32], i: usize, layer: u32, p: Pooling, k: f64) {
        let (mseed, hidden) = (self.mseed, self.hidden);
        let c = self.cat_of[i];
        let side = i % 2;
        let sign = if side == 0 { 1.0 } else { -1.0 };
        let a = (0.8 + sign * 0.5 * k * self.drive[i]).max(0.05);
        let mut base = stream(&[mseed, 5, i as u64]);
        let mut lay = stream(&[mseed, 6, i as u64, u64::from(layer), p as u64]);
        let (w_base, w_layer, scale) = match p {
            Pooling::MeanSkipFirst => (0.8, 0.6, 1.0),
            Pooling::Mean => (0.8, 0.7, 1.0),
            Pooling::Last => (0.5, 1.2, 0.6),
        };
        let sigma = 1.2 / (hidden as f64).sqrt();
        let (u, v) = (&self.u, &self.dirs[c][side]);
        let rogue = self.args.rogue.map_or(0.0, |depth| {
            (-((f64::from(layer) / f64::from(self.layers) - depth) / 0.08).powi(2)).exp()
        });
        if rogue < 1e-3 {
            for d in 0..hidden {
                let noise = w_base * normal(&mut base) + w_layer * normal(&mut lay);
                out[d] = (scale * (u[d] + a * v[d]) + sigma * noise) as f32;
            }
        } else {
            // The planted directions fade out; what is left, noise of mean about zero,
            // is scaled by the statement's side and preference. Raw cosines around the
            // rogue dimension rank UA by those norms; centred cosines of zero-mean noise
            // do not depend on its scale, so centring takes that signal away.
            let f = (1.0 + sign * 0.6 * rogue * self.drive[i]).max(0.1);
            for d in 0..hidden {
                let noise = w_base * normal(&mut base) + w_layer * normal(&mut lay);
                out[d] = ((1.0 - rogue) * scale * (u[d] + a * v[d]) + f * sigma * noise) as f32;
            }
            out[hidden - 1] += (50.0 * rogue) as f32;
        }
        if let Some(m) = self.args.massive.filter(|_| layer > 0) {
            // Fixed dimensions (the first `count`), about `scale`, varying by 1%
            // between statements.
            for o in out.iter_mut().take(m.count) {
                *o = (m.scale * (1.0 + 0.01 * normal(&mut lay))) as f32;
            }
        }
    }
}

/// Writes every layer of every pooling to `embeddings.parquet`, and to `grams` when given.
fn embeddings(
    planted: &Planted,
    dir: &std::path::Path,
    mut grams: Option<&mut GramsWriter>,
) -> Result<schemas::FileEntry> {
    let ids: Vec<u32> = (0..planted.cat_of.len() as u32).collect();
    let poolings = &planted.args.poolings;
    let mut writer =
        EmbeddingsWriter::create(&dir.join(EMBEDDINGS_FILE), planted.hidden, poolings)?;
    for layer in 0..=planted.layers {
        let vectors = planted.layer(layer);
        if let Some(grams) = grams.as_deref_mut() {
            let by_pooling: BTreeMap<Pooling, &Vec<f32>> =
                poolings.iter().copied().zip(&vectors).collect();
            grams.add_layer(layer, &by_pooling)?;
        }
        writer.write_layer(layer, &ids, vectors)?;
    }
    Ok(writer.finish()?)
}

/// The manifest of one cache, its files, model hash and grid place still to fill in.
fn manifest(
    args: &Args,
    shared: &Shared,
    spec: &Spec,
    name: &str,
    rows: &[StatementRow],
) -> Manifest {
    let now = chrono::Local::now().to_rfc3339();
    Manifest {
        schema_version: SCHEMA_VERSION,
        complete: true,
        model: ModelInfo {
            id: format!("synthetic/{}", spec.name),
            revision: None,
            display_name: name.to_string(),
            n_layers: spec.layers,
            hidden_size: spec.hidden as u32,
            n_parameters: spec.params,
            dtype: "float32".into(),
            // Filled with `model_hash`: each synthetic model gets its own "weights"
            // hash, as real ones do, so analyze's duplicate check sees a copy as one.
            onnx_sha256: String::new(),
            tokenizer_sha256: "0".repeat(64),
            files: Default::default(),
            adds_bos: Some(false),
            series: None,
            size: None,
            step: None,
        },
        dataset: DatasetInfo {
            path: format!("synthetic:{}", args.dataset_tag),
            sha256: shared.sha256.clone(),
            categories: shared.cat_names.clone(),
            n_pairs: shared.n_pairs as u32,
            n_statements: rows.len() as u32,
            statements_sha256: Some(schemas::statements_digest(
                rows.iter().map(|r| (r.statement_id, r.text.as_str())),
            )),
        },
        run: RunInfo {
            tool: format!(
                "synth-cache {} (seed {}{})",
                env!("CARGO_PKG_VERSION"),
                args.seed,
                if args.compact_only {
                    ", compact-only: vectors generated at the full hidden size, not stored"
                } else {
                    ""
                }
            ),
            onnxruntime_version: "none (synthetic)".into(),
            execution_provider: "synthetic".into(),
            device_name: "none".into(),
            batch_size: 0,
            max_tokens: None,
            poolings: args
                .poolings
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            started: now.clone(),
            finished: Some(now),
            parity: None,
            chunks: Vec::new(),
            shard: None,
            timings_s: None,
        },
        files: Default::default(),
        grams: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default models, read from the shape table, parse as `--models` does.
    #[test]
    fn the_default_models_are_the_tables_study_sizes() {
        let specs: Vec<Spec> = DEFAULT_MODELS
            .split(',')
            .map(|m| parse_spec(m).expect("a model spec"))
            .collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["pythia-410m", "pythia-1.4b", "pythia-6.9b", "pythia-12b"]
        );
        assert!(specs.iter().all(|s| s.layers > 0 && s.params.is_some()));
    }
}
