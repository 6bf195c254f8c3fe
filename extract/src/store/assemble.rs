//! The final files: the chunks of a run (or the shard caches of `extract merge`)
//! merged layer by layer into `embeddings.parquet`, rows by statement id, with the
//! sidecar (`grams.parquet`) computed from each layer on the way, and
//! `statements.parquet`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::buffer::ScalarBuffer;
use schemas::{
    read_embeddings_layer, EmbeddingsWriter, FileEntry, GramsWriter, LayerBlock, Manifest, Pooling,
    StatementRow,
};

use crate::store::chunks::{ChunkVectors, Partial};
use crate::store::vectors::{self, Shape};

/// Merges the chunks of `partial` into `out_dir`'s final files, layer by layer, rows
/// by statement id, computing the sidecar from each layer on the way; every
/// statement of `ids` (ascending) must be present exactly once. Lists the three
/// files in `m.files` (and the sidecar in `m.grams`); returns the time the sidecar took.
pub fn from_chunks(
    partial: &Partial,
    out_dir: &Path,
    ids: &[u32],
    m: &mut Manifest,
) -> Result<Duration> {
    let mut rows: Vec<StatementRow> = partial
        .chunks
        .iter()
        .flat_map(|c| c.rows.iter().cloned())
        .collect();
    rows.sort_by_key(|r| r.statement_id);
    if !rows.iter().map(|r| r.statement_id).eq(ids.iter().copied()) {
        bail!(
            "{}: the chunks do not hold every statement exactly once; delete it and rerun",
            partial.dir.display()
        );
    }
    let sources: Vec<VectorSource> = partial
        .chunks
        .iter()
        .map(|c| {
            let ids = c.rows.iter().map(|r| r.statement_id).collect();
            let shape = partial.key.vectors_shape(c.rows.len());
            match &c.vectors {
                ChunkVectors::Saved => VectorSource::Chunk {
                    path: partial.vectors_path(c.info.index),
                    ids,
                    shape,
                },
                ChunkVectors::Held { buffer, order } => VectorSource::Memory {
                    buffer,
                    order,
                    ids,
                    shape,
                },
            }
        })
        .collect();
    let mut grams = GramsWriter::create(out_dir, m, &rows)?;
    let (emb, sidecar) = combine_layers(
        &out_dir.join(schemas::EMBEDDINGS_FILE),
        &sources,
        ids,
        &partial.poolings(),
        partial.key.n_layers as usize + 1,
        partial.key.hidden_size as usize,
        &mut grams,
    )
    .with_context(|| format!("delete {} and rerun", partial.dir.display()))?;
    let st = schemas::write_statements(&out_dir.join(schemas::STATEMENTS_FILE), &rows)?;
    m.files.insert(schemas::STATEMENTS_FILE.to_string(), st);
    m.files.insert(schemas::EMBEDDINGS_FILE.to_string(), emb);
    let t = Instant::now();
    grams.finish(m)?;
    Ok(sidecar + t.elapsed())
}

/// Where [`combine_layers`] reads some statements of every layer from.
pub enum VectorSource<'a> {
    /// A cache's `embeddings.parquet` (a shard's, for `extract merge`).
    Embeddings(PathBuf),
    /// A chunk's vectors file (`ids` in the file's row order).
    Chunk {
        path: PathBuf,
        ids: Vec<u32>,
        shape: Shape,
    },
    /// A chunk held in memory ([`ChunkVectors::Held`]; `ids[i]` at row `order[i]`).
    Memory {
        buffer: &'a [f32],
        order: &'a [usize],
        ids: Vec<u32>,
        shape: Shape,
    },
}

impl VectorSource<'_> {
    /// Where the statements come from, for a message.
    fn origin(&self) -> String {
        match self {
            VectorSource::Embeddings(path) | VectorSource::Chunk { path, .. } => {
                path.display().to_string()
            }
            VectorSource::Memory { .. } => "a chunk held in memory".to_string(),
        }
    }

    /// Layer `l` of this source's statements.
    fn layer(&self, l: usize, poolings: &[Pooling]) -> Result<SourceLayer<'_>> {
        match self {
            VectorSource::Embeddings(path) => {
                let b = read_embeddings_layer(path, l, poolings)?;
                if b.layer as usize != l {
                    bail!("{}: row group {l} is not layer {l}", path.display());
                }
                Ok(SourceLayer::Read(b))
            }
            VectorSource::Chunk { path, ids, shape } => {
                let blocks = vectors::Vectors::open(path, *shape)?.layer(l, path)?;
                Ok(SourceLayer::Read(LayerBlock {
                    layer: l as u32,
                    statement_ids: ids.clone(),
                    vectors: poolings.iter().copied().zip(blocks).collect(),
                }))
            }
            VectorSource::Memory {
                buffer,
                order,
                ids,
                shape,
            } => Ok(SourceLayer::Held {
                buffer,
                order,
                ids,
                shape: *shape,
                l,
            }),
        }
    }
}

/// One layer of a [`VectorSource`]: read from its file, or a held chunk's buffer lent as
/// it is, so that putting the rows in order is the only copy.
enum SourceLayer<'a> {
    Read(LayerBlock),
    Held {
        buffer: &'a [f32],
        order: &'a [usize],
        ids: &'a [u32],
        shape: Shape,
        l: usize,
    },
}

impl SourceLayer<'_> {
    fn ids(&self) -> &[u32] {
        match self {
            SourceLayer::Read(b) => &b.statement_ids,
            SourceLayer::Held { ids, .. } => ids,
        }
    }

    /// Row `i`'s vector (`h` floats) of pooling `p`, the `k`-th of the run's poolings.
    fn vector(&self, k: usize, p: Pooling, i: usize, h: usize) -> &[f32] {
        match self {
            SourceLayer::Read(b) => &b.vectors[&p][i * h..][..h],
            SourceLayer::Held {
                buffer,
                order,
                shape,
                l,
                ..
            } => &buffer[order[i] * shape.stride() + (l * shape.poolings + k) * h..][..h],
        }
    }
}

/// Writes `out` from sources that each hold some statements of every
/// layer: layer by layer, rows by statement id, so the result is byte for byte what
/// one writer of all rows would produce. Every id of `ids` (ascending) must be in
/// exactly one source. Each layer also goes to `grams`, so the sidecar needs no
/// second read of the embeddings; returns the time that took.
///
/// Three threads: one reads and orders layer l+1 while another computes layer l's
/// Gram blocks and this one encodes and writes it, so the file's sequential
/// encoding is not also waiting on the sidecar's arithmetic.
pub fn combine_layers(
    out: &Path,
    sources: &[VectorSource<'_>],
    ids: &[u32],
    poolings: &[Pooling],
    n_layer_rows: usize,
    hidden: usize,
    grams: &mut GramsWriter,
) -> Result<(FileEntry, Duration)> {
    // Shared by the two consumers without a copy.
    type SharedLayer = Vec<ScalarBuffer<f32>>;
    let mut writer = EmbeddingsWriter::create(out, hidden, poolings)?;
    let (to_grams, for_grams) = sync_channel::<SharedLayer>(1);
    let (to_writer, for_writer) = sync_channel::<SharedLayer>(1);
    let (read, sidecar, written) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<()> {
            for l in 0..n_layer_rows {
                let layer: SharedLayer = layer_in_order(sources, ids, poolings, hidden, l)?
                    .into_iter()
                    .map(ScalarBuffer::from)
                    .collect();
                // A consumer that hung up failed: its error is the one to report.
                if to_grams.send(layer.clone()).is_err() || to_writer.send(layer).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let sidecar = s.spawn(move || -> Result<Duration> {
            let mut busy = Duration::ZERO;
            for (l, layer) in for_grams.iter().enumerate() {
                let t = Instant::now();
                let by_pooling: BTreeMap<Pooling, &ScalarBuffer<f32>> =
                    poolings.iter().copied().zip(&layer).collect();
                grams.add_layer(l as u32, &by_pooling)?;
                busy += t.elapsed();
            }
            Ok(busy)
        });
        // Owns its receiver, so an early return hangs up on the reader and it stops.
        let file = &mut writer;
        let written = (move || -> Result<usize> {
            let mut n = 0;
            for (l, layer) in for_writer.iter().enumerate() {
                file.write_layer(l as u32, ids, layer)?;
                n += 1;
            }
            Ok(n)
        })();
        (join(reader), join(sidecar), written)
    });
    read?;
    let sidecar = sidecar?;
    if written? != n_layer_rows {
        bail!(
            "{}: fewer layers written than {n_layer_rows}",
            out.display()
        );
    }
    Ok((writer.finish()?, sidecar))
}

/// A scoped thread's result, its panic passed on.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Layer `l` of every source, rows by statement id: one `ids.len() x hidden` block
/// per pooling.
fn layer_in_order(
    sources: &[VectorSource<'_>],
    ids: &[u32],
    poolings: &[Pooling],
    hidden: usize,
    l: usize,
) -> Result<Vec<Vec<f32>>> {
    let layers: Vec<SourceLayer> = sources
        .iter()
        .map(|src| src.layer(l, poolings))
        .collect::<Result<_>>()?;
    // (statement id, source, row)
    let mut order: Vec<(u32, usize, usize)> = layers
        .iter()
        .enumerate()
        .flat_map(|(si, b)| {
            b.ids()
                .iter()
                .enumerate()
                .map(move |(ri, &id)| (id, si, ri))
        })
        .collect();
    order.sort_unstable();
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!(
            "{}: layer {l} holds statement_id {} a second time (also in {}); each statement must be there once",
            sources[w[1].1].origin(),
            w[1].0,
            sources[w[0].1].origin()
        );
    }
    if !order.iter().map(|&(id, _, _)| id).eq(ids.iter().copied()) {
        bail!("layer {l} of the sources does not hold every statement exactly once");
    }
    Ok(poolings
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let mut v = Vec::with_capacity(ids.len() * hidden);
            for &(_, si, ri) in &order {
                v.extend_from_slice(layers[si].vector(k, p, ri, hidden));
            }
            v
        })
        .collect())
}
