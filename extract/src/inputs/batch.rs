//! Grouping statements into right-padded batches of similar length.

/// Orders `items` (indices into `lengths`) by token length, ties by index, so
/// that consecutive statements padded together waste little.
pub fn by_length(items: &[usize], lengths: &[usize]) -> Vec<usize> {
    let mut order = items.to_vec();
    order.sort_by_key(|&i| (lengths[i], i));
    order
}

/// How statements are grouped into one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// At most this many statements per batch.
    pub batch_size: usize,
    /// At most this many tokens per batch, padding included (rows x longest row),
    /// when set: short statements then share a pass in large numbers, long ones in
    /// few, so that each pass does about the same work. A statement longer than the
    /// budget runs alone.
    pub max_tokens: Option<usize>,
}

impl Batching {
    pub fn rows(batch_size: usize) -> Batching {
        Batching {
            batch_size,
            max_tokens: None,
        }
    }
}

/// [`by_length`] cut into batches under `batching`'s limits, the batches then run
/// longest first: the runtime's memory (its arena, a GPU's) reaches its peak on the
/// first pass, so a batch too large fails at once and no later pass allocates.
fn cut_batches(items: &[usize], lengths: &[usize], batching: Batching) -> Vec<Vec<usize>> {
    assert!(batching.batch_size > 0, "batch size is positive");
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in by_length(items, lengths) {
        // Sorted by length, so row i is the longest of the batch it joins.
        let tokens = (current.len() + 1) * lengths[i];
        let over_budget = batching.max_tokens.is_some_and(|t| tokens > t);
        if !current.is_empty() && (current.len() == batching.batch_size || over_budget) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches.reverse();
    batches
}

/// Groups batches into chunks (the unit of resumption): whole batches, aiming at
/// about 30 chunks for `n_statements` and never less than one batch each.
fn group_chunks(batches: Vec<Vec<usize>>, n_statements: usize) -> Vec<Vec<Vec<usize>>> {
    let target = n_statements.div_ceil(30).max(1);
    let mut chunks: Vec<Vec<Vec<usize>>> = Vec::new();
    let mut filled = 0;
    for b in batches {
        if filled >= target || chunks.is_empty() {
            chunks.push(Vec::new());
            filled = 0;
        }
        filled += b.len();
        chunks.last_mut().expect("pushed above").push(b);
    }
    chunks
}

/// The statements of a run in the order they go through the model: chunks (the
/// unit of resumption, see [`group_chunks`]) of whole batches (one forward pass each, see
/// [`cut_batches`]), a batch being statement indices into the dataset in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    chunks: Vec<Vec<Vec<usize>>>,
}

impl BatchPlan {
    /// `items` (indices into `lengths`) in batches under `batching`'s limits,
    /// grouped into chunks sized for a run of `n_statements`.
    pub fn new(
        items: &[usize],
        lengths: &[usize],
        batching: Batching,
        n_statements: usize,
    ) -> Self {
        BatchPlan {
            chunks: group_chunks(cut_batches(items, lengths, batching), n_statements),
        }
    }

    /// Each chunk's batches, in running order.
    pub fn chunks(&self) -> impl Iterator<Item = &[Vec<usize>]> {
        self.chunks.iter().map(Vec::as_slice)
    }

    /// Every batch, in running order.
    pub fn batches(&self) -> impl Iterator<Item = &Vec<usize>> {
        self.chunks.iter().flatten()
    }

    pub fn n_statements(&self) -> usize {
        self.batches().map(Vec::len).sum()
    }
}

/// Chunk by chunk, each one's batches, for the loop that runs them.
impl IntoIterator for BatchPlan {
    type Item = Vec<Vec<usize>>;
    type IntoIter = std::vec::IntoIter<Vec<Vec<usize>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_by_length_and_fills_batches() {
        let lengths = [5, 2, 9, 2, 5, 7, 1];
        let items: Vec<usize> = (0..lengths.len()).collect();
        let b = cut_batches(&items, &lengths, Batching::rows(3));
        assert_eq!(b, vec![vec![2], vec![0, 4, 5], vec![6, 1, 3]]);
        // a subset keeps only its own items
        let b = cut_batches(&[2, 0, 4], &lengths, Batching::rows(2));
        assert_eq!(b, vec![vec![2], vec![0, 4]]);
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
    fn token_budget_counts_padding() {
        let lengths = [5, 2, 9, 2, 5, 7, 1];
        let items: Vec<usize> = (0..lengths.len()).collect();
        let budget = Batching {
            batch_size: 100,
            max_tokens: Some(10),
        };
        // 1,2,2 -> 3 rows x 2 = 6; adding a 5 would be 4 x 5 = 20 > 10
        assert_eq!(
            cut_batches(&items, &lengths, budget),
            vec![vec![2], vec![5], vec![0, 4], vec![6, 1, 3]]
        );
        // a statement longer than the budget runs alone
        let tiny = Batching {
            batch_size: 100,
            max_tokens: Some(4),
        };
        assert_eq!(cut_batches(&[2, 5], &lengths, tiny), vec![vec![2], vec![5]]);
        // the row cap still holds
        let capped = Batching {
            batch_size: 2,
            max_tokens: Some(1000),
        };
        assert_eq!(cut_batches(&items, &lengths, capped).len(), 4);
    }

    #[test]
    fn chunks_are_whole_batches() {
        let batches: Vec<Vec<usize>> = (0..10).map(|i| vec![2 * i, 2 * i + 1]).collect();
        // 60 statements: target 2 per chunk = one batch each
        let c = group_chunks(batches.clone(), 60);
        assert_eq!(c.len(), 10);
        // 300 statements: target 10 per chunk = five batches each
        let c = group_chunks(batches.clone(), 300);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|chunk| chunk.len() == 5));
        assert!(group_chunks(Vec::new(), 0).is_empty());
        let flat: Vec<usize> = group_chunks(batches, 90)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        assert_eq!(flat, (0..20).collect::<Vec<_>>());
    }
}
