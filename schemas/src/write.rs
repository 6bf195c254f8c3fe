//! Writing the contract's files atomically and durably: temp file, sha256 as written,
//! fsync, rename, folder sync.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, StringArray, UInt32Array,
};
use arrow::buffer::ScalarBuffer;
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
    rename_durably(tmp, path)?;
    Ok(FileEntry {
        rows,
        bytes: written.bytes,
        sha256: written.sha256,
    })
}

/// A file being written that hashes its bytes on the way: the finished file's
/// sha256 then needs no second read of it (a gigabyte of embeddings at the 12B
/// shape). Parquet writers only append, so the stream is the file. The bytes are
/// written a block at a time and hashed on a thread of their own, so the sha256
/// (about 0.6 s per gigabyte) runs beside the Parquet encoding instead of after it.
pub(crate) struct HashingFile {
    file: File,
    pending: Vec<u8>,
    hashing: HashThread,
    bytes: u64,
    /// Bytes already handed to the kernel's writeback (see [`Self::start_writeback`]).
    submitted: u64,
}

const BLOCK: usize = 1 << 20;

struct HashThread {
    blocks: SyncSender<Vec<u8>>,
    /// Blocks the hasher is done with, to be filled again.
    spare: Receiver<Vec<u8>>,
    digest: std::thread::JoinHandle<String>,
}

impl HashThread {
    fn start() -> HashThread {
        let (blocks, to_hash) = sync_channel::<Vec<u8>>(4);
        let (give_back, spare) = channel();
        let digest = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut block in to_hash {
                hasher.update(&block);
                block.clear();
                let _ = give_back.send(block);
            }
            hex::encode(hasher.finalize())
        });
        HashThread {
            blocks,
            spare,
            digest,
        }
    }
}

impl HashingFile {
    fn create(path: &Path) -> std::io::Result<HashingFile> {
        Ok(HashingFile {
            file: File::create(path)?,
            pending: Vec::with_capacity(BLOCK),
            hashing: HashThread::start(),
            bytes: 0,
            submitted: 0,
        })
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        let next = self
            .hashing
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        let full = std::mem::replace(&mut self.pending, next);
        self.hashing
            .blocks
            .send(full)
            .map_err(|_| std::io::Error::other("the hashing thread stopped"))
    }

    /// Asks the kernel to start writing out what was written so far, so the
    /// final fsync waits for the last stretch only, not the whole file. Linux only;
    /// elsewhere (and where the call fails) the fsync does it all.
    pub(crate) fn start_writeback(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (from, to) = (self.submitted, self.bytes);
            // SAFETY: a plain syscall on an open descriptor; no memory is shared.
            unsafe {
                let _ = libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from as libc::off64_t,
                    (to - from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.submitted = self.bytes;
        Ok(())
    }

    /// Writes what is left, syncs the file and returns its size and sha256.
    fn finish(mut self) -> std::io::Result<Written> {
        self.write_pending()?;
        self.file.sync_all()?;
        let HashingFile { hashing, bytes, .. } = self;
        drop(hashing.blocks);
        let sha256 = hashing
            .digest
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        Ok(Written { bytes, sha256 })
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.bytes += buf.len() as u64;
        if self.pending.len() >= BLOCK {
            self.write_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        self.file.flush()
    }
}

/// A Parquet writer into a temp file, hashing as it goes.
pub(crate) type ParquetWriter = ArrowWriter<HashingFile>;

/// What a closed writer leaves: the file's size and sha256.
pub(crate) struct Written {
    bytes: u64,
    sha256: String,
}

pub(crate) fn open_writer(
    tmp: &Path,
    schema: SchemaRef,
    props: WriterProperties,
) -> Result<ParquetWriter, CacheError> {
    let file = HashingFile::create(tmp)
        .map_err(|e| CacheError::new(tmp, format!("cannot create: {e}")))?;
    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| CacheError::new(tmp, e.to_string()))
}

pub(crate) fn close_writer(writer: ParquetWriter, tmp: &Path) -> Result<Written, CacheError> {
    writer
        .into_inner()
        .map_err(|e| CacheError::new(tmp, format!("cannot finish Parquet file: {e}")))?
        .finish()
        .map_err(|e| CacheError::new(tmp, e.to_string()))
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
        let writer = open_writer(&tmp, schema.clone(), props)?;
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
    pub fn write_layer<V: Into<ScalarBuffer<f32>>>(
        &mut self,
        layer: u32,
        statement_ids: &[u32],
        vectors: Vec<V>,
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
            let block: ScalarBuffer<f32> = block.into();
            assert_eq!(
                block.len(),
                n * self.hidden_size,
                "pooled block has the wrong length"
            );
            let values = Arc::new(Float32Array::new(block, None));
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
        writer
            .inner_mut()
            .start_writeback()
            .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
        self.rows += n as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Result<FileEntry, CacheError> {
        let writer = self.writer.take().expect("writer is open until finish");
        let written = close_writer(writer, &self.tmp);
        finish_file(&self.tmp, &self.path, self.rows, written)
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
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    };
    commit(&tmp, path, 0, written).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
