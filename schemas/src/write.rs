//! Writing the contract's files atomically and durably: temp file, sha256 as written,
//! fsync, rename, folder sync.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, StringArray, UInt32Array,
};
use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};

use crate::{
    embeddings_schema, statements_schema, sync_dir, CacheError, FileEntry, Manifest, Pooling,
    StatementRow,
};

/// Files are written beside their final name and renamed into place, so a
/// reader never sees a half-written file under the real name. The temp name is
/// unique to this process and write (`<name>.<pid>-<n>.tmp`): a fixed name would
/// let two writers truncate each other's file.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}{TEMP_SUFFIX}", std::process::id()));
    path.with_file_name(name)
}

const TEMP_SUFFIX: &str = ".tmp";

/// Removes temp files left in `dir` by writers that were killed. Only call it
/// while holding the folder's lock: another live writer's temp files look the same.
pub fn remove_temp_files(dir: &Path) -> Result<usize, CacheError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CacheError::new(dir, format!("cannot list: {e}")))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let is_temp = entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX);
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| CacheError::new(entry.path(), format!("cannot remove: {e}")))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Renames a finished, synced temp file into place and syncs the directory, so
/// that once this returns the file is on disk under its final name.
fn rename_durably(tmp: &Path, path: &Path) -> Result<(), CacheError> {
    std::fs::rename(tmp, path)
        .map_err(|e| CacheError::new(path, format!("cannot move into place: {e}")))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    sync_dir(dir.unwrap_or(Path::new(".")))
        .map_err(|e| CacheError::new(path, format!("cannot sync its folder: {e}")))
}

/// Renames the finished temp file into place and describes it for the manifest.
fn commit(tmp: &Path, path: &Path, rows: u64, written: Written) -> Result<FileEntry, CacheError> {
    let sha256 = written
        .sha256
        .ok_or_else(|| CacheError::new(tmp, "a scratch file was written without a hash"))?;
    rename_durably(tmp, path)?;
    Ok(FileEntry {
        rows,
        bytes: written.bytes,
        sha256,
    })
}

/// A file being written that hashes its bytes on the way: the finished file's
/// sha256 then needs no second read of it (a gigabyte of embeddings at the 12B
/// shape). Parquet writers only append, so the stream is the file.
/// Scratch files (resumable chunks, read back and deleted) are written without a hash.
pub(crate) struct HashingFile {
    file: File,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A Parquet writer into a temp file, hashing as it goes.
pub(crate) type ParquetWriter = ArrowWriter<HashingFile>;

/// What a closed writer leaves: the file's size and sha256.
pub(crate) struct Written {
    bytes: u64,
    /// None for a scratch file.
    sha256: Option<String>,
}

pub(crate) fn open_writer(
    tmp: &Path,
    schema: SchemaRef,
    props: WriterProperties,
) -> Result<ParquetWriter, CacheError> {
    open_file_writer(tmp, schema, props, true)
}

fn open_file_writer(
    tmp: &Path,
    schema: SchemaRef,
    props: WriterProperties,
    hashed: bool,
) -> Result<ParquetWriter, CacheError> {
    let file =
        File::create(tmp).map_err(|e| CacheError::new(tmp, format!("cannot create: {e}")))?;
    let file = HashingFile {
        file,
        hasher: hashed.then(Sha256::new),
        bytes: 0,
    };
    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| CacheError::new(tmp, e.to_string()))
}

pub(crate) fn close_writer(writer: ParquetWriter, tmp: &Path) -> Result<Written, CacheError> {
    let file = writer
        .into_inner()
        .map_err(|e| CacheError::new(tmp, format!("cannot finish Parquet file: {e}")))?;
    file.file
        .sync_all()
        .map_err(|e| CacheError::new(tmp, e.to_string()))?;
    Ok(Written {
        bytes: file.bytes,
        sha256: file.hasher.map(|h| hex::encode(h.finalize())),
    })
}

/// Writes `statements.parquet` (or a chunk of it) atomically, rows as given.
pub fn write_statements(path: &Path, rows: &[StatementRow]) -> Result<FileEntry, CacheError> {
    let tmp = temp_path(path);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.statement_id),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.category.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.pair_index),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.side.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.text.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.n_tokens),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.nll_sum),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.n_predicted),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(StatementRow::nll_mean),
        )),
    ];
    let schema = statements_schema();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| CacheError::new(path, e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let written = open_writer(&tmp, schema, props).and_then(|mut writer| {
        writer
            .write(&batch)
            .map_err(|e| CacheError::new(&tmp, e.to_string()))?;
        close_writer(writer, &tmp)
    });
    finish_file(&tmp, path, rows.len() as u64, written)
}

/// Moves a temp file that was `written` whole into place, or removes it.
pub(crate) fn finish_file(
    tmp: &Path,
    path: &Path,
    rows: u64,
    written: Result<Written, CacheError>,
) -> Result<FileEntry, CacheError> {
    written
        .and_then(|w| commit(tmp, path, rows, w))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(tmp);
        })
}

/// Streams `embeddings.parquet` (or a chunk of it) one layer at a time, each
/// layer its own row group. Dropping it unfinished removes the temp file.
pub struct EmbeddingsWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ParquetWriter>,
    schema: SchemaRef,
    hidden_size: usize,
    poolings: Vec<Pooling>,
    rows: u64,
}

impl EmbeddingsWriter {
    /// A file for the manifest: hashed as it is written.
    pub fn create(
        path: &Path,
        hidden_size: usize,
        poolings: &[Pooling],
    ) -> Result<Self, CacheError> {
        Self::open(path, hidden_size, poolings, true)
    }

    /// A scratch file that is read back and deleted, never listed in a manifest
    /// (extract's resumable chunks): not hashed, a gigabyte of sha256 saved at the
    /// 12B shape. Close it with [`Self::finish_scratch`].
    pub fn create_scratch(
        path: &Path,
        hidden_size: usize,
        poolings: &[Pooling],
    ) -> Result<Self, CacheError> {
        Self::open(path, hidden_size, poolings, false)
    }

    fn open(
        path: &Path,
        hidden_size: usize,
        poolings: &[Pooling],
        hashed: bool,
    ) -> Result<Self, CacheError> {
        let tmp = temp_path(path);
        let schema = embeddings_schema(hidden_size, poolings);
        // Float embeddings neither compress nor dictionary-encode usefully;
        // plain pages keep the reader fast. Every reader takes whole row groups, so
        // min/max statistics over a gigabyte of floats would be computed for nobody.
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_max_row_group_row_count(None)
            .build();
        let writer = open_file_writer(&tmp, schema.clone(), props, hashed)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            writer: Some(writer),
            schema,
            hidden_size,
            poolings: poolings.to_vec(),
            rows: 0,
        })
    }

    /// Writes one layer for the given statements as one row group.
    /// `vectors[k]` holds pooling `k`'s vectors, `statement_ids.len() * hidden` floats.
    pub fn write_layer(
        &mut self,
        layer: u32,
        statement_ids: &[u32],
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), CacheError> {
        let n = statement_ids.len();
        assert_eq!(
            vectors.len(),
            self.poolings.len(),
            "one vector block per pooling"
        );
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(statement_ids.to_vec())),
            Arc::new(UInt32Array::from(vec![layer; n])),
        ];
        let item = Arc::new(Field::new(
            "item",
            arrow::datatypes::DataType::Float32,
            false,
        ));
        for block in vectors {
            assert_eq!(
                block.len(),
                n * self.hidden_size,
                "pooled block has the wrong length"
            );
            let values = Arc::new(Float32Array::from(block));
            let list =
                FixedSizeListArray::try_new(item.clone(), self.hidden_size as i32, values, None)
                    .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
            columns.push(Arc::new(list));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
        let writer = self.writer.as_mut().expect("writer is open until finish");
        writer
            .write(&batch)
            .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
        writer
            .flush()
            .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
        self.rows += n as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Result<FileEntry, CacheError> {
        let writer = self.writer.take().expect("writer is open until finish");
        let written = close_writer(writer, &self.tmp);
        finish_file(&self.tmp, &self.path, self.rows, written)
    }

    /// Closes a file from [`Self::create_scratch`]: synced and moved into place.
    pub fn finish_scratch(mut self) -> Result<(), CacheError> {
        let writer = self.writer.take().expect("writer is open until finish");
        close_writer(writer, &self.tmp)
            .and_then(|_| rename_durably(&self.tmp, &self.path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&self.tmp);
            })
    }
}

impl Drop for EmbeddingsWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `manifest.json` atomically and durably.
pub fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), CacheError> {
    write_json(path, manifest)
}

/// Writes a JSON file atomically and durably: synced, renamed, folder synced.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), CacheError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| CacheError::new(path, e.to_string()))?;
    write_text(path, &(text + "\n")).map(|_| ())
}

/// Writes a text file atomically and durably; describes it for the manifest (no rows).
pub fn write_text(path: &Path, text: &str) -> Result<FileEntry, CacheError> {
    let tmp = temp_path(path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CacheError::new(&tmp, format!("cannot write: {e}")));
    }
    let written = Written {
        bytes: text.len() as u64,
        sha256: Some(hex::encode(Sha256::digest(text.as_bytes()))),
    };
    commit(&tmp, path, 0, written).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
