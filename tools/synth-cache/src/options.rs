//! What to write: the models, the dataset's shape, the poolings and what to plant,
//! as the command line gives them.

use std::path::PathBuf;
use std::sync::LazyLock;

use schemas::Pooling;

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

/// One model to write: `name:layers:hidden[:params]`.
#[derive(Clone)]
pub struct Spec {
    pub name: String,
    pub layers: u32,
    pub hidden: usize,
    /// The parameter count recorded as `model.n_parameters`.
    pub params: Option<u64>,
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
pub struct Massive {
    pub count: usize,
    pub scale: f64,
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

/// The command line's options (the binary flattens them into its parser).
#[derive(clap::Args)]
pub struct Options {
    /// Cache folder to write (one folder per model).
    #[arg(long)]
    pub out: PathBuf,
    /// Models as name:layers:hidden[:params], comma-separated (default: the four Pythia shapes).
    #[arg(long, value_delimiter = ',', value_parser = parse_spec, default_value = DEFAULT_MODELS.as_str())]
    pub models: Vec<Spec>,
    /// Pairs per category, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "30,20,50,50,50,30")]
    pub categories: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_delimiter = ',', default_value = Pooling::LIST)]
    pub poolings: Vec<Pooling>,
    /// Names the synthetic dataset (part of its sha256).
    #[arg(long, default_value = "synthetic-v1")]
    pub dataset_tag: String,
    /// Leave n_parameters out of the manifests (analyze then orders by n_layers·hidden²).
    #[arg(long)]
    pub no_params: bool,
    /// Plant massive activations: count:scale (e.g. 3:3000), in every layer after the first.
    #[arg(long, value_parser = parse_massive)]
    pub massive: Option<Massive>,
    /// Plant a rogue dimension around this depth (a fraction, e.g. 0.6) that makes the
    /// raw cosines follow the statements' norms there.
    #[arg(long)]
    pub rogue: Option<f64>,
    /// Grid mode: training steps, comma-separated; one cache per (model, step),
    /// named NAME-stepN, with series, size, revision and step in its manifest.
    #[arg(long, value_delimiter = ',')]
    pub steps: Option<Vec<u64>>,
    /// Grid mode: the step from which the |r| peak sits at its final depth; before
    /// it the peak lies 40 to 25 points deeper [default: the middle listed step].
    #[arg(long)]
    pub settle_step: Option<u64>,
    /// Leave out the sidecar (grams.parquet), as in a cache made before extract wrote it.
    #[arg(long, conflicts_with = "sidecar_only")]
    pub no_grams: bool,
    /// Write statements, grams.parquet and the manifest only, no embeddings.parquet
    /// (a sidecar-only cache): the sidecar is computed from the same float32 vectors
    /// the embeddings would hold, so a grid of caches fits on disk.
    // `--compact-only`, the old spelling, still works for old scripts.
    #[arg(long, alias = "compact-only")]
    pub sidecar_only: bool,
    /// Plant one leverage category: category 0's latent preference becomes K and every
    /// other's 0, so that one point far from a cluster makes r (the influence flags' tests)
    #[arg(long, value_name = "K")]
    pub leverage: Option<f64>,
    /// Plant a flat layer profile: the same side coefficient at every layer, so r is
    /// about equal at every depth and no peak can be placed (the plateau's tests).
    #[arg(long, conflicts_with = "steps")]
    pub flat: bool,
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
