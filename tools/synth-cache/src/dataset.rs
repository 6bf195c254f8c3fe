//! The synthetic dataset: its categories and sha256, a latent preference per
//! category shared by every model, and each model's statements drawn from it.

use schemas::{Side, StatementRow};

use crate::options::Options;
use crate::random::{normal, splitmix, stream};

/// What every cache of one run shares: the dataset.
pub(crate) struct Dataset {
    pub(crate) cat_names: Vec<String>,
    pub(crate) n_pairs: usize,
    pub(crate) sha256: String,
    /// Latent per-category preference, shared by every model (same dataset).
    latent: Vec<f64>,
}

pub(crate) fn dataset(options: &Options) -> Dataset {
    use std::fmt::Write;
    let desc = format!(
        "{}|{:?}|{}",
        options.dataset_tag, options.categories, options.seed
    );
    let mut h = 0u64;
    let mut sha256 = String::new();
    for (i, b) in desc.bytes().enumerate() {
        h = stream(&[h, b as u64, i as u64]);
    }
    for k in 0..4 {
        let _ = write!(sha256, "{:016x}", stream(&[h, k]));
    }
    let mut s = stream(&[options.seed, 1]);
    Dataset {
        cat_names: (0..options.categories.len())
            .map(|c| format!("category_{c}"))
            .collect(),
        n_pairs: options.categories.iter().sum(),
        sha256,
        latent: match options.leverage {
            Some(k) => (0..options.categories.len())
                .map(|c| if c == 0 { k } else { 0.0 })
                .collect(),
            None => options.categories.iter().map(|_| normal(&mut s)).collect(),
        },
    }
}

/// Mean preference per category, and each statement's pair preference.
pub(crate) struct Prefs {
    pub(crate) category: Vec<f64>,
    pub(crate) pair: Vec<f64>,
}

/// Statements: pairs in category order, A then B; returns the rows, each row's
/// category and the preferences.
pub(crate) fn statements(
    options: &Options,
    dataset: &Dataset,
    mseed: u64,
) -> (Vec<StatementRow>, Vec<usize>, Prefs) {
    let mut rows = Vec::new();
    let mut cat_of = Vec::new();
    let mut s = stream(&[mseed, 2]);
    let mut prefs = Prefs {
        category: vec![0.0; options.categories.len()],
        pair: Vec::new(),
    };
    for (c, &n) in options.categories.iter().enumerate() {
        let cat = &dataset.cat_names[c];
        for i in 0..n {
            let nll_a = 3.0 + 0.4 * normal(&mut s);
            let pref = 0.5 * dataset.latent[c] + 0.7 * normal(&mut s);
            prefs.category[c] += pref / n as f64;
            for (side, nll) in [(Side::A, nll_a), (Side::B, nll_a + pref)] {
                let n_tokens = 6 + (splitmix(&mut s) % 15) as u32;
                rows.push(StatementRow {
                    statement_id: rows.len() as u32,
                    category: cat.clone(),
                    pair_index: i as u32,
                    side,
                    text: format!("synthetic statement {i} of {cat} side {}", side.as_str()),
                    n_tokens,
                    nll_sum: nll * f64::from(n_tokens - 1),
                    n_predicted: n_tokens - 1,
                });
                cat_of.push(c);
                prefs.pair.push(pref);
            }
        }
    }
    (rows, cat_of, prefs)
}
