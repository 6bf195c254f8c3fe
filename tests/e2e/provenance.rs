//! Provenance that names the weights: every model file is hashed (external
//! weights included), a tampered or swapped weights file is refused, a perturbed
//! weight that passes the hash checks is caught by the parity probe, and a resume
//! with other weights or another execution provider is refused.
//!
//! Models with external weights are made here from a fixture with Python's `onnx`
//! (installed by scripts/test), as `scripts/export` writes them for models over 2 GB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    assert_ok, binary, copy_dir, demo_dataset, extract_cpu, fixture, one_error_line, relist,
    repo_root, sha256,
};
use schemas::{validate_cache, Manifest, MANIFEST_FILE};

const NAME: &str = "m";

fn python(script: &str, args: &[&Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert_ok(
        &out,
        "python (needs the onnx package: scripts/test installs it)",
    );
}

/// A copy of `fixture` whose weights live in `model.onnx.data`, both listed in export.json.
fn with_external_data(fixture_name: &str, dir: &Path) -> PathBuf {
    copy_dir(&fixture(fixture_name), dir);
    let onnx = dir.join("model.onnx");
    python(
        "import onnx, sys; m = onnx.load(sys.argv[1]); \
         onnx.save_model(m, sys.argv[1], save_as_external_data=True, \
         all_tensors_to_one_file=True, location='model.onnx.data', size_threshold=1024)",
        &[&onnx],
    );
    relist(dir, "model.onnx");
    relist(dir, "model.onnx.data");
    dir.to_path_buf()
}

/// Flips the low bit of one float's mantissa in the middle of the weights file: a
/// change no one would see in the outputs, that only a hash catches.
fn flip_low_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = (bytes.len() / 2) & !3;
    bytes[at] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_model_file_is_recorded_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = with_external_data("tiny-a", &tmp.path().join("ext"));
    let out = extract_cpu(&model, &demo_dataset(), &tmp.path().join("c"), NAME, &[]);
    assert_ok(&out, "extract with external data");
    let m = validate_cache(&tmp.path().join("c").join(NAME))
        .unwrap()
        .manifest;
    assert_eq!(
        m.model.files.get("model.onnx.data"),
        Some(&sha256(&model.join("model.onnx.data")))
    );
    assert!(
        m.model.files.contains_key("model.onnx") && m.model.files.contains_key("tokenizer.json")
    );
    let parity = m.run.parity.expect("the manifest records the parity check");
    assert!(parity.n_probes > 0 && parity.max_embedding_error <= parity.bound);
    let t = m
        .run
        .timings_s
        .expect("the manifest records where the time went");
    let steps = [
        t.session,
        t.hashing,
        t.probes,
        t.forward,
        t.host_reduction,
        t.sidecar,
        t.writing,
    ];
    assert!(steps.iter().all(|s| s.is_finite() && *s >= 0.0), "{t:?}");
    // the steps that do not overlap anything fit inside the whole
    assert!(
        t.total > 0.0 && t.session + t.probes + t.sidecar <= t.total,
        "{t:?}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("time (s): session"), "{summary}");
    assert_eq!(m.run.execution_provider, "CPUExecutionProvider");
    assert!(!m.run.chunks.is_empty());
    assert!(m
        .run
        .chunks
        .iter()
        .all(|c| c.execution_provider == "CPUExecutionProvider"));

    // a tampered weights file is refused by its hash
    flip_low_bit(&model.join("model.onnx.data"));
    let out = extract_cpu(&model, &demo_dataset(), &tmp.path().join("d"), NAME, &[]);
    let err = one_error_line(&out);
    assert!(
        err.contains("model.onnx.data") && err.contains("sha256"),
        "{err}"
    );
    assert!(
        !tmp.path().join("d").join(NAME).exists(),
        "nothing left behind"
    );

    // an unlisted weights file beside the graph is refused
    let stray = tmp.path().join("stray");
    copy_dir(&fixture("tiny-a"), &stray);
    std::fs::write(stray.join("model.onnx.data"), b"weights of something").unwrap();
    let err = one_error_line(&extract_cpu(
        &stray,
        &demo_dataset(),
        &tmp.path().join("e"),
        NAME,
        &[],
    ));
    assert!(
        err.contains("model.onnx.data") && err.contains("not listed"),
        "{err}"
    );
}

/// A weight changed and export.json's hashes rewritten to match: only the parity
/// probe can tell, and it must.
#[test]
fn a_perturbed_weight_is_caught_by_the_parity_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let perturbed = tmp.path().join("perturbed");
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/perturb-onnx"))
        .arg(fixture("tiny-m"))
        .arg(&perturbed)
        .output()
        .unwrap();
    assert_ok(&out, "scripts/perturb-onnx");
    let out = extract_cpu(
        &perturbed,
        &demo_dataset(),
        &tmp.path().join("c"),
        NAME,
        &[],
    );
    let err = one_error_line(&out);
    assert!(
        err.contains("parity probe") && err.contains("relative error"),
        "{err}"
    );
    assert!(
        err.contains("x the bound") && err.contains("re-export"),
        "{err}"
    );
}

fn spawn_slow(model: &Path, out: &Path) -> Child {
    Command::new(binary("extract"))
        .args(["--model", model.to_str().unwrap()])
        .args(["--dataset", e2e::seed_dataset().to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--name", NAME])
        .args(["--device", "cpu", "--batch-size", "1", "--save-every", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a run and kills it once a chunk is finished: an interrupted cache.
fn interrupted(model: &Path, out: &Path) {
    let partial = out.join(NAME).join(".partial");
    let mut child = spawn_slow(model, out);
    let start = Instant::now();
    loop {
        let done = std::fs::read_dir(&partial)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(".statements.parquet")
                })
            })
            .unwrap_or(false);
        if done {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "extract ended before a chunk was seen"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn resume(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(binary("extract"))
        .args(["--model", model.to_str().unwrap()])
        .args(["--dataset", e2e::seed_dataset().to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--name", NAME])
        .args(["--device", "cpu", "--batch-size", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// Two "checkpoints" with a byte-identical graph that differ only in
/// model.onnx.data: the second must not resume the first's chunks.
#[test]
fn resume_with_other_weights_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = with_external_data("tiny-d", &tmp.path().join("step1000"));
    let b = tmp.path().join("step2000");
    copy_dir(&a, &b);
    flip_low_bit(&b.join("model.onnx.data"));
    relist(&b, "model.onnx.data");
    assert_eq!(sha256(&a.join("model.onnx")), sha256(&b.join("model.onnx")));

    let out = tmp.path().join("cache");
    interrupted(&a, &out);
    let err = one_error_line(&resume(&b, &out, &[]));
    assert!(err.contains("model.onnx.data differ"), "{err}");
    // the rightful owner resumes
    assert_ok(&resume(&a, &out, &[]), "resume with the same weights");
    let m = validate_cache(&out.join(NAME)).unwrap().manifest;
    assert_eq!(
        m.model.files["model.onnx.data"],
        sha256(&a.join("model.onnx.data"))
    );
    // and a complete cache is not "already complete" for the other checkpoint
    let err = one_error_line(&resume(&b, &out, &[]));
    assert!(err.contains("model.onnx.data differ"), "{err}");
}

/// Chunks made on another execution provider: refused unless --force-resume, and
/// then the manifest says which chunk came from where.
#[test]
fn resume_on_another_provider_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-d");
    let out = tmp.path().join("cache");
    interrupted(&model, &out);
    // As if the finished chunks had been computed on a GPU.
    let partial = out.join(NAME).join(".partial");
    for entry in std::fs::read_dir(&partial).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("run.json") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let text = text
                .replace("CPUExecutionProvider", "CUDAExecutionProvider")
                .replace(
                    "\"device_name\": \"",
                    "\"device_name\": \"NVIDIA test card, was: ",
                );
            std::fs::write(entry.path(), text).unwrap();
        }
    }
    let err = one_error_line(&resume(&model, &out, &[]));
    assert!(
        err.contains("execution provider CUDAExecutionProvider -> CPUExecutionProvider")
            && err.contains("--force-resume"),
        "{err}"
    );
    assert_ok(&resume(&model, &out, &["--force-resume"]), "forced resume");
    let m = Manifest::read(&out.join(NAME).join(MANIFEST_FILE)).unwrap();
    assert!(m.complete);
    let providers: std::collections::BTreeSet<&str> = m
        .run
        .chunks
        .iter()
        .map(|c| c.execution_provider.as_str())
        .collect();
    assert_eq!(
        providers,
        ["CPUExecutionProvider", "CUDAExecutionProvider"]
            .into_iter()
            .collect()
    );
    validate_cache(&out.join(NAME)).unwrap();
}

/// The report says per model what `mean_skip_first` drops, from the manifest's
/// `adds_bos`: the BOS for a Gemma-like tokenizer (tiny-m), a real token for Pythia's.
#[test]
fn the_report_says_what_mean_skip_first_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let caches = tmp.path().join("caches");
    for name in ["tiny-a", "tiny-m"] {
        let out = extract_cpu(&fixture(name), &demo_dataset(), &caches, name, &[]);
        assert_ok(&out, name);
    }
    let results = tmp.path().join("results");
    let out = e2e::run(
        "analyze",
        &[
            "--cache",
            caches.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
            "--bootstrap",
            "0",
        ],
    );
    assert_ok(&out, "analyze");
    let report = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(
        report.contains("for tiny-m it drops the BOS token")
            && report.contains("for tiny-a it drops the first *real* token"),
        "{report}"
    );
}

/// A complete cache written before `model.files` was recorded is still recognised
/// as this model's: a rerun finds it complete instead of refusing "other inputs".
#[test]
fn a_cache_from_before_model_files_is_still_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    assert_ok(
        &extract_cpu(&fixture("tiny-a"), &demo_dataset(), &out, NAME, &[]),
        "extract",
    );
    let path = out.join(NAME).join(MANIFEST_FILE);
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["model"].as_object_mut().unwrap().remove("files");
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let again = extract_cpu(&fixture("tiny-a"), &demo_dataset(), &out, NAME, &[]);
    assert_ok(&again, "rerun on the older cache");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already holds a complete cache"));
}
