//! Helpers of the extract end-to-end tests: where the binaries, the repo, the
//! fixtures and the committed data are, running a binary, reading references.
//!
//! The tests run the real binaries. [`binary`] builds them first with the cargo
//! that runs the tests, in the same profile and target folder, so `cargo test`
//! alone never tests stale binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    // cargo sets CARGO_MANIFEST_DIR when it runs a test, too; prefer that to the
    // compile-time value, which is stale when a shared target folder reuses a
    // test binary built in another checkout (CI's clone, for one).
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// One fixture model directory, e.g. `tiny-a`; panics with a hint when absent.
pub fn fixture(name: &str) -> PathBuf {
    let dir = fixtures_dir().join(name);
    assert!(
        dir.join("model.onnx").is_file(),
        "fixture {} is missing: run scripts/make-fixtures",
        dir.display()
    );
    dir
}

/// The four fixture models, smallest first.
pub const FIXTURES: [&str; 4] = ["tiny-a", "tiny-b", "tiny-c", "tiny-d"];

/// The project's own small dataset.
pub fn demo_dataset() -> PathBuf {
    fixtures_dir().join("demo-dataset.json")
}

/// The seed's dataset, committed with its source and sha256 (`tests/data/SOURCES.md`).
pub fn seed_dataset() -> PathBuf {
    repo_root().join("tests/data/seed-dataset.json")
}

/// A binary of this workspace (`extract`, `analyze`, `synth-cache`), built on first
/// use in this test process: `target/<profile>/deps/<test>` -> `target/<profile>/<name>`.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(build_binaries);
    let bin = dir.join(name);
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// `cargo build` of the workspace's binaries into the folder the test executable
/// lives in; returns that folder. A no-op when they are up to date.
fn build_binaries() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target_dir = dir.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "--locked", "--workspace", "--bins"])
        .arg("--target-dir")
        .arg(target_dir);
    // The `dev` profile builds into `debug/`; every other profile into its own name.
    if profile != "debug" {
        cmd.args(["--profile", profile]);
    }
    // Cargo gives this test process the variables of the package under test
    // (CARGO_MANIFEST_DIR=.../tests, ...). Passed on, they reach build scripts that
    // watch them (ring's watches CARGO_MANIFEST_DIR), so every later plain `cargo
    // build` would see them changed and rebuild ring, rustls and their dependents.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let of_package = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        if of_package
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&&*key)
        {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd.status().expect("cargo starts");
    assert!(status.success(), "building the binaries failed ({status})");
    dir
}

/// Runs a workspace binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .output()
        .expect("binary starts")
}

/// `extract` on the CPU, the cache to `out/<name>`.
pub fn extract_cpu(model: &Path, dataset: &Path, out: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "--model".into(),
        model.display().to_string(),
        "--dataset".into(),
        dataset.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--name".into(),
        name.into(),
        "--device".into(),
        "cpu".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("extract", &refs)
}

/// Panics with both streams when a run failed.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one line a refused run prints (it must fail, without a panic).
pub fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "succeeded but should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// A fixture's `reference.safetensors`: what transformers computed.
pub struct Reference {
    /// `[n_statements][n_layers + 1][hidden]`, flat.
    pub mean_skip_first: Vec<f32>,
    pub shape: Vec<usize>,
    pub nll: Vec<f64>,
    pub metadata: std::collections::HashMap<String, String>,
}

pub fn read_reference(path: &Path) -> Reference {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference is safetensors");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
    let emb = st.tensor("mean_skip_first").expect("mean_skip_first");
    assert_eq!(emb.dtype(), safetensors::Dtype::F32);
    let nll = st.tensor("nll").expect("nll");
    assert_eq!(nll.dtype(), safetensors::Dtype::F64);
    Reference {
        mean_skip_first: emb
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        shape: emb.shape().to_vec(),
        nll: nll
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        metadata: meta.metadata().clone().unwrap_or_default(),
    }
}

/// sha256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    schemas::sha256_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies a directory's plain files (fixtures are flat).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Rewrites a model directory's export.json through `edit`.
pub fn edit_export(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("export.json");
    let mut e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut e);
    std::fs::write(&path, serde_json::to_string(&e).unwrap()).unwrap();
}

/// Records a replaced file's sha256 and size in export.json, as an export of
/// those bytes would: only later checks can then catch the mismatch.
pub fn relist(dir: &Path, name: &str) {
    let sha = sha256(&dir.join(name));
    let bytes = std::fs::metadata(dir.join(name)).unwrap().len();
    edit_export(dir, |e| {
        e["files"][name] = serde_json::json!({"sha256": sha, "bytes": bytes});
    });
}
