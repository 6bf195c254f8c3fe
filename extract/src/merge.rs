//! `extract merge`: joins the complete shard caches of one extraction
//! ([`crate::inputs::shard`]) into the cache an unsharded run writes. Rows are written by
//! the same writers in the same order, so with batch size 1 (numbers independent
//! of batching) `statements.parquet` and `embeddings.parquet` are byte for byte
//! those of the unsharded run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use schemas::{Manifest, ParityInfo, StatementRow, ValidCache, MANIFEST_FILE};

use crate::inputs::shard::Shard;
use crate::run::preflight::{check_name, check_root, Created};
use crate::run::resume::key_of;
use crate::store::assemble;

/// What `extract merge` is given.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Cache root; the merged cache goes to OUT/NAME.
    pub out: PathBuf,
    pub name: String,
    pub shards: Vec<PathBuf>,
}

/// A shard cache that passed validation, with its place in the whole.
struct ShardCache {
    cache: ValidCache,
    shard: Shard,
}

impl ShardCache {
    fn dir(&self) -> String {
        self.cache.dir.display().to_string()
    }
}

/// Merges the shards; returns the closing line.
pub fn merge(opts: &MergeOptions) -> Result<String> {
    check_name(&opts.name)?;
    let shards = check_shards(&opts.shards)?;
    let out_dir = opts.out.join(&opts.name);
    if let Some(s) = shards.iter().find(|s| same_dir(&s.cache.dir, &out_dir)) {
        bail!(
            "{}: --out/--name point at a shard itself; pick another --name",
            s.dir()
        );
    }
    check_root(&opts.out)?;
    let created = Created::before(&out_dir);
    let lock = created.on_error(schemas::CacheLock::acquire(&out_dir).map_err(Into::into))?;
    let result = created.on_error(merge_locked(&shards, &opts.name, &out_dir));
    drop(lock);
    let line = result?;
    schemas::write_root_card(&opts.out)?;
    Ok(line)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Validates every shard and checks that together they are all shards of one
/// extraction, each once.
fn check_shards(dirs: &[PathBuf]) -> Result<Vec<ShardCache>> {
    if dirs.is_empty() {
        bail!("extract merge: name the shard folders to merge (SHARD_DIR...)");
    }
    let mut shards = dirs
        .iter()
        .map(|dir| read_shard(dir))
        .collect::<Result<Vec<_>>>()?;
    let first = &shards[0];
    let mut key = key_of(&first.cache.manifest, &first.cache.dir)?;
    key.shard = None;
    let mut by_index: BTreeMap<u32, &ShardCache> = BTreeMap::new();
    for s in &shards {
        let mut other = key_of(&s.cache.manifest, &s.cache.dir)?;
        other.shard = None;
        let diff = key.differences(&other);
        if !diff.is_empty() {
            bail!(
                "{}: a shard of other inputs than {} ({} differ); merge only shards of one model, dataset and poolings",
                s.dir(),
                first.dir(),
                diff.join(", ")
            );
        }
        if s.shard.count != first.shard.count {
            bail!(
                "{}: shard {} but {} is shard {}: all shards must come from one --shard I/N split",
                s.dir(),
                s.shard,
                first.dir(),
                first.shard
            );
        }
        if let Some(twin) = by_index.insert(s.shard.index, s) {
            bail!(
                "{}: shard {} given twice (also as {})",
                s.dir(),
                s.shard,
                twin.dir()
            );
        }
    }
    if let Some(missing) = (0..first.shard.count).find(|i| !by_index.contains_key(i)) {
        bail!(missing_shard(first, missing, &by_index));
    }
    shards.sort_by_key(|s| s.shard.index);
    Ok(shards)
}

/// A complete, valid shard cache, or why `dir` is not one.
fn read_shard(dir: &Path) -> Result<ShardCache> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.is_file() {
        let m = Manifest::read(&manifest_path)?;
        if !m.complete {
            bail!(
                "{}: an incomplete shard (complete: false); rerun its extract --shard command to finish it",
                dir.display()
            );
        }
    }
    let cache = schemas::validate_cache(dir)
        .and_then(|c| c.require_embeddings("extract merge").map(|()| c))
        .map_err(|e| anyhow!("{e}"))?;
    let Some(info) = cache.manifest.run.shard else {
        bail!(
            "{}: not a shard cache (its manifest has no run.shard); merge only folders written by extract --shard",
            dir.display()
        );
    };
    Ok(ShardCache {
        cache,
        shard: Shard {
            index: info.index,
            count: info.count,
        },
    })
}

/// Names the missing shard, the folder and the command that make it.
fn missing_shard(first: &ShardCache, missing: u32, given: &BTreeMap<u32, &ShardCache>) -> String {
    let name = first
        .cache
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = name
        .strip_suffix(&first.shard.folder_name(""))
        .unwrap_or(&name);
    let wanted = Shard {
        index: missing,
        count: first.shard.count,
    };
    format!(
        "shard {wanted} is missing (given: {}); extract it with --shard {wanted} (folder {}) and pass it too",
        given.values().map(|s| s.dir()).collect::<Vec<_>>().join(", "),
        wanted.folder_name(base)
    )
}

fn merge_locked(shards: &[ShardCache], name: &str, out_dir: &Path) -> Result<String> {
    let manifest_path = out_dir.join(MANIFEST_FILE);
    if manifest_path.exists() {
        bail!(
            "{}: already holds a cache; pick another --name or delete that folder",
            out_dir.display()
        );
    }
    schemas::remove_temp_files(out_dir)?;
    let first = &shards[0].cache.manifest;
    let n_statements = first.dataset.n_statements as usize;
    let ids: Vec<u32> = (0..n_statements as u32).collect();

    let rows = merged_statements(shards, &ids)?;

    let sources: Vec<assemble::VectorSource> = shards
        .iter()
        .map(|s| assemble::VectorSource::Embeddings(s.cache.embeddings_path()))
        .collect();
    // The shards' sidecars describe their own slices: the merged cache gets its own.
    let mut grams = schemas::GramsWriter::create(out_dir, first, &rows)?;
    let (emb, _) = assemble::combine_layers(
        &out_dir.join(schemas::EMBEDDINGS_FILE),
        &sources,
        &ids,
        &shards[0].cache.poolings,
        first.model.n_layers as usize + 1,
        first.model.hidden_size as usize,
        &mut grams,
    )?;
    let st = schemas::write_statements(&out_dir.join(schemas::STATEMENTS_FILE), &rows)?;

    let mut m = first.clone();
    m.model.display_name = name.to_string();
    m.run.tool = format!("extract {} (merge)", env!("CARGO_PKG_VERSION"));
    m.run.shard = None;
    m.run.timings_s = None;
    m.run.started = shards
        .iter()
        .map(|s| s.cache.manifest.run.started.clone())
        .min()
        .unwrap_or_default();
    m.run.finished = Some(chrono::Local::now().to_rfc3339());
    m.run.parity = worst_parity(shards);
    m.run.chunks = shards
        .iter()
        .flat_map(|s| {
            s.cache.manifest.run.chunks.iter().map(|c| {
                let mut c = c.clone();
                c.shard = Some(s.shard.index);
                c
            })
        })
        .collect();
    m.files = BTreeMap::from([
        (schemas::STATEMENTS_FILE.to_string(), st),
        (schemas::EMBEDDINGS_FILE.to_string(), emb),
    ]);
    m.grams = None;
    grams.finish(&mut m)?;
    schemas::write_card(out_dir, &mut m)?;
    m.complete = true;
    schemas::write_manifest(&manifest_path, &m)?;
    Ok(format!(
        "merged {} shards ({n_statements} statements x {} layers) into {}",
        shards.len(),
        first.model.n_layers + 1,
        out_dir.display()
    ))
}

/// Every shard's statements, in statement order: each where its shard says, all of
/// `ids` exactly once, and the dataset's text as the manifest's digest says.
fn merged_statements(shards: &[ShardCache], ids: &[u32]) -> Result<Vec<StatementRow>> {
    let first = &shards[0].cache.manifest;
    let mut rows: Vec<StatementRow> = Vec::with_capacity(ids.len());
    for s in shards {
        let shard_rows = schemas::read_statements(&s.cache.statements_path())?;
        if let Some(r) = shard_rows
            .iter()
            .find(|r| !s.shard.contains(r.statement_id))
        {
            bail!(
                "{}: holds statement {} which is not in shard {}; re-extract that shard",
                s.dir(),
                r.statement_id,
                s.shard
            );
        }
        rows.extend(shard_rows);
    }
    rows.sort_by_key(|r| r.statement_id);
    if !rows.iter().map(|r| r.statement_id).eq(ids.iter().copied()) {
        bail!(
            "{}: the shards do not hold every statement of the dataset exactly once; re-extract them",
            shards[0].dir()
        );
    }
    if let Some(want) = &first.dataset.statements_sha256 {
        let got =
            schemas::statements_digest(rows.iter().map(|r| (r.statement_id, r.text.as_str())));
        if &got != want {
            bail!(
                "{}: the shards' statements are not the dataset's its manifest names (statements_sha256 differs); re-extract them",
                shards[0].dir()
            );
        }
    }
    Ok(rows)
}

/// Each shard proved parity on the same probes; the merged cache records the
/// largest errors any of them saw, under the loosest bound.
fn worst_parity(shards: &[ShardCache]) -> Option<ParityInfo> {
    shards
        .iter()
        .filter_map(|s| s.cache.manifest.run.parity.clone())
        .reduce(|a, b| ParityInfo {
            n_probes: a.n_probes.max(b.n_probes),
            bound: a.bound.max(b.bound),
            slack: a.slack.max(b.slack),
            max_embedding_error: a.max_embedding_error.max(b.max_embedding_error),
            max_nll_error: a.max_nll_error.max(b.max_nll_error),
            float64: match (&a.float64, &b.float64) {
                (Some(x), Some(y)) => Some(x.worst(y)),
                (x, y) => x.clone().or_else(|| y.clone()),
            },
        })
}
