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

/// The class follows the bootstrap's share by the stated rule, and heads everything.
#[test]
fn the_headline_heads_the_report_results_and_console() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, report) = analysis(tmp.path(), &[]);
    let share = r["poolings"][0]["stability_abs"]["share_stable"]
        .as_f64()
        .unwrap();
    let class = r["answer_class"].as_str().unwrap();
    let want = if share >= 0.95 {
        "Stable"
    } else if share <= 0.05 {
        "Shifts"
    } else {
        "Not settled by these data"
    };
    assert_eq!(class, want, "share of stable resamples {share}");
    let headline = r["answer"].as_str().unwrap();
    assert!(
        headline.starts_with(&format!("**{class}**: the |r| peak lies at m1 ")),
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
