//! The ONNX model directory made by `scripts/export`: `model.onnx` (maybe with
//! external data), `tokenizer.json`, `config.json` and `export.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const EXPORT_FORMAT: &str = "ua-export/1";
pub const INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
/// The graph `scripts/export` writes by default: pooled in the graph.
pub const REDUCED_OUTPUTS: [&str; 3] = ["pooled", "nll_sum", "n_predicted"];
/// `scripts/export --token-states` and exports from before the reduction: every
/// token's hidden state, pooled on the host.
pub const TOKEN_STATE_OUTPUTS: [&str; 2] = ["hidden_states", "token_logprobs"];
const REEXPORT: &str = "re-export with scripts/export";

/// Which outputs the graph has, from `export.json`'s "outputs".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `pooled` float32 `[batch, n_layers+1, 3, hidden]` in the order of
    /// [`Pooling::ALL`](schemas::Pooling::ALL), `nll_sum` float32 `[batch]`,
    /// `n_predicted` int64 `[batch]`.
    Reduced,
    /// `hidden_states` `[n_layers+1, batch, seq, hidden]` in the model dtype and
    /// `token_logprobs` float32 `[batch, seq]`.
    TokenStates,
}

impl Layout {
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            Layout::Reduced => &REDUCED_OUTPUTS,
            Layout::TokenStates => &TOKEN_STATE_OUTPUTS,
        }
    }

    /// Exports older than export.json's "outputs" had only token states.
    fn of(outputs: &[String], export_path: &Path) -> Result<Layout> {
        let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
        match names.as_slice() {
            [] => Ok(Layout::TokenStates),
            n if n == REDUCED_OUTPUTS => Ok(Layout::Reduced),
            n if n == TOKEN_STATE_OUTPUTS => Ok(Layout::TokenStates),
            _ => bail!(
                "{}: outputs are {names:?} but extract reads {REDUCED_OUTPUTS:?} or {TOKEN_STATE_OUTPUTS:?}; {REEXPORT}",
                export_path.display()
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub model: String,
    #[serde(default)]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    pub sha256: String,
    pub bytes: u64,
}

/// transformers' outputs for one probe statement, recorded at export time.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    pub text: String,
    pub input_ids: Vec<i64>,
    pub nll: f64,
    /// `[n_layers + 1][hidden]` per pooling; absent ones are not compared.
    #[serde(default)]
    pub mean_skip_first: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    pub mean: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    pub last: Option<Vec<Vec<f32>>>,
    /// The same values from the same checkpoint in float64 (the truth the parity rule
    /// judges against); absent in older exports. Its `transformers_error` (what the
    /// rule recomputes from the two) is not read.
    #[serde(default)]
    pub float64: Option<Float64Probe>,
}

/// A probe's values from a float64 copy of the model, shaped as [`Probe`]'s.
#[derive(Debug, Clone, Deserialize)]
pub struct Float64Probe {
    pub nll: f64,
    #[serde(default)]
    pub mean_skip_first: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub mean: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub last: Option<Vec<Vec<f64>>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExportInfo {
    pub format: String,
    pub source: Source,
    pub dtype: String,
    #[serde(default)]
    pub device: Option<String>,
    pub n_layers: u32,
    pub hidden_size: u32,
    #[serde(default)]
    pub vocab_size: Option<u64>,
    pub max_positions: u64,
    #[serde(default)]
    pub n_parameters: Option<u64>,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The reduced graph's pooling axis, by name.
    #[serde(default)]
    pub pooled_order: Option<Vec<String>>,
    #[serde(default)]
    pub files: BTreeMap<String, FileInfo>,
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// Element type of the graph's `hidden_states`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
    pub export: ExportInfo,
    pub dtype: Dtype,
    pub onnx_sha256: String,
    pub tokenizer_sha256: String,
    /// sha256 of every file export.json lists, by name (external weights included),
    /// as export.json records them: [`ModelDir::verify_files`] proves them.
    pub files: BTreeMap<String, String>,
    pub layout: Layout,
}

fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "model directory {} lacks {name} (expected the output of scripts/export)",
            dir.display()
        );
    }
    Ok(p)
}

impl ModelDir {
    /// Checks the directory's files against `export.json`: present, listed, of the
    /// recorded size. Hashing them is [`ModelDir::verify_files`], which a fresh run
    /// does while ONNX Runtime loads the graph.
    pub fn open(dir: &Path) -> Result<ModelDir> {
        check_is_dir(dir)?;
        let export_path = require(dir, "export.json")?;
        let onnx = require(dir, "model.onnx")?;
        let tokenizer = require(dir, "tokenizer.json")?;
        require(dir, "config.json")?;
        let text = std::fs::read_to_string(&export_path)
            .with_context(|| format!("cannot read {}", export_path.display()))?;
        let export: ExportInfo = serde_json::from_str(without_bom(&text)).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid export description ({e})",
                export_path.display()
            )
        })?;
        if export.format != EXPORT_FORMAT {
            bail!(
                "{}: format '{}' but this extract reads '{EXPORT_FORMAT}'",
                export_path.display(),
                export.format
            );
        }
        let dtype = match export.dtype.as_str() {
            "float32" => Dtype::F32,
            "float16" => Dtype::F16,
            other => bail!(
                "{}: dtype '{other}' is not supported (float32 or float16)",
                export_path.display()
            ),
        };
        let have = &export.inputs;
        if !have.is_empty() && have.iter().map(String::as_str).ne(INPUTS) {
            bail!(
                "{}: inputs are {have:?} but extract needs {INPUTS:?}",
                export_path.display()
            );
        }
        let layout = Layout::of(&export.outputs, &export_path)?;
        if layout == Layout::Reduced {
            let want: Vec<&str> = schemas::Pooling::ALL.iter().map(|p| p.as_str()).collect();
            let have: Option<Vec<&str>> = export
                .pooled_order
                .as_ref()
                .map(|o| o.iter().map(String::as_str).collect());
            if have.as_ref() != Some(&want) {
                bail!(
                    "{}: pooled_order is {have:?} but extract reads the pooled output as {want:?}; {REEXPORT}",
                    export_path.display()
                );
            }
        }
        if export.n_layers == 0 || export.hidden_size == 0 {
            bail!(
                "{}: n_layers and hidden_size must be positive",
                export_path.display()
            );
        }
        if export.probes.is_empty() {
            bail!(
                "{}: holds no parity probes, so extract cannot check that model.onnx computes what transformers does; re-export with scripts/export, which records them",
                export_path.display()
            );
        }
        let files = check_files(dir, &export_path, &export)?;
        check_config(&dir.join("config.json"), &export_path, &export)?;
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            onnx,
            tokenizer,
            onnx_sha256: files["model.onnx"].clone(),
            tokenizer_sha256: files["tokenizer.json"].clone(),
            files,
            export,
            dtype,
            layout,
        })
    }

    /// Hashes every file export.json lists and compares it with the recorded sha256:
    /// the weights are what the probes were computed from.
    pub fn verify_files(&self) -> Result<()> {
        for (name, want) in &self.files {
            let p = self.dir.join(name);
            let sha =
                schemas::sha256_file(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if !want.eq_ignore_ascii_case(&sha) {
                bail!("{}: sha256 differs from export.json: the file was altered or comes from another export; {REEXPORT}", p.display());
            }
        }
        Ok(())
    }
}

/// The default cache name: the model directory's own name.
pub fn default_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

/// Files that `export.json` must list (with any external weights and, from newer
/// exports, `config.json`).
const REQUIRED_FILES: [&str; 2] = ["model.onnx", "tokenizer.json"];

/// Every file `export.json` lists must be present with its size and sha256, the
/// required ones must be listed, and no weights file may sit unlisted beside the
/// graph. Returns the recorded sha256 of each listed file, by name (lower case).
fn check_files(
    dir: &Path,
    export_path: &Path,
    export: &ExportInfo,
) -> Result<BTreeMap<String, String>> {
    if let Some(missing) = REQUIRED_FILES
        .iter()
        .find(|n| !export.files.contains_key(**n))
    {
        bail!(
            "{}: its 'files' lists no {missing}, so the model's files cannot be checked; {REEXPORT}",
            export_path.display()
        );
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let weights =
            name.ends_with(".data") || name.ends_with(".onnx_data") || name.ends_with(".onnx");
        if weights && !export.files.contains_key(&name) {
            bail!(
                "{}: not listed in export.json's files, so it may come from another export; {REEXPORT} or remove it",
                dir.join(&name).display()
            );
        }
    }
    let mut hashes = BTreeMap::new();
    for (name, info) in &export.files {
        let p = dir.join(name);
        let meta = std::fs::metadata(&p).map_err(|_| {
            anyhow::anyhow!(
                "model directory {} lacks {name} (listed in export.json)",
                dir.display()
            )
        })?;
        if meta.len() != info.bytes {
            bail!(
                "{}: {} bytes but export.json records {}: incomplete copy or a different export",
                p.display(),
                meta.len(),
                info.bytes
            );
        }
        hashes.insert(name.clone(), info.sha256.to_ascii_lowercase());
    }
    Ok(hashes)
}

/// `config.json` must describe the same model as `export.json`. Looked up at the
/// top level, then under `text_config` (multimodal families such as Gemma 3).
fn check_config(config_path: &Path, export_path: &Path, export: &ExportInfo) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(without_bom(&text))
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", config_path.display()))?;
    // The first of `keys` present; a value that is not a count (`"9"`, a string) is
    // refused, not passed over as if absent.
    let lookup = |keys: &[&str]| -> Result<Option<u64>> {
        let found = [Some(&config), config.get("text_config")]
            .into_iter()
            .flatten()
            .find_map(|c| keys.iter().find_map(|k| Some((*k, c.get(*k)?))));
        match found {
            None | Some((_, serde_json::Value::Null)) => Ok(None),
            Some((key, v)) => match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => bail!(
                    "{}: {key} is {v}, not a whole number; re-export with scripts/export",
                    config_path.display()
                ),
            },
        }
    };
    let pairs = [
        (
            "n_layers",
            u64::from(export.n_layers),
            &["num_hidden_layers", "n_layer"][..],
        ),
        (
            "hidden_size",
            u64::from(export.hidden_size),
            &["hidden_size", "n_embd"][..],
        ),
        (
            "max_positions",
            export.max_positions,
            &["max_position_embeddings", "n_positions"][..],
        ),
    ];
    for (what, want, keys) in pairs {
        if let Some(have) = lookup(keys)? {
            if have != want {
                bail!(
                    "{}: {what} is {want} but {} says {} = {have}: the two files describe different models; re-export with scripts/export",
                    export_path.display(),
                    config_path.display(),
                    keys[0]
                );
            }
        }
    }
    Ok(())
}

/// JSON text without the byte order mark an editor may put first (JSON has none).
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// `--model` must name the folder `scripts/export` wrote, not a file in it.
pub fn check_is_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        bail!(
            "--model {} is a file; name the model folder that scripts/export wrote (the one holding export.json)",
            dir.display()
        );
    }
    bail!("model directory {} does not exist", dir.display())
}
