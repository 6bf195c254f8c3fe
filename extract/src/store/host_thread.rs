//! The host side of a run: a thread behind a bounded queue turns each batch's
//! outputs into statement rows, checks them, and writes a chunk whenever the
//! forward loop closes one, while the device runs the next batches.
//!
//! A chunk is finished only on [`Msg::EndChunk`]: when the forward loop stops
//! early (an error, a kill) the rows of an unfinished chunk are dropped, and a
//! resumed run redoes them. Finished chunks are held in memory and saved to disk
//! (`Partial::save`) once [`Host::save_every`] has passed since the last save, or
//! when they reach [`Host::hold_floats`]: a kill loses at most that much work, and a
//! run shorter than that writes its vectors once, into the final file, instead of
//! also into chunks that the assembly reads back.

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use schemas::{Pooling, StatementRow};

use crate::inputs::dataset::{Dataset, Statement};
use crate::model::forward::{BatchOut, Outputs};
use crate::model::model_dir::{Dtype, ModelDir};
use crate::store::chunks::{Partial, Settings};

/// What the forward loop sends.
pub enum Msg {
    /// One batch: the statements (indices into the dataset) in row order and their outputs.
    Batch { group: Vec<usize>, out: BatchOut },
    /// The batches sent since the last `EndChunk` form a chunk: write it.
    EndChunk,
}

/// Batches queued between the device and the host: enough to ride out one slow
/// chunk write, few enough that the output tensors held stay small.
pub const QUEUE_DEPTH: usize = 2;

/// What the host thread needs to know of the run.
pub struct Host<'a> {
    pub data: &'a Dataset,
    /// Token count of every statement of the dataset.
    pub lengths: &'a [usize],
    pub poolings: &'a [Pooling],
    pub model: &'a ModelDir,
    pub settings: &'a Settings,
    pub device_name: &'a str,
    /// Save the finished chunks at least this often (zero: each as it finishes).
    pub save_every: Duration,
    /// Save them when the ones held reach this many floats.
    pub hold_floats: usize,
}

/// How many floats of finished chunks [`collect_chunks`] holds before it saves them whatever
/// the time: a quarter of the `available` memory (1 GiB where that is unknown).
pub fn hold_floats(available: Option<u64>) -> usize {
    (available.unwrap_or(4 << 30) / 4 / std::mem::size_of::<f32>() as u64) as usize
}

/// Where the host thread's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostTimes {
    /// From the graph's outputs to checked rows.
    pub reduction: Duration,
    /// Saving chunks.
    pub writing: Duration,
    pub n_run: usize,
}

/// Runs until the forward loop hangs up; `on_chunk(rows written so far)` after
/// each chunk.
pub fn collect_chunks(
    host: &Host,
    queue: Receiver<Msg>,
    partial: &mut Partial,
    recycle: Sender<Outputs>,
    mut on_chunk: impl FnMut(usize),
) -> Result<HostTimes> {
    let mut times = HostTimes::default();
    // The chunk being filled: its rows and their vectors.
    let mut rows: Vec<StatementRow> = Vec::new();
    let mut vectors: Vec<f32> = Vec::new();
    // Buffers of saved chunks, filled again: their pages are faulted in already.
    let mut spare: Vec<Vec<f32>> = Vec::new();
    let mut saved = Instant::now();
    for msg in queue {
        match msg {
            Msg::Batch { group, out } => {
                let t = Instant::now();
                let reduced = reduce(host, &group, &out, &mut rows, &mut vectors);
                out.recycle(&recycle);
                reduced?;
                times.reduction += t.elapsed();
            }
            Msg::EndChunk => {
                let t = Instant::now();
                times.n_run += rows.len();
                let next = spare
                    .pop()
                    .unwrap_or_else(|| chunk_buffer(vectors.capacity()));
                partial.add_chunk(
                    std::mem::take(&mut rows),
                    std::mem::replace(&mut vectors, next),
                    host.settings,
                    host.device_name,
                );
                if saved.elapsed() >= host.save_every || partial.held_floats() >= host.hold_floats {
                    spare.extend(partial.save()?);
                    spare.truncate(1);
                    saved = Instant::now();
                }
                times.writing += t.elapsed();
                on_chunk(times.n_run);
            }
        }
    }
    Ok(times)
}

/// Appends one batch's rows to `rows`, and their pooled vectors in the order of
/// `host.poolings` to `vectors`.
fn reduce(
    host: &Host,
    group: &[usize],
    out: &BatchOut,
    rows: &mut Vec<StatementRow>,
    vectors: &mut Vec<f32>,
) -> Result<()> {
    for (row, &i) in group.iter().enumerate() {
        let s = &host.data.statements[i];
        let start = vectors.len();
        out.pooled_row(row, host.poolings, vectors);
        let nll = out.nll_sum[row];
        check_finite(
            s,
            host.lengths[i],
            nll,
            &vectors[start..],
            host.poolings.len(),
            host.model,
        )?;
        rows.push(StatementRow {
            statement_id: s.id,
            category: s.category.clone(),
            pair_index: s.pair_index,
            side: s.side,
            text: s.text.clone(),
            n_tokens: host.lengths[i] as u32,
            nll_sum: nll,
            n_predicted: out.n_predicted[row],
        });
    }
    Ok(())
}

/// A NaN or infinity anywhere would poison every statistic downstream: refuse it
/// naming the statement and the layer.
fn check_finite(
    s: &Statement,
    n_tokens: usize,
    nll: f64,
    pooled: &[f32],
    n_poolings: usize,
    model: &ModelDir,
) -> Result<()> {
    let bad_layer = pooled
        .iter()
        .position(|x| !x.is_finite())
        .map(|p| p / (n_poolings * model.export.hidden_size as usize));
    if nll.is_finite() && bad_layer.is_none() {
        return Ok(());
    }
    let what = match bad_layer {
        Some(l) => format!("hidden states at layer {l}"),
        None => "the NLL".to_string(),
    };
    let hint = if model.dtype == Dtype::F16 {
        " (float16 overflow? export in float32)"
    } else {
        ""
    };
    bail!(
        "{} ({n_tokens} tokens): NaN or infinite values in {what}{hint}",
        s.describe()
    )
}

/// An empty buffer for a chunk's vectors (gigabytes at the 12B shape). On Linux it
/// asks for transparent huge pages (`madvise`, honoured where the system's policy is
/// `madvise` or `always`): first touching its memory then takes one fault per 2 MiB
/// instead of per 4 KiB, which on the virtual machine of docs/benchmarks.md was the
/// larger part of holding a chunk.
fn chunk_buffer(capacity: usize) -> Vec<f32> {
    let v = Vec::with_capacity(capacity);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<f32>();
        let first = start.next_multiple_of(HUGE);
        if end >= first + HUGE {
            let len = (end - first) / HUGE * HUGE;
            // SAFETY: advice on whole pages inside this allocation, which nothing has
            // touched yet; a refusal only leaves it on small pages.
            unsafe {
                libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}
