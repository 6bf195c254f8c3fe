//! `analyze`: reads the Parquet caches written by `extract` (contract in
//! `schemas`) and answers "does the layer range where |r| peaks shift with model
//! size?" with the seed's exact statistics and a rigorous layer of uncertainty.

pub mod analysis;
pub mod bootstrap;
pub mod cka;
pub mod cka_plot;
pub mod cka_report;
pub mod correlation;
pub mod csv;
pub mod digest;
pub mod export;
pub mod grid;
pub mod identity;
pub mod load;
pub mod output;
pub mod pairs;
pub mod peaks;
pub mod plots;
pub mod plots_training;
pub mod report;
pub mod report_training;
pub mod results;
pub mod size;
pub mod uniformity;

pub use analysis::{analyze, Analysis, Settings};

/// Runs the analysis and writes every output into `settings.out`, all or nothing
/// (see `output`); notes on the way out join the analysis' warnings.
pub fn run(settings: &Settings) -> anyhow::Result<Analysis> {
    output::check(&settings.out, &settings.cache, output::Kind::Analysis)?;
    let mut a = analyze(settings)?;
    let ((), notes) = output::write_atomically(&settings.out, output::Kind::Analysis, |dir| {
        results::write(&a, dir)?;
        csv::write(&a, dir)?;
        report::write(&a, dir)?;
        plots::write(&a, dir)?;
        cka_plot::write(&a, dir)?;
        plots_training::write(&a, dir)
    })?;
    a.warnings.extend(notes);
    Ok(a)
}
