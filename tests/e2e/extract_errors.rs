//! Bad inputs to `extract`: each ends with a non-zero exit, one `error: ...`
//! line on stderr naming the file or the problem, no panic, and no cache files.

use std::path::{Path, PathBuf};

use e2e::{copy_dir, demo_dataset, edit_export, extract_cpu, fixture, relist};

const NAME: &str = "m";

/// Runs extract and checks the failure contract; returns the error line.
fn fails(model: &Path, dataset: &Path, extra: &[&str], expect: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = extract_cpu(model, dataset, tmp.path(), NAME, extra);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "extract succeeded but should fail with {expect:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for e in expect {
        assert!(lines[0].contains(e), "expected {e:?} in: {}", lines[0]);
    }
    let cache = tmp.path().join(NAME);
    for f in [
        schemas::MANIFEST_FILE,
        schemas::STATEMENTS_FILE,
        schemas::EMBEDDINGS_FILE,
    ] {
        assert!(
            !cache.join(f).exists(),
            "{f} left behind after: {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

fn dataset_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("bad-dataset.json");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn malformed_dataset_names_file_and_location() {
    let tmp = tempfile::tempdir().unwrap();
    let p = dataset_file(
        tmp.path(),
        "{\"cat\": {\"pairs\": [[\"a\", \"b\"],\n  [\"c\"]]}}",
    );
    fails(
        &fixture("tiny-a"),
        &p,
        &[],
        &[
            "bad-dataset.json",
            "category 'cat' pair 1",
            "exactly [A, B]",
        ],
    );
    let p = dataset_file(tmp.path(), "{\"cat\": {\"pairs\": [[\"a\", \"b\"]");
    fails(&fixture("tiny-a"), &p, &[], &["bad-dataset.json", "EOF"]);
}

#[test]
fn missing_dataset_file() {
    fails(
        &fixture("tiny-a"),
        Path::new("/nonexistent/ds.json"),
        &[],
        &["/nonexistent/ds.json"],
    );
}

#[test]
fn empty_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let p = dataset_file(tmp.path(), "{}");
    fails(
        &fixture("tiny-a"),
        &p,
        &[],
        &["bad-dataset.json", "no categories"],
    );
}

#[test]
fn category_without_pairs_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = dataset_file(
        tmp.path(),
        r#"{"good": {"pairs": [["Water is wet", "Water is dry"], ["Ice is cold", "Ice is hot"]]}, "hollow": {"description": "x", "pairs": []}}"#,
    );
    fails(&fixture("tiny-a"), &p, &[], &["'hollow' has no pairs"]);
}

#[test]
fn statement_too_short() {
    let tmp = tempfile::tempdir().unwrap();
    let p = dataset_file(
        tmp.path(),
        r#"{"c": {"pairs": [["Water is wet", "Water is dry"], ["The sky is blue", "The"]]}, "d": {"pairs": [["Snow is white", "Snow is black"], ["Fire is hot", "Fire is cold"]]}, "e": {"pairs": [["Sand is dry", "Sand is wet"], ["Rock is hard", "Rock is soft"]]}}"#,
    );
    // An empty statement is refused with the dataset (dataset_shape_errors_...); a
    // one-token one only once tokenized.
    fails(
        &fixture("tiny-a"),
        &p,
        &[],
        &["statement 3", "1 token", "NLL needs at least 2"],
    );
}

#[test]
fn statement_longer_than_context() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "the river was cold this morning ".repeat(200);
    let p = dataset_file(
        tmp.path(),
        &format!(
            r#"{{"c": {{"pairs": [["{long}", "Water is dry"], ["Ice is cold", "Ice is hot"]]}}, "d": {{"pairs": [["Snow is white", "Snow is black"], ["Fire is hot", "Fire is cold"]]}}, "e": {{"pairs": [["Sand is dry", "Sand is wet"], ["Rock is hard", "Rock is soft"]]}}}}"#
        ),
    );
    fails(
        &fixture("tiny-a"),
        &p,
        &[],
        &["statement 0", "max_positions"],
    );
}

#[test]
fn model_dir_missing_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    for missing in ["tokenizer.json", "export.json", "model.onnx"] {
        let dir = tmp.path().join(format!("no-{missing}"));
        copy_dir(&fixture("tiny-a"), &dir);
        std::fs::remove_file(dir.join(missing)).unwrap();
        fails(&dir, &demo_dataset(), &[], &[missing]);
    }
}

#[test]
fn model_file_altered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("altered");
    copy_dir(&fixture("tiny-a"), &dir);
    let tok = dir.join("tokenizer.json");
    let mut text = std::fs::read_to_string(&tok).unwrap();
    text.push(' ');
    std::fs::write(&tok, text).unwrap();
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["tokenizer.json", "bytes but export.json records"],
    );
}

/// Another model's graph under this model's export.json: the outputs' shapes differ.
#[test]
fn onnx_outputs_not_as_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    copy_dir(&fixture("tiny-a"), &dir);
    std::fs::copy(fixture("tiny-b").join("model.onnx"), dir.join("model.onnx")).unwrap();
    relist(&dir, "model.onnx");
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["pooled", "shape", "another export"],
    );
}

#[test]
fn not_an_onnx_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("garbage");
    copy_dir(&fixture("tiny-a"), &dir);
    std::fs::write(dir.join("model.onnx"), b"not a graph").unwrap();
    relist(&dir, "model.onnx");
    fails(&dir, &demo_dataset(), &[], &["model.onnx"]);
}

#[test]
fn parity_probe_disagreement_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("probe");
    copy_dir(&fixture("tiny-a"), &dir);
    let mut nll = 0.0;
    edit_export(&dir, |e| {
        nll = e["probes"][1]["nll"].as_f64().unwrap();
        e["probes"][1]["nll"] = serde_json::json!(nll + 0.01);
    });
    fails(&dir, &demo_dataset(), &[], &["parity probe 1", "NLL"]);

    edit_export(&dir, |e| {
        e["probes"][1]["nll"] = serde_json::json!(nll);
        let v = e["probes"][0]["mean_skip_first"][3][5].as_f64().unwrap();
        e["probes"][0]["mean_skip_first"][3][5] = serde_json::json!(v + 0.001);
    });
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &[
            "parity probe 0",
            "mean_skip_first",
            "layer 3",
            "dimension 5",
        ],
    );
}

#[test]
fn bad_batch_size_and_poolings() {
    fails(
        &fixture("tiny-a"),
        &demo_dataset(),
        &["--batch-size", "0"],
        &["--batch-size"],
    );
}

/// `--device cuda` where the loaded ONNX Runtime has no working CUDA provider
/// (CI: CPU-only wheel, no GPU). Skipped on a machine with an NVIDIA device.
#[test]
fn unusable_cuda_device() {
    if Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has an NVIDIA device");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = e2e::run(
        "extract",
        &[
            "--model",
            fixture("tiny-a").to_str().unwrap(),
            "--dataset",
            demo_dataset().to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
            "--device",
            "cuda",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --device cuda"), "{stderr}");
    assert!(!tmp.path().join("tiny-a").exists());
}

#[test]
fn existing_cache_of_other_inputs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = extract_cpu(
        &fixture("tiny-a"),
        &demo_dataset(),
        tmp.path(),
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&ok, "first run");
    // same inputs again: nothing to do, exit 0
    let again = extract_cpu(
        &fixture("tiny-a"),
        &demo_dataset(),
        tmp.path(),
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&again, "second run");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already holds a complete cache"));
    // other poolings into the same name: refused, the cache untouched
    let before = std::fs::read(tmp.path().join(NAME).join(schemas::MANIFEST_FILE)).unwrap();
    let out = extract_cpu(
        &fixture("tiny-a"),
        &demo_dataset(),
        tmp.path(),
        NAME,
        &["--poolings", "last"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("poolings differ") && stderr.contains("--name"),
        "{stderr}"
    );
    assert_eq!(
        before,
        std::fs::read(tmp.path().join(NAME).join(schemas::MANIFEST_FILE)).unwrap()
    );
    schemas::validate_cache(&tmp.path().join(NAME)).unwrap();
}

/// Dataset shapes that would make a cache `analyze` refuses, or that serde reports
/// by position only: refused before any model work, naming the category and pair.
#[test]
fn dataset_shape_errors_name_category_and_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let two = r#"[["Water is wet", "Water is dry"], ["Ice is cold", "Ice is hot"]]"#;
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(r#"{{"good": {{"pairs": {two}}}, "lonely": {{"pairs": [["Snow is white", "Snow is black"]]}}}}"#),
            vec!["category 'lonely' has 1 pair", "at least 2 pairs"],
        ),
        (
            format!(r#"{{"good": {{"pairs": {two}}}, "": {{"pairs": {two}}}}}"#),
            vec!["category name is empty"],
        ),
        (
            r#"{"c": {"pairs": [["Water is wet", "Water is dry"], ["Ice is cold", "Ice is hot", "Ice is warm"]]}}"#.to_string(),
            vec!["category 'c' pair 1", "has 3 elements", "a pair is exactly [A, B]"],
        ),
        (
            r#"{"c": {"pairs": [["Water is wet", "Water is dry"], ["Ice is cold", 3]]}}"#.to_string(),
            vec!["category 'c' pair 1", "side B is a number", "a statement is a string"],
        ),
        (
            r#"{"c": {"pairs": [["Water is wet", "Water is dry"], ["Ice is cold", "  "]]}}"#.to_string(),
            vec!["category 'c' pair 1", "side B is an empty statement"],
        ),
        (
            format!(r#"{{"c": {{"pairs": {two}}}, "c": {{"pairs": {two}}}}}"#),
            vec!["category 'c' appears twice"],
        ),
        (
            format!(r#"[{{"c": {{"pairs": {two}}}}}]"#),
            vec!["expected an object mapping category names"],
        ),
        (String::new(), vec!["the dataset file is empty"]),
    ];
    for (text, expect) in cases {
        let p = dataset_file(tmp.path(), &text);
        let mut all = vec!["bad-dataset.json"];
        all.extend(expect);
        fails(&fixture("tiny-a"), &p, &[], &all);
    }
}

/// A UTF-16 dataset (Windows' "Unicode") is named as such, with or without its byte
/// order mark (serde said "expected value at line 1 column 1").
#[test]
fn a_utf16_dataset_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(demo_dataset()).unwrap();
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (name, bom) in [
        ("with-bom.json", &b"\xFF\xFE"[..]),
        ("without.json", &b""[..]),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, [bom, &utf16].concat()).unwrap();
        fails(
            &fixture("tiny-a"),
            &p,
            &[],
            &[name, "is UTF-16", "save it as UTF-8"],
        );
    }
}

/// A UTF-8 byte order mark (Notepad, Excel) is skipped; the recorded sha256 is still
/// that of the file's bytes.
#[test]
fn dataset_with_a_byte_order_mark_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(demo_dataset()).unwrap());
    let p = tmp.path().join("bom-dataset.json");
    std::fs::write(&p, &bytes).unwrap();
    let out = extract_cpu(
        &fixture("tiny-a"),
        &p,
        tmp.path(),
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&out, "dataset with a BOM");
    let m = schemas::validate_cache(&tmp.path().join(NAME))
        .unwrap()
        .manifest;
    use sha2::Digest;
    assert_eq!(m.dataset.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(m.dataset.categories.len(), 6);
}

/// A u32 overflow used to be recorded as a wrapped batch size (4294967296 -> 0).
#[test]
fn batch_size_beyond_u32_is_refused() {
    for bad in ["4294967296", "4294967297", "-1"] {
        fails(
            &fixture("tiny-a"),
            &demo_dataset(),
            &["--batch-size", bad],
            &["--batch-size"],
        );
    }
    fails(
        &fixture("tiny-a"),
        &demo_dataset(),
        &["--max-tokens", "0"],
        &["--max-tokens"],
    );
}

/// Without `files`, no hash would be checked: another model's graph could pass.
#[test]
fn export_without_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nofiles");
    copy_dir(&fixture("tiny-a"), &dir);
    edit_export(&dir, |e| {
        e.as_object_mut().unwrap().remove("files");
    });
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["export.json", "lists no model.onnx"],
    );
}

/// Without probes, nothing shows that the graph computes what transformers does.
#[test]
fn export_without_probes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("noprobes");
    copy_dir(&fixture("tiny-a"), &dir);
    edit_export(&dir, |e| {
        e["probes"] = serde_json::json!([]);
    });
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["export.json", "no parity probes"],
    );
}

/// config.json and export.json must describe the same model.
#[test]
fn config_disagreeing_with_export_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, value, expect) in [
        ("num_hidden_layers", serde_json::json!(24), "n_layers is 6"),
        (
            "max_position_embeddings",
            serde_json::json!(4),
            "max_positions is 128",
        ),
        ("hidden_size", serde_json::json!(48), "hidden_size is 32"),
        // A count written as a string was passed over as if absent.
        (
            "num_hidden_layers",
            serde_json::json!("9"),
            r#"num_hidden_layers is "9", not a whole number"#,
        ),
    ] {
        let dir = tmp.path().join(format!("{key}-{value}"));
        copy_dir(&fixture("tiny-a"), &dir);
        let path = dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        c[key] = value;
        std::fs::write(&path, serde_json::to_string(&c).unwrap()).unwrap();
        relist(&dir, "config.json");
        fails(&dir, &demo_dataset(), &[], &["config.json", expect]);
    }
}

/// Names that collide with the contract's own, or hide the cache from readers.
#[test]
fn reserved_cache_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [".partial", ".hidden", "manifest.json", "a/b"] {
        let out = e2e::run(
            "extract",
            &[
                "--model",
                fixture("tiny-a").to_str().unwrap(),
                "--dataset",
                demo_dataset().to_str().unwrap(),
                "--out",
                tmp.path().to_str().unwrap(),
                "--device",
                "cpu",
                "--name",
                bad,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--name {bad} accepted");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("--name") && stderr.contains("not usable"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn parity_slack_must_be_at_least_one() {
    for bad in ["0.5", "NaN", "inf", "-5"] {
        fails(
            &fixture("tiny-a"),
            &demo_dataset(),
            &["--parity-slack", bad],
            &["--parity-slack"],
        );
    }
}

#[test]
fn save_every_must_be_seconds() {
    for bad in ["-1", "NaN", "inf", "soon"] {
        fails(
            &fixture("tiny-a"),
            &demo_dataset(),
            &["--save-every", bad],
            &["--save-every", "seconds"],
        );
    }
}

/// export.json names the graph's outputs: a layout extract does not know, or a
/// reduced graph whose pooling axis is in another order, is refused naming the file.
#[test]
fn unknown_outputs_and_pooled_order_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("outputs");
    copy_dir(&fixture("tiny-a"), &dir);
    edit_export(&dir, |e| e["outputs"] = serde_json::json!(["logits"]));
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["export.json", "outputs", "logits", "re-export"],
    );
    edit_export(&dir, |e| {
        e["outputs"] = serde_json::json!(["pooled", "nll_sum", "n_predicted"]);
        e["pooled_order"] = serde_json::json!(["last", "mean", "mean_skip_first"]);
    });
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["export.json", "pooled_order", "re-export"],
    );
}

/// The output buffers a batching needs are estimated before the model is loaded:
/// a model this wide (export.json and config.json both say 200,000,000) is refused
/// with the flag to lower, not left to fail an allocation.
#[test]
fn batches_that_cannot_fit_in_memory_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wide");
    copy_dir(&fixture("tiny-a"), &dir);
    edit_export(&dir, |e| e["hidden_size"] = serde_json::json!(200_000_000));
    let config = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["hidden_size"] = serde_json::json!(200_000_000);
    std::fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    relist(&dir, "config.json");
    fails(
        &dir,
        &demo_dataset(),
        &[],
        &["GiB of host memory", "--batch-size"],
    );
}

/// Datasets analyze would refuse or that would bias it are refused before any model
/// is loaded, each naming the file and the problem.
// Long: one table of datasets, each with the line that must refuse it.
#[test]
fn datasets_that_would_bias_or_be_refused_later_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = |tag: &str| {
        format!(r#"[["{tag} is wet", "{tag} is dry"], ["{tag} is cold", "{tag} is hot"]]"#)
    };
    let three = |third: &str| {
        format!(
            r#"{{"a": {{"pairs": {}}}, "b": {{"pairs": {}}}, "c": {third}}}"#,
            pairs("Water"),
            pairs("Ice")
        )
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(
                r#"{{"a": {{"pairs": {}}}, "b": {{"pairs": {}}}}}"#,
                pairs("Water"),
                pairs("Ice")
            ),
            vec!["has 2 categories", "at least 3"],
        ),
        (
            three(r#"{"Pairs": [["x", "y"], ["z", "w"]], "pairs": [["p", "q"], ["r", "s"]]}"#),
            vec!["category 'c' has an unknown key 'Pairs'"],
        ),
        (
            three(
                r#"{"pairs": [["Snow is white", "Snow is black"], ["Snow is white", "Snow is black"]]}"#,
            ),
            vec![
                "category 'c': pairs 0 and 1",
                "same side A statement",
                "cosine 1",
            ],
        ),
        (
            three(
                r#"{"pairs": [["Snow is white", "Snow is black"], ["Snow is cold", "Snow is black"]]}"#,
            ),
            vec!["pairs 0 and 1", "same side B statement"],
        ),
        (
            three(
                r#"{"pairs": [["Snow is white", "Snow is black"], ["Snow\u0000 is cold", "Snow is warm"]]}"#,
            ),
            vec!["category 'c' pair 1", "NUL character"],
        ),
        (
            format!(
                r#"{{"caf\u00e9": {{"pairs": {}}}, "cafe\u0301": {{"pairs": {}}}, "c": {{"pairs": {}}}}}"#,
                pairs("Water"),
                pairs("Ice"),
                pairs("Snow")
            ),
            vec!["differ only in Unicode normalization"],
        ),
        (
            three(
                r#"{"pairs": [["Snow is white", "Snow is black"], ["caf\u00e9 noir", "cafe\u0301 noir"]]}"#,
            ),
            vec![
                "category 'c' pair 1",
                "its two sides differ only in Unicode normalization",
            ],
        ),
        (
            format!(
                r#"{{"a": {{"pairs": {}}}, "b": {{"pairs": {}}}, "c\u0000d": {{"pairs": {}}}}}"#,
                pairs("Water"),
                pairs("Ice"),
                pairs("Snow")
            ),
            vec![r#"category "c\0d" holds a control character"#],
        ),
        (
            three(
                r#"{"pairs": [["Snow is white", "Snow is black"], ["Snow \ud800 is cold", "Snow is warm"]]}"#,
            ),
            vec!["line 1, column", "lone surrogate"],
        ),
    ];
    for (text, expect) in cases {
        let p = dataset_file(tmp.path(), &text);
        let mut all = vec!["bad-dataset.json"];
        all.extend(expect);
        fails(&fixture("tiny-a"), &p, &[], &all);
    }
}

#[cfg(unix)]
#[test]
fn an_endless_dataset_is_refused_without_reading_it_all() {
    fails(
        &fixture("tiny-a"),
        Path::new("/dev/zero"),
        &[],
        &["/dev/zero", "larger than 1 GiB"],
    );
}

/// Flags and folders that could only fail late, or do harm, are refused at once.
#[test]
fn misplaced_folders_and_unusable_names_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("models/tiny-a");
    e2e::copy_dir(&fixture("tiny-a"), &model);
    // --out models with the default name tiny-a: the cache would be the model folder.
    let out = extract_cpu(
        &model,
        &demo_dataset(),
        &tmp.path().join("models"),
        "tiny-a",
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("would lie in the model folder"),
        "{err}"
    );
    assert!(
        !model.join(".lock").exists(),
        "nothing written in the model folder"
    );

    fails(
        &fixture("tiny-a").join("model.onnx"),
        &demo_dataset(),
        &[],
        &["is a file", "the one holding export.json"],
    );
    for name in ["a,b", "line\nbreak"] {
        let res = extract_cpu(&fixture("tiny-a"), &demo_dataset(), tmp.path(), name, &[]);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && err.contains("no commas"),
            "{name:?}: {err}"
        );
    }
    // The demo dataset has 70 pairs: shard 99 of 100 holds none.
    fails(
        &fixture("tiny-a"),
        &demo_dataset(),
        &["--shard", "99/100"],
        &["--shard 99/100", "holds none", "at most 70 shards"],
    );
}

/// A token id beyond the vocabulary is caught before the first forward pass, naming
/// the statement (ONNX Runtime named a Gather node after 29 of 30 chunks).
#[test]
fn a_token_id_beyond_the_vocabulary_is_refused_before_any_forward_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&fixture("tiny-a"), &model);
    edit_export(&model, |e| e["vocab_size"] = serde_json::json!(20));
    let err = fails(
        &model,
        &demo_dataset(),
        &[],
        &["statement 0", "token id", "vocabulary of 20"],
    );
    assert!(
        err.contains("tokenizer.json does not belong to its graph"),
        "{err}"
    );
}

/// Without `vocab_size` in export.json the rows of the graph's embedding table bound
/// the token ids (ONNX Runtime's Gather failed late, naming neither the statement nor
/// the tokenizer): a tokenizer of another model is refused before any forward pass.
#[test]
fn a_token_beyond_the_embedding_table_is_refused_without_vocab_size() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&fixture("tiny-a"), &model);
    // The committed Pythia tokenizer gives ids far beyond tiny-a's 512 rows.
    std::fs::copy(
        e2e::repo_root().join("tests/data/gpt-neox-20b-tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    relist(&model, "tokenizer.json");
    edit_export(&model, |e| {
        e.as_object_mut().unwrap().remove("vocab_size");
    });
    fails(
        &model,
        &demo_dataset(),
        &[],
        &[
            "statement",
            "vocabulary of 512",
            "rows of model.onnx's embedding table",
            "tokenizer.json",
        ],
    );
}

/// Puts what a case needs into a model folder.
type MakeFolder = fn(&Path);

/// What a folder without a usable manifest is, said as it is.
#[test]
fn a_folder_without_a_usable_manifest_says_what_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cases: [(&str, MakeFolder, &str); 3] = [
        (
            "started",
            |d| std::fs::write(d.join(schemas::LOCK_FILE), "pid 1").unwrap(),
            "stopped before writing its manifest",
        ),
        (
            "dir",
            |d| std::fs::create_dir(d.join(schemas::MANIFEST_FILE)).unwrap(),
            "is a directory",
        ),
        (
            "v2",
            |d| {
                std::fs::write(
                    d.join(schemas::MANIFEST_FILE),
                    r#"{"schema_version": 2, "complete": true}"#,
                )
                .unwrap()
            },
            "cache contract version 2",
        ),
    ];
    for (name, make, said) in cases {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        make(&dir);
        let err = schemas::validate_cache(&dir).unwrap_err().to_string();
        assert!(err.contains(said) && err.contains(name), "{name}: {err}");
    }
}

/// The disk check's estimate against what a run writes: a fixture on the demo
/// dataset (Gram blocks) and on a dataset whose categories outgrow the width
/// (vectors), each within 25% of the files on disk; a disk with less free than the
/// peak is refused naming the folder, and the chunks an earlier run left count.
#[test]
fn the_disk_a_run_needs_is_estimated_before_it_starts() {
    use extract::run::preflight::DiskEstimate;
    let tmp = tempfile::tempdir().unwrap();
    let wide = tmp.path().join("wide.json");
    let pairs: Vec<[String; 2]> = (0..40)
        .map(|i| {
            [
                format!("case {i} holds the value {i}"),
                format!("case {i} lacks the value {}", i + 1),
            ]
        })
        .collect();
    let categories: serde_json::Map<String, serde_json::Value> = ["one", "two", "three"]
        .iter()
        .map(|c| (c.to_string(), serde_json::json!({ "pairs": pairs })))
        .collect();
    std::fs::write(&wide, serde_json::to_string(&categories).unwrap()).unwrap();
    for (name, dataset) in [("demo", demo_dataset()), ("wide", wide)] {
        let out = tmp.path().join(name);
        let o = extract_cpu(&fixture("tiny-a"), &dataset, &out, "m", &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m = schemas::validate_cache(&out.join("m")).unwrap().manifest;
        let data = extract::inputs::dataset::load(&dataset).unwrap();
        let ids: Vec<u32> = (0..data.statements.len() as u32).collect();
        let model = extract::model::model_dir::ModelDir::open(&fixture("tiny-a")).unwrap();
        let e = DiskEstimate::of(&data, &ids, &model, m.run.poolings.len());
        for (what, estimated, file) in [
            ("embeddings", e.embeddings, schemas::EMBEDDINGS_FILE),
            ("sidecar", e.sidecar, schemas::GRAMS_FILE),
        ] {
            let actual = m.files[file].bytes as f64;
            let ratio = estimated as f64 / actual;
            assert!(
                (0.75..1.25).contains(&ratio),
                "{name} {what}: estimated {estimated}, wrote {actual}"
            );
        }
        let dir = out.join("m");
        let err = e.fits(&dir, e.peak() - 1, 0).unwrap_err().to_string();
        // A few MB: shown in MB, not as "0.0 GB".
        assert!(
            err.contains(&*dir.to_string_lossy())
                && err.contains("MB of disk")
                && !err.contains(" 0.0 "),
            "{err}"
        );
        e.fits(&dir, e.peak(), 0).unwrap();
        e.fits(&dir, e.peak() - 10, 10).unwrap();
    }
}

/// A `.lock` that is not a cache's (pytest leaves one in each of its numbered
/// temporary folders) does not make its folder a model's cache folder: a cache root
/// beneath it is accepted.
#[test]
fn a_foreign_lock_makes_no_cache_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("pytest-7");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join(".lock"), "4242").unwrap();
    let o = extract_cpu(
        &fixture("tiny-a"),
        &demo_dataset(),
        &foreign.join("cache"),
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&o, "a cache root under a foreign .lock");
}

/// Places a cache cannot go, refused before anything is written: a root inside a
/// model's cache folder (the new cache would be a stray folder of that one), a
/// `.partial` that is a file (it failed as "File exists" and left a `.lock`); and a
/// refused run removes the root folders it created (they were left empty).
#[test]
fn places_a_cache_cannot_go_are_refused_leaving_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let o = extract_cpu(
        &fixture("tiny-a"),
        &demo_dataset(),
        &root,
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&o, "the first cache");
    let cache = root.join(NAME);
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&cache);
    for out in [cache.clone(), cache.join("more/roots")] {
        let o = extract_cpu(&fixture("tiny-a"), &demo_dataset(), &out, "other", &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.trim().lines().count() == 1,
            "{err}"
        );
        assert!(
            err.contains("a model's cache folder") && err.contains(&*cache.to_string_lossy()),
            "{err}"
        );
        assert_eq!(listing(&cache), before, "nothing written into the cache");
    }

    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join(NAME)).unwrap();
    std::fs::write(other.join(NAME).join(".partial"), "not a folder").unwrap();
    let o = extract_cpu(&fixture("tiny-a"), &demo_dataset(), &other, NAME, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains(".partial: is a file"), "{err}");
    assert_eq!(listing(&other.join(NAME)), [".partial"], "no .lock left");

    // Refused once the lock is taken (config.json disagrees with export.json): the
    // folders the run made go with it.
    let model = tmp.path().join("model");
    copy_dir(&fixture("tiny-a"), &model);
    let path = model.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    c["hidden_size"] = serde_json::json!(48);
    std::fs::write(&path, serde_json::to_string(&c).unwrap()).unwrap();
    relist(&model, "config.json");
    let fresh = tmp.path().join("fresh");
    let o = extract_cpu(
        &model,
        &demo_dataset(),
        &fresh.join("nested/root"),
        NAME,
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("hidden_size is 32"),
        "{err}"
    );
    assert!(!fresh.exists(), "the folders the run created are gone");
}

/// A byte order mark before export.json and config.json (an editor's) is skipped.
#[test]
fn model_files_with_a_byte_order_mark_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&fixture("tiny-a"), &model);
    // config.json first: export.json records its new sha256 before it gets its own mark.
    for file in ["config.json", "export.json"] {
        let path = model.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("\u{feff}{text}")).unwrap();
        if file == "config.json" {
            relist(&model, file);
        }
    }
    let o = extract_cpu(
        &model,
        &demo_dataset(),
        tmp.path(),
        NAME,
        &["--poolings", "mean"],
    );
    e2e::assert_ok(&o, "model files with a BOM");
}
