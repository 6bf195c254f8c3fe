use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{
    embeddings_schema, sha256_file, statements_schema, CacheError, FileEntry, Manifest, Pooling,
    EMBEDDINGS_FILE, MANIFEST_FILE, SCHEMA_VERSION, STATEMENTS_FILE,
};

/// A cache directory that passed every check of the contract.
#[derive(Debug, Clone)]
pub struct ValidCache {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub poolings: Vec<Pooling>,
}

impl ValidCache {
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
    if !dir.is_dir() {
        return Err(CacheError::new(
            dir,
            "is not a directory (expected a model cache written by extract)",
        ));
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.is_file() {
        return Err(CacheError::new(
            &manifest_path,
            "missing: this is not a model cache written by extract",
        ));
    }
    let manifest = Manifest::read(&manifest_path)?;
    if manifest.schema_version != SCHEMA_VERSION {
        return Err(CacheError::new(
            &manifest_path,
            format!(
                "cache contract version {} but this tool reads version {SCHEMA_VERSION}",
                manifest.schema_version
            ),
        ));
    }
    if !manifest.complete {
        return Err(CacheError::new(
            &manifest_path,
            "the extraction did not finish (complete: false); rerun the same extract command to resume it",
        ));
    }
    let poolings = manifest.poolings(&manifest_path)?;
    if poolings.is_empty() {
        return Err(CacheError::new(&manifest_path, "lists no poolings"));
    }
    let n_statements = u64::from(manifest.n_rows());
    let n_layer_rows = u64::from(manifest.model.n_layers) + 1;

    let statements = check_file(
        dir,
        &manifest,
        STATEMENTS_FILE,
        n_statements,
        &statements_schema(),
    )?;
    if statements.metadata().num_row_groups() == 0 && n_statements > 0 {
        return Err(CacheError::new(
            dir.join(STATEMENTS_FILE),
            "holds no row groups",
        ));
    }

    let emb_schema = embeddings_schema(manifest.model.hidden_size as usize, &poolings);
    let embeddings = check_file(
        dir,
        &manifest,
        EMBEDDINGS_FILE,
        n_statements * n_layer_rows,
        &emb_schema,
    )?;
    let emb_path = dir.join(EMBEDDINGS_FILE);
    let groups = embeddings.metadata().num_row_groups() as u64;
    if groups != n_layer_rows {
        return Err(CacheError::new(
            &emb_path,
            format!("has {groups} row groups but the manifest's {} layers need {n_layer_rows} (one per layer, 0..={})",
                manifest.model.n_layers, manifest.model.n_layers),
        ));
    }
    for (i, rg) in embeddings.metadata().row_groups().iter().enumerate() {
        if rg.num_rows() as u64 != n_statements {
            return Err(CacheError::new(
                &emb_path,
                format!(
                    "layer {i} holds {} rows, expected one per statement ({n_statements})",
                    rg.num_rows()
                ),
            ));
        }
    }
    Ok(ValidCache {
        dir: dir.to_path_buf(),
        manifest,
        poolings,
    })
}

fn check_file(
    dir: &Path,
    manifest: &Manifest,
    name: &str,
    expected_rows: u64,
    expected_schema: &SchemaRef,
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
    let sha =
        sha256_file(&path).map_err(|e| CacheError::new(&path, format!("cannot read: {e}")))?;
    if sha != entry.sha256 {
        return Err(CacheError::new(
            &path,
            "content does not match the sha256 in manifest.json: the file or the manifest was altered",
        ));
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
