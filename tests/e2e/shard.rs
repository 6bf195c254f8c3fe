//! Within-model sharding: `extract --shard I/N` and `extract merge`.
//!
//! tiny-d on the seed dataset (460 statements) at batch size 1, where the numbers do
//! not depend on which statements share a batch: three shards merged must give
//! `statements.parquet` and `embeddings.parquet` byte for byte equal to one unsharded
//! run's. The extractions are made once ([`setup`]) and shared by the tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2e::{assert_ok, binary, copy_dir, extract_cpu, fixture, run, run_cmd, seed_dataset};
use schemas::{
    read_statements, validate_cache, Manifest, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE,
    STATEMENTS_FILE,
};

const N: u32 = 3;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// The unsharded cache.
    whole: PathBuf,
    /// Shard i of N, by index.
    shards: Vec<PathBuf>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        let model = fixture("tiny-d");
        let out = extract_cpu(&model, &seed_dataset(), &root, "m", &["--batch-size", "1"]);
        assert_ok(&out, "unsharded extract");
        let shards = (0..N)
            .map(|i| {
                let spec = format!("{i}/{N}");
                let out = extract_cpu(
                    &model,
                    &seed_dataset(),
                    &root,
                    "m",
                    &["--batch-size", "1", "--shard", &spec],
                );
                assert_ok(&out, &format!("extract --shard {spec}"));
                root.join(format!("m.shard-{i}-of-{N}"))
            })
            .collect();
        Setup {
            root: root.clone(),
            whole: root.join("m"),
            shards,
            _tmp: tmp,
        }
    })
}

fn manifest(dir: &Path) -> Manifest {
    Manifest::read(&dir.join(MANIFEST_FILE)).unwrap()
}

fn merge(out: &Path, name: &str, shards: &[&Path]) -> std::process::Output {
    let mut args = vec![
        "merge".to_string(),
        "--out".into(),
        out.display().to_string(),
        "--name".into(),
        name.into(),
    ];
    args.extend(shards.iter().map(|s| s.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("extract", &refs)
}

/// Runs a merge that must fail; returns its one-line error.
fn refused(shards: &[&Path], must_contain: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = merge(tmp.path(), "merged", shards);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "merge should have failed: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for want in must_contain {
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    assert!(
        !tmp.path().join("merged").exists(),
        "a refused merge leaves no folder"
    );
    err
}

#[test]
fn merged_shards_equal_the_unsharded_cache_byte_for_byte() {
    let s = setup();
    let tmp = tempfile::tempdir().unwrap();
    let shards: Vec<&Path> = s.shards.iter().map(PathBuf::as_path).collect();
    // given out of order: the merge orders them by index
    let out = merge(tmp.path(), "m", &[shards[2], shards[0], shards[1]]);
    assert_ok(&out, "extract merge");
    let merged = tmp.path().join("m");
    for file in [STATEMENTS_FILE, EMBEDDINGS_FILE, GRAMS_FILE] {
        assert!(
            std::fs::read(merged.join(file)).unwrap() == std::fs::read(s.whole.join(file)).unwrap(),
            "{file} differs from the unsharded run's"
        );
    }
    validate_cache(&merged).unwrap();
    let (m, w) = (manifest(&merged), manifest(&s.whole));
    assert!(m.complete);
    assert_eq!(m.model, w.model);
    assert_eq!(m.dataset, w.dataset);
    assert_eq!(m.files, w.files);
    assert!(
        m.files.contains_key(schemas::CARD_FILE),
        "the merged cache has its card"
    );
    assert_eq!(m.run.shard, None);
    assert_eq!(m.run.poolings, w.run.poolings);
    // the chunks of every shard, each naming its shard
    let shard_chunks: usize = s.shards.iter().map(|d| manifest(d).run.chunks.len()).sum();
    assert_eq!(m.run.chunks.len(), shard_chunks);
    for i in 0..N {
        assert!(m.run.chunks.iter().any(|c| c.shard == Some(i)));
    }
    assert!(m.run.chunks.iter().all(|c| c.shard.is_some()));
    let covered: u32 = m.run.chunks.iter().map(|c| c.n_statements).sum();
    assert_eq!(covered, w.dataset.n_statements);
    // a merged cache is a whole cache: analyze-ready, mergeable again only into a new name
    let again = merge(tmp.path(), "m", &shards);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a cache"));
    // The roots' cards list whole caches only: the merged one, and beside the shards
    // the unsharded one.
    let listed = |root: &Path| {
        schemas::listed_models(&std::fs::read_to_string(root.join(schemas::CARD_FILE)).unwrap())
            .unwrap()
    };
    assert_eq!(listed(tmp.path()), vec!["m"]);
    assert_eq!(listed(&s.root), vec!["m"]);
}

#[test]
fn a_shard_cache_records_its_slice_under_global_ids() {
    let s = setup();
    let whole = manifest(&s.whole);
    let mut total = 0;
    for (i, dir) in s.shards.iter().enumerate() {
        let v = validate_cache(dir).unwrap();
        let m = &v.manifest;
        let info = m.run.shard.expect("run.shard");
        assert_eq!((info.index, info.count), (i as u32, N));
        // the dataset section still describes the whole dataset
        assert_eq!(m.dataset, whole.dataset);
        assert_eq!(m.model.files, whole.model.files);
        let rows = read_statements(&dir.join(STATEMENTS_FILE)).unwrap();
        assert_eq!(rows.len() as u32, info.n_statements);
        assert_eq!(m.files[STATEMENTS_FILE].rows, u64::from(info.n_statements));
        assert!(rows
            .iter()
            .all(|r| (r.statement_id / 2) % N == i as u32 && r.statement_id < 460));
        // pairs stay together
        assert!(rows
            .chunks(2)
            .all(|p| p[0].statement_id + 1 == p[1].statement_id));
        total += rows.len();
    }
    assert_eq!(total as u32, whole.dataset.n_statements);
    // rerunning a finished shard does nothing
    let out = extract_cpu(
        &fixture("tiny-d"),
        &seed_dataset(),
        &s.root,
        "m",
        &["--batch-size", "1", "--shard", "1/3"],
    );
    assert_ok(&out, "rerun of a complete shard");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
}

#[test]
fn merge_refuses_a_shard_of_another_model() {
    let s = setup();
    let tmp = tempfile::tempdir().unwrap();
    let out = extract_cpu(
        &fixture("tiny-c"),
        &seed_dataset(),
        tmp.path(),
        "c",
        &["--batch-size", "1", "--shard", "2/3"],
    );
    assert_ok(&out, "extract tiny-c --shard 2/3");
    let other = tmp.path().join("c.shard-2-of-3");
    refused(
        &[&s.shards[0], &s.shards[1], &other],
        &["c.shard-2-of-3", "other inputs", "model.onnx"],
    );
}

#[test]
fn merge_refuses_missing_twice_incomplete_and_unsharded() {
    let s = setup();
    let (a, b, c) = (&s.shards[0], &s.shards[1], &s.shards[2]);
    refused(&[a, c], &["shard 1/3 is missing", "m.shard-1-of-3"]);
    refused(&[a, b, b, c], &["m.shard-1-of-3", "given twice"]);
    refused(&[a, b, &s.whole], &["not a shard cache", "/m:"]);

    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("m.shard-1-of-3");
    copy_dir(b, &broken);
    let mut m = manifest(&broken);
    m.complete = false;
    schemas::write_manifest(&broken.join(MANIFEST_FILE), &m).unwrap();
    refused(
        &[a, &broken, c],
        &[broken.to_str().unwrap(), "incomplete shard"],
    );
}

#[test]
fn shard_flag_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, want) in [
        ("3/3", "does not exist"),
        ("x", "'x' is not a shard"),
        ("0/0", "does not exist"),
        ("-1/3", "is not a shard"),
    ] {
        let out = extract_cpu(
            &fixture("tiny-d"),
            &seed_dataset(),
            tmp.path(),
            "m",
            &["--shard", spec],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{spec}: {err}");
        assert!(
            err.contains("--shard") && err.contains(want),
            "{spec}: {err}"
        );
    }
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}

#[test]
fn analyze_refuses_a_shard_cache() {
    let s = setup();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    copy_dir(&s.shards[0], &root.join("m.shard-0-of-3"));
    let out = run_cmd(
        &binary("analyze"),
        &[
            "--cache",
            root.to_str().unwrap(),
            "--out",
            tmp.path().join("results").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("m.shard-0-of-3") && err.contains("extract merge"),
        "{err}"
    );
}
