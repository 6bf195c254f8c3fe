//! The dataset card: `README.md` beside the manifest. Its YAML front matter names
//! one `datasets` config per Parquet file, so `datasets.load_dataset(folder,
//! "statements")` loads a cache folder as it is and the folder can be uploaded to
//! the Hugging Face Hub unchanged; below it, a short summary for people, from the
//! manifest.
//!
//! The manifest lists the card in `files` with its sha256, for provenance. Readers
//! do not refuse an edited card: no number depends on it, and a card is what people
//! edit on the Hub.

use std::fmt::Write as _;
use std::path::Path;

use crate::write::write_text;
use crate::{CacheError, Manifest, EMBEDDINGS_FILE, GRAMS_FILE, SCHEMA_VERSION, STATEMENTS_FILE};

pub const CARD_FILE: &str = "README.md";
/// Where a reader of the card finds the contract (no public URL is known to the tool).
const CONTRACT_AT: &str = "schemas/CONTRACT.md in the ua-scaling repository";

/// The `datasets` config of each Parquet file the cache lists.
const CONFIGS: [(&str, &str); 3] = [
    ("statements", STATEMENTS_FILE),
    ("embeddings", EMBEDDINGS_FILE),
    ("grams", GRAMS_FILE),
];

/// The card's text for a manifest whose data files are listed.
pub fn card_text(m: &Manifest) -> String {
    let mut s = String::from("---\nconfigs:\n");
    for (config, file) in CONFIGS {
        if m.files.contains_key(file) {
            let _ = write!(
                s,
                "- config_name: {config}\n  data_files:\n  - split: train\n    path: {file}\n"
            );
        }
    }
    s.push_str("tags:\n- interpretability\n- ua-scaling\n---\n\n");
    let _ = writeln!(s, "# {}: a ua-scaling cache\n", m.model.display_name);
    s.push_str(
        "Per-layer pooled hidden states and per-statement NLLs of one model over one \
         statement dataset, written by `extract` of ua-scaling.\n\n",
    );
    s.push_str("| | |\n|---|---|\n");
    let revision = m.model.revision.as_deref().unwrap_or("not recorded");
    let rows: [(&str, String); 9] = [
        (
            "model",
            format!("`{}` at revision `{revision}`", m.model.id),
        ),
        (
            "shape",
            format!(
                "{} layers (+ embeddings), hidden size {}",
                m.model.n_layers, m.model.hidden_size
            ),
        ),
        ("dtype", m.model.dtype.clone()),
        (
            "run",
            format!(
                "{} on {} (ONNX Runtime {})",
                m.run.execution_provider, m.run.device_name, m.run.onnxruntime_version
            ),
        ),
        (
            "dataset",
            format!("`{}`, sha256 `{}`", m.dataset.path, m.dataset.sha256),
        ),
        (
            "statements",
            format!(
                "{} ({} pairs in {} categories)",
                m.dataset.n_statements,
                m.dataset.n_pairs,
                m.dataset.categories.len()
            ),
        ),
        ("poolings", m.run.poolings.join(", ")),
        ("files", file_rows(m)),
        (
            "contract",
            format!("version {SCHEMA_VERSION}, defined in {CONTRACT_AT}"),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str(
        "\n`manifest.json` holds the full provenance and every file's sha256; the \
         `analyze` tool of ua-scaling reads this folder as it is.\n",
    );
    s
}

fn file_rows(m: &Manifest) -> String {
    CONFIGS
        .iter()
        .filter_map(|(_, file)| {
            m.files
                .get(*file)
                .map(|e| format!("`{file}` {} rows", e.rows))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the card for `m` into `dir` (atomically) and lists it in `m.files`. Call it
/// after the data files are listed and before the manifest that says complete.
pub fn write_card(dir: &Path, m: &mut Manifest) -> Result<(), CacheError> {
    m.files.remove(CARD_FILE);
    let entry = write_text(&dir.join(CARD_FILE), &card_text(m))?;
    m.files.insert(CARD_FILE.to_string(), entry);
    Ok(())
}
