//! An interrupted `extract` resumes from its finished chunks and ends with
//! files identical to an uninterrupted run's, every statement exactly once.
//!
//! Uses the deepest fixture (tiny-d) on the seed dataset (`../shared/data/dataset.json`,
//! 460 statements) with batch size 1, so that the run has ~30 chunks and lasts
//! long enough to be killed midway.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{assert_ok, binary, extract_cpu, fixture, shared_dir};
use schemas::{read_statements, validate_cache, EMBEDDINGS_FILE, MANIFEST_FILE, STATEMENTS_FILE};

const NAME: &str = "m";

fn seed_dataset() -> PathBuf {
    let p = shared_dir().join("data/dataset.json");
    assert!(
        p.is_file(),
        "{} is missing (the seed dataset beside the repo)",
        p.display()
    );
    p
}

fn args(out: &Path) -> Vec<String> {
    [
        "--model",
        fixture("tiny-d").to_str().unwrap(),
        "--dataset",
        seed_dataset().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        NAME,
        "--device",
        "cpu",
        "--batch-size",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn finished_chunks(cache: &Path) -> usize {
    std::fs::read_dir(cache.join(".partial"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(".statements.parquet")
                })
                .count()
        })
        .unwrap_or(0)
}

fn uninterrupted(out: &Path) {
    let a = Command::new(binary("extract"))
        .args(args(out))
        .output()
        .unwrap();
    assert_ok(&a, "uninterrupted run");
}

/// Resumes the run in `out` and compares its files with the uninterrupted run's in `reference`.
fn resume_and_compare(out: &Path, reference: &Path) {
    let cache = out.join(NAME);
    assert!(
        finished_chunks(&cache) >= 1,
        "the interrupted run left no finished chunk"
    );
    assert!(
        validate_cache(&cache).is_err(),
        "an interrupted cache must not validate"
    );
    let resumed = Command::new(binary("extract"))
        .args(args(out))
        .output()
        .unwrap();
    assert_ok(&resumed, "resumed run");
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains("resumed from an earlier run"), "{stdout}");
    assert!(!cache.join(".partial").exists(), ".partial left behind");

    let v = validate_cache(&cache).unwrap();
    let rows = read_statements(&v.statements_path()).unwrap();
    let ids: Vec<u32> = rows.iter().map(|r| r.statement_id).collect();
    assert_eq!(
        ids,
        (0..v.manifest.dataset.n_statements).collect::<Vec<_>>(),
        "each statement once, in order"
    );
    for f in [STATEMENTS_FILE, EMBEDDINGS_FILE] {
        let a = std::fs::read(reference.join(NAME).join(f)).unwrap();
        let b = std::fs::read(cache.join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between the resumed and the uninterrupted run"
        );
    }
}

/// Kills the child once the first chunk is on disk.
#[test]
fn killed_run_resumes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    uninterrupted(&full);

    let mut child = Command::new(binary("extract"))
        .args(args(&cut))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache = cut.join(NAME);
    let start = Instant::now();
    let mut killed = false;
    loop {
        if finished_chunks(&cache) >= 1 {
            killed = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if !killed || cache.join(MANIFEST_FILE).is_file() && validate_cache(&cache).is_ok() {
        // Finished before it could be killed: interrupt it deterministically instead.
        eprintln!(
            "the run finished before the kill; interrupting through EXTRACT_TEST_STOP_AFTER_CHUNKS"
        );
        std::fs::remove_dir_all(&cut).unwrap();
        stop_after_two_chunks(&cut);
    }
    resume_and_compare(&cut, &full);
}

/// Runs extract into `cut` and makes it fail after two chunks through the test hook.
fn stop_after_two_chunks(cut: &Path) -> std::process::Output {
    let stopped = Command::new(binary("extract"))
        .args(args(cut))
        .env("EXTRACT_TEST_STOP_AFTER_CHUNKS", "2")
        .output()
        .unwrap();
    assert!(
        !stopped.status.success(),
        "the test hook did not stop the run"
    );
    stopped
}

/// Stops after two chunks through the test hook (an error mid-run, as a crash
/// would leave it), then resumes.
#[test]
fn stopped_run_resumes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    uninterrupted(&full);
    let stopped = stop_after_two_chunks(&cut);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        stderr.contains("EXTRACT_TEST_STOP_AFTER_CHUNKS"),
        "{stderr}"
    );
    assert_eq!(finished_chunks(&cut.join(NAME)), 2);
    let m = schemas::Manifest::read(&cut.join(NAME).join(MANIFEST_FILE)).unwrap();
    assert!(
        !m.complete,
        "an interrupted run's manifest says complete: false"
    );

    // other inputs into the unfinished folder are refused
    let other = extract_cpu(
        &fixture("tiny-d"),
        &seed_dataset(),
        &cut,
        NAME,
        &["--poolings", "mean"],
    );
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("differ"));

    resume_and_compare(&cut, &full);
}
