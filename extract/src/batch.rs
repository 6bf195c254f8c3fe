//! Grouping statements into right-padded batches of similar length.

/// Orders `items` (indices into `lengths`) by token length, ties by index, so
/// that consecutive statements padded together waste little.
pub fn by_length(items: &[usize], lengths: &[usize]) -> Vec<usize> {
    let mut order = items.to_vec();
    order.sort_by_key(|&i| (lengths[i], i));
    order
}

/// [`by_length`] cut into batches of at most `batch_size`.
pub fn plan(items: &[usize], lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch size is positive");
    by_length(items, lengths)
        .chunks(batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// One padded batch: `input_ids` and `attention_mask`, row-major `[rows, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Padded {
    pub rows: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// Real tokens of each row.
    pub lengths: Vec<usize>,
}

/// Right-pads the given token sequences (pad id 0; masked out, never read back).
pub fn pad(seqs: &[&[i64]]) -> Padded {
    let rows = seqs.len();
    let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut input_ids = vec![0i64; rows * seq];
    let mut attention_mask = vec![0i64; rows * seq];
    for (r, s) in seqs.iter().enumerate() {
        input_ids[r * seq..r * seq + s.len()].copy_from_slice(s);
        attention_mask[r * seq..r * seq + s.len()].fill(1);
    }
    Padded {
        rows,
        seq,
        input_ids,
        attention_mask,
        lengths: seqs.iter().map(|s| s.len()).collect(),
    }
}

/// Splits work into chunks (the unit of resumption): whole batches, aiming at
/// about 30 chunks for large datasets and never less than one batch each.
pub fn chunk_size(n_statements: usize, batch_size: usize) -> usize {
    let target = n_statements.div_ceil(30).max(1);
    target.div_ceil(batch_size).max(1) * batch_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_by_length_and_fills_batches() {
        let lengths = [5, 2, 9, 2, 5, 7, 1];
        let items: Vec<usize> = (0..lengths.len()).collect();
        let b = plan(&items, &lengths, 3);
        assert_eq!(b, vec![vec![6, 1, 3], vec![0, 4, 5], vec![2]]);
        // a subset keeps only its own items
        let b = plan(&[2, 0, 4], &lengths, 2);
        assert_eq!(b, vec![vec![0, 4], vec![2]]);
    }

    #[test]
    fn pad_right_pads_with_mask() {
        let a = [1i64, 2, 3];
        let b = [4i64];
        let p = pad(&[&a, &b]);
        assert_eq!((p.rows, p.seq), (2, 3));
        assert_eq!(p.input_ids, vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(p.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(p.lengths, vec![3, 1]);
    }

    #[test]
    fn chunks_are_whole_batches() {
        assert_eq!(chunk_size(460, 32), 32);
        assert_eq!(chunk_size(460, 1), 16);
        assert_eq!(chunk_size(460, 4), 16);
        assert_eq!(chunk_size(10, 32), 32);
        assert_eq!(chunk_size(0, 8), 8);
    }
}
