//! Writes a small cache through the contract's writers, reads it back, and checks
//! that validation refuses each kind of damage with a message naming the file.

use std::collections::BTreeMap;
use std::path::Path;

use schemas::*;

const HIDDEN: usize = 3;
const LAYERS: u32 = 2;

fn rows() -> Vec<StatementRow> {
    (0..4)
        .map(|i| StatementRow {
            statement_id: i,
            category: if i < 2 { "alpha" } else { "beta" }.to_string(),
            pair_index: 0,
            side: if i % 2 == 0 { Side::A } else { Side::B },
            text: format!("statement {i}"),
            n_tokens: 3 + i,
            nll_sum: 1.5 * f64::from(i + 1),
            n_predicted: 2 + i,
        })
        .collect()
}

fn vectors(layer: u32, n: usize) -> Vec<f32> {
    (0..n * HIDDEN)
        .map(|k| layer as f32 * 100.0 + k as f32)
        .collect()
}

fn write_cache(dir: &Path) -> Manifest {
    let poolings = [Pooling::MeanSkipFirst, Pooling::Last];
    let statements = rows();
    let ids: Vec<u32> = statements.iter().map(|r| r.statement_id).collect();
    let mut files = BTreeMap::new();
    files.insert(
        STATEMENTS_FILE.to_string(),
        write_statements(&dir.join(STATEMENTS_FILE), &statements).unwrap(),
    );
    let mut writer =
        EmbeddingsWriter::create(&dir.join(EMBEDDINGS_FILE), HIDDEN, &poolings).unwrap();
    for layer in 0..=LAYERS {
        let blocks = poolings.iter().map(|_| vectors(layer, ids.len())).collect();
        writer.write_layer(layer, &ids, blocks).unwrap();
    }
    files.insert(EMBEDDINGS_FILE.to_string(), writer.finish().unwrap());
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        complete: true,
        model: ModelInfo {
            id: "fixture/test".into(),
            revision: None,
            display_name: "test".into(),
            n_layers: LAYERS,
            hidden_size: HIDDEN as u32,
            n_parameters: Some(1000),
            dtype: "float32".into(),
            onnx_sha256: "0".repeat(64),
            tokenizer_sha256: "0".repeat(64),
            files: [("model.onnx".to_string(), "0".repeat(64))].into(),
            adds_bos: Some(false),
            series: Some("fixture".into()),
            size: Some("1k".into()),
            step: Some(1000),
        },
        dataset: DatasetInfo {
            path: "dataset.json".into(),
            sha256: "1".repeat(64),
            categories: vec!["alpha".into(), "beta".into()],
            n_pairs: 2,
            n_statements: 4,
            statements_sha256: None,
        },
        run: RunInfo {
            tool: "test".into(),
            poolings: poolings.iter().map(|p| p.to_string()).collect(),
            started: "2026-01-01T00:00:00Z".into(),
            finished: Some("2026-01-01T00:00:01Z".into()),
            ..Default::default()
        },
        files,
        grams: None,
    };
    write_manifest(&dir.join(MANIFEST_FILE), &manifest).unwrap();
    manifest
}

fn refusal(dir: &Path) -> String {
    validate_cache(dir)
        .expect_err("damaged cache must be refused")
        .to_string()
}

#[test]
fn a_written_cache_validates_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_cache(dir.path());
    let valid = validate_cache(dir.path()).unwrap();
    assert_eq!(valid.manifest, manifest);
    assert_eq!(read_statements(&valid.statements_path()).unwrap(), rows());
    let block = read_embeddings_layer(&valid.embeddings_path(), 2, &valid.poolings).unwrap();
    assert_eq!(block.layer, 2);
    assert_eq!(block.statement_ids, vec![0, 1, 2, 3]);
    assert_eq!(block.vectors[&Pooling::Last], vectors(2, 4));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn truncated_parquet_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path());
    let path = dir.path().join(EMBEDDINGS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = refusal(dir.path());
    assert!(
        msg.contains(EMBEDDINGS_FILE) && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn tampered_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = write_cache(dir.path());
    manifest.model.n_layers = 5;
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    let msg = refusal(dir.path());
    assert!(msg.contains(MANIFEST_FILE) && msg.contains("rows"), "{msg}");

    manifest.model.n_layers = LAYERS;
    manifest.files.get_mut(STATEMENTS_FILE).unwrap().sha256 = "f".repeat(64);
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    let msg = refusal(dir.path());
    assert!(
        msg.contains(STATEMENTS_FILE) && msg.contains("sha256"),
        "{msg}"
    );
}

#[test]
fn wrong_width_and_incomplete_and_missing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = write_cache(dir.path());
    manifest.model.hidden_size = 4;
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    let msg = refusal(dir.path());
    assert!(
        msg.contains(EMBEDDINGS_FILE) && msg.contains("contract says"),
        "{msg}"
    );

    manifest.model.hidden_size = HIDDEN as u32;
    manifest.complete = false;
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    assert!(refusal(dir.path()).contains("resume"));

    manifest.complete = true;
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    std::fs::remove_file(dir.path().join(STATEMENTS_FILE)).unwrap();
    let msg = refusal(dir.path());
    assert!(
        msg.contains(STATEMENTS_FILE) && msg.contains("missing"),
        "{msg}"
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(refusal(empty.path()).contains("not a model cache"));
}

/// Caches written before `model.files`, `adds_bos`, `series`, `size`, `step`,
/// `statements_sha256`, `parity` and `chunks` existed still read: the new keys are
/// optional, and a missing series, size or step reads as unknown.
#[test]
fn an_older_manifest_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_cache(dir.path());
    let path = dir.path().join(MANIFEST_FILE);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (section, key) in [
        ("model", "files"),
        ("model", "adds_bos"),
        ("model", "series"),
        ("model", "size"),
        ("model", "step"),
        ("dataset", "statements_sha256"),
        ("run", "max_tokens"),
        ("run", "parity"),
        ("run", "chunks"),
    ] {
        v[section].as_object_mut().unwrap().remove(key);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let read = validate_cache(dir.path()).unwrap().manifest;
    assert!(read.model.files.is_empty() && read.model.adds_bos.is_none());
    assert_eq!(
        (read.model.series, read.model.size, read.model.step),
        (None, None, None)
    );
    assert_eq!(read.files, manifest.files);
}

/// Temp files are unique per write and removable once their writer is gone.
#[test]
fn temp_files_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path());
    std::fs::write(dir.path().join("embeddings.parquet.999-0.tmp"), b"half").unwrap();
    assert_eq!(schemas::remove_temp_files(dir.path()).unwrap(), 1);
    validate_cache(dir.path()).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

/// The sidecar holds exactly the blocks `gram::category_gram` computes from the
/// embeddings, and a reader of it need not read the embeddings' bytes: a flipped
/// byte there passes `Scope::PreferGrams` (size and footer intact) but not `Full`.
#[test]
fn the_sidecar_reads_back_the_exact_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = write_cache(dir.path());
    add_sidecar(dir.path(), &mut manifest).unwrap();
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
    let valid = validate_cache_in(dir.path(), Scope::PreferGrams).unwrap();
    assert!(valid.grams_only);
    let cats = &manifest.dataset.categories;
    let entry = &manifest.files[GRAMS_FILE];
    let poolings = [Pooling::Last];
    let shape = GramsShape {
        categories: cats,
        pairs_per_category: &[1, 1],
        hidden: HIDDEN,
    };
    let read = read_grams(dir.path(), entry, &poolings, &[0, 2], &shape).unwrap();
    let m = vectors(2, 4);
    let want = gram::category_blocks(&m, HIDDEN, &[2], &[3]);
    assert_eq!(read[0][1][1], want);

    let path = dir.path().join(EMBEDDINGS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    validate_cache_in(dir.path(), Scope::PreferGrams).unwrap();
    assert!(refusal(dir.path()).contains("sha256"));
}

/// A sidecar-only cache (statements and sidecar, no embeddings) validates, holds the
/// blocks of the vectors it was written from, and says it has no embeddings; a
/// sidecar that names embeddings the manifest does not list is refused.
#[test]
fn a_sidecar_only_cache_validates_without_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = write_cache(dir.path());
    manifest.files.remove(EMBEDDINGS_FILE);
    std::fs::remove_file(dir.path().join(EMBEDDINGS_FILE)).unwrap();
    let n_poolings = manifest.run.poolings.len();
    add_sidecar_from_vectors(dir.path(), &mut manifest, |layer| {
        let poolings = [Pooling::MeanSkipFirst, Pooling::Last];
        Ok(poolings
            .into_iter()
            .map(|p| (p, vectors(layer, 4)))
            .collect())
    })
    .unwrap();
    assert_eq!(n_poolings, 2);
    assert_eq!(manifest.grams.as_ref().unwrap().embeddings_sha256, None);
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();

    for scope in [Scope::Full, Scope::PreferGrams] {
        let valid = validate_cache_in(dir.path(), scope).unwrap();
        assert!(valid.grams_only && !valid.has_embeddings());
        let err = valid.require_embeddings("export").unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("has no embeddings"),
            "{err}"
        );
    }
    let cats = &manifest.dataset.categories;
    let entry = &manifest.files[GRAMS_FILE];
    let shape = GramsShape {
        categories: cats,
        pairs_per_category: &[1, 1],
        hidden: HIDDEN,
    };
    let read = read_grams(dir.path(), entry, &[Pooling::Last], &[2], &shape).unwrap();
    let want = gram::category_blocks(&vectors(2, 4), HIDDEN, &[0], &[1]);
    assert_eq!(read[0][0][0], want);
    let err = validate_cache_in(dir.path(), Scope::WithoutGrams)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no embeddings"), "{err}");

    let mut named = manifest.clone();
    named.grams.as_mut().unwrap().embeddings_sha256 = Some("0".repeat(64));
    write_manifest(&dir.path().join(MANIFEST_FILE), &named).unwrap();
    let err = refusal(dir.path());
    assert!(
        err.contains("grams.parquet") && err.contains("lists no embeddings.parquet"),
        "{err}"
    );
}

/// What an editor does to a manifest is read as it was meant: a byte order mark
/// first, and sha256s in upper case (extract's check of the model files takes them
/// either way; this one said "the file or the manifest was altered").
#[test]
fn a_byte_order_mark_and_upper_case_hashes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_cache(dir.path());
    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let sha = &manifest.files[EMBEDDINGS_FILE].sha256;
    let edited = text.replace(sha.as_str(), &sha.to_ascii_uppercase());
    assert_ne!(edited, text);
    std::fs::write(&path, format!("\u{feff}{edited}")).unwrap();
    assert_eq!(validate_cache(dir.path()).unwrap().manifest, manifest);
}

/// A manifest whose pair count disagrees with its statements (4e9 or 7 pairs where
/// the file holds 2) is refused naming both numbers.
#[test]
fn a_pair_count_that_disagrees_is_refused() {
    for n_pairs in [4_000_000_000u32, 7] {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = write_cache(dir.path());
        manifest.dataset.n_pairs = n_pairs;
        write_manifest(&dir.path().join(MANIFEST_FILE), &manifest).unwrap();
        let msg = refusal(dir.path());
        assert!(
            msg.contains(MANIFEST_FILE)
                && msg.contains(&format!("records {n_pairs} pairs but 4 statements")),
            "{msg}"
        );
    }
}
