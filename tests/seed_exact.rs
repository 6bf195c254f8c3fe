//! analyze's seed-exact statistics equal the seed notebook's own numpy/scipy code
//! (tests/seed_analysis.py) on the same cache: r and p to 1e-6, layers, positions
//! and the verdict exactly.

use std::path::Path;
use std::process::Command;

use e2e::{binary, repo_root, run_cmd, synth_cache};
use serde_json::Value;

fn python_seed(cache: &Path, step: &str, pooling: &str, out: &Path) -> Value {
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
            "--out",
            out.to_str().unwrap(),
        ])
        .output();
    let res = match res {
        Ok(r) => r,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3 with numpy, scipy and pyarrow (python3 -m pip install numpy scipy pyarrow)"),
    };
    assert!(
        res.status.success(),
        "tests/seed_analysis.py failed (it needs numpy, scipy and pyarrow: python3 -m pip install numpy scipy pyarrow):\n{}",
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

fn compare(ours: &Value, seed: &Value) {
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
                1e-6,
                &format!("{name} layer {layer} r"),
            );
            close(
                &ol[layer]["p_value"],
                &v["p_value"],
                1e-6,
                &format!("{name} layer {layer} p"),
            );
        }
    }
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
            close(&o[key], &s[key], 1e-6, &format!("{m} {key}"));
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

fn check(step: &str, pooling: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "tiny-s:6:24:50000,tiny-m:8:40:180000,tiny-l:12:56:500000,tiny-xl:13:64:700000",
            "--categories",
            "30,20,50,50,50,30",
            "--seed",
            "11",
        ],
    );
    let out = tmp.path().join("out");
    let analyze = binary("analyze");
    let res = run_cmd(
        &analyze,
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--layer-step",
            step,
            "--pooling",
            pooling,
            "--bootstrap",
            "200",
        ],
    );
    assert!(
        res.status.success(),
        "analyze failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let seed = python_seed(&cache, step, pooling, &tmp.path().join("seed.json"));
    compare(&ours, &seed);
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
    check("4", "mean_skip_first");
}

#[test]
fn seed_exact_every_layer_mean() {
    check("1", "mean");
}
