//! Helpers of the analyze tests: the analyze binaries and synthetic caches.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the parent of this `tests` package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A binary built next to the running test: `target/<profile>/deps/<test>` ->
/// `target/<profile>/<name>`. Panics with the build command when it is missing.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --release -p analyze` (same CARGO_TARGET_DIR as the tests)",
        bin.display()
    );
    bin
}

/// Runs a command in the workspace root and returns its output (never panics on a non-zero exit).
pub fn run_cmd(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Writes a synthetic cache with `synth-cache` (analyze's generator) into `cache`.
pub fn synth_cache(cache: &Path, args: &[&str]) {
    let bin = sibling_bin("synth-cache");
    let mut all = vec!["--out", cache.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = run_cmd(&bin, &all);
    assert!(
        out.status.success(),
        "synth-cache failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
