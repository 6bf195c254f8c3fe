//! The answer a reviewer reads first: the headline's verdict class, and the flags at
//! each model's peak, each on a synthetic cache built to trigger it (one category far
//! from a cluster: `synth-cache --leverage`) and on one built not to.

use std::path::Path;

use e2e::{analyze_results, synth_cache};
use serde_json::Value;

const MODELS: &str = "m1:6:32:100000000,m2:8:48:300000000";
const CATEGORIES: &str = "20,20,20,20,20,20";

fn analysis(dir: &Path, extra: &[&str]) -> (Value, String) {
    let cache = dir.join("cache");
    let mut args = vec!["--models", MODELS, "--categories", CATEGORIES];
    args.extend_from_slice(extra);
    synth_cache(&cache, &args);
    let out = dir.join("out");
    let r = analyze_results(&cache, &out, &["--bootstrap", "200"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    (r, report)
}

fn evidence(r: &Value) -> &Vec<Value> {
    r["peak_evidence"].as_array().expect("peak_evidence")
}

#[test]
fn one_far_category_is_flagged_at_every_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, report) = analysis(tmp.path(), &["--leverage", "8"]);
    let ev = evidence(&r);
    assert_eq!(ev.len(), 2);
    for e in ev {
        assert_eq!(e["influential_category"], "category_0", "{e}");
        assert!(!e["carried_because"].as_array().unwrap().is_empty(), "{e}");
        assert_eq!(
            e["p_disagree"], true,
            "Pearson's p far below the permutation p: {e}"
        );
    }
    let bullets = r["answer_evidence"].as_array().unwrap();
    let text: Vec<&str> = bullets.iter().map(|b| b.as_str().unwrap()).collect();
    assert!(
        text.iter()
            .any(|b| b.starts_with("**One category carries r**")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|b| b.starts_with("**Pearson's p is 10 times below")),
        "{text:?}"
    );
    assert!(
        report.contains("`category_0` does: without it r ="),
        "the report names it"
    );
    assert!(
        report.contains("leaves less than 50% of |r|"),
        "the report states the thresholds"
    );
}

#[test]
fn a_cache_without_a_leverage_point_raises_no_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, _) = analysis(tmp.path(), &[]);
    for e in evidence(&r) {
        assert!(e["carried_because"].as_array().unwrap().is_empty(), "{e}");
        assert_eq!(e["p_disagree"], false, "{e}");
    }
    let bullets: Vec<&str> = r["answer_evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(bullets
        .iter()
        .any(|b| b.starts_with("No single category carries r")));
    assert!(bullets
        .iter()
        .any(|b| b.starts_with("Pearson's p and the permutation p agree")));
    assert!(bullets
        .iter()
        .any(|b| b.starts_with("At the same layers the pair level (n = 120 pairs)")));
    assert!((3..=6).contains(&bullets.len()), "{bullets:?}");
}

/// The class by the stated rule: not settled where a model's peak is not identified,
/// else by the bootstrap's share of stable resamples.
fn class_by_the_rule(r: &Value) -> &'static str {
    let p = &r["poolings"][0];
    if unplaced(p) > 0 {
        return "Not settled by these data";
    }
    let share = p["stability_abs"]["share_stable"].as_f64().unwrap();
    if share >= 0.95 {
        "Stable"
    } else if share <= 0.05 {
        "Shifts"
    } else {
        "Not settled by these data"
    }
}

/// How many models of pooling `p` have an unidentified peak (a plateau).
fn unplaced(p: &Value) -> usize {
    let models = p["models"].as_array().unwrap();
    for m in models {
        assert_eq!(
            m["abs_peak_identified"] == false,
            !m["plateau"].is_null(),
            "a plateau exactly where the peak is not identified: {m}"
        );
    }
    models.iter().filter(|m| !m["plateau"].is_null()).count()
}

/// The class follows the stated rule, and heads everything.
#[test]
fn the_headline_heads_the_report_results_and_console() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, report) = analysis(tmp.path(), &[]);
    let class = r["answer_class"].as_str().unwrap();
    assert_eq!(class, class_by_the_rule(&r), "{}", r["poolings"][0]);
    assert_eq!(
        r["poolings"][0]["answer_class"], class,
        "stored per pooling"
    );
    let headline = r["answer"].as_str().unwrap();
    let opening = if unplaced(&r["poolings"][0]) > 0 {
        "the |r| peak position is not identified by these data for "
    } else {
        "the |r| peak lies at m1 "
    };
    assert!(
        headline.starts_with(&format!("**{class}**: {opening}")),
        "{headline}"
    );
    assert_eq!(
        report.lines().next(),
        Some(headline),
        "the report's first line"
    );
    assert!(r["answer_details"]
        .as_str()
        .unwrap()
        .contains("by the seed's rule"));

    let out = e2e::run_analyze(
        &tmp.path().join("cache"),
        &tmp.path().join("again"),
        &["--bootstrap", "200"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(headline),
        "the console's first line"
    );
    assert!(
        stdout.lines().nth(1).unwrap().starts_with("- "),
        "then the bullets"
    );
}

#[test]
fn one_model_is_not_applicable() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &["--models", "m1:6:32:100000000", "--categories", CATEGORIES],
    );
    let r = analyze_results(&cache, &tmp.path().join("out"), &["--bootstrap", "50"]);
    assert_eq!(r["answer_class"], "Not applicable");
    assert!(r["answer"].as_str().unwrap().contains("needs at least two"));
}

/// Models deep enough that the planted bump (about 30% of depth) and the rogue
/// dimension's layers (60%) are several layers apart.
const DEEP: &str = "m1:12:32:100000000,m2:16:48:300000000";

/// A cache whose rogue dimension (around 60% of depth) decides the raw cosines there.
fn rogue_cache(dir: &Path) -> std::path::PathBuf {
    let cache = dir.join("cache");
    let args = [
        "--models",
        DEEP,
        "--categories",
        CATEGORIES,
        "--rogue",
        "0.6",
    ];
    synth_cache(&cache, &args);
    cache
}

fn robustness_bullet(r: &Value) -> String {
    r["answer_evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .find(|b| b.contains("survive the geometry"))
        .unwrap_or_else(|| panic!("no robustness bullet in {}", r["answer_evidence"]))
        .to_string()
}

#[test]
fn a_rogue_dimension_moves_the_raw_peak_and_the_answer_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = rogue_cache(tmp.path());
    let out = tmp.path().join("out");
    let r = analyze_results(&cache, &out, &["--bootstrap", "200"]);
    let rb = &r["robustness"];
    let centred = rb["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["geometry"] == "centred")
        .expect("the centred geometry is computed from the sidecar");
    for m in centred["peaks"].as_array().unwrap() {
        let (raw, moved) = (m["pct"].as_f64().unwrap(), m["other_pct"].as_f64().unwrap());
        assert!(
            (raw - 60.0).abs() <= 15.0,
            "raw peak at the rogue layers: {m}"
        );
        // Centring takes the rogue layers' signal away: the centred peak is one of the
        // planted profile's (its bump near 30% or its late lobe near 85%).
        assert!(
            (moved - raw).abs() >= 20.0,
            "centred peak away from the rogue layers: {m}"
        );
        assert_eq!(m["survives"], false, "{m}");
    }
    // Standardising needs the embeddings, which the default analysis does not read.
    let not = &rb["not_computed"][0];
    assert_eq!(not["geometry"], "standardised");
    assert!(
        not["why"].as_str().unwrap().contains("--from-embeddings"),
        "{not}"
    );
    let bullet = robustness_bullet(&r);
    assert!(
        bullet.starts_with("**The answer does not survive the geometry**"),
        "{bullet}"
    );
    assert!(bullet.contains("when the vectors are centred"), "{bullet}");
    // The rogue dimension shows in the anisotropy at its layers.
    let layers = r["poolings"][0]["models"][0]["layers"].as_array().unwrap();
    let at = |pct: f64| {
        layers
            .iter()
            .min_by(|a, b| {
                let d = |s: &Value| (s["depth_pct"].as_f64().unwrap() - pct).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap()["anisotropy"]
            .clone()
    };
    assert!(
        at(60.0)["top_share"].as_f64().unwrap() > 0.99,
        "{}",
        at(60.0)
    );
    assert!(
        at(60.0)["mean_cosine"].as_f64().unwrap() > 0.99,
        "{}",
        at(60.0)
    );
    assert!(at(0.0)["top_share"].as_f64().unwrap() < 0.5, "{}", at(0.0));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Robustness across geometries"));
    assert!(out.join("geometry.png").exists());
}

#[test]
fn every_geometry_is_computed_from_the_embeddings_and_the_sidecar_agrees_on_centring() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = rogue_cache(tmp.path());
    let sidecar = analyze_results(&cache, &tmp.path().join("a"), &["--bootstrap", "0"]);
    let full = analyze_results(
        &cache,
        &tmp.path().join("b"),
        &["--bootstrap", "0", "--from-embeddings"],
    );
    let geometries = |r: &Value| -> Vec<String> {
        r["poolings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["geometry"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(geometries(&sidecar), ["raw", "centred"]);
    assert_eq!(geometries(&full), ["raw", "centred", "standardised"]);
    assert!(full["robustness"]["not_computed"]
        .as_array()
        .unwrap()
        .is_empty());
    for view in 0..2 {
        for (m, (a, b)) in sidecar["poolings"][view]["models"]
            .as_array()
            .unwrap()
            .iter()
            .zip(full["poolings"][view]["models"].as_array().unwrap())
            .enumerate()
        {
            for (x, y) in a["layers"]
                .as_array()
                .unwrap()
                .iter()
                .zip(b["layers"].as_array().unwrap())
            {
                let (rx, ry) = (x["r"].as_f64().unwrap(), y["r"].as_f64().unwrap());
                assert!(
                    (rx - ry).abs() < 1e-12,
                    "view {view} model {m}: {rx} vs {ry}"
                );
                assert_eq!(x["anisotropy"], y["anisotropy"]);
            }
        }
    }
    // The primary geometry may be any of them: centred from the sidecar answers as the
    // centred robustness view did.
    let centred = analyze_results(
        &cache,
        &tmp.path().join("c"),
        &["--bootstrap", "0", "--geometry", "centred"],
    );
    assert_eq!(centred["primary_geometry"], "centred");
    assert_eq!(
        centred["poolings"][0]["models"][0]["abs_peak"],
        sidecar["poolings"][1]["models"][0]["abs_peak"]
    );
}

/// A flat profile (`synth-cache --flat`: r about equal at every depth) has an argmax
/// but no position: the headline gives each model's plateau instead of one layer, and
/// the answer is not settled, whatever the spread of the argmax positions.
#[test]
fn a_flat_profile_is_reported_as_a_plateau() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, report) = analysis(tmp.path(), &["--flat"]);
    for m in r["poolings"][0]["models"].as_array().unwrap() {
        assert_eq!(m["abs_peak_identified"], false, "{m}");
        let pl = &m["plateau"];
        assert_eq!(
            (pl["from_pct"].as_f64(), pl["to_pct"].as_f64()),
            (Some(0.0), Some(100.0)),
            "{m}"
        );
        assert_eq!(pl["from_layer"], 0, "{m}");
        assert_eq!(pl["to_layer"], m["n_layers"], "{m}");
        assert!(pl["within_ci_span_pct"].as_f64().unwrap() >= 50.0, "{m}");
    }
    assert_eq!(r["answer_class"], "Not settled by these data");
    assert_eq!(class_by_the_rule(&r), "Not settled by these data");
    let headline = r["answer"].as_str().unwrap();
    assert_eq!(
        headline,
        "**Not settled by these data**: the |r| peak position is not identified by these data for m1 (a plateau from layer 0 to 6, 0%–100% of depth) and m2 (a plateau from layer 0 to 8, 0%–100% of depth); a position the data do not place cannot be compared across models."
    );
    assert!(r["answer_details"]
        .as_str()
        .unwrap()
        .contains("its position is not identified by these data: a plateau from layer 0 to 6"));
    assert!(
        report.contains(
            "| **not identified by these data**: a plateau from layer 0 to 8, 0%–100% of depth"
        ),
        "the per-model section gives the plateau"
    );
    assert!(
        report.contains("- **Is the peak placed?**"),
        "the method states the rule"
    );

    // One model: nothing to compare, but its plateau is still said.
    let one = analyze_results(
        &tmp.path().join("cache"),
        &tmp.path().join("one"),
        &["--bootstrap", "200", "--models", "m1"],
    );
    assert_eq!(one["answer_class"], "Not applicable");
    assert_eq!(
        one["answer"],
        "**Not applicable**: one model (m1, the |r| peak position is not identified by these data: a plateau from layer 0 to 6, 0%–100% of depth); the cross-model question needs at least two."
    );

    // Without a bootstrap nothing is judged, and the headline says so.
    let bare = analyze_results(
        &tmp.path().join("cache"),
        &tmp.path().join("bare"),
        &["--bootstrap", "0"],
    );
    for m in bare["poolings"][0]["models"].as_array().unwrap() {
        assert!(
            m["abs_peak_identified"].is_null() && m["plateau"].is_null(),
            "{m}"
        );
    }
    let headline = bare["answer"].as_str().unwrap();
    assert!(headline.contains("the |r| peak lies at m1 "), "{headline}");
    assert!(
        headline.ends_with("nor whether each peak position is identified."),
        "{headline}"
    );
}

/// A sharp peak (the grid's narrow bump, one checkpoint per size, 8 categories) is
/// identified: still one layer in the headline, and the class by the bootstrap's share.
#[test]
fn a_sharp_peak_is_still_one_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "m1:12:32:100000000,m2:16:48:300000000",
            "--categories",
            "30,30,30,30,30,30,30,30",
            "--steps",
            "1000",
        ],
    );
    let r = analyze_results(&cache, &tmp.path().join("out"), &["--bootstrap", "200"]);
    for m in r["poolings"][0]["models"].as_array().unwrap() {
        assert_eq!(m["abs_peak_identified"], true, "{m}");
        assert!(m["plateau"].is_null(), "{m}");
    }
    let class = r["answer_class"].as_str().unwrap();
    assert_eq!(class, class_by_the_rule(&r));
    let headline = r["answer"].as_str().unwrap();
    assert!(
        headline.starts_with(&format!(
            "**{class}**: the |r| peak lies at m1-step1000 33%, m2-step1000 31% of depth"
        )),
        "{headline}"
    );
    let report = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(
        report.contains("| m1-step1000 | L4 (33%, r = +0.800) | 25%–33% | identified |"),
        "{report}"
    );
}
