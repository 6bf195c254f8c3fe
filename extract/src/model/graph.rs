//! What `model.onnx` itself says about its inputs, read from the protobuf without
//! ONNX Runtime: the rows of the embedding table that `input_ids` index, so that a
//! token beyond it is refused before any forward pass even where `export.json`
//! records no `vocab_size` (ONNX Runtime's Gather failed late, in two coloured
//! lines naming a graph node, and CUDA may not check at all).
//!
//! Only the fields on the way are decoded (ModelProto.graph = 7; GraphProto.node = 1,
//! .initializer = 5; NodeProto.input = 1, .op_type = 4; TensorProto.dims = 1,
//! .name = 8); the weights, inline or external, are skipped unread.

use std::path::Path;

use anyhow::{Context, Result};

/// The rows of the table that a top-level `Gather` of the graph input `input_ids`
/// reads, when that table is an initializer with its shape; None when the graph has
/// no such node (then nothing is checked here).
pub fn embedding_rows(onnx: &Path) -> Result<Option<u64>> {
    let bytes = std::fs::read(onnx).with_context(|| format!("cannot read {}", onnx.display()))?;
    Ok(rows_in(&bytes))
}

fn rows_in(model: &[u8]) -> Option<u64> {
    let graph = fields(model).find(|f| f.number == 7)?.bytes?;
    let table = fields(graph)
        .filter(|f| f.number == 1)
        .filter_map(|f| f.bytes)
        .find_map(|node| {
            let strings = |n: u64| {
                fields(node)
                    .filter(move |f| f.number == n)
                    .filter_map(|f| std::str::from_utf8(f.bytes?).ok())
            };
            let inputs: Vec<&str> = strings(1).collect();
            let gather = strings(4).next() == Some("Gather");
            (gather && inputs.len() == 2 && inputs[1] == "input_ids").then(|| inputs[0])
        })?;
    fields(graph)
        .filter(|f| f.number == 5)
        .filter_map(|f| f.bytes)
        .find(|t| fields(t).any(|f| f.number == 8 && f.bytes == Some(table.as_bytes())))
        .and_then(first_dim)
}

/// A TensorProto's first dimension: a varint, or the first of a packed list.
fn first_dim(tensor: &[u8]) -> Option<u64> {
    let dims = fields(tensor).find(|f| f.number == 1)?;
    match dims.bytes {
        Some(packed) => varint(packed).map(|(v, _)| v),
        None => dims.value,
    }
}

/// One protobuf field: its number and either its varint value or its bytes.
struct Field<'a> {
    number: u64,
    value: Option<u64>,
    bytes: Option<&'a [u8]>,
}

/// The fields of one message, in order; ends at the first malformed one.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Field<'_>> {
    std::iter::from_fn(move || {
        let (key, used) = varint(buf)?;
        buf = &buf[used..];
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => {
                let (v, used) = varint(buf)?;
                buf = &buf[used..];
                Field {
                    number,
                    value: Some(v),
                    bytes: None,
                }
            }
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                buf = buf.get(width..)?;
                Field {
                    number,
                    value: None,
                    bytes: None,
                }
            }
            2 => {
                let (len, used) = varint(buf)?;
                let end = used.checked_add(usize::try_from(len).ok()?)?;
                let bytes = buf.get(used..end)?;
                buf = &buf[end..];
                Field {
                    number,
                    value: None,
                    bytes: Some(bytes),
                }
            }
            _ => return None,
        };
        Some(field)
    })
}

/// A base-128 varint at the start of `buf`, and the bytes it took.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: u64, wire: u64) -> Vec<u8> {
        encode(number << 3 | wire)
    }

    fn encode(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn message(number: u64, body: &[u8]) -> Vec<u8> {
        [key(number, 2), encode(body.len() as u64), body.to_vec()].concat()
    }

    /// A graph as the exporter writes it: a Gather of `input_ids` from a named
    /// initializer of shape [300, 8] (dims packed or not), among other fields.
    #[test]
    fn finds_the_table_that_input_ids_index() {
        for packed in [true, false] {
            let node = [
                message(1, b"embed.weight"),
                message(1, b"input_ids"),
                message(2, b"x"),
                message(4, b"Gather"),
            ]
            .concat();
            let other = [message(1, b"x"), message(4, b"Relu")].concat();
            let dims = if packed {
                message(1, &[encode(300), encode(8)].concat())
            } else {
                [key(1, 0), encode(300), key(1, 0), encode(8)].concat()
            };
            let tensor = [dims, key(2, 0), encode(1), message(8, b"embed.weight")].concat();
            let graph = [message(1, &other), message(1, &node), message(5, &tensor)].concat();
            let model = [key(1, 0), encode(8), message(7, &graph)].concat();
            assert_eq!(rows_in(&model), Some(300));
        }
        assert_eq!(rows_in(b"not a graph"), None);
    }

    #[test]
    fn reads_the_fixture_graph() {
        let onnx =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/model.onnx");
        assert_eq!(embedding_rows(&onnx).unwrap(), Some(512));
    }
}
