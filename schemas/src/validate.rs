//! Validating a cache folder: a reader gets a whole cache or an error naming the file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::files::check_sha256;
use crate::sidecar::{check_key_values, grams_schema_of};
use crate::LOCK_FILE;
use crate::{
    embeddings_schema, sha256_file, statements_schema, CacheError, FileEntry, GramsInfo, Manifest,
    Pooling, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE, STATEMENTS_FILE,
};

/// The refusal of a sidecar-only cache by whatever needs its vectors.
fn no_embeddings(dir: &Path, what: &str) -> CacheError {
    CacheError::new(
        dir.join(MANIFEST_FILE),
        format!("the cache has no embeddings (a sidecar-only cache: it lists {STATEMENTS_FILE} and {GRAMS_FILE} but no {EMBEDDINGS_FILE}), and {what} needs the vectors; use a cache written with its embeddings"),
    )
}

/// How much of a cache to read when validating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every listed file read and hashed, the sidecar included.
    Full,
    /// For a reader of the sidecar: when the manifest lists
    /// `grams.parquet`, the embeddings' size, footer and shape are checked but their
    /// bytes are not read; the sidecar is hashed and must name the embeddings'
    /// sha256. Without a sidecar, as `Full`.
    PreferGrams,
    /// The sidecar is not checked and is left out of the returned manifest, and the
    /// embeddings' bytes are not hashed: the scope of rebuilding the sidecar, whose
    /// writer ([`crate::add_sidecar`]) hashes every byte of the embeddings as it reads
    /// them and refuses a mismatch before it writes anything.
    WithoutGrams,
}

/// A cache directory that passed every check of the contract.
#[derive(Debug, Clone)]
pub struct ValidCache {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub poolings: Vec<Pooling>,
    /// The embeddings' bytes were not read, or there are none: a reader must take
    /// the Gram blocks from the sidecar with [`crate::read_grams`], which checks its
    /// sha256 (`Scope::PreferGrams` on a cache that has one, or a sidecar-only cache).
    pub grams_only: bool,
}

impl ValidCache {
    /// False for a sidecar-only cache: statements and the sidecar, no embeddings.
    pub fn has_embeddings(&self) -> bool {
        self.manifest.files.contains_key(EMBEDDINGS_FILE)
    }

    /// Refuses a sidecar-only cache for `what`, which needs the vectors, and a copy
    /// that left the listed embeddings behind.
    pub fn require_embeddings(&self, what: &str) -> Result<(), CacheError> {
        if !self.has_embeddings() {
            return Err(no_embeddings(&self.dir, what));
        }
        if !self.embeddings_path().exists() {
            return Err(CacheError::new(
                self.embeddings_path(),
                format!("missing: this copy of the cache left the embeddings behind, and {what} needs them; fetch or copy them too"),
            ));
        }
        Ok(())
    }

    pub fn statements_path(&self) -> PathBuf {
        self.dir.join(STATEMENTS_FILE)
    }
    pub fn embeddings_path(&self) -> PathBuf {
        self.dir.join(EMBEDDINGS_FILE)
    }
}

/// Checks a model's cache directory against the contract: the manifest parses,
/// is of this version and complete; each data file has the recorded size and
/// sha256, the contract's columns and types, and the row counts and row groups
/// the manifest implies. The first problem found is returned, naming its file.
pub fn validate_cache(dir: &Path) -> Result<ValidCache, CacheError> {
    validate_cache_in(dir, Scope::Full)
}

/// [`validate_cache`], reading as much as `scope` says.
pub fn validate_cache_in(dir: &Path, scope: Scope) -> Result<ValidCache, CacheError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut manifest = complete_manifest(dir)?;
    let sidecar_only = !manifest.files.contains_key(EMBEDDINGS_FILE);
    if scope == Scope::WithoutGrams {
        if sidecar_only && manifest.grams.is_some() {
            return Err(no_embeddings(
                dir,
                "rebuilding grams.parquet (analyze index)",
            ));
        }
        manifest.files.remove(GRAMS_FILE);
        manifest.grams = None;
    }
    let poolings = check_counts(&manifest, &manifest_path)?;
    let n_statements = u64::from(manifest.n_rows());
    let n_layer_rows = u64::from(manifest.model.n_layers) + 1;

    let statements = check_file(
        dir,
        &manifest,
        STATEMENTS_FILE,
        n_statements,
        &statements_schema(),
        true,
    )?;
    if statements.metadata().num_row_groups() == 0 && n_statements > 0 {
        return Err(CacheError::new(
            dir.join(STATEMENTS_FILE),
            "holds no row groups",
        ));
    }

    check_sidecar_listing(dir, &manifest)?;
    // A reader of the sidecar checks its sha256 as it reads it (`read_grams`).
    let hashed_by_reader = scope == Scope::PreferGrams && manifest.grams.is_some();
    // So does the writer of a new one with the embeddings' (`add_sidecar`).
    let embeddings_hashed_later = hashed_by_reader || scope == Scope::WithoutGrams;
    // A copy may leave the listed embeddings behind (analyze fetching a cache from a
    // URL fetches only what it reads): a reader of the sidecar does without them.
    let embeddings_left_behind = hashed_by_reader && !dir.join(EMBEDDINGS_FILE).exists();
    if (!sidecar_only || manifest.grams.is_none()) && !embeddings_left_behind {
        let emb_schema = embeddings_schema(manifest.model.hidden_size as usize, &poolings);
        let embeddings = check_file(
            dir,
            &manifest,
            EMBEDDINGS_FILE,
            n_statements * n_layer_rows,
            &emb_schema,
            !embeddings_hashed_later,
        )?;
        check_row_groups(
            &dir.join(EMBEDDINGS_FILE),
            &embeddings,
            &manifest,
            n_statements,
            "statement",
        )?;
    }
    if manifest.grams.is_some() {
        check_grams(dir, &manifest, &poolings, !hashed_by_reader)?;
    }
    let grams_only = hashed_by_reader || sidecar_only;
    Ok(ValidCache {
        dir: dir.to_path_buf(),
        manifest,
        poolings,
        grams_only,
    })
}

/// The manifest's own counts agree: some pooling, and two statements per pair.
/// Returns the poolings.
fn check_counts(manifest: &Manifest, manifest_path: &Path) -> Result<Vec<Pooling>, CacheError> {
    let poolings = manifest.poolings(manifest_path)?;
    if poolings.is_empty() {
        return Err(CacheError::new(manifest_path, "lists no poolings"));
    }
    let dataset = &manifest.dataset;
    if u64::from(dataset.n_statements) != 2 * u64::from(dataset.n_pairs) {
        return Err(CacheError::new(
            manifest_path,
            format!(
                "records {} pairs but {} statements (two per pair): the manifest was altered; restore it or extract again",
                dataset.n_pairs, dataset.n_statements
            ),
        ));
    }
    Ok(poolings)
}

/// Why a folder has no manifest: an extraction stopped before writing its first one
/// leaves only its lock (and maybe `.partial/`); anything else is not a cache.
fn missing_manifest(dir: &Path) -> String {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let started = !names.is_empty() && names.iter().all(|n| n == LOCK_FILE || n == ".partial");
    if started {
        return format!(
            "missing: an extraction started here and stopped before writing its manifest (the folder holds only {}); rerun the same extract command to resume it, or delete the folder",
            names.join(" and ")
        );
    }
    "missing: this is not a model cache written by extract".to_string()
}

/// The manifest of a finished cache of this contract version, or why `dir` holds none.
fn complete_manifest(dir: &Path) -> Result<Manifest, CacheError> {
    if !dir.is_dir() {
        return Err(CacheError::new(
            dir,
            "is not a directory (expected a model cache written by extract)",
        ));
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    match std::fs::metadata(&manifest_path) {
        Ok(m) if m.is_dir() => {
            return Err(CacheError::new(
                &manifest_path,
                "is a directory, not the manifest file extract writes",
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CacheError::new(&manifest_path, missing_manifest(dir)))
        }
        Err(e) => return Err(CacheError::new(&manifest_path, format!("cannot read: {e}"))),
    }
    // Manifest::read refuses another contract version, naming it.
    let manifest = Manifest::read(&manifest_path)?;
    if !manifest.complete {
        return Err(CacheError::new(
            &manifest_path,
            "the extraction did not finish (complete: false); rerun the same extract command to resume it",
        ));
    }
    Ok(manifest)
}

/// One row group per layer, each of `rows_per_layer` rows (one per `what`).
fn check_row_groups(
    path: &Path,
    file: &ParquetRecordBatchReaderBuilder<File>,
    manifest: &Manifest,
    rows_per_layer: u64,
    what: &str,
) -> Result<(), CacheError> {
    let n_layers = manifest.model.n_layers;
    let groups = file.metadata().num_row_groups() as u64;
    if groups != u64::from(n_layers) + 1 {
        return Err(CacheError::new(
            path,
            format!("has {groups} row groups but the manifest's {n_layers} layers need {} (one per layer, 0..={n_layers})", n_layers + 1),
        ));
    }
    for (i, rg) in file.metadata().row_groups().iter().enumerate() {
        if rg.num_rows() as u64 != rows_per_layer {
            return Err(CacheError::new(
                path,
                format!(
                    "layer {i} holds {} rows, expected one per {what} ({rows_per_layer})",
                    rg.num_rows()
                ),
            ));
        }
    }
    Ok(())
}

/// `files` lists the sidecar exactly when the manifest has its `grams` section.
fn check_sidecar_listing(dir: &Path, manifest: &Manifest) -> Result<(), CacheError> {
    match (manifest.files.contains_key(GRAMS_FILE), &manifest.grams) {
        (true, None) => Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!("lists {GRAMS_FILE} in files but has no grams section"),
        )),
        (false, Some(_)) => Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!("has a grams section but lists no entry for {GRAMS_FILE}"),
        )),
        _ => Ok(()),
    }
}

/// The sidecar: this format version and arithmetic, computed from these
/// embeddings (by the manifest and by its own metadata), hashed, one row group
/// per layer with one row per category.
fn check_grams(
    dir: &Path,
    manifest: &Manifest,
    poolings: &[Pooling],
    hash: bool,
) -> Result<(), CacheError> {
    let path = dir.join(GRAMS_FILE);
    let Some(info) = &manifest.grams else {
        return Ok(());
    };
    if !crate::GRAMS_FORMAT_VERSIONS.contains(&info.format_version) || info.arithmetic != "exact" {
        return Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!(
                "describes {GRAMS_FILE} as format {} in {} arithmetic, but this tool reads formats {} in exact arithmetic; {}",
                info.format_version, info.arithmetic, known_formats(), info.rebuild_hint()
            ),
        ));
    }
    check_source(dir, manifest, info)?;
    let n_categories = manifest.dataset.categories.len() as u64;
    let rows = (u64::from(manifest.model.n_layers) + 1) * n_categories;
    let file = check_file(
        dir,
        manifest,
        GRAMS_FILE,
        rows,
        &grams_schema_of(info.format_version, poolings),
        hash,
    )?;
    check_key_values(&path, file.metadata().file_metadata(), info)?;
    check_row_groups(&path, &file, manifest, n_categories, "category")
}

/// "1, 2 and 3": the sidecar formats this tool reads.
fn known_formats() -> String {
    let v: Vec<String> = crate::GRAMS_FORMAT_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => v.concat(),
    }
}

/// The sidecar names the embeddings it was computed from: this cache's, or none in a
/// sidecar-only cache (and only there).
fn check_source(dir: &Path, manifest: &Manifest, info: &GramsInfo) -> Result<(), CacheError> {
    let embeddings = manifest.files.get(EMBEDDINGS_FILE).map(|e| &e.sha256);
    let problem = match (&info.embeddings_sha256, embeddings) {
        (Some(from), Some(have)) if from != have => format!("stale: computed from embeddings sha256 {from} but this cache's {EMBEDDINGS_FILE} has {have}; rebuild it with `analyze index --cache CACHE`"),
        (Some(from), None) => format!("records that it was computed from embeddings sha256 {from} but manifest.json lists no {EMBEDDINGS_FILE}: the embeddings were removed without the manifest saying the cache is sidecar-only"),
        (None, Some(_)) => format!("records no embeddings (the sidecar of a sidecar-only cache) but manifest.json lists {EMBEDDINGS_FILE}; rebuild it from them with `analyze index --cache CACHE`"),
        _ => return Ok(()),
    };
    Err(CacheError::new(dir.join(GRAMS_FILE), problem))
}

// Long: one file's checks in the order a reader meets them (sha256, footer, schema,
// nulls, rows), each with the message that names what to do.
fn check_file(
    dir: &Path,
    manifest: &Manifest,
    name: &str,
    expected_rows: u64,
    expected_schema: &SchemaRef,
    hash: bool,
) -> Result<ParquetRecordBatchReaderBuilder<File>, CacheError> {
    let path = dir.join(name);
    let entry: &FileEntry = manifest.files.get(name).ok_or_else(|| {
        CacheError::new(
            dir.join(MANIFEST_FILE),
            format!("lists no entry for {name}"),
        )
    })?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| CacheError::new(&path, format!("missing or unreadable: {e}")))?;
    if meta.len() != entry.bytes {
        return Err(CacheError::new(
            &path,
            format!("is {} bytes but manifest.json records {}: truncated or replaced; rerun extract into a fresh folder", meta.len(), entry.bytes),
        ));
    }
    if entry.rows != expected_rows {
        return Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!(
                "records {} rows for {name} but its model and dataset imply {expected_rows}",
                entry.rows
            ),
        ));
    }
    if hash {
        let sha =
            sha256_file(&path).map_err(|e| CacheError::new(&path, format!("cannot read: {e}")))?;
        check_sha256(&path, &sha, entry)?;
    }
    let file =
        File::open(&path).map_err(|e| CacheError::new(&path, format!("cannot open: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| CacheError::new(&path, format!("not a readable Parquet file: {e}")))?;
    for want in expected_schema.fields() {
        match builder.schema().field_with_name(want.name()) {
            Err(_) => {
                return Err(CacheError::new(
                    &path,
                    format!("missing column '{}'", want.name()),
                ))
            }
            Ok(have) if have.data_type() != want.data_type() => {
                return Err(CacheError::new(
                    &path,
                    format!(
                        "column '{}' is {} but the contract says {}",
                        want.name(),
                        have.data_type(),
                        want.data_type()
                    ),
                ))
            }
            // A nullable column may hold nulls, which every reader would take for a
            // value (a zero, or another row's): the contract has none.
            Ok(have) if have.is_nullable() && !want.is_nullable() => {
                // Row group l holds layer l in the embeddings and the sidecar.
                let group = if name == STATEMENTS_FILE {
                    "row group"
                } else {
                    "layer"
                };
                let held = match recorded_nulls(&builder, want.name()) {
                    Some((n, g)) => format!(" and holds {n} null value(s) ({group} {g})"),
                    None => String::new(),
                };
                return Err(CacheError::new(
                    &path,
                    format!(
                        "column `{}` is nullable{held}, but the contract has no nulls; restore the file or extract again",
                        want.name()
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    if rows != expected_rows {
        return Err(CacheError::new(
            &path,
            format!("holds {rows} rows, expected {expected_rows}"),
        ));
    }
    Ok(builder)
}

/// The nulls that the file's statistics record in column `name` (its leaves), and
/// the first row group holding one; for the message only, so None where there are
/// none or the statistics do not say.
fn recorded_nulls(
    file: &ParquetRecordBatchReaderBuilder<File>,
    name: &str,
) -> Option<(u64, usize)> {
    let per_group: Vec<u64> = file
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| {
            rg.columns()
                .iter()
                .filter(|c| c.column_path().parts().first().map(String::as_str) == Some(name))
                .filter_map(|c| c.statistics().and_then(|s| s.null_count_opt()))
                .sum()
        })
        .collect();
    let first = per_group.iter().position(|&n| n > 0)?;
    Some((per_group.iter().sum(), first))
}
