//! The contract's names: file names, the schema version, the poolings and sides,
//! the Arrow schemas of `statements.parquet` and `embeddings.parquet`, and a statement's row.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Bumped whenever a column, a type or a manifest key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const STATEMENTS_FILE: &str = "statements.parquet";
pub const EMBEDDINGS_FILE: &str = "embeddings.parquet";

/// How the hidden states of one statement at one layer become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pooling {
    /// Average over every token.
    Mean,
    /// Average over tokens 1.. : the seed's `[0, 1:, :].mean(0)`. The seed meant
    /// to skip a BOS token, but Pythia adds none, so this drops the first real token.
    MeanSkipFirst,
    /// The last token's hidden state.
    Last,
}

impl Pooling {
    pub const ALL: [Pooling; 3] = [Pooling::Mean, Pooling::MeanSkipFirst, Pooling::Last];
    /// Every name of `ALL`, comma-separated in its order: the default of each
    /// `--poolings` flag (a const, as clap's defaults are, held equal to `ALL` by a
    /// test; Python's `uatools.contract.POOLINGS` is held equal to it).
    pub const LIST: &'static str = "mean,mean_skip_first,last";

    /// The column name in `embeddings.parquet` and the name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::MeanSkipFirst => "mean_skip_first",
            Pooling::Last => "last",
        }
    }

    /// Fewest tokens a statement needs for this pooling to be defined.
    pub fn min_tokens(self) -> usize {
        match self {
            Pooling::MeanSkipFirst => 2,
            Pooling::Mean | Pooling::Last => 1,
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pooling::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Pooling::LIST.split(',').collect();
                let (last, init) = names.split_last().expect("LIST names a pooling");
                format!(
                    "unknown pooling '{s}' (expected {} or {last})",
                    init.join(", ")
                )
            })
    }
}

/// Which member of a statement pair: A is the statement the dataset expects the
/// model to prefer, B its counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

impl FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" => Ok(Side::A),
            "B" => Ok(Side::B),
            _ => Err(format!("side must be 'A' or 'B', found '{s}'")),
        }
    }
}

/// `statements.parquet`: one row per statement, ordered by `statement_id`.
pub fn statements_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("statement_id", DataType::UInt32, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("pair_index", DataType::UInt32, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_tokens", DataType::UInt32, false),
        Field::new("nll_sum", DataType::Float64, false),
        Field::new("n_predicted", DataType::UInt32, false),
        Field::new("nll_mean", DataType::Float64, false),
    ]))
}

/// `embeddings.parquet`: one row per (statement, layer), one fixed-size list
/// column per pooling, one row group per layer so a reader can load one layer.
pub fn embeddings_schema(hidden_size: usize, poolings: &[Pooling]) -> SchemaRef {
    let mut fields = vec![
        Field::new("statement_id", DataType::UInt32, false),
        Field::new("layer", DataType::UInt32, false),
    ];
    for p in poolings {
        fields.push(Field::new(
            p.as_str(),
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                hidden_size as i32,
            ),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// One statement's row in `statements.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementRow {
    pub statement_id: u32,
    pub category: String,
    /// Index of the pair within its category.
    pub pair_index: u32,
    pub side: Side,
    pub text: String,
    pub n_tokens: u32,
    /// Sum over predicted tokens of -log p (natural log).
    pub nll_sum: f64,
    /// `n_tokens - 1`: every token but the first is predicted.
    pub n_predicted: u32,
}

impl StatementRow {
    /// transformers' `loss` with `labels = input_ids`.
    pub fn nll_mean(&self) -> f64 {
        self.nll_sum / f64::from(self.n_predicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pooling_list_names_every_pooling_in_order() {
        let names: Vec<&str> = Pooling::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(Pooling::LIST, names.join(","));
        assert_eq!(
            "max".parse::<Pooling>().unwrap_err(),
            "unknown pooling 'max' (expected mean, mean_skip_first or last)"
        );
    }
}
