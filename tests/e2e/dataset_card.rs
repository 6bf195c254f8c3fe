//! Every cache folder is a Hugging Face dataset as it is: the `README.md` card that
//! extract writes names one config per Parquet file, and the `datasets` package loads
//! each with the manifest's row counts (run offline, from the folder alone). The card
//! is listed in the manifest's `files` with its sha256; an edited card is not refused.

use std::path::Path;
use std::process::Command;

use e2e::{assert_ok, demo_dataset, extract_cpu, fixture, sha256};
use schemas::{Manifest, CARD_FILE, MANIFEST_FILE};

/// Loads `config` of the folder with `datasets` and prints its row count and columns.
const LOAD: &str = r#"
import sys
import datasets
d = datasets.load_dataset(sys.argv[1], sys.argv[2], split="train")
print(d.num_rows, ",".join(d.column_names))
"#;

fn load_with_datasets(dir: &Path, config: &str, hf_cache: &Path) -> (u64, String) {
    let out = Command::new("python3")
        .args(["-c", LOAD, dir.to_str().expect("utf-8 path"), config])
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", hf_cache)
        .output()
        .expect("python3 runs (scripts/test puts the project's .venv first on PATH)");
    assert!(
        out.status.success(),
        "datasets.load_dataset({}, {config:?}) failed (it needs the `datasets` package: scripts/test installs it into .venv):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("a line");
    let (rows, columns) = line.split_once(' ').expect("rows and columns");
    (rows.parse().expect("a row count"), columns.to_string())
}

#[test]
fn a_cache_folder_loads_with_datasets_and_lists_its_card() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = extract_cpu(&fixture("tiny-a"), &demo_dataset(), &cache, "tiny-a", &[]);
    assert_ok(&out, "extract tiny-a");
    let dir = cache.join("tiny-a");
    let m = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap();

    let card = m.files.get(CARD_FILE).expect("the card is listed in files");
    assert_eq!(card.sha256, sha256(&dir.join(CARD_FILE)));
    let text = std::fs::read_to_string(dir.join(CARD_FILE)).unwrap();
    assert!(text.starts_with("---\nconfigs:\n"), "{text}");
    assert!(
        text.contains(&m.dataset.sha256),
        "the card names the dataset's sha256"
    );

    for (config, file, columns) in [
        ("statements", "statements.parquet", "statement_id,category"),
        (
            "embeddings",
            "embeddings.parquet",
            "statement_id,layer,mean",
        ),
        ("grams", "grams.parquet", "layer,category"),
    ] {
        let (rows, found) = load_with_datasets(&dir, config, &tmp.path().join("hf-cache"));
        assert_eq!(
            rows, m.files[file].rows,
            "{config}: the manifest's row count"
        );
        assert!(found.starts_with(columns), "{config}: columns {found}");
    }

    // The root's card lists the model folder, and `datasets` loads its statements
    // from the root by the folder's name.
    let root_card = std::fs::read_to_string(cache.join(CARD_FILE)).unwrap();
    assert_eq!(schemas::listed_models(&root_card).unwrap(), vec!["tiny-a"]);
    let (rows, found) = load_with_datasets(&cache, "tiny-a", &tmp.path().join("hf-cache"));
    assert_eq!(rows, m.files["statements.parquet"].rows, "{root_card}");
    assert!(found.starts_with("statement_id,category"), "{found}");

    // Documentation, not data: people edit cards on the Hub, and no number depends on it.
    std::fs::write(
        dir.join(CARD_FILE),
        format!("{text}\nEdited by a collaborator.\n"),
    )
    .unwrap();
    let analysis = tmp.path().join("analysis");
    let res = e2e::run_analyze(&cache, &analysis, &["--bootstrap", "50"]);
    assert!(
        res.status.success(),
        "an edited card must not be refused: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn a_compact_only_card_names_no_embeddings() {
    let mut m: Manifest = serde_json::from_str(
        &std::fs::read_to_string(
            e2e::repo_root().join("tests/golden/demo-cache/tiny-a/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    m.files.remove("embeddings.parquet");
    let text = schemas::card_text(&m);
    assert!(text.contains("config_name: statements") && text.contains("config_name: grams"));
    assert!(!text.contains("embeddings.parquet"), "{text}");
}

/// A cache made before cards (and its sidecar) existed gets both from `analyze index`.
#[test]
fn analyze_index_gives_an_older_cache_its_card() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache/tiny-a");
    e2e::copy_dir(
        &e2e::repo_root().join("tests/golden/demo-cache/tiny-a"),
        &dir,
    );
    let mut m = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap();
    assert!(
        !m.files.contains_key(CARD_FILE),
        "made before cards existed"
    );
    m.files.remove(schemas::GRAMS_FILE);
    m.grams = None;
    schemas::write_manifest(&dir.join(MANIFEST_FILE), &m).unwrap();
    std::fs::remove_file(dir.join(schemas::GRAMS_FILE)).unwrap();

    let cache = tmp.path().join("cache");
    let out = e2e::run_cmd(
        &e2e::binary("analyze"),
        &["index", "--cache", cache.to_str().unwrap()],
    );
    assert_ok(&out, "analyze index");
    let m = Manifest::read(&dir.join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.files[CARD_FILE].sha256, sha256(&dir.join(CARD_FILE)));
    let text = std::fs::read_to_string(dir.join(CARD_FILE)).unwrap();
    assert!(text.contains("config_name: grams"), "{text}");
    let (rows, _) = load_with_datasets(&dir, "grams", &tmp.path().join("hf-cache"));
    assert_eq!(rows, m.files[schemas::GRAMS_FILE].rows);
}
