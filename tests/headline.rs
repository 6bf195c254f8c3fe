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
