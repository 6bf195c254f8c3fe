//! analyze's seed-exact statistics equal the seed notebook's own numpy/scipy code
//! (tests/seed_analysis.py) on the same cache: with `--arithmetic seed` against the
//! notebook's float32 code run verbatim (r and p to 1e-6), with `--arithmetic exact`
//! against the same code on float64 embeddings (to 1e-12); layers, positions and the
//! verdict exactly. An anisotropic cache (massive activations, as trained LMs have)
//! is where the two arithmetics part.

use std::path::Path;
use std::process::Command;

use e2e::{analyze_results, repo_root, synth_cache};
use serde_json::Value;

fn python_seed(cache: &Path, step: &str, pooling: &str, arithmetic: &str, out: &Path) -> Value {
    let script = repo_root().join("tests/seed_analysis.py");
    let res = Command::new("python3")
        .arg(&script)
        .args([
            "--cache",
            cache.to_str().unwrap(),
            "--layer-step",
            step,
            "--pooling",
            pooling,
            "--arithmetic",
            arithmetic,
            "--out",
            out.to_str().unwrap(),
        ])
        .output();
    let res = match res {
        Ok(r) => r,
        Err(e) => panic!("cannot run python3 ({e}): run the tests through scripts/test, which installs numpy, scipy and pyarrow into .venv"),
    };
    assert!(
        res.status.success(),
        "tests/seed_analysis.py failed (it needs numpy, scipy and pyarrow, which scripts/test installs into .venv):\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (x, y) = (
        a.as_f64()
            .unwrap_or_else(|| panic!("{what}: {a} not a number")),
        b.as_f64()
            .unwrap_or_else(|| panic!("{what}: {b} not a number")),
    );
    assert!(
        (x - y).abs() <= tol,
        "{what}: analyze {x} vs seed {y} (tolerance {tol})"
    );
}

fn compare(ours: &Value, seed: &Value, tol: f64) {
    let (om, sm) = (
        ours["models"].as_object().unwrap(),
        seed["models"].as_object().unwrap(),
    );
    assert_eq!(
        om.keys().collect::<Vec<_>>(),
        sm.keys().collect::<Vec<_>>(),
        "models and their order"
    );
    for (name, s) in sm {
        let o = &om[name];
        assert_eq!(o["n_layers"], s["n_layers"], "{name} n_layers");
        let (ol, sl) = (
            o["layer_results"].as_object().unwrap(),
            s["layer_results"].as_object().unwrap(),
        );
        assert_eq!(
            ol.keys().collect::<Vec<_>>(),
            sl.keys().collect::<Vec<_>>(),
            "{name}: sampled layers"
        );
        for (layer, v) in sl {
            close(
                &ol[layer]["correlation"],
                &v["correlation"],
                tol,
                &format!("{name} layer {layer} r"),
            );
            close(
                &ol[layer]["p_value"],
                &v["p_value"],
                tol,
                &format!("{name} layer {layer} p"),
            );
        }
    }
    compare_summary(ours, seed, tol);
    let (op, sp) = (&ours["peak_analysis"], &seed["peak_analysis"]);
    close(
        &op["mean_peak_pct"],
        &sp["mean_peak_pct"],
        1e-9,
        "mean_peak_pct",
    );
    close(
        &op["std_peak_pct"],
        &sp["std_peak_pct"],
        1e-9,
        "std_peak_pct",
    );
    assert_eq!(op["peaks_stable"], sp["peaks_stable"], "verdict");
}

/// The per-model summary rows: peaks, final r, sign changes.
fn compare_summary(ours: &Value, seed: &Value, tol: f64) {
    let (os, ss) = (
        ours["summary"].as_array().unwrap(),
        seed["summary"].as_array().unwrap(),
    );
    assert_eq!(os.len(), ss.len());
    for (o, s) in os.iter().zip(ss) {
        let m = s["model"].as_str().unwrap();
        for key in ["model", "n_layers", "max_pos_layer", "max_neg_layer"] {
            assert_eq!(o[key], s[key], "{m} {key}");
        }
        for key in ["max_pos_pct", "max_neg_pct"] {
            close(&o[key], &s[key], 1e-9, &format!("{m} {key}"));
        }
        for key in ["max_pos_r", "max_neg_r", "final_r"] {
            close(&o[key], &s[key], tol, &format!("{m} {key}"));
        }
        let (oc, sc) = (
            o["sign_changes"].as_array().unwrap(),
            s["sign_changes"].as_array().unwrap(),
        );
        assert_eq!(oc.len(), sc.len(), "{m} sign changes");
        for (a, b) in oc.iter().zip(sc) {
            assert_eq!(a["layer_before"], b["layer_before"], "{m} sign change");
            assert_eq!(a["layer_after"], b["layer_after"], "{m} sign change");
            close(
                &a["midpoint_pct"],
                &b["midpoint_pct"],
                1e-9,
                &format!("{m} midpoint"),
            );
        }
    }
}

const LADDER: &str =
    "tiny-s:6:24:50000,tiny-m:8:40:180000,tiny-l:12:56:500000,tiny-xl:13:64:700000";

fn check(step: &str, pooling: &str, arithmetic: &str, tol: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            LADDER,
            "--categories",
            "30,20,50,50,50,30",
            "--seed",
            "11",
        ],
    );
    let flags = [
        "--layer-step",
        step,
        "--pooling",
        pooling,
        "--bootstrap",
        "200",
        "--arithmetic",
        arithmetic,
    ];
    let ours = analyze_results(&cache, &tmp.path().join("out"), &flags);
    let seed = python_seed(
        &cache,
        step,
        pooling,
        arithmetic,
        &tmp.path().join("seed.json"),
    );
    compare(&ours, &seed, tol);
    // results.json is a superset of the seed's JSON: the seed's top-level keys are all there.
    for key in [
        "timestamp",
        "research_question",
        "models",
        "summary",
        "peak_analysis",
    ] {
        assert!(ours.get(key).is_some(), "results.json lacks {key}");
    }
}

#[test]
fn seed_exact_every_4th_layer_mean_skip_first() {
    check("4", "mean_skip_first", "seed", 1e-6);
}

#[test]
fn seed_exact_every_layer_mean() {
    check("1", "mean", "seed", 1e-6);
}

#[test]
fn exact_arithmetic_equals_a_float64_reference() {
    check("1", "mean_skip_first", "exact", 1e-12);
}

/// Largest |r| difference between two results.json over every model and layer.
fn max_r_gap(a: &Value, b: &Value) -> f64 {
    let mut gap: f64 = 0.0;
    for (m, v) in b["models"].as_object().unwrap() {
        for (l, x) in v["layer_results"].as_object().unwrap() {
            let o = &a["models"][m]["layer_results"][l]["correlation"];
            gap = gap.max((o.as_f64().unwrap() - x["correlation"].as_f64().unwrap()).abs());
        }
    }
    gap
}

#[test]
fn seed_arithmetic_matches_the_notebook_on_massive_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &["--models", LADDER, "--seed", "11", "--massive", "3:3000"],
    );
    let notebook = python_seed(
        &cache,
        "1",
        "mean_skip_first",
        "seed",
        &tmp.path().join("seed.json"),
    );
    let flags = ["--layer-step", "1", "--bootstrap", "0"];
    let seed = analyze_results(
        &cache,
        &tmp.path().join("seed"),
        &[&flags[..], &["--arithmetic", "seed"]].concat(),
    );
    compare(&seed, &notebook, 1e-6);
    // The cache must make the arithmetic matter, or the comparison above proves nothing.
    // From the embeddings: the compact statistics hold float64 blocks only, so the
    // gap to the seed arithmetic is measured only there.
    let exact = analyze_results(
        &cache,
        &tmp.path().join("exact"),
        &[&flags[..], &["--arithmetic", "exact", "--from-embeddings"]].concat(),
    );
    let gap = max_r_gap(&exact, &notebook);
    assert!(gap > 1e-4, "float64 and the notebook's float32 agree to {gap:.1e} on this cache: it is not anisotropic enough to test the seed arithmetic");
    // The report states the gap it measured.
    let report = std::fs::read_to_string(tmp.path().join("exact/report.md")).unwrap();
    assert!(report.contains("Cosine arithmetic: exact"), "{report}");
    assert!(report.contains("moves r by at most"), "{report}");
}
