//! Reading `statements.parquet` (polars) and pairing A with B per category.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use polars::prelude::*;
use schemas::{Side, STATEMENTS_FILE};

use super::digest;
use super::parquet::read_parquet;
use super::types::{ModelCache, Pair, Statements};

/// Row indices of a pair's A and B statements, while they are being collected.
type SidesOfPair = (Option<usize>, Option<usize>);

/// One category's pairs by pair_index, while they are being collected.
type CategorySides = BTreeMap<u32, SidesOfPair>;

/// The file's columns, in file order.
struct Columns {
    ids: Vec<u32>,
    category: Vec<String>,
    pair_index: Vec<u32>,
    side: Vec<String>,
    text: Vec<String>,
    nll_mean: Vec<f64>,
    nll_sum: Vec<f64>,
    n_predicted: Vec<u32>,
}

/// Reads `statements.parquet` with polars and pairs A with B per category.
pub fn read_statements(model: &ModelCache) -> Result<Statements> {
    let path = model.cache.dir.join(STATEMENTS_FILE);
    let c = read_columns(&path)?;
    let rows: Vec<(u32, &str)> = c
        .ids
        .iter()
        .copied()
        .zip(c.text.iter().map(String::as_str))
        .collect();
    let recorded = model.manifest().dataset.statements_sha256.as_deref();
    digest::check(&path, recorded, &rows)?;

    let categories = model.manifest().dataset.categories.clone();
    let (row_of, sides) = sides_by_pair(&path, &categories, &c)?;
    let pairs = pairs_of(&path, &categories, sides, &c.nll_mean)?;
    Ok(Statements {
        ids: c.ids,
        row_of,
        categories,
        pairs,
        nll_mean: c.nll_mean,
        category: c.category,
        pair_index: c.pair_index,
        side: c.side,
        text: c.text,
    })
}

fn read_columns(path: &Path) -> Result<Columns> {
    let df = read_parquet(
        path,
        &[
            "statement_id",
            "category",
            "pair_index",
            "side",
            "text",
            "nll_mean",
            "nll_sum",
            "n_predicted",
        ],
        None,
    )?;
    let err = |e: PolarsError| anyhow!("{}: {e}", path.display());
    // A null would be read as a default or another row's value: the contract has none.
    for name in df.get_column_names() {
        let col = df.column(name).map_err(err)?;
        if col.null_count() > 0 {
            bail!(
                "{}: column `{name}` holds {} null value(s); the contract has none: restore the file or extract again",
                path.display(),
                col.null_count()
            );
        }
    }
    let u32s = |name: &str| -> Result<Vec<u32>> {
        Ok(df
            .column(name)
            .map_err(err)?
            .u32()
            .map_err(err)?
            .into_no_null_iter()
            .collect())
    };
    let f64s = |name: &str| -> Result<Vec<f64>> {
        Ok(df
            .column(name)
            .map_err(err)?
            .f64()
            .map_err(err)?
            .into_no_null_iter()
            .collect())
    };
    let strs = |name: &str| -> Result<Vec<String>> {
        Ok(df
            .column(name)
            .map_err(err)?
            .str()
            .map_err(err)?
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect())
    };
    Ok(Columns {
        ids: u32s("statement_id")?,
        category: strs("category")?,
        side: strs("side")?,
        text: strs("text")?,
        pair_index: u32s("pair_index")?,
        n_predicted: u32s("n_predicted")?,
        nll_mean: f64s("nll_mean")?,
        nll_sum: f64s("nll_sum")?,
    })
}

/// The row of each statement id, and per category the rows of each pair's A and
/// B sides by pair_index; refuses repeated ids, non-finite NLLs, unknown
/// categories and a side given twice.
fn sides_by_pair(
    path: &Path,
    categories: &[String],
    c: &Columns,
) -> Result<(BTreeMap<u32, usize>, Vec<CategorySides>)> {
    let mut sides: Vec<CategorySides> = vec![BTreeMap::new(); categories.len()];
    let mut row_of = BTreeMap::new();
    for (row, &id) in c.ids.iter().enumerate() {
        if row_of.insert(id, row).is_some() {
            bail!("{}: statement_id {id} appears twice", path.display());
        }
        check_nll(
            path,
            id,
            c.nll_mean[row],
            c.nll_sum[row],
            c.n_predicted[row],
        )?;
        let cat = categories
            .iter()
            .position(|k| *k == c.category[row])
            .ok_or_else(|| {
                anyhow!(
                    "{}: statement {id} has category '{}' which the manifest does not list",
                    path.display(),
                    c.category[row]
                )
            })?;
        let slot = sides[cat].entry(c.pair_index[row]).or_default();
        let s: Side = c.side[row]
            .parse()
            .map_err(|e: String| anyhow!("{}: {e}", path.display()))?;
        let target = match s {
            Side::A => &mut slot.0,
            Side::B => &mut slot.1,
        };
        if target.replace(row).is_some() {
            bail!(
                "{}: category '{}' pair {} has two {} sides",
                path.display(),
                c.category[row],
                c.pair_index[row],
                s.as_str()
            );
        }
    }
    Ok((row_of, sides))
}

/// A statement's NLL as the contract defines it: finite, and the mean
/// `nll_sum / n_predicted` to rounding. (A negative NLL is impossible too, but
/// synth-cache writes some: refusing it waits for the generator and its goldens.)
fn check_nll(path: &Path, id: u32, mean: f64, sum: f64, n_predicted: u32) -> Result<()> {
    let problem = if !mean.is_finite() || !sum.is_finite() {
        "a non-finite nll_mean or nll_sum".to_string()
    } else if n_predicted == 0 {
        "n_predicted 0: no token was predicted, so it has no NLL".to_string()
    } else if (mean - sum / f64::from(n_predicted)).abs() > 1e-9 * mean.max(1.0) {
        format!(
            "nll_mean {mean} but nll_sum / n_predicted = {sum} / {n_predicted} = {}",
            sum / f64::from(n_predicted)
        )
    } else {
        return Ok(());
    };
    bail!(
        "{}: statement {id} has {problem}; restore the file or extract again",
        path.display()
    )
}

/// Per category its pairs in pair_index order, each with both sides and its
/// preference; refuses a pair missing a side and a category of fewer than 2 pairs.
fn pairs_of(
    path: &Path,
    categories: &[String],
    sides: Vec<CategorySides>,
    nll_mean: &[f64],
) -> Result<Vec<Vec<Pair>>> {
    let mut pairs = Vec::new();
    for (c, map) in sides.into_iter().enumerate() {
        let mut list = Vec::new();
        for (pi, (a, b)) in map {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                _ => bail!(
                    "{}: category '{}' pair {pi} lacks its A or B side",
                    path.display(),
                    categories[c]
                ),
            };
            list.push(Pair {
                a,
                b,
                pref: nll_mean[b] - nll_mean[a],
            });
        }
        if list.len() < 2 {
            bail!(
                "{}: category '{}' has {} pairs; uniformity needs at least 2",
                path.display(),
                categories[c],
                list.len()
            );
        }
        pairs.push(list);
    }
    Ok(pairs)
}
