//! Parity of `extract` with transformers on the four fixture models.
//!
//! The references (`tests/fixtures/<model>/reference.safetensors`) were made by
//! `scripts/make-fixtures`, which runs `scripts/export`'s `seedref` module: the
//! seed notebook's `get_layer_embeddings` (hidden_states[l][0, 1:, :].mean(0),
//! every layer) and `get_nll` (transformers' loss with labels = input_ids) on
//! the fixture's HF checkpoint with transformers, float32, on the CPU, one
//! statement at a time (batch 1, no padding), over
//! `tests/fixtures/demo-dataset.json` in statement order (category by
//! category, pair by pair, A then B). `extract` runs the ONNX export of the
//! same checkpoint on the CPU with batching and right padding; every
//! `mean_skip_first` value at every layer and every `nll_mean` must agree to
//! 1e-4 absolute.

use e2e::{assert_ok, demo_dataset, extract_cpu, fixture, read_reference, sha256, FIXTURES};
use schemas::{read_embeddings_layer, read_statements, validate_cache, Pooling};

const TOL: f64 = 1e-4;

fn check_fixture(name: &str) {
    let model = fixture(name);
    let reference = read_reference(&model.join("reference.safetensors"));
    if let Some(sha) = reference.metadata.get("dataset_sha256") {
        assert_eq!(
            *sha,
            sha256(&demo_dataset()),
            "{name}: reference was made from another demo dataset"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = extract_cpu(
        &model,
        &demo_dataset(),
        tmp.path(),
        name,
        &["--batch-size", "8"],
    );
    assert_ok(&out, &format!("extract {name}"));

    let cache = validate_cache(&tmp.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let n_layers = cache.manifest.model.n_layers as usize;
    let hidden = cache.manifest.model.hidden_size as usize;
    let n = cache.manifest.dataset.n_statements as usize;
    assert_eq!(
        reference.shape,
        vec![n, n_layers + 1, hidden],
        "{name}: reference shape"
    );
    assert_eq!(reference.nll.len(), n);

    let rows = read_statements(&cache.statements_path()).unwrap();
    assert_eq!(rows.len(), n);
    let mut worst_nll = 0.0f64;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.statement_id as usize, i, "{name}: statements in id order");
        let d = (r.nll_mean() - reference.nll[i]).abs();
        assert!(
            d <= TOL,
            "{name}: statement {i} nll_mean {} vs transformers {} (|diff| {d:.2e})",
            r.nll_mean(),
            reference.nll[i]
        );
        worst_nll = worst_nll.max(d);
    }

    let mut worst_emb = 0.0f64;
    for l in 0..=n_layers {
        let block =
            read_embeddings_layer(&cache.embeddings_path(), l, &[Pooling::MeanSkipFirst]).unwrap();
        assert_eq!(block.layer as usize, l);
        assert_eq!(
            block.statement_ids,
            (0..n as u32).collect::<Vec<_>>(),
            "{name}: layer {l} rows by statement id"
        );
        let ours = &block.vectors[&Pooling::MeanSkipFirst];
        for s in 0..n {
            for j in 0..hidden {
                let a = f64::from(ours[s * hidden + j]);
                let b = f64::from(reference.mean_skip_first[(s * (n_layers + 1) + l) * hidden + j]);
                let d = (a - b).abs();
                assert!(d <= TOL, "{name}: statement {s} layer {l} dim {j}: {a} vs transformers {b} (|diff| {d:.2e})");
                worst_emb = worst_emb.max(d);
            }
        }
    }
    eprintln!("{name}: max |diff| embeddings {worst_emb:.2e}, nll {worst_nll:.2e}");
}

#[test]
fn tiny_a_matches_transformers() {
    check_fixture(FIXTURES[0]);
}

#[test]
fn tiny_b_matches_transformers() {
    check_fixture(FIXTURES[1]);
}

#[test]
fn tiny_c_matches_transformers() {
    check_fixture(FIXTURES[2]);
}

#[test]
fn tiny_d_matches_transformers() {
    check_fixture(FIXTURES[3]);
}
