//! The sidecar's two writers: `GramsWriter` fed the vectors as they are produced
//! (extract, synth-cache) and `add_sidecar` reading `embeddings.parquet` back write the
//! same bytes, whatever the number of threads; `add_sidecar` refuses embeddings that
//! are not the bytes the manifest names, and a writer used out of order, or given
//! unusable vectors, says so and leaves no file behind.

use std::collections::BTreeMap;
use std::path::Path;

use schemas::*;

/// Narrower than the largest category, which the sidecar keeps as its vectors.
const HIDDEN: usize = 24;
const LAYERS: u32 = 3;
const POOLINGS: [Pooling; 2] = [Pooling::Last, Pooling::Mean];
/// Pairs per category: some above the Gram kernel's leaf size, one pair alone; the
/// first has more pairs than HIDDEN (kept as vectors), the others are Gram blocks.
const PAIRS: [usize; 3] = [40, 1, 17];

fn rows() -> Vec<StatementRow> {
    let mut rows = Vec::new();
    for (c, &n) in PAIRS.iter().enumerate() {
        for pair in 0..n {
            for side in [Side::A, Side::B] {
                let id = rows.len() as u32;
                rows.push(StatementRow {
                    statement_id: id,
                    category: format!("c{c}"),
                    pair_index: pair as u32,
                    side,
                    text: format!("statement {id}"),
                    n_tokens: 4,
                    nll_sum: 1.0,
                    n_predicted: 3,
                });
            }
        }
    }
    rows
}

/// One pooling's `rows x HIDDEN` matrix at `layer`: deterministic, with a shared
/// offset so that cosines sit away from 0.
fn vectors(layer: u32, pooling: Pooling, n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_u64 ^ (u64::from(layer) << 32) ^ pooling as u64;
    (0..n * HIDDEN)
        .map(|k| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            noise + if k % HIDDEN < 3 { 4.0 } else { 0.0 }
        })
        .collect()
}

fn layer(layer: u32, n: usize) -> BTreeMap<Pooling, Vec<f32>> {
    POOLINGS
        .iter()
        .map(|&p| (p, vectors(layer, p, n)))
        .collect()
}

fn manifest(statements: &[StatementRow]) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        complete: true,
        model: ModelInfo {
            id: "fixture/sidecar".into(),
            revision: None,
            display_name: "sidecar".into(),
            n_layers: LAYERS,
            hidden_size: HIDDEN as u32,
            n_parameters: None,
            dtype: "float32".into(),
            onnx_sha256: "0".repeat(64),
            tokenizer_sha256: "0".repeat(64),
            files: BTreeMap::new(),
            adds_bos: Some(false),
            series: None,
            size: None,
            step: None,
        },
        dataset: DatasetInfo {
            path: "dataset.json".into(),
            sha256: "1".repeat(64),
            categories: (0..PAIRS.len()).map(|c| format!("c{c}")).collect(),
            n_pairs: PAIRS.iter().sum::<usize>() as u32,
            n_statements: statements.len() as u32,
            statements_sha256: None,
        },
        run: RunInfo {
            tool: "test".into(),
            poolings: POOLINGS.iter().map(|p| p.to_string()).collect(),
            started: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        },
        files: BTreeMap::new(),
        grams: None,
    }
}

/// Writes statements and embeddings into `dir`, streaming the sidecar beside them
/// as extract does; returns the manifest listing all three.
fn write_streaming(dir: &Path) -> Manifest {
    let statements = rows();
    let ids: Vec<u32> = statements.iter().map(|r| r.statement_id).collect();
    let mut m = manifest(&statements);
    let st = write_statements(&dir.join(STATEMENTS_FILE), &statements).unwrap();
    m.files.insert(STATEMENTS_FILE.into(), st);
    let mut grams = GramsWriter::create(dir, &m, &statements).unwrap();
    let mut embeddings =
        EmbeddingsWriter::create(&dir.join(EMBEDDINGS_FILE), HIDDEN, &POOLINGS).unwrap();
    for l in 0..=LAYERS {
        let vectors = layer(l, ids.len());
        grams.add_layer(l, &vectors).unwrap();
        let in_order = POOLINGS.iter().map(|p| vectors[p].clone()).collect();
        embeddings.write_layer(l, &ids, in_order).unwrap();
    }
    m.files
        .insert(EMBEDDINGS_FILE.into(), embeddings.finish().unwrap());
    grams.finish(&mut m).unwrap();
    write_manifest(&dir.join(MANIFEST_FILE), &m).unwrap();
    m
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(f)
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn streaming_and_reading_back_write_the_same_bytes_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let streamed = write_streaming(dir.path());
    validate_cache(dir.path()).unwrap();
    let grams = dir.path().join(GRAMS_FILE);
    let bytes = std::fs::read(&grams).unwrap();
    for threads in [1, 3] {
        std::fs::remove_file(&grams).unwrap();
        let mut m = streamed.clone();
        m.files.remove(GRAMS_FILE);
        m.grams = None;
        in_pool(threads, || add_sidecar(dir.path(), &mut m)).unwrap();
        assert_eq!(m, streamed, "{threads} threads: the same manifest");
        assert!(
            std::fs::read(&grams).unwrap() == bytes,
            "{threads} threads: other bytes"
        );
    }
    // The blocks are the analysis's own, from the vectors in memory.
    let cats = &streamed.dataset.categories;
    let entry = &streamed.files[GRAMS_FILE];
    let shape = GramsShape {
        categories: cats,
        pairs_per_category: &PAIRS,
        hidden: HIDDEN,
    };
    let read = read_grams(dir.path(), entry, &[Pooling::Mean], &[2], &shape).unwrap();
    let matrix = vectors(2, Pooling::Mean, rows().len());
    let mut start = 0;
    for (c, &n) in PAIRS.iter().enumerate() {
        let (a, b): (Vec<usize>, Vec<usize>) =
            (start..start + n).map(|i| (2 * i, 2 * i + 1)).unzip();
        start += n;
        let want = gram::category_blocks(&matrix, HIDDEN, &a, &b);
        assert_eq!(
            matches!(want, gram::CategoryBlocks::Vectors(_)),
            n > HIDDEN,
            "category {c}: the form"
        );
        assert_eq!(read[0][0][c], want, "category {c}");
    }
}

#[test]
fn embeddings_other_than_the_listed_bytes_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = write_streaming(dir.path());
    let grams = dir.path().join(GRAMS_FILE);
    std::fs::remove_file(&grams).unwrap();
    // One value of layer 2 changes in its last bit: the file still decodes.
    let path = dir.path().join(EMBEDDINGS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let needle: Vec<u8> = vectors(2, Pooling::Mean, rows().len())[100..104]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = add_sidecar(dir.path(), &mut m).unwrap_err().to_string();
    assert!(
        err.contains("embeddings.parquet") && err.contains("sha256"),
        "{err}"
    );
    assert!(!grams.exists() && temp_files(dir.path()).is_empty());
}

#[test]
fn a_writer_used_out_of_order_or_given_unusable_vectors_says_so_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let statements = rows();
    let n = statements.len();
    let mut m = manifest(&statements);
    let refuse = |w: &mut GramsWriter, l: u32, v: &BTreeMap<Pooling, Vec<f32>>, want: &str| {
        let err = w.add_layer(l, v).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    };

    let mut w = GramsWriter::create(dir.path(), &m, &statements).unwrap();
    refuse(&mut w, 1, &layer(1, n), "layer 1 given where layer 0");
    let mut missing = layer(0, n);
    missing.remove(&Pooling::Mean);
    refuse(&mut w, 0, &missing, "no mean vectors");
    let mut short = layer(0, n);
    short.get_mut(&Pooling::Last).unwrap().pop();
    refuse(&mut w, 0, &short, "values given for");
    let mut nan = layer(0, n);
    nan.get_mut(&Pooling::Mean).unwrap()[5 * HIDDEN + 7] = f32::NAN;
    refuse(&mut w, 0, &nan, "layer 0 (mean) holds non-finite values");
    w.add_layer(0, &layer(0, n)).unwrap();
    let err = w.finish(&mut m).unwrap_err().to_string();
    assert!(err.contains("finished after 1 of the 4 layers"), "{err}");
    assert!(m.grams.is_none() && !m.files.contains_key(GRAMS_FILE));

    let w = GramsWriter::create(dir.path(), &m, &statements).unwrap();
    assert_eq!(temp_files(dir.path()).len(), 1);
    drop(w);
    assert!(temp_files(dir.path()).is_empty() && !dir.path().join(GRAMS_FILE).exists());
}
