//! analyze's outputs, pinned: `report.md` and `layer_correlations.csv` byte for byte,
//! and `results.json` value for value (timings, clock times and the two paths aside),
//! on the demo's caches (committed under `tests/golden/demo-cache`, so no ONNX
//! Runtime rounding enters) and on synthetic caches (`synth-cache`, deterministic).
//! A refactor must leave every one of them as it was.
//!
//! When a change of output is intended, rewrite the goldens and review the diff:
//! `UA_BLESS=1 cargo test --release --workspace --test e2e golden::`. `UA_GOLDEN_BIN=DIR` takes
//! `analyze` and `synth-cache` from DIR instead (e.g. a build of the commit before a
//! refactor, to pin what it produced).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Keys whose values change from run to run or name this run's folders.
const VOLATILE: [&str; 4] = ["timings_s", "timestamp", "started", "finished"];
/// `settings` keys that are the run's folders.
const PATHS: [&str; 2] = ["cache", "out"];
/// The byte-compared outputs.
const TEXT_FILES: [&str; 2] = ["report.md", "layer_correlations.csv"];

struct Case {
    name: &'static str,
    /// The cache root, made in `work`.
    cache: fn(work: &Path) -> PathBuf,
    args: &'static [&'static str],
}

const SYNTH_MODELS: &str = "m1:6:32:100000000,m2:8:48:300000000,m3:10:64:1000000000";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "demo",
            cache: demo_cache,
            args: &["--from-embeddings"],
        },
        Case {
            name: "synth-all-poolings",
            cache: synth_massive,
            args: &["--all-poolings", "--bootstrap", "300"],
        },
        Case {
            name: "synth-seed-arithmetic",
            cache: synth_massive,
            args: &[
                "--from-embeddings",
                "--arithmetic",
                "seed",
                "--bootstrap",
                "300",
                "--layer-step",
                "2",
            ],
        },
        Case {
            name: "synth-training",
            cache: synth_training,
            args: &["--bootstrap", "200", "--training-bootstrap", "50"],
        },
    ]
}

fn golden_dir() -> PathBuf {
    e2e::repo_root().join("tests/golden")
}

fn binary(name: &str) -> PathBuf {
    match std::env::var_os("UA_GOLDEN_BIN") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => e2e::binary(name),
    }
}

fn run(program: &Path, args: &[&str]) {
    let out = e2e::run_cmd(program, args);
    assert!(
        out.status.success(),
        "{} {}: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy, so the committed folder never gets a lock file.
fn demo_cache(work: &Path) -> PathBuf {
    let src = golden_dir().join("demo-cache");
    let dst = work.join("demo");
    for model in std::fs::read_dir(&src).expect("tests/golden/demo-cache") {
        let model = model.expect("entry").path();
        e2e::copy_dir(&model, &dst.join(model.file_name().expect("name")));
    }
    dst
}

fn synth(work: &Path, name: &str, args: &[&str]) -> PathBuf {
    let dir = work.join(name);
    if !dir.exists() {
        let mut all = vec!["--out", dir.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        run(&binary("synth-cache"), &all);
    }
    dir
}

fn synth_massive(work: &Path) -> PathBuf {
    let args = [
        "--models",
        SYNTH_MODELS,
        "--categories",
        "12,10,14,8",
        "--massive",
        "2:3000",
    ];
    synth(work, "massive", &args)
}

fn synth_training(work: &Path) -> PathBuf {
    let args = [
        "--models",
        &SYNTH_MODELS[..SYNTH_MODELS.rfind(',').expect("three models")],
        "--categories",
        "10,8,12",
        "--steps",
        "1000,5000,143000",
        "--compact-only",
    ];
    synth(work, "training", &args)
}

/// results.json without what differs between two runs of the same analysis.
fn stable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| !VOLATILE.contains(&k.as_str()));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    if let Some(settings) = v.get_mut("settings").and_then(Value::as_object_mut) {
        settings.retain(|k, _| !PATHS.contains(&k.as_str()));
    }
    v
}

/// The first place where two JSON values differ, as a path.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, format!("{at}.{k}")),
                _ => Some(format!("{at}.{k} (present on one side only)")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: golden {a}, now {b}")),
    }
}

fn first_line_difference(golden: &str, now: &str) -> String {
    match golden.lines().zip(now.lines()).position(|(g, n)| g != n) {
        Some(i) => format!(
            "line {}:\n  golden: {}\n  now:    {}",
            i + 1,
            golden.lines().nth(i).unwrap_or_default(),
            now.lines().nth(i).unwrap_or_default()
        ),
        None => format!(
            "lengths differ: golden {} lines, now {}",
            golden.lines().count(),
            now.lines().count()
        ),
    }
}

fn read_results(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with UA_BLESS=1)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares one case's outputs in `out` with its goldens; returns what differs.
fn compare(case: &str, out: &Path) -> Vec<String> {
    let golden = golden_dir().join(case);
    let mut problems = Vec::new();
    for file in TEXT_FILES {
        let now = std::fs::read_to_string(out.join(file)).expect("analyze wrote it");
        let path = golden.join(file);
        let Ok(then) = std::fs::read_to_string(&path) else {
            problems.push(format!(
                "{}: missing (bless with UA_BLESS=1)",
                path.display()
            ));
            continue;
        };
        if now != then {
            let where_ = first_line_difference(&then, &now);
            problems.push(format!("{case}/{file} differs at {where_}"));
        }
    }
    let now = stable(read_results(&out.join("results.json")));
    let then = read_results(&golden.join("results.json"));
    if let Some(d) = first_difference(&then, &now, "results.json".to_string()) {
        problems.push(format!("{case}/{d}"));
    }
    problems
}

fn bless(case: &str, out: &Path) {
    let golden = golden_dir().join(case);
    std::fs::create_dir_all(&golden).expect("mkdir");
    for file in TEXT_FILES {
        std::fs::copy(out.join(file), golden.join(file)).expect("copy");
    }
    let results = stable(read_results(&out.join("results.json")));
    let text = serde_json::to_string_pretty(&results).expect("JSON") + "\n";
    std::fs::write(golden.join("results.json"), text).expect("write");
}

#[test]
fn analyze_outputs_are_as_pinned() {
    let work = tempfile::tempdir().expect("tempdir");
    let blessing = std::env::var_os("UA_BLESS").is_some();
    let mut problems = Vec::new();
    for case in cases() {
        let cache = (case.cache)(work.path());
        let out = work.path().join(format!("out-{}", case.name));
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(case.args);
        run(&binary("analyze"), &args);
        if blessing {
            bless(case.name, &out);
        } else {
            problems.extend(compare(case.name, &out));
        }
    }
    assert!(
        problems.is_empty(),
        "analyze's outputs changed (if intended, bless them with UA_BLESS=1 and review the diff):\n{}",
        problems.join("\n")
    );
}

/// The comparison itself must see a change: one number, one byte.
#[test]
fn a_changed_output_is_caught() {
    let golden = golden_dir().join("demo");
    let work = tempfile::tempdir().expect("tempdir");
    for file in TEXT_FILES {
        std::fs::copy(golden.join(file), work.path().join(file)).expect("copy");
    }
    let mut results = read_results(&golden.join("results.json"));
    assert!(compare_with(&results, work.path()).is_empty());

    let report = work.path().join("report.md");
    let text = std::fs::read_to_string(&report).expect("report");
    std::fs::write(&report, text.replacen('0', "1", 1)).expect("write");
    results["summary"] = Value::from("changed");
    let problems = compare_with(&results, work.path());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("report.md differs at line"),
        "{problems:?}"
    );
    assert!(problems[1].contains("results.json.summary"), "{problems:?}");
}

fn compare_with(results: &Value, out: &Path) -> Vec<String> {
    let text = serde_json::to_string_pretty(results).expect("JSON");
    std::fs::write(out.join("results.json"), text).expect("write");
    compare("demo", out)
}
