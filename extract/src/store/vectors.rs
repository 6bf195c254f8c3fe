//! A chunk's pooled vectors while a run is in progress (`chunk-NNNNNN.vectors`):
//! scratch, read back once when the cache is assembled and then deleted, so it is
//! raw float32 rather than Parquet. Parquet's list levels cost a per-value encode
//! and decode that, at the 12B shape, took longer than the forward pass.
//!
//! Layout, little-endian: the magic, then `rows`, `layers`, `poolings`, `hidden` (u32
//! each), one crc32 per layer, then layer by layer, pooling by pooling, a
//! `rows x hidden` block (rows in the order given to [`write`]).
//!
//! The file is not synced: a killed process loses nothing the page cache holds, and
//! after a machine crash a chunk whose bytes did not reach the disk fails its length or
//! crc check and is computed again ([`check`]), so no fsync stalls the writer.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 8] = b"UAVECS01";

// The blocks are the in-memory floats, reinterpreted: the byte order is the file's.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "chunk vectors are stored little-endian"
);

/// The shape of a chunk's vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub layers: usize,
    pub poolings: usize,
    pub hidden: usize,
}

impl Shape {
    /// Floats of one row: every layer's vectors, pooling by pooling.
    pub fn stride(&self) -> usize {
        self.layers * self.poolings * self.hidden
    }

    fn header_bytes(&self) -> u64 {
        (MAGIC.len() + 4 * 4 + 4 * self.layers) as u64
    }

    fn layer_floats(&self) -> usize {
        self.poolings * self.rows * self.hidden
    }

    fn file_bytes(&self) -> u64 {
        self.header_bytes() + (self.layers * self.layer_floats() * 4) as u64
    }
}

/// Writes `path` (via a temp name, renamed into place) from `rows`, each a row's
/// vectors at `(layer * poolings + k) * hidden`, in the order the file keeps.
pub fn write(path: &Path, shape: Shape, rows: &[&[f32]]) -> Result<()> {
    assert_eq!(rows.len(), shape.rows, "one slice per row");
    let tmp = path.with_extension("vectors.tmp");
    let written = write_file(&tmp, shape, rows)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(anyhow::Error::from));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("{}: cannot write", path.display()))
}

fn write_file(tmp: &Path, shape: Shape, rows: &[&[f32]]) -> Result<()> {
    let (np, h) = (shape.poolings, shape.hidden);
    // The crcs come first in the file but are known last: a placeholder, then a seek.
    let mut file = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    file.write_all(MAGIC)?;
    for v in [shape.rows, shape.layers, shape.poolings, shape.hidden] {
        file.write_all(&(v as u32).to_le_bytes())?;
    }
    file.write_all(&vec![0u8; 4 * shape.layers])?;
    let mut crcs = Vec::with_capacity(shape.layers);
    for l in 0..shape.layers {
        let mut crc = crc32fast::Hasher::new();
        for k in 0..np {
            for row in rows {
                let bytes = bytemuck::cast_slice(&row[(l * np + k) * h..][..h]);
                crc.update(bytes);
                file.write_all(bytes)?;
            }
        }
        crcs.push(crc.finalize());
    }
    let mut file = file.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start((MAGIC.len() + 16) as u64))?;
    let crc_bytes: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    file.write_all(&crc_bytes)?;
    Ok(())
}

/// An open chunk vectors file whose header matched the expected shape.
pub struct Vectors {
    file: File,
    shape: Shape,
    crcs: Vec<u32>,
}

impl Vectors {
    /// Opens `path`, refusing a header or length other than `shape` calls for.
    pub fn open(path: &Path, shape: Shape) -> Result<Vectors> {
        let mut file =
            File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut header = vec![0u8; shape.header_bytes() as usize];
        let bytes = file.metadata()?.len();
        if bytes != shape.file_bytes() {
            bail!(
                "{}: {bytes} bytes, not the {} of {} rows x {} layers x {} poolings x {} floats",
                path.display(),
                shape.file_bytes(),
                shape.rows,
                shape.layers,
                shape.poolings,
                shape.hidden
            );
        }
        file.read_exact(&mut header)?;
        let word = |i: usize| {
            let at = MAGIC.len() + 4 * i;
            u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")) as usize
        };
        let found = Shape {
            rows: word(0),
            layers: word(1),
            poolings: word(2),
            hidden: word(3),
        };
        if &header[..MAGIC.len()] != MAGIC || found != shape {
            bail!(
                "{}: not a chunk vectors file of this run's shape",
                path.display()
            );
        }
        let crcs = (0..shape.layers).map(|l| word(4 + l) as u32).collect();
        Ok(Vectors { file, shape, crcs })
    }

    /// Layer `l`: one `rows x hidden` block per pooling, checked against its crc.
    pub fn layer(&mut self, l: usize, path: &Path) -> Result<Vec<Vec<f32>>> {
        let n = self.shape.rows * self.shape.hidden;
        let offset = self.shape.header_bytes() + (l * self.shape.layer_floats() * 4) as u64;
        self.file.seek(SeekFrom::Start(offset))?;
        let mut crc = crc32fast::Hasher::new();
        let mut blocks = Vec::with_capacity(self.shape.poolings);
        for _ in 0..self.shape.poolings {
            let mut block = vec![0f32; n];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut block);
            self.file
                .read_exact(bytes)
                .with_context(|| format!("{}: cannot read layer {l}", path.display()))?;
            crc.update(bytes);
            blocks.push(block);
        }
        if crc.finalize() != self.crcs[l] {
            bail!("{}: layer {l} fails its crc32 check", path.display());
        }
        Ok(blocks)
    }
}

/// Checks that `path` holds every layer of `shape` intact (a resumed run's chunks).
pub fn check(path: &Path, shape: Shape) -> Result<()> {
    let mut v = Vectors::open(path, shape)?;
    for l in 0..shape.layers {
        v.layer(l, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            rows: 3,
            layers: 2,
            poolings: 2,
            hidden: 4,
        }
    }

    /// Three rows written to `dir/c.vectors`: the path and the rows.
    fn written(dir: &Path) -> (std::path::PathBuf, Vec<Vec<f32>>) {
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|r| (0..16).map(|i| (r * 100 + i) as f32 + 0.5).collect())
            .collect();
        let path = dir.join("c.vectors");
        let slices: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        write(&path, shape(), &slices).unwrap();
        (path, rows)
    }

    #[test]
    fn layers_come_back_as_blocks_by_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rows) = written(dir.path());
        let mut v = Vectors::open(&path, shape()).unwrap();
        let layer1 = v.layer(1, &path).unwrap();
        // layer 1, pooling 0 of row r: floats 8..12; pooling 1: 12..16
        assert_eq!(layer1[0][4..8], rows[1][8..12]);
        assert_eq!(layer1[1][8..12], rows[2][12..16]);
        check(&path, shape()).unwrap();
    }

    #[test]
    fn damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = written(dir.path());
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let e = check(&path, shape()).unwrap_err().to_string();
        assert!(e.contains("layer 1 fails its crc32"), "{e}");

        std::fs::write(&path, &good[..good.len() - 4]).unwrap();
        let e = check(&path, shape()).unwrap_err().to_string();
        assert!(e.contains("bytes, not the"), "{e}");

        // A crash can leave the length right and the bytes zero.
        std::fs::write(&path, vec![0u8; good.len()]).unwrap();
        assert!(check(&path, shape()).is_err());

        std::fs::write(&path, &good).unwrap();
        let other = Shape { rows: 2, ..shape() };
        assert!(Vectors::open(&path, other).is_err());
    }
}
