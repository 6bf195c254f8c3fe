//! Checkpoints as a second axis: a synthetic grid of sizes × training steps with a
//! planted |r| peak that drifts early and settles at a known step.

use std::path::Path;

use e2e::{analyze_results, binary, run_cmd, synth_cache};
use serde_json::Value;

const SIZES: &str = "pythia-70m:12:32:70426624,pythia-160m:16:32:162322944";
const STEPS: &str = "0,1000,2000,3000,4000,5000,6000,7000";
const CATEGORIES: &str = "15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15";

fn grid(cache: &Path, settle_step: &str) {
    synth_cache(
        cache,
        &[
            "--models",
            SIZES,
            "--categories",
            CATEGORIES,
            "--poolings",
            "mean_skip_first",
            "--steps",
            STEPS,
            "--settle-step",
            settle_step,
        ],
    );
}

/// analyze with small bootstrap counts; the output folder's results.json and report.md.
fn analyze(cache: &Path, out: &Path, flags: &[&str]) -> (Value, String) {
    let small = [
        "--bootstrap",
        "200",
        "--training-bootstrap",
        "200",
        "--permutations",
        "200",
    ];
    let results = analyze_results(cache, out, &[&small[..], flags].concat());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    (results, report)
}

fn caches(v: &Value) -> Vec<&str> {
    v["cross_size"]["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

#[test]
fn the_planted_settling_step_is_found_within_its_ci() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    grid(&cache, "4000");
    let out = dir.path().join("out");
    let (v, report) = analyze(&cache, &out, &[]);
    let sizes = v["training"]["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    for s in sizes {
        let st = &s["settling"];
        assert_eq!(st["step"], 4000, "{}: {st}", s["label"]);
        let ci = st["ci"].as_array().unwrap();
        let (lo, hi) = (ci[0].as_u64().unwrap(), ci[1].as_u64().unwrap());
        assert!(lo <= 4000 && 4000 <= hi, "{}: CI {lo}–{hi}", s["label"]);
        assert!(st["share_settled"].as_f64().unwrap() > 0.5, "{st}");
        assert_ne!(st["verdict"], "keeps_moving");
        assert_eq!(s["checkpoints"].as_array().unwrap().len(), 8);
        let stem = format!(
            "training_{}",
            s["label"].as_str().unwrap().replace(' ', "-")
        );
        assert!(out.join(format!("{stem}.png")).is_file(), "{stem}.png");
        assert!(
            report.contains(&format!("`{stem}.png`")),
            "report lists {stem}.png"
        );
    }
    assert_eq!(v["training"]["bootstrap"], 200);
    // One checkpoint per size: the latest common step, stated in the report.
    assert_eq!(v["cross_size"]["step"], 7000);
    assert_eq!(caches(&v), ["pythia-70m-step7000", "pythia-160m-step7000"]);
    assert_eq!(v["peak_analysis"]["n_models"], 2);
    assert!(report.contains(
        "**Checkpoint compared across sizes: step 7000** (latest step common to all sizes"
    ));
    assert!(report.contains("## Training checkpoints: does the peak settle?"));
}

#[test]
fn revision_chooses_the_compared_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    grid(&cache, "4000");
    let (v, report) = analyze(&cache, &dir.path().join("out"), &["--revision", "step2000"]);
    assert_eq!(caches(&v), ["pythia-70m-step2000", "pythia-160m-step2000"]);
    assert!(report.contains("step 2000** (--revision"));
    let res = run_cmd(
        &binary("analyze"),
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            dir.path().join("out2").to_str().unwrap(),
            "--revision",
            "step2500",
        ],
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--revision step2500: pythia 70m has no cache at that step"),
        "{err}"
    );
}

#[test]
fn a_peak_that_never_settles_keeps_moving() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Planted to reach its final depth only at the last step: before it the peak
    // lies 40 to 25 points deeper, so no step before the last is within 10 points.
    grid(&cache, "7000");
    let (v, _) = analyze(&cache, &dir.path().join("out"), &[]);
    for s in v["training"]["sizes"].as_array().unwrap() {
        assert_eq!(s["settling"]["step"], Value::Null, "{}", s["settling"]);
        assert_eq!(s["settling"]["verdict"], "keeps_moving");
    }
}

#[test]
fn a_checkpoint_without_a_step_is_refused_naming_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    grid(&cache, "4000");
    let manifest = cache.join("pythia-70m-step1000").join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["model"]["step"] = Value::Null;
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let res = run_cmd(
        &binary("analyze"),
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: pythia 70m has 8 caches but this one records no model.step",
            manifest.display()
        )),
        "{err}"
    );
}

/// Without a revision axis (one cache per size) neither checkpoint section appears.
#[test]
fn a_plain_ladder_has_no_checkpoint_sections() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            SIZES,
            "--categories",
            "10,10,10,10",
            "--poolings",
            "mean_skip_first",
        ],
    );
    let (v, report) = analyze(&cache, &dir.path().join("out"), &[]);
    assert_eq!(v["training"], Value::Null);
    assert_eq!(v["cross_size"]["rule"], "one cache per size");
    assert_eq!(caches(&v), ["pythia-70m", "pythia-160m"]);
    assert!(!report.contains("Checkpoint") && !report.contains("Training"));
}
