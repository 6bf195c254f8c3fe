//! `analyze`: reads the Parquet caches written by `extract` (contract in
//! `schemas`) and answers "does the layer range where |r| peaks shift with model
//! size?" with the seed's exact statistics and a rigorous layer of uncertainty.

pub mod analysis;
pub mod cache;
pub mod convert;
pub mod csv;
pub mod figures;
pub mod format;
pub mod json;
pub mod output;
pub mod report;
pub mod settings;
pub mod stats;

pub use analysis::analyze;
pub use analysis::results::Analysis;
pub use settings::AnalysisSettings;

/// Runs the analysis and writes every output into `settings.out`, all or nothing
/// (see `output`); notes on the way out join the analysis' warnings.
pub fn run(settings: &AnalysisSettings) -> anyhow::Result<Analysis> {
    let recovered = output::check(&settings.out, &settings.cache, output::Kind::Analysis)?;
    let mut a = analyze(settings)?;
    a.warnings.extend(recovered);
    let ((), notes) = output::write_atomically(&settings.out, output::Kind::Analysis, |dir| {
        json::write(&a, dir)?;
        csv::write(&a, dir)?;
        report::write(&a, dir)?;
        figures::write(&a, dir)
    })?;
    a.warnings.extend(notes);
    Ok(a)
}
