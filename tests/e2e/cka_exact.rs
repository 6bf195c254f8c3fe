//! analyze's linear CKA (through packed centred Gram matrices) equals a direct numpy
//! computation from the features (tests/cka_reference.py) on the same cache to 1e-10,
//! and its depth mapping picks the reference layer numpy's CKA ranks first.

use std::path::Path;
use std::process::Command;

use e2e::{
    analyze_results, assert_ok, demo_dataset, extract_cpu, fixture, repo_root, run_analyze,
    synth_cache,
};
use serde_json::Value;

/// Widths on both sides of the statement count (36), so both Gram shapes are exercised.
const MODELS: &str = "cka-s:4:24:50000,cka-m:6:40:180000,cka-l:7:56:500000";

fn make_cache(cache: &Path) {
    synth_cache(
        cache,
        &["--models", MODELS, "--categories", "6,5,7", "--seed", "3"],
    );
}

fn analyze(cache: &Path, out: &Path, extra: &[&str]) -> Value {
    // CKA needs the vectors; synth-cache also writes compact statistics.
    let base = ["--bootstrap", "0", "--pooling", "mean", "--from-embeddings"];
    analyze_results(cache, out, &[&base[..], extra].concat())
}

fn numpy_cka(cache: &Path, out: &Path) -> Value {
    let script = repo_root().join("tests/cka_reference.py");
    let res = Command::new("python3")
        .arg(&script)
        .args(["--cache", cache.to_str().unwrap(), "--pooling", "mean"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 with numpy and pyarrow")
        });
    assert!(
        res.status.success(),
        "tests/cka_reference.py failed (it needs numpy and pyarrow, which scripts/test installs into .venv):\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn assert_same_matrices(ours: &Value, numpy: &Value) {
    let (o, n) = (ours.as_array().unwrap(), numpy.as_array().unwrap());
    assert_eq!(o.len(), 3, "every pair of 3 models");
    assert_eq!(o.len(), n.len());
    for (a, b) in o.iter().zip(n) {
        let what = format!("{} vs {}", b["model"], b["other"]);
        assert_eq!(
            (&a["model"], &a["other"]),
            (&b["model"], &b["other"]),
            "{what}"
        );
        let (ma, mb) = (matrix(&a["cka"]), matrix(&b["cka"]));
        assert_eq!(ma.len(), mb.len(), "{what}: rows");
        for (i, (ra, rb)) in ma.iter().zip(&mb).enumerate() {
            assert_eq!(ra.len(), rb.len(), "{what}: columns");
            for (j, (x, y)) in ra.iter().zip(rb).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-10,
                    "{what} [{i}][{j}]: analyze {x} vs numpy {y}"
                );
            }
        }
    }
}

/// Each model's peak maps to the reference layer of highest numpy CKA, with that value.
fn assert_depth_matches(depth: &Value, numpy: &Value, reference: &str) {
    for d in depth.as_array().unwrap() {
        let Some(cka) = d["cka"].as_f64() else {
            continue;
        };
        let pair = numpy["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["model"] == d["model"] && p["other"] == reference)
            .unwrap();
        let row = &matrix(&pair["cka"])[d["peak_layer"].as_u64().unwrap() as usize];
        let best = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (cka - best).abs() <= 1e-10,
            "{}: {cka} vs {best}",
            d["model"]
        );
        assert_eq!(
            row[d["matched_layer"].as_u64().unwrap() as usize],
            row.iter().copied().find(|&v| v == best).unwrap()
        );
    }
}

#[test]
fn cka_equals_numpy_from_the_features() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    make_cache(&cache);
    let ours = analyze(&cache, &tmp.path().join("out"), &[]);
    let numpy = numpy_cka(&cache, &tmp.path().join("cka.json"));
    let c = &ours["cka_alignment"];
    assert_eq!(c["reference"], "cka-l");
    assert_same_matrices(&c["pairs"], &numpy["pairs"]);
    assert_depth_matches(&c["depth"], &numpy, "cka-l");
    assert!(tmp.path().join("out/cka_alignment.png").is_file());
    let report = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(report.contains("Best-matching layer of cka-l"));
}

#[test]
fn one_model_has_nothing_to_align() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    make_cache(&cache);
    let out = tmp.path().join("out");
    let ours = analyze(&cache, &out, &["--models", "cka-m"]);
    assert_eq!(ours["cka_alignment"]["applicable"], false);
    assert!(!out.join("cka_alignment.png").exists());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Not computed: a single model"));
}

#[test]
fn from_compact_statistics_cka_is_not_computed_and_the_report_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    make_cache(&cache);
    let out = tmp.path().join("out");
    let res = run_analyze(&cache, &out, &["--bootstrap", "0", "--pooling", "mean"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("Not computed: the caches were read from their compact statistics"),
        "{report}"
    );
    assert!(!out.join("cka_alignment.png").exists());
}

/// The same on caches that extract wrote from the trained-like fixtures (tiny-m's
/// massive activations included), not only on synthetic vectors.
#[test]
fn cka_equals_numpy_on_extracted_fixture_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for name in ["tiny-a", "tiny-m", "tiny-c"] {
        let out = extract_cpu(&fixture(name), &demo_dataset(), &cache, name, &[]);
        assert_ok(&out, "extract");
    }
    let ours = analyze(&cache, &tmp.path().join("out"), &[]);
    let numpy = numpy_cka(&cache, &tmp.path().join("cka.json"));
    let c = &ours["cka_alignment"];
    let reference = c["reference"].as_str().unwrap().to_string();
    assert_same_matrices(&c["pairs"], &numpy["pairs"]);
    assert_depth_matches(&c["depth"], &numpy, &reference);
}
