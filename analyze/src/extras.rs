//! Manifest keys newer than the `schemas` structs this build may know
//! (`model.files`, `dataset.statements_sha256`), read from the raw JSON so that
//! caches with and without them are both understood; older caches lack them.

use std::path::Path;

use anyhow::{anyhow, Result};
use serde_json::Value;

/// The optional newer keys of one manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    /// `model.files`: the model directory's files and their hashes, as recorded.
    pub model_files: Option<Value>,
    /// `dataset.statements_sha256`: digest over (statement_id, text), see `digest`.
    pub statements_sha256: Option<String>,
}

/// Reads the newer keys of `manifest.json` in `dir` (already validated by `schemas`).
pub fn read(dir: &Path) -> Result<Extras> {
    let path = dir.join(schemas::MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not a valid cache manifest: {e}", path.display()))?;
    from_value(&v).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn from_value(v: &Value) -> std::result::Result<Extras, String> {
    let model_files = match v.pointer("/model/files") {
        None | Some(Value::Null) => None,
        Some(f) => Some(f.clone()),
    };
    let statements_sha256 = match v.pointer("/dataset/statements_sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("dataset.statements_sha256 is not a string".into()),
    };
    Ok(Extras {
        model_files,
        statements_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_keys_are_none() {
        let e = from_value(&json!({"model": {}, "dataset": {}})).unwrap();
        assert_eq!(e, Extras::default());
        let e =
            from_value(&json!({"model": {"files": null}, "dataset": {"statements_sha256": null}}))
                .unwrap();
        assert_eq!(e, Extras::default());
    }

    #[test]
    fn present_keys_are_read() {
        let e = from_value(&json!({
            "model": {"files": {"model.onnx": "ab"}},
            "dataset": {"statements_sha256": "cd"}
        }))
        .unwrap();
        assert_eq!(e.model_files, Some(json!({"model.onnx": "ab"})));
        assert_eq!(e.statements_sha256.as_deref(), Some("cd"));
        assert!(from_value(&json!({"dataset": {"statements_sha256": 3}})).is_err());
    }
}
