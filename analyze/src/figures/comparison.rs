//! `scaling_comparison`: every model's r against layer (left) and % depth (right)
//! in one overlay, the seed's figure.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{frame, zero_line, Axis};
use super::canvas::{err, save, Figure, ALL};
use super::key::{draw_key, key_height, model_key, texts};
use super::series::curve;
use super::style::{color, draw_markers};
use crate::analysis::results::{Analysis, PoolingResult};

/// The figure's file stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "scaling_comparison",
    "r against layer and against % depth, one line per model (the seed's figure)",
);

/// Writes the figure of the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    save(&Comparison(a.primary()), out, FIGURE.0)
}

/// The overlay: every model's r against layer (left) and % depth (right), thin
/// lines and no bands, so that the lines stay readable however many models.
struct Comparison<'a>(&'a PoolingResult);

const COMPARISON_PLOTS: (u32, u32) = (2400, 820);

impl Figure for Comparison<'_> {
    fn size(&self) -> (u32, u32) {
        let (w, h) = COMPARISON_PLOTS;
        (w, h + key_height(&texts(&model_key(self.0)), w))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (plots, key) = root.split_vertically(COMPARISON_PLOTS.1);
        let (left, right) = plots.split_horizontally(COMPARISON_PLOTS.0 / 2);
        let max_layers = self.0.models.iter().map(|m| m.n_layers).max();
        overlay(&left, self.0, &Axis::layers(max_layers.unwrap_or(1)), false)?;
        overlay(&right, self.0, &Axis::depth(), true)?;
        draw_key(&key, &model_key(self.0))
    }
}

fn overlay<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &PoolingResult,
    x: &Axis,
    by_depth: bool,
) -> Result<()> {
    let title = if by_depth {
        "r(UA, output preference) by relative depth"
    } else {
        "r(UA, output preference) by layer"
    };
    let mut chart = frame(area, title, x, &Axis::r(), ALL)?;
    zero_line(&mut chart, x)?;
    for (i, m) in p.models.iter().enumerate() {
        let pts = curve(m, by_depth);
        draw_markers(chart.plotting_area(), &pts, i, 3)?;
        chart
            .draw_series(LineSeries::new(pts, color(i).stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}
