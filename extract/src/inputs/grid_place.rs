//! Where the extracted model sits in a grid of sizes × training checkpoints
//! (`model.series`, `model.size`, `model.revision`, `model.step` of the manifest):
//! from `--series`, `--size` and `--revision`, else from export.json.

use std::path::Path;

use anyhow::{bail, Result};
use schemas::checkpoint::{series_and_size, step_of};
use schemas::ModelInfo;

/// What the command line says; each absent flag falls back on export.json.
#[derive(Debug, Clone, Default)]
pub struct PlaceFlags {
    pub series: Option<String>,
    pub size: Option<String>,
    pub revision: Option<String>,
}

/// The resolved place of one cache in the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub series: Option<String>,
    pub size: Option<String>,
    pub revision: Option<String>,
    pub step: Option<u64>,
}

impl PlaceFlags {
    /// Series and size default to what the model id says unambiguously
    /// ([`series_and_size`]); the revision to the one `export_json` records. A
    /// `--revision` that contradicts it is refused: the manifest would name other weights.
    pub fn resolve(
        &self,
        model_id: &str,
        recorded: Option<&str>,
        export_json: &Path,
    ) -> Result<Place> {
        let revision = match (&self.revision, recorded) {
            (Some(flag), Some(recorded)) if flag != recorded => bail!(
                "{}: records revision '{recorded}' but --revision says '{flag}'; export that revision or drop the flag",
                export_json.display()
            ),
            (Some(flag), _) => Some(flag.clone()),
            (None, recorded) => recorded.map(str::to_string),
        };
        let derived = series_and_size(model_id);
        let (series, size) = derived.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        Ok(Place {
            series: self.series.clone().or(series),
            size: self.size.clone().or(size),
            step: revision.as_deref().and_then(step_of),
            revision,
        })
    }
}

impl Place {
    pub fn apply(self, m: &mut ModelInfo) {
        m.series = self.series;
        m.size = self.size;
        m.revision = self.revision;
        m.step = self.step;
    }
}

/// `--series` and `--size` name folders of the grid in reports: no empty value.
pub fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.trim().to_string())
}
