//! Figures (PNG and SVG): of the primary pooling every model's r against layer
//! and depth in one overlay, the same one panel per model with its bootstrap band
//! and peaks, r in every geometry beside the raw vectors' anisotropy, the category points behind r at each model's |r| peak and the peak
//! positions with their bootstrap CIs; the CKA heatmaps; the training view of
//! each size. One file per figure, each a `Figure` on the `canvas`.

use std::path::Path;

use anyhow::Result;

use crate::analysis::results::Analysis;

mod axis;
mod canvas;
mod category_scatter;
mod cka_alignment;
mod comparison;
mod geometry;
mod key;
mod labels;
mod layer_panels;
mod peak_positions;
mod series;
mod style;
pub mod training;

/// The figures of the primary pooling, each as .png and .svg, with what each shows:
/// written for every analysis (`tests/e2e/analyze_figures.rs` checks each of them).
pub const FIGURES: [(&str, &str); 5] = [
    comparison::FIGURE,
    layer_panels::FIGURE,
    geometry::FIGURE,
    category_scatter::FIGURE,
    peak_positions::FIGURE,
];

/// The figure files for the console's `wrote ...` line.
pub fn figure_files(a: &Analysis) -> String {
    written(a)
        .map(|(stem, _)| format!("{stem}.png/svg"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FIGURES`, then the CKA heatmap where there is a second model to align, then
/// the training view's figure of each size where there is a revision axis.
pub fn written(a: &Analysis) -> impl Iterator<Item = (String, &'static str)> + '_ {
    let training = a.training.iter().flat_map(|v| &v.sizes).map(|s| {
        (
            training::file_stem(&s.label),
            "this size's training view: r by % depth and step, and the |r| peak per step with its CI and the settling step",
        )
    });
    FIGURES
        .into_iter()
        .chain(a.cka.applicable.then_some(cka_alignment::FIGURE))
        .map(|(stem, what)| (stem.to_string(), what))
        .chain(training)
}

/// Writes every figure `written` lists.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    style::register_font();
    comparison::write(a, out)?;
    layer_panels::write(a, out)?;
    geometry::write(a, out)?;
    category_scatter::write(a, out)?;
    peak_positions::write(a, out)?;
    cka_alignment::write(a, out)?;
    training::write(a, out)
}
