//! Bad caches end with one clear line naming the file and the problem, and a
//! non-zero exit, never a panic; a single model still gets per-model results.

use std::path::{Path, PathBuf};

use e2e::{binary, run_analyze, run_cmd, synth_cache};
use serde_json::Value;

const SMALL: &[&str] = &["--categories", "5,4,6", "--seed", "3"];

fn cache_with(tmp: &Path, models: &str, extra: &[&str]) -> PathBuf {
    let cache = tmp.join("cache");
    let mut args = vec!["--models", models];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    synth_cache(&cache, &args);
    cache
}

fn analyze(cache: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let o = run_analyze(cache, out, &[&["--bootstrap", "50"], extra].concat());
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn expect_error(cache: &Path, out: &Path, extra: &[&str], must_contain: &[&str]) -> String {
    let (ok, _, err) = analyze(cache, out, extra);
    assert!(!ok, "analyze should have failed");
    assert!(
        !err.contains("panicked"),
        "panic instead of a message: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for m in must_contain {
        assert!(err.contains(m), "message lacks '{m}': {err}");
    }
    err
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn truncated_parquet_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let emb = cache.join("b/embeddings.parquet");
    let len = std::fs::metadata(&emb).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&emb).unwrap();
    f.set_len(len / 2).unwrap();
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["b/embeddings.parquet", "truncated"],
    );
}

#[test]
fn tampered_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    edit_manifest(&cache.join("a"), |v| {
        v["files"]["statements.parquet"]["sha256"] = Value::from("0".repeat(64))
    });
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["a/statements.parquet", "sha256"],
    );
    let tmp2 = tempfile::tempdir().unwrap();
    let cache2 = cache_with(tmp2.path(), "a:3:8:1000,b:4:8:2000", &[]);
    std::fs::write(cache2.join("a/manifest.json"), "{ not json").unwrap();
    expect_error(
        &cache2,
        &tmp2.path().join("out"),
        &[],
        &["a/manifest.json", "not a valid cache manifest"],
    );
}

#[test]
fn missing_layers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    // The manifest claims one more layer than embeddings.parquet holds.
    edit_manifest(&cache.join("b"), |v| {
        let n = v["model"]["n_layers"].as_u64().unwrap() + 1;
        v["model"]["n_layers"] = Value::from(n);
        let stmts = v["dataset"]["n_statements"].as_u64().unwrap();
        v["files"]["embeddings.parquet"]["rows"] = Value::from(stmts * (n + 1));
    });
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["b/embeddings.parquet", "rows"],
    );
}

#[test]
fn mixed_datasets_need_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000", &[]);
    synth_cache(
        &cache,
        &[
            "--models",
            "b:4:8:2000",
            "--categories",
            "5,4,6",
            "--seed",
            "3",
            "--dataset-tag",
            "other",
        ],
    );
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["b/manifest.json", "--allow-mixed-datasets"],
    );
    let (ok, _, err) = analyze(
        &cache,
        &tmp.path().join("out2"),
        &["--allow-mixed-datasets"],
    );
    assert!(ok, "with --allow-mixed-datasets: {err}");
}

#[test]
fn unknown_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &["--models", "a,nope"],
        &["nope", "found: a, b"],
    );
}

#[test]
fn single_model_gets_results_without_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("out");
    let (ok, stdout, err) = analyze(&cache, &out, &["--models", "b"]);
    assert!(ok, "{err}");
    assert!(err.contains("at least 2 models"), "{err}");
    assert!(stdout.starts_with("**Not applicable**"), "{stdout}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(v["peak_analysis"]["peaks_stable"].is_null());
    assert_eq!(v["peak_analysis"]["verdict_applicable"], Value::from(false));
    assert_eq!(v["summary"].as_array().unwrap().len(), 1);
    assert!(v["models"]["b"]["layer_results"]["4"]["correlation"].is_f64());
}

#[test]
fn missing_parameter_counts_fall_back_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    // Without n_parameters, b (4 layers x 16^2) must sort after a (3 x 8^2) even though named later anyway,
    // and c (2 x 4^2) first.
    let cache = cache_with(tmp.path(), "a:3:8,b:4:16,c:2:4", &["--no-params"]);
    let out = tmp.path().join("out");
    let (ok, _, err) = analyze(&cache, &out, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("no n_parameters"), "{err}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let order: Vec<&str> = v["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["model"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["c", "a", "b"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("estimated"));
    for f in [
        "layer_correlations.csv",
        "scaling_comparison.png",
        "scaling_comparison.svg",
        "peak_positions.png",
        "peak_positions.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn export_writes_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000", &[]);
    let out = tmp.path().join("st");
    let o = run_cmd(
        &binary("analyze"),
        &[
            "convert",
            "--format",
            "safetensors",
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(out.join("a.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("layer_2.mean_skip_first").unwrap();
    assert_eq!(t.shape(), &[30, 8]);
    assert_eq!(
        st.tensor("nll_mean").unwrap().dtype(),
        safetensors::Dtype::F64
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let cats: Vec<String> = serde_json::from_str(&meta["category"]).unwrap();
    assert_eq!(cats.len(), 30);
}

/// Runs `analyze` with exactly `args`; returns (success, stdout, stderr).
fn analyze_raw(args: &[&str]) -> (bool, String, String) {
    let o = run_cmd(&binary("analyze"), args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The failure contract for a raw run: non-zero exit, one line, no panic, `must_contain`.
fn expect_raw_error(args: &[&str], must_contain: &[&str]) -> String {
    let (ok, _, err) = analyze_raw(args);
    assert!(!ok, "analyze {args:?} should have failed");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for m in must_contain {
        assert!(err.contains(m), "message lacks '{m}': {err}");
    }
    err
}

#[test]
fn a_backup_copy_of_a_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    e2e::copy_dir(&cache.join("a"), &cache.join("a-backup"));
    let err = expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["same model", "a-backup"],
    );
    assert!(
        err.contains(&format!("{} and", cache.join("a").display())),
        "{err}"
    );
}

#[test]
fn a_symlinked_model_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    std::os::unix::fs::symlink(cache.join("b"), cache.join("b-link")).unwrap();
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["same folder", "symlink", "b-link"],
    );
}

#[test]
fn a_model_named_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &["--models", "a,a"],
        &["--models names 'a' twice"],
    );
}

#[test]
fn fewer_than_three_categories_are_refused() {
    for cats in ["5", "5,4"] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        synth_cache(
            &cache,
            &["--models", "a:3:8:1000,b:4:8:2000", "--categories", cats],
        );
        expect_error(
            &cache,
            &tmp.path().join("out"),
            &[],
            &["a/manifest.json", "needs at least 3"],
        );
        assert!(!tmp.path().join("out").exists());
    }
}

#[test]
fn stability_threshold_must_be_finite_and_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("out");
    let (c, o) = (cache.to_str().unwrap(), out.to_str().unwrap());
    for v in ["-5", "0", "NaN", "nan", "inf", "-inf", "ten"] {
        expect_raw_error(
            &["--cache", c, "--out", o, "--stability-threshold", v],
            &["--stability-threshold", v],
        );
        let eq = format!("--stability-threshold={v}");
        expect_raw_error(&["--cache", c, "--out", o, &eq], &["--stability-threshold"]);
    }
    assert!(!out.exists());
    let (ok, _, err) = analyze(&cache, &out, &["--stability-threshold", "2.5"]);
    assert!(ok, "{err}");
}

#[test]
fn an_implausible_parameter_count_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    edit_manifest(&cache.join("a"), |v| {
        v["model"]["n_parameters"] = Value::from(1_000_000_000_000u64)
    });
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &[
            "a/manifest.json",
            "n_parameters = 1000000000000",
            "implausible",
        ],
    );
}

/// The report says where the order comes from, and notes counts against the shapes.
#[test]
fn the_model_order_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    // b is four times wider but its recorded count puts it first.
    let cache = cache_with(tmp.path(), "a:3:8:5000,b:3:32:4000", &[]);
    let out = tmp.path().join("out");
    let (ok, _, err) = analyze(&cache, &out, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("b is ordered before a by n_parameters"),
        "{err}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("The order comes from `model.n_parameters`"));
}

fn statements_digest(rows: &[schemas::StatementRow]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut rows: Vec<&schemas::StatementRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.statement_id);
    for r in rows {
        h.update(format!("{}\t{}\n", r.statement_id, r.text).as_bytes());
    }
    hex::encode(h.finalize())
}

#[test]
fn statements_that_do_not_match_the_digest_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let st = cache.join("a/statements.parquet");
    let mut rows = schemas::read_statements(&st).unwrap();
    let digest = statements_digest(&rows);
    edit_manifest(&cache.join("a"), |v| {
        v["dataset"]["statements_sha256"] = Value::from(digest.clone())
    });
    let (ok, _, err) = analyze(&cache, &tmp.path().join("out"), &[]);
    assert!(ok, "the recorded digest matches: {err}");
    // Another file with the file hash in the manifest fixed to match it.
    rows[7].text = "a statement from another dataset".into();
    let entry = schemas::write_statements(&st, &rows).unwrap();
    edit_manifest(&cache.join("a"), |v| {
        v["files"]["statements.parquet"] = serde_json::to_value(&entry).unwrap()
    });
    expect_error(
        &cache,
        &tmp.path().join("out2"),
        &[],
        &["a/statements.parquet", "statements_sha256", &digest],
    );
}

#[test]
fn no_permutations_with_many_categories_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "a:3:8:1000,b:4:8:2000",
            "--categories",
            "3,3,3,3,3,3,3,3,3",
        ],
    );
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &["--permutations", "0"],
        &["--permutations 0", "9 categories"],
    );
    // Up to 8 categories every ordering is used and the flag does not matter.
    let small = cache_with(&tmp.path().join("small"), "a:3:8:1000,b:4:8:2000", &[]);
    let (ok, _, err) = analyze(&small, &tmp.path().join("out2"), &["--permutations", "0"]);
    assert!(ok, "{err}");
}

#[test]
fn the_small_n_caveat_depends_on_n() {
    let tmp = tempfile::tempdir().unwrap();
    let few = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("out");
    let (ok, stdout, err) = analyze(&few, &out, &[]);
    assert!(ok, "{err}");
    // The console's bullet, and the report's details.
    assert!(
        stdout.contains("rests on 3 categories (df = 1)") && stdout.contains("1/3! = 0.167"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("only 3 categories (df = 1)") && report.contains("p-values are weak"),
        "{report}"
    );
    let many = tmp.path().join("many");
    let cats = vec!["2"; 40].join(",");
    synth_cache(
        &many,
        &["--models", "a:3:8:1000,b:4:8:2000", "--categories", &cats],
    );
    let out2 = tmp.path().join("out2");
    let (ok, stdout, err) = analyze(&many, &out2, &["--permutations", "999"]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("rests on 40 categories (df = 38)")
            && stdout.contains("1/(999 + 1) = 1.0e-3 (Monte Carlo)"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(out2.join("report.md")).unwrap();
    assert!(
        report.contains("Each r rests on 40 categories (df = 38)") && !report.contains("weak"),
        "{report}"
    );
}

#[test]
fn out_among_the_caches_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let model = tmp.path().join("models/m");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("export.json"), "{}").unwrap();
    std::fs::write(model.join("model.onnx"), "").unwrap();
    let c = cache.to_str().unwrap();
    let cases = [
        (cache.clone(), "is the --cache folder"),
        (cache.join("results"), "inside the --cache folder"),
        (cache.join("a"), "inside the --cache folder"),
        (tmp.path().to_path_buf(), "holds the --cache folder"),
        (model.join("results"), "it holds export.json"),
    ];
    for (out, want) in &cases {
        let o = out.to_str().unwrap();
        expect_raw_error(&["--cache", c, "--out", o], &["--out", want]);
        expect_raw_error(
            &[
                "convert",
                "--format",
                "safetensors",
                "--cache",
                c,
                "--out",
                o,
            ],
            &["--out", want],
        );
    }
    assert!(!cache.join("results").exists() && !model.join("results").exists());
    // A folder of the user's own is not replaced either.
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    expect_raw_error(
        &["--cache", c, "--out", mine.to_str().unwrap()],
        &["already holds 'notes.txt'"],
    );
    assert!(mine.join("notes.txt").is_file());
}

/// Entries of `dir` by name.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A write that fails half way (here the file size limit, as a full disk would)
/// leaves the previous output as it was and no temporary folder.
#[test]
fn a_failed_write_leaves_the_previous_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("out");
    let (ok, _, err) = analyze(&cache, &out, &["--seed", "1"]);
    assert!(ok, "{err}");
    let before: Vec<(String, Vec<u8>)> = names(&out)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(out.join(&n)).unwrap()))
        .collect();
    assert!(before.len() >= 7, "{before:?}");
    // SIGXFSZ ignored: writing past `ulimit -f` then fails with EFBIG ("File too large").
    let script = format!(
        "trap '' XFSZ; ulimit -f 2; exec '{}' --cache '{}' --out '{}' --bootstrap 50 --seed 2",
        binary("analyze").display(),
        cache.display(),
        out.display()
    );
    let o = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write") || err.contains("File too large"),
        "{err}"
    );
    let after: Vec<(String, Vec<u8>)> = names(&out)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(out.join(&n)).unwrap()))
        .collect();
    assert!(before == after, "the previous output changed");
    assert_eq!(names(tmp.path()), ["cache", "out"], "leftovers");
    // A successful rerun replaces it whole.
    let (ok, _, err) = analyze(&cache, &out, &["--seed", "2"]);
    assert!(ok, "{err}");
    assert_eq!(names(tmp.path()), ["cache", "out"]);
}

/// One line, non-zero exit, no panic, nothing written: for flags given as is.
fn refused_as_given(cache: &Path, out: &Path, args: &[&str], must_contain: &[&str]) {
    let o = run_analyze(cache, out, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "analyze {args:?} should have failed");
    assert!(
        !err.contains("panicked"),
        "panic instead of a message: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for m in must_contain {
        assert!(err.contains(m), "message lacks '{m}': {err}");
    }
    assert!(!out.exists(), "nothing written");
}

#[test]
fn resampling_counts_that_cannot_fit_or_mean_nothing_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("out");
    for (args, said) in [
        (
            &["--bootstrap", "1000000000"][..],
            &["--bootstrap 1000000000", "GB", "memory available"][..],
        ),
        (
            &["--training-bootstrap", "1000000000"],
            &["--training-bootstrap 1000000000", "GB"],
        ),
        (
            &["--monte-carlo-permutations", "--permutations", "1000000000"],
            &["--permutations 1000000000", "orderings"],
        ),
        (
            &[
                "--monte-carlo-permutations",
                "--permutations",
                "18446744073709551615",
            ],
            &["--permutations"],
        ),
        (
            &["--bootstrap", "1"],
            &["--bootstrap", "at least 40", "pass 0 to turn it off"],
        ),
        (&["--bootstrap", "2"], &["--bootstrap", "at least 40"]),
        // One ordering gave p = 0.5 whatever the data, and a confident flag beside it.
        (
            &["--monte-carlo-permutations", "--permutations", "1"],
            &[
                "--permutations",
                "at least 1/(1 + 1) = 0.500",
                "200 or more",
            ],
        ),
        (
            &["--permutations", "199"],
            &["--permutations", "200 or more"],
        ),
        (
            &["--training-bootstrap", "39"],
            &["--training-bootstrap", "at least 40"],
        ),
    ] {
        refused_as_given(&cache, &out, args, said);
    }
    let (ok, _, err) = analyze(&cache, &out, &["--training-bootstrap", "40"]);
    assert!(ok, "40 resamples are enough: {err}");
}

/// Rewrites `dir/file` with the Python `script` (pyarrow; the file's path is
/// `sys.argv[1]`, `args` follow) and records its new size and sha256 in the
/// manifest, so that only what the script planted is left to find.
fn rewrite_parquet(dir: &Path, file: &str, script: &str, args: &[&str]) {
    let path = dir.join(file);
    let o = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .args(args)
        .output()
        .expect("python3 (scripts/test puts .venv first on PATH)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut m = schemas::Manifest::read(&dir.join(schemas::MANIFEST_FILE)).unwrap();
    let entry = m.files.get_mut(file).unwrap();
    entry.sha256 = e2e::sha256(&path);
    entry.bytes = std::fs::metadata(&path).unwrap().len();
    schemas::write_manifest(&dir.join(schemas::MANIFEST_FILE), &m).unwrap();
}

/// A null in statements.parquet was read as another row's value; now it is refused.
#[test]
fn a_null_in_the_statements_is_refused_naming_the_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let script = r#"
import sys
import pyarrow as pa
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
i = t.schema.get_field_index("nll_mean")
values = t.column(i).to_pylist()
values[3] = None
t = t.set_column(i, pa.field("nll_mean", pa.float64(), nullable=True), pa.array(values, pa.float64()))
pq.write_table(t, sys.argv[1])
"#;
    rewrite_parquet(&cache.join("a"), schemas::STATEMENTS_FILE, script, &[]);
    expect_error(
        &cache,
        &tmp.path().join("out"),
        &[],
        &["statements.parquet", "column `nll_mean`", "1 null"],
    );
}

/// Sets `COLUMN[ROW]` (or, given INDEX, `COLUMN[ROW][INDEX]`) of row group GROUP to
/// the JSON `VALUE`; argv: GROUP COLUMN ROW VALUE [INDEX]. Row groups, types and the
/// file's key-value metadata are kept.
const SET_VALUE: &str = r#"
import json, sys
import pyarrow as pa
import pyarrow.parquet as pq
path, group, name, row, value = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
f = pq.ParquetFile(path)
groups = [f.read_row_group(g) for g in range(f.num_row_groups)]
# The file's key-value metadata (the sidecar's ua.grams.* keys) kept.
kept = {k: v for k, v in (f.metadata.metadata or {}).items() if k != b"ARROW:schema"}
schema = f.schema_arrow.with_metadata(kept)
i = schema.get_field_index(name)
values = groups[group].column(i).to_pylist()
if len(sys.argv) > 6:
    values[row][int(sys.argv[6])] = value
else:
    values[row] = value
groups[group] = groups[group].set_column(i, schema.field(i), pa.array(values, schema.field(i).type))
groups = [g.replace_schema_metadata(kept) for g in groups]
# Lists' items named "item", as arrow-rs names them (pyarrow's default is "element").
with pq.ParquetWriter(path, schema, use_compliant_nested_type=False) as w:
    for g in groups:
        w.write_table(g, row_group_size=len(g))
"#;

/// Values no extract writes, in files whose sha256 the manifest records: a mean that
/// is not nll_sum / n_predicted, a cosine of 2.0 in the sidecar.
/// Each passed unnoticed; each is refused naming the file and the value.
#[test]
fn impossible_values_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let statements = schemas::STATEMENTS_FILE;
    let cases: [(&str, &str, &[&str], &[&str]); 3] = [
        (
            "mean",
            statements,
            &["0", "nll_mean", "3", "9.5"],
            &["statement 3 has nll_mean 9.5 but nll_sum / n_predicted"],
        ),
        (
            "cosine-diagonal",
            schemas::GRAMS_FILE,
            &["1", "mean_skip_first_a", "0", "2.0", "0"],
            &["layer 1, category", "no cosines", "beyond ±1"],
        ),
        (
            "cosine",
            schemas::GRAMS_FILE,
            &["2", "mean_skip_first_ab", "1", "-2.0", "1"],
            &["layer 2, category", "no cosines"],
        ),
    ];
    for (name, file, args, said) in cases {
        let root = tmp.path().join(name);
        let cache = cache_with(&root, "a:3:8:1000,b:4:8:2000", &[]);
        rewrite_parquet(&cache.join("b"), file, SET_VALUE, args);
        let err = expect_error(&cache, &root.join("out"), &[], said);
        assert!(err.contains(&format!("b/{file}")), "{name}: {err}");
        assert!(!root.join("out").exists());
    }
}

/// Layer 2 of `embeddings.parquet` with one row changed as `how` says (`null-cell`:
/// its mean_skip_first vector null, the column made nullable; `null-id`: its
/// statement_id null; `duplicate-id`: the statement_id of the row before), every
/// row group kept one layer.
const PLANT_IN_LAYER_2: &str = r#"
import sys
import pyarrow as pa
import pyarrow.parquet as pq
path, how = sys.argv[1], sys.argv[2]
f = pq.ParquetFile(path)
groups = [f.read_row_group(g) for g in range(f.num_row_groups)]
name = {"null-cell": "mean_skip_first", "null-id": "statement_id", "duplicate-id": "statement_id"}[how]
schema = groups[0].schema
i = schema.get_field_index(name)
field = schema.field(i)
if how != "duplicate-id":
    field = field.with_nullable(True)
schema = schema.set(i, field)
values = groups[2].column(i).to_pylist()
values[5] = values[4] if how == "duplicate-id" else None
groups[2] = groups[2].set_column(i, field, pa.array(values, field.type))
with pq.ParquetWriter(path, schema, use_compliant_nested_type=False) as w:
    for k, g in enumerate(groups):
        # The planted group has the new schema already (a null list casts to nothing).
        w.write_table(g if k == 2 else g.cast(schema), row_group_size=len(g))
"#;

/// A null vector, a null statement id or a statement id twice in one layer of the
/// embeddings was read as zeros or in another statement's place, and changed r
/// (issue 29): each is refused naming the file, the column or layer, and the problem,
/// by the analysis (from a cache without a sidecar), by export and by index.
#[test]
fn a_null_or_repeated_statement_in_the_embeddings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (how, said) in [
        (
            "null-cell",
            &[
                "column `mean_skip_first` is nullable",
                "1 null value(s) (layer 2)",
            ][..],
        ),
        (
            "null-id",
            &[
                "column `statement_id` is nullable",
                "1 null value(s) (layer 2)",
            ][..],
        ),
        ("duplicate-id", &["layer 2 holds statement_id", "twice"][..]),
    ] {
        let root = tmp.path().join(how);
        let cache = cache_with(&root, "a:3:8:1000,b:4:8:2000", &["--no-grams"]);
        let file = schemas::EMBEDDINGS_FILE;
        rewrite_parquet(&cache.join("b"), file, PLANT_IN_LAYER_2, &[how]);
        let out = root.join("out");
        let err = expect_error(&cache, &out, &[], said);
        assert!(err.contains("b/embeddings.parquet"), "{err}");
        assert!(!out.exists(), "nothing written");
        let (cache_arg, export) = (cache.to_str().unwrap(), root.join("export"));
        for (args, said) in [
            (
                // `export`, convert's old name, still works.
                vec![
                    "export",
                    "--cache",
                    cache_arg,
                    "--out",
                    export.to_str().unwrap(),
                ],
                said,
            ),
            // index reads every layer whole: it names the layer, not the row.
            (vec!["index", "--cache", cache_arg], &["2"][..]),
        ] {
            let o = run_cmd(&binary("analyze"), &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.trim().lines().count() == 1,
                "{err}"
            );
            assert!(err.contains("b/embeddings.parquet"), "{err}");
            assert!(said.iter().all(|s| err.contains(s)), "{args:?}: {err}");
        }
        assert!(!export.exists(), "nothing exported");
        assert!(!cache.join("b").join(schemas::GRAMS_FILE).exists());
    }
}

/// Folder names need not be UTF-8: the analysis completes and records them as it can.
#[cfg(unix)]
#[test]
fn a_non_utf8_cache_and_out_are_analyzed() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let made = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let cache = tmp.path().join(std::ffi::OsStr::from_bytes(b"cache-\xff"));
    std::fs::rename(&made, &cache).unwrap();
    let out = tmp.path().join(std::ffi::OsStr::from_bytes(b"out-\xfe"));
    let o = std::process::Command::new(e2e::binary("analyze"))
        .arg("--cache")
        .arg(&cache)
        .arg("--out")
        .arg(&out)
        .args(["--bootstrap", "50"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("panicked"), "{err}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(v["settings"]["cache"]
        .as_str()
        .unwrap()
        .contains("cache-\u{fffd}"));
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp folder left: {leftovers:?}");
}

/// Every file of `dir` by name, or None when it does not exist; results.json without
/// the values that change from run to run (timings, clock times).
fn snapshot(dir: &Path) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
    fn steady(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in ["timings_s", "timestamp", "started", "finished"] {
                    map.remove(key);
                }
                map.values_mut().for_each(steady);
            }
            Value::Array(items) => items.iter_mut().for_each(steady),
            _ => {}
        }
    }
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let mut bytes = std::fs::read(e.path()).unwrap();
                if name == "results.json" {
                    // A truncated file is not JSON: kept as it is, it matches neither.
                    if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
                        steady(&mut v);
                        bytes = v.to_string().into_bytes();
                    }
                }
                (name, bytes)
            })
            .collect(),
    )
}

/// A signal at any moment while analyze replaces an earlier `--out` leaves it holding
/// the complete earlier output or the complete new one, never a part (a SIGINT while
/// the new folder was renamed into place left it empty, and the earlier output only
/// in `.out.old-PID`, which the next run deleted), and no copy behind (eight SIGTERMs
/// once left seven). A run killed outright (SIGKILL), at any moment too, leaves what
/// the next run puts right before it reads anything: the earlier output back in
/// place where it had been moved aside, the leftovers removed.
// Long: two phases (signals, then kills and recovery) over one shared earlier output.
#[cfg(unix)]
#[test]
fn a_signal_at_any_moment_leaves_the_earlier_or_the_new_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "m1:6:32:100000,m2:8:32:200000,m3:10:32:300000,m4:12:32:400000",
            "--categories",
            "20,20,20,20,20,20",
            "--steps",
            "1000,2000",
        ],
    );
    let out = tmp.path().join("out");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".out."))
            .collect()
    };
    let flags = |seed: &str| -> Vec<String> {
        [
            "--bootstrap",
            "100",
            "--training-bootstrap",
            "100",
            "--seed",
            seed,
        ]
        .map(String::from)
        .to_vec()
    };
    // The earlier output (seed 1) and the new one (seed 2) differ in every run.
    let o = run_analyze(
        &cache,
        &out,
        &flags("1").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let earlier_dir = tmp.path().join("earlier");
    e2e::copy_dir(&out, &earlier_dir);
    let earlier = snapshot(&out);
    let spawn = || {
        std::process::Command::new(binary("analyze"))
            .arg("--cache")
            .arg(&cache)
            .arg("--out")
            .arg(&out)
            .args(flags("2"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Runs until the outputs are being written (the temp folder exists), then waits
    // `after` and sends `signal`; returns how the run ended, and when, counted from
    // the temp folder's appearance.
    let stop = |signal: &str, after: std::time::Duration| {
        std::fs::remove_dir_all(&out).unwrap();
        e2e::copy_dir(&earlier_dir, &out);
        let mut child = spawn();
        let tmp_dir = tmp.path().join(format!(".out.tmp-{}", child.id()));
        while !tmp_dir.exists() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let t = std::time::Instant::now();
        std::thread::sleep(after);
        let _ = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        (child.wait().unwrap(), t.elapsed())
    };
    // The new output, twice the same; how long writing takes, from the temp folder's
    // appearance to the exit (the longer of two runs).
    let mut writing = std::time::Duration::ZERO;
    let mut new = None;
    for _ in 0..2 {
        let (status, took) = stop("-0", std::time::Duration::ZERO);
        assert!(status.success());
        writing = writing.max(took);
        let now = snapshot(&out);
        assert!(
            new.is_none() || new == now,
            "the new output is not reproducible"
        );
        new = now;
    }
    assert_ne!(earlier, new);

    let moments = 24;
    let (mut kept, mut replaced) = (0, 0);
    // Signals a run `after` into writing; true when --out then holds the new output.
    let signal_at = |i: usize, after: std::time::Duration| {
        let signal = if i.is_multiple_of(2) { "-INT" } else { "-TERM" };
        stop(signal, after);
        let now = snapshot(&out);
        assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
        if now != earlier && now != new {
            panic!("{signal} {after:?} into writing: --out holds neither output");
        }
        now == new
    };
    for i in 0..moments {
        if signal_at(i, writing.mul_f64(1.3 * i as f64 / moments as f64)) {
            replaced += 1;
        } else {
            kept += 1;
        }
    }
    // Writing can take longer than the two timed runs did (the other tests of this
    // binary share the machine): later signals, until one falls after the replacement.
    let mut late = writing.mul_f64(2.0);
    while replaced == 0 && late < writing.mul_f64(64.0) {
        if signal_at(moments, late) {
            replaced += 1;
        }
        late = late.mul_f64(2.0);
    }
    // The signals fell both before and after the replacement.
    assert!(kept > 0 && replaced > 0, "kept {kept}, replaced {replaced}");

    for i in 0..moments {
        let after = writing.mul_f64(1.3 * i as f64 / moments as f64);
        stop("-KILL", after);
        let now = snapshot(&out);
        assert!(
            now.is_none() || now == earlier || now == new,
            "SIGKILL {after:?} into writing: --out holds neither output"
        );
        // The next run puts things right before it reads a cache (this one fails there).
        let (ok, _, err) = analyze(&cache, &out, &["--models", "none"]);
        assert!(!ok, "{err}");
        let now = snapshot(&out);
        assert!(
            now == earlier || now == new,
            "SIGKILL {after:?} into writing: the next run left --out holding neither output"
        );
        assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
    }

    // Left by runs killed outright with a pid now dead, or with this very pid.
    for dead in [".out.tmp-4000000", ".out.old-4000001"] {
        std::fs::create_dir(tmp.path().join(dead)).unwrap();
        std::fs::write(tmp.path().join(dead).join("results.json"), "{}").unwrap();
    }
    let (ok, _, err) = analyze(&cache, &out, &[]);
    assert!(ok, "{err}");
    assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
}

/// An `--out` that is a symbolic link was replaced by a folder, and the folder it
/// pointed to kept the earlier results, with no word: it is refused, naming the link.
#[cfg(unix)]
#[test]
fn an_out_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let target = tmp.path().join("results");
    let (ok, _, err) = analyze(&cache, &target, &[]);
    assert!(ok, "{err}");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    expect_error(
        &cache,
        &link,
        &[],
        &["--out", "is a symbolic link", "results"],
    );
    assert!(link.is_symlink() && target.join("results.json").is_file());
}

/// A legal 250-byte `--out` name is written: the temp folder beside it gets a
/// shorter name (it grew past 255 bytes and the run was refused).
#[test]
fn a_250_character_out_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let out = tmp.path().join("o".repeat(250));
    for _ in 0..2 {
        let (ok, _, err) = analyze(&cache, &out, &[]);
        assert!(ok, "{err}");
    }
    assert!(out.join("results.json").is_file());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "nothing beside the cache and --out: {names:?}"
    );
}

/// CKA's n x n Grams at 60,000 statements would need about 130 GB (the analysis
/// aborted allocating them): with more statements than twice the hidden size, CKA
/// is computed from the centred features instead (a few MB here), and the rest of
/// the analysis runs as before.
#[test]
fn cka_at_60000_statements_is_computed_in_feature_space() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let categories = vec!["500"; 60].join(",");
    synth_cache(
        &cache,
        &[
            "--models",
            "a:3:8:1000,b:4:8:2000",
            "--categories",
            &categories,
            "--poolings",
            "mean_skip_first",
            "--no-grams",
        ],
    );
    let out = tmp.path().join("out");
    let o = run_analyze(
        &cache,
        &out,
        &["--bootstrap", "0", "--permutations", "1000"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("CKA depth alignment was skipped"), "{err}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cka = &v["cka_alignment"];
    assert_eq!(cka["applicable"], true, "{cka}");
    let values: Vec<f64> = cka["pairs"][0]["cka"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().filter_map(Value::as_f64))
        .collect();
    assert_eq!(values.len(), 4 * 5, "{cka}");
    assert!(
        values.iter().all(|v| (0.0..=1.0 + 1e-12).contains(v)),
        "{values:?}"
    );
}

#[test]
fn a_negative_seed_is_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &[]);
    let o = run_analyze(&cache, &tmp.path().join("out"), &["--seed", "-1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("'--seed <SEED>'") && err.contains("-1"),
        "{err}"
    );
}

/// `--all-poolings` says which pooling it leaves out and why (it dropped one silently).
#[test]
fn all_poolings_names_a_pooling_some_cache_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(&cache, &[&["--models", "a:3:8:1000"][..], SMALL].concat());
    synth_cache(
        &cache,
        &[
            &[
                "--models",
                "b:4:8:2000",
                "--poolings",
                "mean_skip_first,mean",
            ][..],
            SMALL,
        ]
        .concat(),
    );
    let out = tmp.path().join("out");
    let (ok, _, err) = analyze(&cache, &out, &["--all-poolings"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("--all-poolings: `last` is left out: b was not extracted with it"),
        "{err}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("`last` is left out"),
        "the report says it too"
    );
}

/// A stray folder in the root is skipped without a lock file, and the caches beside
/// it are still indexed (it stopped the command and kept a `.lock`).
#[test]
fn analyze_index_skips_a_stray_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_with(tmp.path(), "a:3:8:1000,b:4:8:2000", &["--no-grams"]);
    let stray = cache.join("notes");
    std::fs::create_dir(&stray).unwrap();
    let o = run_cmd(
        &binary("analyze"),
        &["index", "--cache", cache.to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("notes: skipped, not a model cache"), "{out}");
    assert!(!stray.join(schemas::LOCK_FILE).exists());
    for m in ["a", "b"] {
        assert!(
            cache.join(m).join(schemas::GRAMS_FILE).is_file(),
            "{m} indexed"
        );
    }
}
