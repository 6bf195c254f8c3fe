//! The root card: `README.md` in a cache root, beside the model folders. Its YAML
//! front matter names one `datasets` config per complete model folder (config name =
//! folder name, data file = that folder's `statements.parquet`), so the root lists
//! its own models: `analyze --cache URL` reads the list where a web server lists no
//! folders, and `datasets.load_dataset(root, NAME)` loads any model's statements.
//!
//! extract, `extract merge` and `analyze index` rewrite it from the folders on disk
//! under the root lock after every run, so it is never hand-kept.

use std::fmt::Write as _;
use std::path::Path;

use crate::lock::CacheLock;
use crate::write::{remove_temp_files, write_text};
use crate::{CacheError, CARD_FILE, MANIFEST_FILE, STATEMENTS_FILE};

/// The root card's text for these model folders (sorted).
pub fn root_card_text(models: &[(String, String)]) -> String {
    let mut s = String::from("---\nconfigs:\n");
    for (folder, _) in models {
        // JSON strings are YAML double-quoted scalars: any folder name stays one value.
        let name = serde_json::to_string(folder).expect("a string serialises");
        let path = serde_json::to_string(&format!("{folder}/{STATEMENTS_FILE}"))
            .expect("a string serialises");
        let _ = write!(
            s,
            "- config_name: {name}\n  data_files:\n  - split: train\n    path: {path}\n"
        );
    }
    s.push_str("tags:\n- interpretability\n- ua-scaling\n---\n\n# A ua-scaling cache root\n\n");
    let _ = writeln!(
        s,
        "{} model caches, one folder each (its own `README.md` and `manifest.json` describe it). \
         The configs above name every complete model folder; `analyze --cache URL` reads them \
         when `--models` is not given. extract rewrites this card after every run.\n",
        models.len()
    );
    s.push_str("| folder | model |\n|---|---|\n");
    for (folder, id) in models {
        let _ = writeln!(s, "| {folder} | `{id}` |");
    }
    s
}

/// The model folders a root card lists: the `config_name` of every entry of its
/// front matter's `configs`, in order. `None` when the text has no front matter
/// with `configs`.
pub fn listed_models(text: &str) -> Option<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let front = text.strip_prefix("---\n")?;
    let front = &front[..front.find("\n---")?];
    let (mut in_configs, mut has_configs) = (false, false);
    let mut names = Vec::new();
    for line in front.lines() {
        if !line.starts_with([' ', '-']) {
            in_configs = line.trim_end() == "configs:";
            has_configs |= in_configs;
            continue;
        }
        let item = line.trim_start_matches([' ', '-']);
        if let (true, Some(value)) = (in_configs, item.strip_prefix("config_name:")) {
            names.push(yaml_scalar(value.trim()));
        }
    }
    has_configs.then_some(names)
}

/// A YAML scalar as written by hand or by us: double-quoted (JSON escapes),
/// single-quoted (`''` for a quote) or plain.
fn yaml_scalar(v: &str) -> String {
    if v.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(v) {
            return s;
        }
    }
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.replace("''", "'");
    }
    v.to_string()
}

/// The complete, whole (not shard) model folders of `root`, with each model's id.
fn complete_models(root: &Path) -> Result<Vec<(String, String)>, CacheError> {
    let entries =
        std::fs::read_dir(root).map_err(|e| CacheError::new(root, format!("cannot list: {e}")))?;
    let mut models = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        // Only the fields the listing needs, so a folder of another contract version,
        // or no cache at all, is left out rather than stopping the listing.
        let Ok(text) = std::fs::read_to_string(entry.path().join(MANIFEST_FILE)) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let shard = m.pointer("/run/shard").is_some_and(|s| !s.is_null());
        if m["complete"] == true && !shard {
            let id = m
                .pointer("/model/id")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            models.push((name, id.to_string()));
        }
    }
    models.sort();
    Ok(models)
}

/// Rewrites `root/README.md` from the model folders now in `root`, under the root
/// lock; returns how many it lists.
pub fn write_root_card(root: &Path) -> Result<usize, CacheError> {
    let _lock = CacheLock::root(root)?;
    // Under the root lock, a temp file in the root can only be a card whose writer
    // was killed (a model folder's temp files lie in that folder).
    remove_temp_files(root)?;
    let models = complete_models(root)?;
    write_text(&root.join(CARD_FILE), &root_card_text(&models))?;
    Ok(models.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_reads_back_what_was_written() {
        let models = vec![
            ("a".to_string(), "org/a".to_string()),
            ("b c \"d\"".to_string(), "org/b".to_string()),
        ];
        let text = root_card_text(&models);
        assert_eq!(
            listed_models(&text).unwrap(),
            vec!["a".to_string(), "b c \"d\"".to_string()]
        );
        assert_eq!(
            listed_models(&root_card_text(&[])).unwrap(),
            Vec::<String>::new()
        );
        // Hand-written: plain and single-quoted names, configs not first, other keys.
        let hand = "---\nlicense: mit\nconfigs:\n- data_files: x\n  config_name: m1\n- config_name: 'it''s'\ntags:\n- config_name: not-a-model\n---\n";
        assert_eq!(listed_models(hand).unwrap(), vec!["m1", "it's"]);
        assert_eq!(listed_models("# a card without front matter\n"), None);
        assert_eq!(listed_models("---\nlicense: mit\n---\n"), None);
    }

    #[test]
    fn the_card_lists_complete_whole_models_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |dir: &str, json: &str| {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(MANIFEST_FILE), json).unwrap();
        };
        write(
            "done",
            r#"{"complete": true, "model": {"id": "org/m"}, "run": {}}"#,
        );
        write("running", r#"{"complete": false, "run": {}}"#);
        write(
            "shard",
            r#"{"complete": true, "run": {"shard": {"index": 0}}}"#,
        );
        write(".hidden", r#"{"complete": true, "run": {}}"#);
        write("broken", "{");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let killed = root.join("README.md.1234-0.tmp");
        std::fs::write(&killed, "half a card").unwrap();
        assert_eq!(write_root_card(root).unwrap(), 1);
        assert!(!killed.exists(), "a killed writer's temp file is removed");
        let text = std::fs::read_to_string(root.join(CARD_FILE)).unwrap();
        assert_eq!(listed_models(&text).unwrap(), vec!["done"]);
        assert!(text.contains("| done | `org/m` |"), "{text}");
    }
}
