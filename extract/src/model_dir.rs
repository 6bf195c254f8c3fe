//! The ONNX model directory made by `scripts/export`: `model.onnx` (maybe with
//! external data), `tokenizer.json`, `config.json` and `export.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const EXPORT_FORMAT: &str = "ua-export/1";
pub const INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
pub const OUTPUTS: [&str; 2] = ["hidden_states", "token_logprobs"];

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
    /// sha256 of every file export.json lists, by name (external weights included).
    pub files: BTreeMap<String, String>,
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
    /// Checks the directory's files against `export.json` and hashes the graph and tokenizer.
    pub fn open(dir: &Path) -> Result<ModelDir> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let export_path = require(dir, "export.json")?;
        let onnx = require(dir, "model.onnx")?;
        let tokenizer = require(dir, "tokenizer.json")?;
        require(dir, "config.json")?;
        let text = std::fs::read_to_string(&export_path)
            .with_context(|| format!("cannot read {}", export_path.display()))?;
        let export: ExportInfo = serde_json::from_str(&text).map_err(|e| {
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
        for (want, have, what) in [
            (&INPUTS[..], &export.inputs, "inputs"),
            (&OUTPUTS[..], &export.outputs, "outputs"),
        ] {
            if !have.is_empty() && have.iter().map(String::as_str).ne(want.iter().copied()) {
                bail!(
                    "{}: {what} are {have:?} but extract needs {want:?}",
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
        })
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
/// graph. Returns the sha256 of each listed file, by name.
fn check_files(
    dir: &Path,
    export_path: &Path,
    export: &ExportInfo,
) -> Result<BTreeMap<String, String>> {
    let reexport = "re-export with scripts/export";
    if let Some(missing) = REQUIRED_FILES
        .iter()
        .find(|n| !export.files.contains_key(**n))
    {
        bail!(
            "{}: its 'files' lists no {missing}, so the model's files cannot be checked; {reexport}",
            export_path.display()
        );
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let weights =
            name.ends_with(".data") || name.ends_with(".onnx_data") || name.ends_with(".onnx");
        if weights && !export.files.contains_key(&name) {
            bail!(
                "{}: not listed in export.json's files, so it may come from another export; {reexport} or remove it",
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
        let sha =
            schemas::sha256_file(&p).with_context(|| format!("cannot read {}", p.display()))?;
        if !info.sha256.eq_ignore_ascii_case(&sha) {
            bail!("{}: sha256 differs from export.json: the file was altered or comes from another export; {reexport}", p.display());
        }
        hashes.insert(name.clone(), sha);
    }
    Ok(hashes)
}

/// `config.json` must describe the same model as `export.json`. Looked up at the
/// top level, then under `text_config` (multimodal families such as Gemma 3).
fn check_config(config_path: &Path, export_path: &Path, export: &ExportInfo) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", config_path.display()))?;
    let lookup = |keys: &[&str]| -> Option<u64> {
        [Some(&config), config.get("text_config")]
            .into_iter()
            .flatten()
            .find_map(|c| keys.iter().find_map(|k| c.get(*k).and_then(|v| v.as_u64())))
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
        if let Some(have) = lookup(keys) {
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
