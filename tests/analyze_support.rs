//! Helpers of the analyze tests: the analyze binaries and synthetic caches.

use std::path::Path;
use std::process::{Command, Output};

/// Runs a command in the workspace root and returns its output (never panics on a non-zero exit).
pub fn run_cmd(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(crate::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Runs `analyze --cache CACHE --out OUT EXTRA...` (never panics on a non-zero exit).
pub fn run_analyze(cache: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--cache",
        cache.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    run_cmd(&crate::binary("analyze"), &args)
}

/// Runs analyze, requires success, and returns its results.json.
pub fn analyze_results(cache: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let res = run_analyze(cache, out, extra);
    assert!(
        res.status.success(),
        "analyze failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// Writes a synthetic cache with `synth-cache` (analyze's generator) into `cache`.
pub fn synth_cache(cache: &Path, args: &[&str]) {
    let bin = crate::binary("synth-cache");
    let mut all = vec!["--out", cache.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = run_cmd(&bin, &all);
    assert!(
        out.status.success(),
        "synth-cache failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
