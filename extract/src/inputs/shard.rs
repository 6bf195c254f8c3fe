//! Within-model sharding: `--shard i/N` extracts one deterministic slice of the
//! statements into its own cache, and `extract merge` ([`crate::merge`]) joins the
//! slices back into the cache an unsharded run writes.
//!
//! The slice is by pair, round robin: shard `i` holds the global pairs `p` (in
//! dataset order, `statement_id = 2 * p + side`) with `p % N == i`, so a pair's A
//! and B always share a shard, every shard gets a similar mix of categories and
//! lengths, and the slice depends on the dataset alone, never on batching.

use std::fmt;
use std::str::FromStr;

use schemas::ShardInfo;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether the statement with this global id belongs to the shard.
    pub fn contains(self, statement_id: u32) -> bool {
        (statement_id / 2) % self.count == self.index
    }

    /// The global statement ids of the shard among `0..n_statements`, ascending.
    pub fn ids(self, n_statements: usize) -> Vec<u32> {
        (0..n_statements as u32)
            .filter(|&id| self.contains(id))
            .collect()
    }

    /// The cache folder name of this shard of the cache `name`: never the unsharded name.
    pub fn folder_name(self, name: &str) -> String {
        format!("{name}.shard-{}-of-{}", self.index, self.count)
    }

    /// What the manifest records.
    pub fn info(self, n_statements: u32) -> ShardInfo {
        ShardInfo {
            index: self.index,
            count: self.count,
            n_statements,
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = "expected i/N with 0 <= i < N, e.g. 0/4";
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a shard ({usage})"))?;
        let parse = |v: &str| v.trim().parse::<u32>().ok();
        let (Some(index), Some(count)) = (parse(i), parse(n)) else {
            return Err(format!("'{s}' is not a shard ({usage})"));
        };
        if count == 0 || index >= count {
            return Err(format!(
                "shard '{s}' does not exist: the index counts from 0 and must be below the count ({usage})"
            ));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        for bad in ["3/3", "0/0", "x", "1", "-1/3", "1/x", "a/b", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn pairs_stay_together_round_robin() {
        let s = Shard { index: 1, count: 3 };
        // pairs 1, 4, 7 of 9 pairs
        assert_eq!(s.ids(18), vec![2, 3, 8, 9, 14, 15]);
        assert_eq!(s.folder_name("m"), "m.shard-1-of-3");
    }

    #[test]
    fn shards_partition_the_statements() {
        for count in 1..6u32 {
            for n_pairs in 0..12usize {
                let n = 2 * n_pairs;
                let mut all: Vec<u32> = (0..count)
                    .flat_map(|index| Shard { index, count }.ids(n))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
            }
        }
    }
}
