//! `analyze`: reads the Parquet caches written by `extract` (contract in
//! `schemas`) and answers "does the layer range where |r| peaks shift with model
//! size?" with the seed's exact statistics and a rigorous layer of uncertainty.

pub mod analysis;
pub mod bootstrap;
pub mod correlation;
pub mod csv;
pub mod digest;
pub mod export;
pub mod extras;
pub mod identity;
pub mod load;
pub mod pairs;
pub mod peaks;
pub mod plots;
pub mod report;
pub mod results;
pub mod size;
pub mod uniformity;

pub use analysis::{analyze, Analysis, Settings};

/// Runs the analysis and writes every output into `settings.out`.
pub fn run(settings: &Settings) -> anyhow::Result<Analysis> {
    let a = analyze(settings)?;
    std::fs::create_dir_all(&settings.out).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot create output folder: {e}",
            settings.out.display()
        )
    })?;
    results::write(&a, &settings.out)?;
    csv::write(&a, &settings.out)?;
    report::write(&a, &settings.out)?;
    plots::write(&a, &settings.out)?;
    Ok(a)
}
