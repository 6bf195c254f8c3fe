//! The checks before anything slow: a usable cache folder name and place, and
//! memory and disk enough for the run, each refused in one line naming the flag
//! to change; and the folders a refused run made, removed again ([`Created`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use schemas::{Manifest, Side, MANIFEST_FILE};

use crate::inputs::batch::BatchPlan;
use crate::inputs::dataset::Dataset;
use crate::model::model_dir::{self, ModelDir};
use crate::store::chunks;
use crate::store::host_thread;

/// Cache folder names that would collide with the contract's own names or hide
/// the cache from readers (which skip dot folders).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reserved = [
        MANIFEST_FILE,
        schemas::STATEMENTS_FILE,
        schemas::EMBEDDINGS_FILE,
        schemas::GRAMS_FILE,
        // the root card's name: a folder so named would hide the root's listing
        schemas::CARD_FILE,
    ];
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || reserved.contains(&name)
    {
        bail!("--name '{name}' is not usable as a cache folder name (no leading '.', no path separators, not a contract file name)");
    }
    // analyze selects folders with a comma-separated --models, and a control character
    // (a newline) breaks the report's lines and the CSV.
    if name.contains(',') || name.chars().any(char::is_control) {
        bail!("--name {name:?}: no commas (analyze --models NAME,... could never select it) and no control characters");
    }
    Ok(())
}

/// The folders that creating a cache folder makes (it and the parents it lacks), so
/// that a refused run removes what it made and nothing else.
pub(crate) struct Created(Vec<PathBuf>);

impl Created {
    /// Before `cache_dir` is created: the folders missing on its path, deepest first.
    pub(crate) fn before(cache_dir: &Path) -> Created {
        Created(
            cache_dir
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
                .map(Path::to_path_buf)
                .collect(),
        )
    }

    /// On an error, removes the cache folder if this run created it, then each
    /// parent it created while empty.
    pub(crate) fn on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            if let Some((cache_dir, parents)) = self.0.split_first() {
                let _ = std::fs::remove_dir_all(cache_dir);
                for dir in parents {
                    if std::fs::remove_dir(dir).is_err() {
                        break;
                    }
                }
            }
        }
        result
    }
}

/// Refuses a cache root inside a model's cache folder (one holding a manifest, or a
/// lock beside the `.partial` folder of a run under way or interrupted): the new cache
/// would be taken for a stray folder of that one, and analyze would never find it. A
/// `.lock` alone is not ours to judge: other tools leave files of that name (pytest in
/// each of its numbered temporary folders).
pub(crate) fn check_root(out: &Path) -> Result<()> {
    let root = resolved(out);
    if let Some(cache) = root.ancestors().find(|d| {
        Manifest::read(&d.join(MANIFEST_FILE)).is_ok()
            || (d.join(schemas::LOCK_FILE).is_file() && d.join(chunks::PARTIAL_DIR).is_dir())
    }) {
        bail!(
            "--out {} lies in {}, a model's cache folder; caches go in a root folder of their own, one folder per model (e.g. --out {})",
            out.display(),
            cache.display(),
            cache.parent().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(())
}

/// Refuses a cache folder inside the model folder.
pub(crate) fn check_outside_model(out: &Path, cache_dir: &Path, model: &Path) -> Result<()> {
    if resolved(cache_dir).starts_with(resolved(model)) {
        bail!(
            "--out {}: the cache folder {} would lie in the model folder {}; write the cache outside it (e.g. --out cache)",
            out.display(),
            cache_dir.display(),
            model.display()
        );
    }
    Ok(())
}

/// `.partial` is the folder of an interrupted run: anything else there is refused
/// before the lock is taken (it failed as "File exists").
pub(crate) fn check_partial(cache_dir: &Path) -> Result<()> {
    let partial = cache_dir.join(chunks::PARTIAL_DIR);
    if partial.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        bail!(
            "{}: is a file, not the folder of an interrupted extraction that extract keeps there; move it away or delete it",
            partial.display()
        );
    }
    Ok(())
}

/// `path` with its longest existing prefix made canonical (symlinks, `..`), the rest
/// appended: comparable with another such path before the folders exist.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut p = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(p) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                p = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

pub(crate) fn has_chunks(cache_dir: &Path) -> bool {
    std::fs::read_dir(cache_dir.join(chunks::PARTIAL_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(".statements.parquet")
            })
        })
        .unwrap_or(false)
}

/// Refuses, before the model is loaded, a batching whose buffers would not fit in
/// memory (estimated on the whole run's batches, a bound for a resumed one): while
/// running, the output sets in flight ([`host_thread::QUEUE_DEPTH`] queued, one running,
/// one being read), the token states a token-states graph returns, the rows of the
/// largest chunk the host thread is filling and the finished ones it holds until they are
/// saved; then, assembling, a few copies of one layer of every statement.
pub(crate) fn check_memory(
    plan: &BatchPlan,
    lengths: &[usize],
    model: &ModelDir,
    n_poolings: usize,
) -> Result<()> {
    let Some(available) = schemas::available_memory() else {
        return Ok(());
    };
    let shape = OutputShape {
        layers: u64::from(model.export.n_layers) + 1,
        hidden: u64::from(model.export.hidden_size),
        token_states: model.layout == model_dir::Layout::TokenStates,
    };
    memory_fits(plan, lengths, shape, n_poolings, available)
}

/// What a graph returns per statement, for [`memory_fits`].
#[derive(Debug, Clone, Copy)]
struct OutputShape {
    /// Hidden states: transformer blocks + 1.
    layers: u64,
    hidden: u64,
    /// Token-level states (`--token-states` export), not pooled ones.
    token_states: bool,
}

/// [`check_memory`] with `available` bytes.
fn memory_fits(
    plan: &BatchPlan,
    lengths: &[usize],
    shape: OutputShape,
    n_poolings: usize,
    available: u64,
) -> Result<()> {
    let layer_bytes = shape.layers * shape.hidden * 4;
    let rows = plan.batches().map(Vec::len).max().unwrap_or(0) as u64;
    let tokens = plan
        .batches()
        .map(|g| g.len() * g.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .max()
        .unwrap_or(0) as u64;
    let chunk_rows = plan
        .chunks()
        .map(|c| c.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(0) as u64;
    let in_flight = (host_thread::QUEUE_DEPTH as u64 + 2) * rows * 3 * layer_bytes;
    let token_states = if shape.token_states {
        tokens * layer_bytes
    } else {
        0
    };
    let n_statements = plan.n_statements() as u64;
    // Finished chunks held until they are saved, up to the host thread's limit.
    let held = (n_statements * n_poolings as u64 * layer_bytes)
        .min(4 * host_thread::hold_floats(Some(available)) as u64);
    let running = in_flight + token_states + chunk_rows * n_poolings as u64 * layer_bytes + held;
    // Assembling, one layer of every statement is held four times: being read and
    // put in order, queued, in the sidecar's hands and in the file writer's.
    let assembling = 4 * n_statements * n_poolings as u64 * shape.hidden * 4;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if running > available {
        bail!(
            "batches of up to {rows} statements ({tokens} tokens) at {} layers x {} hidden need about {:.1} GiB of host memory for their outputs, more than the {:.1} GiB available; lower --batch-size or --max-tokens",
            shape.layers,
            shape.hidden,
            gib(running),
            gib(available)
        );
    }
    if assembling > available {
        bail!(
            "assembling embeddings.parquet holds one layer of all {n_statements} statements a few times over: about {:.1} GiB at hidden {} x {n_poolings} pooling(s), more than the {:.1} GiB available; run it on a machine with more memory, or store fewer --poolings",
            gib(assembling),
            shape.hidden,
            gib(available)
        );
    }
    Ok(())
}

/// Refuses, before the model is loaded, a run whose files would not fit on the disk
/// (see [`DiskEstimate`]), less what `.partial` already holds from an earlier run.
pub(crate) fn check_disk(
    cache_dir: &Path,
    data: &Dataset,
    ids: &[u32],
    model: &ModelDir,
    n_poolings: usize,
) -> Result<()> {
    let Some(free) = schemas::available_disk(cache_dir) else {
        return Ok(());
    };
    let estimate = DiskEstimate::of(data, ids, model, n_poolings);
    estimate.fits(cache_dir, free, dir_bytes(&cache_dir.join(".partial")))
}

/// What a run writes: its embeddings and the sidecar (`grams.parquet`, the smaller
/// form of each category), in bytes, estimated from the shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskEstimate {
    pub embeddings: u64,
    pub sidecar: u64,
}

impl DiskEstimate {
    /// For the statements `ids` of `data` through `model`'s shape.
    pub fn of(data: &Dataset, ids: &[u32], model: &ModelDir, n_poolings: usize) -> Self {
        let (layers, hidden) = (
            u64::from(model.export.n_layers) + 1,
            model.export.hidden_size as usize,
        );
        let mut pairs: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in ids {
            let s = &data.statements[i as usize];
            if s.side == Side::A {
                *pairs.entry(s.category.as_str()).or_default() += 1;
            }
        }
        let sidecar_layer: u64 = pairs
            .values()
            .map(|&n| {
                let n64 = n as u64;
                // The statement geometry: four float64 per statement, and the layer's
                // mean on a row kept as vectors.
                let geometry = 8 * n64 * 8;
                geometry
                    + if schemas::gram::keeps_vectors(n, hidden) {
                        2 * n64 * hidden as u64 * 4 + hidden as u64 * 8
                    } else {
                        (n64 * (n64 + 1) + n64 * n64) * 8
                    }
            })
            .sum();
        DiskEstimate {
            // float32 values and each row's statement id and layer.
            embeddings: ids.len() as u64 * layers * n_poolings as u64 * (hidden as u64 * 4 + 8),
            sidecar: sidecar_layer * layers * n_poolings as u64,
        }
    }

    /// The peak on disk: the embeddings twice (written as chunks under `.partial`,
    /// then assembled; the chunks go once the cache is complete) and the sidecar.
    pub fn peak(&self) -> u64 {
        2 * self.embeddings + self.sidecar
    }

    /// Refuses where `free` bytes (with `written` already in `.partial`) are less
    /// than the peak, naming the folder and the byte counts.
    pub fn fits(&self, cache_dir: &Path, free: u64, written: u64) -> Result<()> {
        let need = self.peak().saturating_sub(written);
        if need > free {
            bail!(
                "{}: this run needs about {} of disk (embeddings {}, written first as chunks under .partial and then assembled, and the sidecar (grams.parquet) {}), more than the {} free there; free some space or choose another --out",
                cache_dir.display(),
                bytes(need),
                bytes(self.embeddings),
                bytes(self.sidecar),
                bytes(free)
            );
        }
        Ok(())
    }
}

/// A byte count in the unit that shows its digits: GB down to 0.1 GB, then MB, then KB.
fn bytes(b: u64) -> String {
    let b = b as f64;
    match [(1e9, "GB"), (1e6, "MB")]
        .iter()
        .find(|(unit, _)| b >= 0.1 * unit)
    {
        Some((unit, name)) => format!("{:.1} {name}", b / unit),
        None => format!("{:.1} KB", b / 1e3),
    }
}

/// Bytes of the files directly in `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::batch::Batching;

    /// `n` statements of 5 tokens in batches of `rows`, 30 chunks.
    fn plan(n: usize, rows: usize) -> (BatchPlan, Vec<usize>) {
        let lengths = vec![5; n];
        let all: Vec<usize> = (0..n).collect();
        (
            BatchPlan::new(&all, &lengths, Batching::rows(rows), n),
            lengths,
        )
    }

    const WIDE: OutputShape = OutputShape {
        layers: 37,
        hidden: 5120,
        token_states: false,
    };

    #[test]
    fn what_fits_passes() {
        let (p, lengths) = plan(460, 32);
        memory_fits(&p, &lengths, WIDE, 3, 8 << 30).unwrap();
    }

    #[test]
    fn wide_batches_name_the_batch_flags() {
        let (p, lengths) = plan(460, 4096);
        let e = memory_fits(&p, &lengths, WIDE, 3, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--batch-size") && e.contains("host memory"),
            "{e}"
        );
    }

    /// Held chunks are capped, but assembling needs one layer of every statement:
    /// 100,000 statements at hidden 5120, 3 poolings, about 23 GiB.
    #[test]
    fn many_statements_name_the_assembly() {
        let (p, lengths) = plan(100_000, 32);
        let e = memory_fits(&p, &lengths, WIDE, 3, 16 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("assembling embeddings.parquet") && e.contains("100000 statements"),
            "{e}"
        );
    }

    /// A small disk's sizes show their digits ("0.0 GB ... the 0.0 GB free" said nothing).
    #[test]
    fn byte_counts_show_their_digits() {
        assert_eq!(bytes(2_345_000_000), "2.3 GB");
        assert_eq!(bytes(100_000_000), "0.1 GB");
        assert_eq!(bytes(99_000_000), "99.0 MB");
        assert_eq!(bytes(120_000), "0.1 MB");
        assert_eq!(bytes(12_300), "12.3 KB");
        assert_eq!(bytes(0), "0.0 KB");
    }
}
