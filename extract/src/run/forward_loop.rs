//! The forward loop: the statements not yet done, batch by batch through the
//! session on this thread, their outputs queued for the host thread, which reduces
//! them to rows and keeps each finished chunk.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use anyhow::Result;
use schemas::Pooling;

use crate::inputs::batch::{self, BatchPlan, Padded};
use crate::model::forward::Forward;
use crate::model::runtime::Runtime;
use crate::run::context::RunContext;
use crate::run::progress::Progress;
use crate::store::chunks::Partial;
use crate::store::host_thread::{self, Host, HostTimes, Msg};

/// Padded up front (a few bytes per token), so the device never waits for the host
/// between two batches.
fn pad_all(plan: &BatchPlan, tokens: &[Vec<i64>]) -> Vec<Vec<Padded>> {
    plan.chunks()
        .map(|chunk| {
            chunk
                .iter()
                .map(|group| {
                    let seqs: Vec<&[i64]> = group.iter().map(|&i| tokens[i].as_slice()).collect();
                    batch::pad(&seqs)
                })
                .collect()
        })
        .collect()
}

/// Runs every batch and queues its outputs for the host thread, chunk by chunk; returns
/// the time spent inside the session.
fn feed(
    plan: BatchPlan,
    padded: Vec<Vec<Padded>>,
    rt: &mut Runtime,
    fwd: &mut Forward,
    poolings: &[Pooling],
    queue: &SyncSender<Msg>,
) -> Result<Duration> {
    let mut forward = Duration::ZERO;
    for (chunk, batches) in plan.into_iter().zip(padded) {
        for (group, batch) in chunk.into_iter().zip(batches) {
            let t = Instant::now();
            let out = fwd.pass(rt, batch, poolings)?;
            forward += t.elapsed();
            // A closed queue means the host thread failed: its error is the one to report.
            if queue.send(Msg::Batch { group, out }).is_err() {
                return Ok(forward);
            }
        }
        if queue.send(Msg::EndChunk).is_err() {
            return Ok(forward);
        }
    }
    Ok(forward)
}

/// What [`work`] did.
pub(crate) struct Work {
    pub host: HostTimes,
    pub n_resumed: usize,
    /// Seconds inside the session's forward passes.
    pub forward: f64,
    /// Wall clock of the whole loop, until the last chunk was written.
    pub seconds: f64,
}

/// Runs the statements not yet done, chunk by chunk: the device here, the host's
/// reduction and writing on the host thread behind a bounded queue.
pub(crate) fn work(
    ctx: &RunContext,
    rt: &mut Runtime,
    fwd: &mut Forward,
    partial: &mut Partial,
) -> Result<Work> {
    let RunContext {
        opts,
        data,
        model,
        tokens,
        ids,
        settings,
        poolings,
        ..
    } = *ctx;
    let done = partial.done();
    let n = ids.len();
    let todo: Vec<usize> = ids
        .iter()
        .filter(|i| !done.contains(i))
        .map(|&i| i as usize)
        .collect();
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let plan = BatchPlan::new(&todo, &lengths, opts.batching, n);
    let padded = pad_all(&plan, tokens);
    // The forward loop holds the runtime mutably, so the host thread gets its own copy.
    let device_name = rt.device_name.clone();
    let host = Host {
        data,
        lengths: &lengths,
        poolings,
        model,
        settings,
        device_name: &device_name,
        save_every: opts.save_every,
        hold_floats: host_thread::hold_floats(schemas::available_memory()),
    };

    let t0 = Instant::now();
    let mut progress = Progress::new(n, done.len());
    let recycle = fwd.recycler();
    let (queue, from_device) = sync_channel::<Msg>(host_thread::QUEUE_DEPTH);
    let (forward, host_times) = std::thread::scope(|s| {
        let written = s.spawn(|| {
            host_thread::collect_chunks(&host, from_device, partial, recycle, |n_run| {
                let rate = n_run as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                progress.update(done.len() + n_run, rate);
            })
        });
        let sent = feed(plan, padded, rt, fwd, poolings, &queue);
        drop(queue);
        let host_times = written
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (sent, host_times)
    });
    let host_times = host_times?;
    let forward = forward?;
    progress.finish();
    Ok(Work {
        host: host_times,
        n_resumed: done.len(),
        forward: forward.as_secs_f64(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
