//! What the command line asks of a run, and the checks of it that read no file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use schemas::Pooling;

use crate::inputs::batch::Batching;
use crate::inputs::grid_place::PlaceFlags;
use crate::inputs::shard::Shard;
use crate::model::runtime::DeviceChoice;

#[derive(Debug, Clone)]
pub struct Options {
    pub model: PathBuf,
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub name: Option<String>,
    pub device: DeviceChoice,
    pub batching: Batching,
    pub poolings: Vec<Pooling>,
    /// Resume chunks made with another provider or batching.
    pub force_resume: bool,
    /// Multiplies the parity bound of the probe check (>= 1).
    pub parity_slack: f64,
    /// Extract only this slice of the pairs, into `NAME.shard-I-of-N`.
    pub shard: Option<Shard>,
    /// Series, size and revision for the manifest (defaults from export.json).
    pub place: PlaceFlags,
    /// Save finished chunks to disk at least this often (zero: each as it finishes).
    pub save_every: Duration,
}

impl Options {
    /// Refuses flags out of range; returns the poolings to store, each once, in the
    /// order given.
    pub(crate) fn checked_poolings(&self) -> Result<Vec<Pooling>> {
        if self.batching.batch_size == 0 || self.batching.max_tokens == Some(0) {
            bail!("--batch-size and --max-tokens must be at least 1");
        }
        if !(self.parity_slack.is_finite() && self.parity_slack >= 1.0) {
            bail!(
                "--parity-slack {} must be a finite number >= 1 (a multiple of the parity bound)",
                self.parity_slack
            );
        }
        let mut poolings: Vec<Pooling> = Vec::new();
        for p in &self.poolings {
            if !poolings.contains(p) {
                poolings.push(*p);
            }
        }
        if poolings.is_empty() {
            bail!(
                "--poolings lists no pooling ({})",
                schemas::Pooling::LIST.replace(',', ", ")
            );
        }
        Ok(poolings)
    }
}
