//! What a read cache holds: one model's validated cache with its parameter count, and its
//! statements paired A with B per category. Filled by the readers beside this file.

use std::collections::BTreeMap;

use schemas::{Manifest, ValidCache};

/// One model's validated cache, with its parameter count and where it came from.
#[derive(Debug, Clone)]
pub struct ModelCache {
    pub name: String,
    pub cache: ValidCache,
    /// Parameter count used to order models.
    pub params: u64,
    /// True when the manifest gave no parameter count and `n_layers * hidden^2` stands in.
    pub params_estimated: bool,
}

impl ModelCache {
    pub fn manifest(&self) -> &Manifest {
        &self.cache.manifest
    }
    pub fn display(&self) -> &str {
        &self.cache.manifest.model.display_name
    }
    pub fn n_layers(&self) -> u32 {
        self.cache.manifest.model.n_layers
    }
    pub fn hidden(&self) -> usize {
        self.cache.manifest.model.hidden_size as usize
    }
}

/// A statement pair: the row indices (into the statement order) of its A and B sides.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    /// `NLL(B) - NLL(A)`: positive means the model prefers A.
    pub pref: f64,
}

/// The statements of one model's cache, grouped by category (dataset order) and
/// pair (pair_index order).
#[derive(Debug, Clone)]
pub struct Statements {
    /// Statement ids in file order; `row_of[id]` maps back.
    pub ids: Vec<u32>,
    pub row_of: BTreeMap<u32, usize>,
    pub categories: Vec<String>,
    /// Per category, its pairs in pair_index order.
    pub pairs: Vec<Vec<Pair>>,
    pub nll_mean: Vec<f64>,
    pub category: Vec<String>,
    pub pair_index: Vec<u32>,
    pub side: Vec<String>,
    pub text: Vec<String>,
}

impl Statements {
    /// Mean preference per category (the seed's y).
    pub fn category_prefs(&self) -> Vec<f64> {
        self.pairs
            .iter()
            .map(|ps| ps.iter().map(|p| p.pref).sum::<f64>() / ps.len() as f64)
            .collect()
    }
}
