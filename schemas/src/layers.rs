//! `embeddings.parquet` read front to back, once, for the sidecar: each layer's row
//! group is read as one block of bytes and decoded from memory on a thread of its
//! own, a layer ahead of the caller, while another thread hashes the blocks in file
//! order. The file's sha256 comes out at the end, so whoever computes from the
//! layers can tell that they came from the bytes the manifest names, without a
//! second pass to hash them.
//!
//! The vectors are decoded with Parquet's column readers, not its Arrow reader: at
//! the 12B shape (1 GB) the Arrow reader's copies and list assembly took 1.1 s of CPU,
//! the column readers' copy and level decoding 0.4 s; what it checked per value (every
//! list whole, none null) is checked here per row group from the counts and levels.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use arrow::datatypes::DataType;
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{FloatType, Int32Type};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use sha2::{Digest, Sha256};

use crate::{CacheError, Pooling};

/// One decoded layer (row group).
pub(crate) struct Layer {
    pub(crate) statement_ids: Vec<u32>,
    /// The layer column, one value per row.
    pub(crate) layers: Vec<u32>,
    /// Each pooling's `rows x hidden` matrix.
    pub(crate) vectors: BTreeMap<Pooling, Vec<f32>>,
}

/// Calls `each` on every row group of the embeddings file at `path`, in order, each
/// holding `rows` rows, while the next one is read and decoded; returns the file's
/// sha256 (hex). Stops at the first error, of the file or of `each`.
pub(crate) fn for_each_layer(
    path: &Path,
    poolings: &[Pooling],
    rows: usize,
    mut each: impl FnMut(&Layer) -> Result<(), CacheError>,
) -> Result<String, CacheError> {
    let file = File::open(path).map_err(|e| CacheError::new(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| CacheError::new(path, e.to_string()))?
        .len();
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| CacheError::new(path, format!("not a readable Parquet file: {e}")))?;
    let reader = Reader {
        path,
        columns: Columns::find(&meta, poolings, path)?,
        ends: group_ends(&meta, path)?,
        meta,
        rows,
        len,
    };
    std::thread::scope(|s| {
        // Three threads: one reads and decodes, one hashes what was read, and the
        // caller computes on the layer before, each a layer or two apart.
        let (blocks, to_hash) = sync_channel::<Bytes>(2);
        let hashing = s.spawn(move || {
            let mut hasher = Sha256::new();
            to_hash.into_iter().for_each(|b| hasher.update(&b));
            hex::encode(hasher.finalize())
        });
        let (layers, decoded) = sync_channel(1);
        let reading = s.spawn(move || {
            let read = reader.read_and_hash(file, &blocks, |layer| layers.send(layer).is_ok());
            // The whole file went to the hasher: its sha256 is the file's.
            drop(blocks);
            read.map(|whole| whole.then(|| hashing.join().expect("the hasher panicked")))
        });
        let consumed = decoded.into_iter().try_for_each(|layer| each(&layer?));
        // The reader stops at its next send once `decoded` is gone.
        let sha256 = reading.join().expect("the embeddings reader panicked");
        consumed?;
        sha256?.ok_or_else(|| CacheError::new(path, "was not read to its end"))
    })
}

/// The leaf columns read: statement ids, layers and each pooling's list values
/// with the list width.
struct Columns {
    statement_id: usize,
    layer: usize,
    lists: Vec<(Pooling, usize, usize)>,
}

impl Columns {
    fn find(
        meta: &ArrowReaderMetadata,
        poolings: &[Pooling],
        path: &Path,
    ) -> Result<Columns, CacheError> {
        let leaf = |name: &str| {
            let parquet = meta.parquet_schema();
            (0..parquet.num_columns())
                .find(|&i| parquet.column(i).path().parts()[0] == name)
                .ok_or_else(|| CacheError::new(path, format!("missing column '{name}'")))
        };
        // The contract's types: what the readers below take for granted.
        let arrow_type = |name: &str| {
            let schema = meta.schema();
            let field = schema.field_with_name(name).map(|f| f.data_type().clone());
            field.map_err(|_| CacheError::new(path, format!("missing column '{name}'")))
        };
        let wrong =
            |name: &str| CacheError::new(path, format!("column '{name}' has the wrong type"));
        for name in ["statement_id", "layer"] {
            if arrow_type(name)? != DataType::UInt32 {
                return Err(wrong(name));
            }
        }
        let lists = poolings
            .iter()
            .map(|&p| match arrow_type(p.as_str())? {
                DataType::FixedSizeList(item, width)
                    if item.data_type() == &DataType::Float32 && !item.is_nullable() =>
                {
                    Ok((p, leaf(p.as_str())?, width as usize))
                }
                _ => Err(wrong(p.as_str())),
            })
            .collect::<Result<_, CacheError>>()?;
        Ok(Columns {
            statement_id: leaf("statement_id")?,
            layer: leaf("layer")?,
            lists,
        })
    }
}

/// The byte offset where each row group's column chunks end. The file holds them in
/// row group order, as one writer wrote them, so row group `g` lies between the end
/// of `g - 1` and its own.
fn group_ends(meta: &ArrowReaderMetadata, path: &Path) -> Result<Vec<u64>, CacheError> {
    let mut ends = Vec::new();
    let mut prev = 0u64;
    for (g, rg) in meta.metadata().row_groups().iter().enumerate() {
        let ranges = rg.columns().iter().map(|c| c.byte_range());
        let (start, end) = ranges.fold((u64::MAX, 0), |(s, e), (o, l)| (s.min(o), e.max(o + l)));
        if start < prev || end < start {
            return Err(CacheError::new(
                path,
                format!("row group {g} does not follow the one before it in the file"),
            ));
        }
        ends.push(end);
        prev = end;
    }
    Ok(ends)
}

/// What the reading thread needs.
struct Reader<'a> {
    path: &'a Path,
    meta: ArrowReaderMetadata,
    columns: Columns,
    ends: Vec<u64>,
    rows: usize,
    len: u64,
}

impl Reader<'_> {
    /// Reads the file from the start, every byte sent to `hash` in order, and hands
    /// each decoded row group to `send` until it returns false. True once the whole
    /// file was read; false when `send` stopped it first.
    fn read_and_hash(
        &self,
        mut file: File,
        hash: &SyncSender<Bytes>,
        mut send: impl FnMut(Result<Layer, CacheError>) -> bool,
    ) -> Result<bool, CacheError> {
        let err = |e: std::io::Error| CacheError::new(self.path, format!("cannot read: {e}"));
        let hasher_gone = || CacheError::new(self.path, "the hashing thread stopped");
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        let mut start = 0u64;
        for (g, &end) in self.ends.iter().enumerate() {
            let mut block = Vec::with_capacity((end - start) as usize);
            (&mut file)
                .take(end - start)
                .read_to_end(&mut block)
                .map_err(err)?;
            if block.len() as u64 != end - start {
                return Err(CacheError::new(self.path, "ends inside its row groups"));
            }
            let bytes = Bytes::from(block);
            hash.send(bytes.clone()).map_err(|_| hasher_gone())?;
            let group = InMemory {
                start,
                bytes,
                len: self.len,
            };
            let layer = self.decode(Arc::new(group), g);
            let failed = layer.is_err();
            if !send(layer) || failed {
                return Ok(false);
            }
            start = end;
        }
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).map_err(err)?;
        hash.send(Bytes::from(rest)).map_err(|_| hasher_gone())?;
        Ok(true)
    }

    fn decode(&self, bytes: Arc<InMemory>, g: usize) -> Result<Layer, CacheError> {
        let rg = self.meta.metadata().row_group(g);
        if rg.num_rows() as usize != self.rows {
            return Err(CacheError::new(
                self.path,
                format!(
                    "row group {g} holds {} rows, expected {}",
                    rg.num_rows(),
                    self.rows
                ),
            ));
        }
        let column = Column {
            bytes: &bytes,
            rg,
            reader: self,
            g,
        };
        let mut vectors = BTreeMap::new();
        // The levels are only checked: one pair of buffers serves every column.
        let mut levels = (Vec::new(), Vec::new());
        for &(p, leaf, width) in &self.columns.lists {
            vectors.insert(p, column.floats(leaf, width, &mut levels)?);
        }
        Ok(Layer {
            statement_ids: column.u32s(self.columns.statement_id)?,
            layers: column.u32s(self.columns.layer)?,
            vectors,
        })
    }
}

/// One row group's column chunks, in memory.
struct Column<'a> {
    bytes: &'a Arc<InMemory>,
    rg: &'a RowGroupMetaData,
    reader: &'a Reader<'a>,
    g: usize,
}

impl Column<'_> {
    fn error(&self, leaf: usize, problem: impl std::fmt::Display) -> CacheError {
        let name = self.rg.column(leaf).column_path().string();
        CacheError::new(
            self.reader.path,
            format!("row group {}, column '{name}': {problem}", self.g),
        )
    }

    fn open<T: parquet::data_type::DataType>(
        &self,
        leaf: usize,
    ) -> Result<ColumnReaderImpl<T>, CacheError> {
        let pages = SerializedPageReader::new(
            self.bytes.clone(),
            self.rg.column(leaf),
            self.reader.rows,
            None,
        )
        .map_err(|e| self.error(leaf, e))?;
        let descr = self.reader.meta.parquet_schema().column(leaf);
        Ok(ColumnReaderImpl::new(descr, Box::new(pages)))
    }

    /// A required UInt32 column (Parquet INT32): one value per row.
    fn u32s(&self, leaf: usize) -> Result<Vec<u32>, CacheError> {
        let mut values = Vec::with_capacity(self.reader.rows);
        let (_, n, _) = self
            .open::<Int32Type>(leaf)?
            .read_records(usize::MAX, None, None, &mut values)
            .map_err(|e| self.error(leaf, format!("cannot decode: {e}")))?;
        if n != self.reader.rows {
            return Err(self.error(
                leaf,
                format!("holds {n} values for {} rows", self.reader.rows),
            ));
        }
        // Stored as INT32, the bits of the UInt32.
        Ok(values.into_iter().map(|v| v as u32).collect())
    }

    /// A fixed-size list of `width` required floats per row, flattened. Whole lists
    /// only: a value for every level (no list null or empty), one record per row,
    /// and one starting (repetition level 0) at every multiple of `width`, so no
    /// other list boundary fits among the `rows * width` values.
    fn floats(
        &self,
        leaf: usize,
        width: usize,
        (def, rep): &mut (Vec<i16>, Vec<i16>),
    ) -> Result<Vec<f32>, CacheError> {
        let (rows, n) = (self.reader.rows, self.reader.rows * width);
        let mut values = Vec::with_capacity(n);
        def.clear();
        rep.clear();
        let (records, read, levels) = self
            .open::<FloatType>(leaf)?
            .read_records(usize::MAX, Some(def), Some(rep), &mut values)
            .map_err(|e| self.error(leaf, format!("cannot decode: {e}")))?;
        let aligned = width > 0 && rep.iter().step_by(width).all(|&r| r == 0);
        if records != rows || read != n || levels != n || !aligned {
            return Err(self.error(
                leaf,
                format!("does not hold {rows} whole lists of {width} values"),
            ));
        }
        Ok(values)
    }
}

/// One row group's bytes, served to the Parquet reader at their offsets in the file.
struct InMemory {
    start: u64,
    bytes: Bytes,
    len: u64,
}

impl InMemory {
    fn slice(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .map(|s| s as usize)
            .filter(|&s| s + length <= self.bytes.len());
        from.map(|s| self.bytes.slice(s..s + length))
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "bytes {start}..{} lie outside the row group read",
                    start + length as u64
                ))
            })
    }
}

impl Length for InMemory {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for InMemory {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = (self.start + self.bytes.len() as u64).saturating_sub(start);
        Ok(self.slice(start, rest as usize)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}
