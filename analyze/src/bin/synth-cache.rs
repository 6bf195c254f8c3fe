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
//! float32 arithmetic shows in the sixth digit of r.
//!
//! `synth-cache --help` lists the options.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use rayon::prelude::*;
use schemas::{
    write_manifest, write_statements, DatasetInfo, EmbeddingsWriter, Manifest, ModelInfo, Pooling,
    RunInfo, Side, StatementRow, EMBEDDINGS_FILE, MANIFEST_FILE, SCHEMA_VERSION, STATEMENTS_FILE,
};

const DEFAULT_MODELS: &str = "pythia-410m:24:1024:405334016,pythia-1.4b:24:2048:1414647808,pythia-6.9b:32:4096:6857302016,pythia-12b:36:5120:11846072320";

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
    #[arg(long, value_delimiter = ',', value_parser = parse_spec, default_value = DEFAULT_MODELS)]
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
    /// Leave out the compact statistics (grams.parquet), as in a cache made before extract wrote them.
    #[arg(long)]
    no_grams: bool,
}

/// A stand-in for the sha256 of model.onnx: sha256 of the model's spec and seed.
fn model_hash(spec: &Spec, seed: u64) -> String {
    use sha2::{Digest, Sha256};
    let text = format!(
        "synthetic|{}|{}|{}|{seed}",
        spec.name, spec.layers, spec.hidden
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.no_params {
        for m in &mut args.models {
            m.params = None;
        }
    }
    let cat_names: Vec<String> = (0..args.categories.len())
        .map(|c| format!("category_{c}"))
        .collect();
    let n_pairs: usize = args.categories.iter().sum();
    let dataset_sha = {
        use std::fmt::Write;
        let desc = format!("{}|{:?}|{}", args.dataset_tag, args.categories, args.seed);
        let mut h = 0u64;
        let mut s = String::new();
        for (i, b) in desc.bytes().enumerate() {
            h = stream(&[h, b as u64, i as u64]);
        }
        for k in 0..4 {
            let _ = write!(s, "{:016x}", stream(&[h, k]));
        }
        s
    };
    // Latent per-category preference, shared by every model (same dataset).
    let mut s = stream(&[args.seed, 1]);
    let latent: Vec<f64> = args.categories.iter().map(|_| normal(&mut s)).collect();

    for (mi, spec) in args.models.iter().enumerate() {
        let dir = args.out.join(&spec.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let mseed = stream(&[args.seed, 100 + mi as u64]);
        // Statements: pairs in category order, A then B.
        let mut rows = Vec::new();
        let mut cat_of = Vec::new();
        let mut s = stream(&[mseed, 2]);
        let mut cat_pref = vec![0.0; args.categories.len()];
        for (c, &n) in args.categories.iter().enumerate() {
            for i in 0..n {
                let nll_a = 3.0 + 0.4 * normal(&mut s);
                let pref = 0.5 * latent[c] + 0.7 * normal(&mut s);
                cat_pref[c] += pref / n as f64;
                for (side, nll) in [(Side::A, nll_a), (Side::B, nll_a + pref)] {
                    let n_tokens = 6 + (splitmix(&mut s) % 15) as u32;
                    rows.push(StatementRow {
                        statement_id: rows.len() as u32,
                        category: cat_names[c].clone(),
                        pair_index: i as u32,
                        side,
                        text: format!(
                            "synthetic statement {} of {} side {}",
                            i,
                            cat_names[c],
                            side.as_str()
                        ),
                        n_tokens,
                        nll_sum: nll * f64::from(n_tokens - 1),
                        n_predicted: n_tokens - 1,
                    });
                    cat_of.push(c);
                }
            }
        }
        let st_entry = write_statements(&dir.join(STATEMENTS_FILE), &rows)?;
        let hidden = spec.hidden;
        let u = unit_vector(hidden, stream(&[mseed, 3]));
        let dirs: Vec<[Vec<f64>; 2]> = (0..args.categories.len())
            .map(|c| {
                [
                    unit_vector(hidden, stream(&[mseed, 4, c as u64, 0])),
                    unit_vector(hidden, stream(&[mseed, 4, c as u64, 1])),
                ]
            })
            .collect();
        let center = 0.3 + 0.04 * mi as f64;
        let n = rows.len();
        let ids: Vec<u32> = (0..n as u32).collect();
        let mut writer =
            EmbeddingsWriter::create(&dir.join(EMBEDDINGS_FILE), hidden, &args.poolings)?;
        let sigma = 1.2 / (hidden as f64).sqrt();
        for layer in 0..=spec.layers {
            let t = f64::from(layer) / f64::from(spec.layers);
            let k =
                (-((t - center) / 0.12).powi(2)).exp() - 0.8 * (-((t - 0.85) / 0.12).powi(2)).exp();
            let blocks: Vec<Vec<f32>> = args
                .poolings
                .par_iter()
                .map(|&p| {
                    let mut block = vec![0f32; n * hidden];
                    block
                        .par_chunks_mut(hidden)
                        .enumerate()
                        .for_each(|(i, out)| {
                            let c = cat_of[i];
                            let side = i % 2;
                            let sign = if side == 0 { 1.0 } else { -1.0 };
                            let a = (0.8 + sign * 0.5 * k * cat_pref[c]).max(0.05);
                            let mut base = stream(&[mseed, 5, i as u64]);
                            let mut lay = stream(&[mseed, 6, i as u64, u64::from(layer), p as u64]);
                            let (w_base, w_layer, scale) = match p {
                                Pooling::MeanSkipFirst => (0.8, 0.6, 1.0),
                                Pooling::Mean => (0.8, 0.7, 1.0),
                                Pooling::Last => (0.5, 1.2, 0.6),
                            };
                            let v = &dirs[c][side];
                            for d in 0..hidden {
                                let noise = w_base * normal(&mut base) + w_layer * normal(&mut lay);
                                out[d] = (scale * (u[d] + a * v[d]) + sigma * noise) as f32;
                            }
                            if let Some(m) = args.massive.filter(|_| layer > 0) {
                                // Fixed dimensions (the first `count`), about `scale`,
                                // varying by 1% between statements.
                                for o in out.iter_mut().take(m.count) {
                                    *o = (m.scale * (1.0 + 0.01 * normal(&mut lay))) as f32;
                                }
                            }
                        });
                    block
                })
                .collect();
            writer.write_layer(layer, &ids, blocks)?;
        }
        let emb_entry = writer.finish()?;
        let now = chrono::Local::now().to_rfc3339();
        let mut manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            complete: true,
            model: ModelInfo {
                id: format!("synthetic/{}", spec.name),
                revision: None,
                display_name: spec.name.clone(),
                n_layers: spec.layers,
                hidden_size: hidden as u32,
                n_parameters: spec.params,
                dtype: "float32".into(),
                // Each synthetic model gets its own "weights" hash, as real ones do, so
                // that analyze's duplicate check sees a copied folder as a copy.
                onnx_sha256: model_hash(spec, args.seed),
                tokenizer_sha256: "0".repeat(64),
                files: Default::default(),
                adds_bos: Some(false),
            },
            dataset: DatasetInfo {
                path: format!("synthetic:{}", args.dataset_tag),
                sha256: dataset_sha.clone(),
                categories: cat_names.clone(),
                n_pairs: n_pairs as u32,
                n_statements: n as u32,
                statements_sha256: Some(schemas::statements_digest(
                    rows.iter().map(|r| (r.statement_id, r.text.as_str())),
                )),
            },
            run: RunInfo {
                tool: format!(
                    "synth-cache {} (seed {})",
                    env!("CARGO_PKG_VERSION"),
                    args.seed
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
            },
            files: [
                (STATEMENTS_FILE.to_string(), st_entry),
                (EMBEDDINGS_FILE.to_string(), emb_entry),
            ]
            .into_iter()
            .collect(),
            grams: None,
        };
        if !args.no_grams {
            schemas::add_grams(&dir, &mut manifest)?;
        }
        write_manifest(&dir.join(MANIFEST_FILE), &manifest)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}
