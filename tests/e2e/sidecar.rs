//! The compact statistics (`grams.parquet`): analyze's numbers from the sidecar equal
//! those from the embeddings, on extracted fixture caches and on synthetic ones; a
//! changed or stale sidecar is refused naming it; `analyze index` adds one to an old
//! cache and then changes no number; a compact-only cache (no embeddings) gives the
//! numbers of the full cache it stands for and is refused by what needs vectors.

use std::path::{Path, PathBuf};

use e2e::{
    analyze_results, assert_ok, binary, copy_dir, demo_dataset, extract_cpu, fixture, run_cmd,
    synth_cache, FIXTURES,
};
use schemas::{validate_cache, Manifest, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE};
use serde_json::Value;

const MODELS: &str = "a:3:8:1000,b:4:16:2000";

fn analyze(cache: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bootstrap",
        "300",
    ];
    args.extend_from_slice(extra);
    run_cmd(&binary("analyze"), &args)
}

fn results(cache: &Path, out: &Path, extra: &[&str]) -> Value {
    analyze_results(cache, out, &[&["--bootstrap", "300"][..], extra].concat())
}

/// One line on stderr naming `file`, with every phrase of `must`, and a failure.
fn refused(out: &std::process::Output, file: &str, must: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should have been refused");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for m in std::iter::once(&file).chain(must) {
        assert!(err.contains(m), "message lacks '{m}': {err}");
    }
    err
}

/// Keys that differ between the two paths by design: when and how long, where the
/// blocks came from, and what needs the embeddings: the other arithmetic and CKA.
const BY_DESIGN: [&str; 8] = [
    "timestamp",
    "timings_s",
    "settings",
    "provenance",
    "gram_source",
    "r_other_arithmetic",
    "arithmetic_gap",
    "cka_alignment",
];

/// Every number of `a` equals `b`'s to 1e-12 (NaN to NaN), keys of `BY_DESIGN` aside.
fn assert_same_numbers(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x.iter().filter(|(k, _)| !BY_DESIGN.contains(&k.as_str())) {
                assert_same_numbers(v, &y[k], &format!("{path}/{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                assert_same_numbers(u, v, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12, "{path}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

fn sources(v: &Value) -> Vec<&str> {
    v["gram_source"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The embeddings path computes geometries the sidecar cannot (standardised; centred
/// and the anisotropy from a sidecar older than format 3): keeps the views both have,
/// the anisotropy where both have it, and leaves out the lines that name the
/// geometries each computed.
fn shared_views(a: &mut Value, b: &mut Value) {
    let key = |p: &Value| (p["pooling"].clone(), p["geometry"].clone());
    let views =
        |r: &Value| -> Vec<_> { r["poolings"].as_array().unwrap().iter().map(key).collect() };
    let checks = |r: &Value| -> Vec<Value> {
        r["robustness"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["geometry"].clone())
            .collect()
    };
    let (va, vb, ca, cb) = (views(a), views(b), checks(a), checks(b));
    for r in [&mut *a, &mut *b] {
        r["poolings"]
            .as_array_mut()
            .unwrap()
            .retain(|p| va.contains(&key(p)) && vb.contains(&key(p)));
        r["robustness"]["checks"]
            .as_array_mut()
            .unwrap()
            .retain(|c| ca.contains(&c["geometry"]) && cb.contains(&c["geometry"]));
        r["robustness"]["not_computed"] = Value::Null;
        r["answer_evidence"]
            .as_array_mut()
            .unwrap()
            .retain(|b| !b.as_str().unwrap().contains("survive"));
    }
    let anisotropy = |r: &Value| -> Vec<Value> {
        r["poolings"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["models"].as_array().unwrap())
            .flat_map(|m| m["layers"].as_array().unwrap())
            .map(|s| s["anisotropy"].clone())
            .collect()
    };
    if anisotropy(a)
        .iter()
        .chain(&anisotropy(b))
        .any(Value::is_null)
    {
        for r in [a, b] {
            for p in r["poolings"].as_array_mut().unwrap() {
                for m in p["models"].as_array_mut().unwrap() {
                    for s in m["layers"].as_array_mut().unwrap() {
                        s["anisotropy"] = Value::Null;
                    }
                }
            }
        }
    }
}

/// `assert_same_numbers` over what both analyses computed (`shared_views`).
fn assert_same_results(a: &Value, b: &Value) {
    let (mut a, mut b) = (a.clone(), b.clone());
    shared_views(&mut a, &mut b);
    assert_same_numbers(&a, &b, "");
}

/// Analyzes `cache` from the sidecar and from the embeddings and compares.
fn compact_equals_embeddings(cache: &Path, tmp: &Path) {
    let compact = results(cache, &tmp.join("compact"), &[]);
    let full = results(cache, &tmp.join("full"), &["--from-embeddings"]);
    assert!(sources(&compact).iter().all(|s| *s == GRAMS_FILE));
    assert!(sources(&full).iter().all(|s| *s == "embeddings.parquet"));
    assert!(compact["poolings"][0]["arithmetic_gap"].is_null());
    assert!(full["poolings"][0]["arithmetic_gap"].is_number());
    assert_eq!(compact["cka_alignment"]["applicable"], false);
    assert_same_results(&compact, &full);
    let report = std::fs::read_to_string(tmp.join("compact/report.md")).unwrap();
    assert!(
        report.contains("every model read the compact statistics"),
        "the report says why the arithmetic gap is missing"
    );
}

#[test]
fn compact_results_equal_the_embeddings_path_on_the_fixture_ladder() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for name in FIXTURES {
        let out = extract_cpu(&fixture(name), &demo_dataset(), &cache, name, &[]);
        assert_ok(&out, "extract");
        let m = validate_cache(&cache.join(name)).unwrap().manifest;
        assert!(m.files.contains_key(GRAMS_FILE) && m.grams.is_some());
    }
    compact_equals_embeddings(&cache, tmp.path());
}

/// The training view and the cross-size selection read the same Grams: a grid of
/// sizes × steps gives equal numbers from its sidecars and from its embeddings.
#[test]
fn compact_results_equal_the_embeddings_path_on_a_synthetic_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "pythia-70m:8:32:70426624,pythia-160m:10:32:162322944",
            "--categories",
            "10,10,10,10,10,10",
            "--steps",
            "0,1000,2000,3000",
            "--settle-step",
            "2000",
        ],
    );
    let flags = ["--training-bootstrap", "200"];
    let compact = results(&cache, &tmp.path().join("compact"), &flags);
    let full = results(
        &cache,
        &tmp.path().join("full"),
        &[&flags[..], &["--from-embeddings"]].concat(),
    );
    assert!(compact["training"].is_object(), "a training view");
    assert!(sources(&compact).iter().all(|s| *s == GRAMS_FILE));
    assert_same_results(&compact, &full);
}

#[test]
fn compact_results_equal_the_embeddings_path_on_a_synthetic_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "s:6:24:50000,m:8:40:180000,l:12:56:500000",
            "--categories",
            "30,20,50,50,50,30",
            "--seed",
            "11",
            "--massive",
            "3:3000",
        ],
    );
    compact_equals_embeddings(&cache, tmp.path());
    // --all-poolings and a layer step read other columns and row groups of the sidecar
    let a = results(
        &cache,
        &tmp.path().join("a"),
        &["--all-poolings", "--layer-step", "3"],
    );
    let b = results(
        &cache,
        &tmp.path().join("b"),
        &["--all-poolings", "--layer-step", "3", "--from-embeddings"],
    );
    assert_same_results(&a, &b);
}

fn small_cache(dir: &Path, seed: &str, extra: &[&str]) -> PathBuf {
    let cache = dir.join("cache");
    let mut args = vec!["--models", MODELS, "--categories", "5,4,6", "--seed", seed];
    args.extend_from_slice(extra);
    synth_cache(&cache, &args);
    cache
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_sidecar_with_one_byte_changed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = small_cache(tmp.path(), "3", &[]);
    let grams = cache.join("b").join(GRAMS_FILE);
    let len = std::fs::metadata(&grams).unwrap().len() as usize;
    flip_byte(&grams, len / 2);
    for extra in [&[][..], &["--from-embeddings"][..]] {
        let out = analyze(&cache, &tmp.path().join("out"), extra);
        refused(&out, "b/grams.parquet", &["sha256"]);
    }
    // analyze index rebuilds it, saying what it replaced
    let index = run_cmd(
        &binary("analyze"),
        &["index", "--cache", cache.to_str().unwrap()],
    );
    assert_ok(&index, "analyze index");
    let said = String::from_utf8_lossy(&index.stdout);
    assert!(
        said.contains("rebuilt grams.parquet") && said.contains("sha256"),
        "{said}"
    );
    assert!(said.contains("already indexed"), "{said}");
    assert_ok(&analyze(&cache, &tmp.path().join("out"), &[]), "analyze");
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Manifest)) {
    let path = dir.join(MANIFEST_FILE);
    let mut m = Manifest::read(&path).unwrap();
    f(&mut m);
    schemas::write_manifest(&path, &m).unwrap();
}

#[test]
fn a_stale_sidecar_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = small_cache(tmp.path(), "3", &[]);
    let other = small_cache(&tmp.path().join("other"), "4", &[]);
    let (here, there) = (cache.join("a"), other.join("a"));
    std::fs::copy(there.join(GRAMS_FILE), here.join(GRAMS_FILE)).unwrap();

    // copied with its manifest entry and section: the section names other embeddings
    let theirs = Manifest::read(&there.join(MANIFEST_FILE)).unwrap();
    edit_manifest(&here, |m| {
        m.files
            .insert(GRAMS_FILE.into(), theirs.files[GRAMS_FILE].clone());
        m.grams = theirs.grams.clone();
    });
    let out = analyze(&cache, &tmp.path().join("out"), &[]);
    refused(&out, "a/grams.parquet", &["stale", "analyze index"]);

    // copied with its entry only: the sidecar's own metadata names other embeddings
    let copied = Manifest::read(&there.join(MANIFEST_FILE)).unwrap().files[GRAMS_FILE].clone();
    edit_manifest(&here, |m| {
        m.grams.as_mut().unwrap().embeddings_sha256 =
            Some(m.files["embeddings.parquet"].sha256.clone());
        m.files.insert(GRAMS_FILE.into(), copied);
    });
    let out = analyze(&cache, &tmp.path().join("out"), &[]);
    refused(
        &out,
        "a/grams.parquet",
        &["stale", "ua.grams.embeddings_sha256"],
    );
}

#[test]
fn analyze_index_on_an_old_cache_then_equal_results() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = small_cache(tmp.path(), "3", &["--no-grams"]);
    let before = results(&cache, &tmp.path().join("before"), &[]);
    assert!(sources(&before).iter().all(|s| *s == "embeddings.parquet"));

    let index = |extra: &[&str]| {
        let mut args = vec!["index", "--cache", cache.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_cmd(&binary("analyze"), &args)
    };
    let first = index(&["--models", "a"]);
    assert_ok(&first, "analyze index");
    assert!(String::from_utf8_lossy(&first.stdout).contains("wrote grams.parquet"));
    let second = index(&[]);
    assert_ok(&second, "analyze index again");
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(
        said.contains("a: already indexed") && said.contains("b: wrote grams.parquet"),
        "{said}"
    );
    for m in ["a", "b"] {
        validate_cache(&cache.join(m)).unwrap();
    }

    let after = results(&cache, &tmp.path().join("after"), &[]);
    assert!(sources(&after).iter().all(|s| *s == GRAMS_FILE));
    assert_same_results(&after, &before);

    // an incomplete cache is refused, one line, nothing written
    edit_manifest(&cache.join("b"), |m| {
        m.complete = false;
        m.grams = None;
        m.files.remove(GRAMS_FILE);
    });
    std::fs::remove_file(cache.join("b").join(GRAMS_FILE)).unwrap();
    let out = index(&["--models", "b"]);
    refused(&out, "b/manifest.json", &["did not finish"]);
    assert!(!cache.join("b").join(GRAMS_FILE).exists());
}

#[test]
fn a_compact_only_cache_gives_the_numbers_of_the_full_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let full = small_cache(&tmp.path().join("full"), "5", &[]);
    let compact = small_cache(&tmp.path().join("compact"), "5", &["--compact-only"]);
    for m in ["a", "b"] {
        let v = validate_cache(&compact.join(m)).unwrap();
        assert!(!v.has_embeddings() && !compact.join(m).join("embeddings.parquet").exists());
        assert_eq!(v.manifest.grams.unwrap().embeddings_sha256, None);
    }
    let from_vectors = results(&full, &tmp.path().join("o-full"), &["--from-embeddings"]);
    let from_compact = results(&compact, &tmp.path().join("o-compact"), &[]);
    assert!(sources(&from_compact).iter().all(|s| *s == GRAMS_FILE));
    assert_same_results(&from_compact, &from_vectors);
}

#[test]
fn a_compact_only_cache_is_refused_by_what_needs_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = small_cache(tmp.path(), "5", &["--compact-only"]);
    let out = tmp.path().join("out");
    for flags in [&["--from-embeddings"][..], &["--arithmetic", "seed"][..]] {
        refused(
            &analyze(&cache, &out, flags),
            "a/manifest.json",
            &["has no embeddings", flags[0]],
        );
    }
    let c = cache.to_str().unwrap();
    let o = out.to_str().unwrap();
    for (args, what) in [
        (
            &["convert", "--cache", c, "--out", o][..],
            "analyze convert",
        ),
        (&["index", "--cache", c][..], "analyze index"),
    ] {
        let res = run_cmd(&binary("analyze"), args);
        refused(&res, "a/manifest.json", &["has no embeddings", what]);
    }
    assert!(!out.exists(), "nothing written");
}

/// extract computes the sidecar from each layer while it assembles the embeddings;
/// `analyze index` reads them back from the file: the two must write the same bytes
/// (tiny-m: massive activations, and a BOS).
#[test]
fn extract_and_analyze_index_write_the_same_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = extract_cpu(&fixture("tiny-m"), &demo_dataset(), &cache, "m", &[]);
    assert_ok(&out, "extract tiny-m");
    let grams = cache.join("m").join(GRAMS_FILE);
    let written = std::fs::read(&grams).unwrap();
    flip_byte(&grams, written.len() / 2);
    let index = run_cmd(
        &binary("analyze"),
        &["index", "--cache", cache.to_str().unwrap()],
    );
    assert_ok(&index, "analyze index");
    let said = String::from_utf8_lossy(&index.stdout);
    assert!(said.contains("rebuilt grams.parquet"), "{said}");
    assert!(
        std::fs::read(&grams).unwrap() == written,
        "analyze index wrote another sidecar than extract did"
    );
}

/// The sidecar stays within twice the embeddings however many pairs a category has:
/// Gram blocks (float64, `2n^2` values) up to as many pairs as dimensions, the
/// category's vectors beyond. At 200 pairs per category and width 16 the Gram
/// blocks alone would be 25 times the embeddings. The statement geometry adds 32
/// bytes per statement (and the layer's mean to a row kept as vectors) against the
/// embeddings' `4 hidden + 8`, which the bound allows for.
#[test]
fn the_sidecar_is_at_most_twice_the_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, models, categories, hidden) in [
        ("vectors", "v:3:16:100000", "200,200,200", 16.0),
        ("grams", "g:3:32:100000", "30,30,30", 32.0),
        ("mixed", "x:3:24:100000", "10,60,30,24,25", 24.0),
    ] {
        let cache = tmp.path().join(name);
        synth_cache(
            &cache,
            &[
                "--models",
                models,
                "--categories",
                categories,
                "--seed",
                "5",
            ],
        );
        let dir = std::fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let m = validate_cache(&dir).unwrap().manifest;
        let ratio = m.files[GRAMS_FILE].bytes as f64 / m.files[EMBEDDINGS_FILE].bytes as f64;
        // Per statement: 32 bytes of geometry, and at most the layer's mean (8 hidden
        // bytes) shared by the 20 or more statements of a row kept as vectors.
        let geometry = (32.0 + 8.0 * hidden / 20.0) / (4.0 * hidden + 8.0);
        assert!(
            ratio <= 2.0 + geometry,
            "{name}: the sidecar is {ratio:.2}x the embeddings"
        );
        compact_equals_embeddings(&cache, &tmp.path().join(format!("{name}-out")));
    }
}

/// A sidecar of format version 1 (Gram blocks only, written before the vector
/// columns; the committed demo caches are such) still validates and gives the
/// embeddings path's numbers.
#[test]
fn a_version_1_sidecar_is_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/demo-cache");
    let cache = tmp.path().join("cache");
    for model in std::fs::read_dir(&src).unwrap() {
        let model = model.unwrap().path();
        let to = cache.join(model.file_name().unwrap());
        copy_dir(&model, &to);
        let m = validate_cache(&to).unwrap().manifest;
        assert_eq!(m.grams.unwrap().format_version, 1);
    }
    compact_equals_embeddings(&cache, tmp.path());
    // Without the statement geometry the sidecar cannot be centred: the answer says so.
    let r = results(&cache, &tmp.path().join("old"), &[]);
    let not = r["robustness"]["not_computed"].as_array().unwrap();
    assert_eq!(not[0]["geometry"], "centred");
    assert!(
        not[0]["why"].as_str().unwrap().contains("analyze index"),
        "{}",
        not[0]
    );
    // analyze index upgrades it from the embeddings; then centring comes from the sidecar
    // and equals the embeddings path.
    let index = run_cmd(
        &binary("analyze"),
        &["index", "--cache", cache.to_str().unwrap()],
    );
    assert_ok(&index, "analyze index");
    assert!(
        String::from_utf8_lossy(&index.stdout).contains("format 1 upgraded to 3"),
        "{}",
        String::from_utf8_lossy(&index.stdout)
    );
    // The root also holds the root card and its lock now: the model folders are the dirs.
    for model in std::fs::read_dir(&cache).unwrap() {
        let path = model.unwrap().path();
        if path.is_dir() {
            let m = validate_cache(&path).unwrap().manifest;
            assert_eq!(m.grams.unwrap().format_version, 3);
        }
    }
    let upgraded = results(&cache, &tmp.path().join("upgraded"), &[]);
    assert_eq!(upgraded["robustness"]["checks"][0]["geometry"], "centred");
    compact_equals_embeddings(&cache, &tmp.path().join("after"));
}
