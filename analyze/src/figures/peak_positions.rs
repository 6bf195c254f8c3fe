//! `peak_positions`: each model's |r| peak position with its bootstrap CI, beside
//! the seed's max positive r peak.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{frame, Axis, Chart};
use super::canvas::{err, save, Figure, ALL};
use super::key::{draw_key, key_height, texts, Swatch};
use super::style::color;
use crate::analysis::results::{Analysis, ModelPooling, PoolingResult};

/// The figure's file stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "peak_positions",
    "each model's |r| peak position with its 95% bootstrap CI, beside the seed's max positive r peak",
);

/// Writes the figure of the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let p = a.primary();
    let threshold = a.settings.stability_threshold;
    save(&PeakPositions { p, threshold }, out, FIGURE.0)
}

/// Each model's |r| peak position with its bootstrap CI, beside the seed's max
/// positive r peak.
struct PeakPositions<'a> {
    p: &'a PoolingResult,
    threshold: f64,
}

const PEAKS_PLOT_H: u32 = 680;

impl PeakPositions<'_> {
    fn key(&self) -> Vec<(Swatch, String)> {
        let mean = self.p.abs_peak_analysis.mean_peak_pct;
        vec![
            (Swatch::Dot, "|r| peak, 95% CI".to_string()),
            (
                Swatch::Ring,
                "seed's max positive r peak, 95% CI".to_string(),
            ),
            (Swatch::Rule, format!("mean |r| peak ({mean:.0}%)")),
        ]
    }

    fn caption(&self) -> String {
        let p = self.p;
        match (&p.stability_abs, p.abs_peak_analysis.std_peak_pct) {
            (Some(s), Some(std)) => format!(
                "Peak position of |r| (std {std:.1} pts; stable (<{}) in {:.0}% of resamples)",
                self.threshold,
                s.share_stable * 100.0
            ),
            (None, Some(std)) => format!("Peak position of |r| (std {std:.1} pts across models)"),
            _ => "Peak position of |r| (one model: no cross-model verdict)".to_string(),
        }
    }
}

impl Figure for PeakPositions<'_> {
    fn size(&self) -> (u32, u32) {
        let w = (300 + 170 * self.p.models.len() as u32).max(1100);
        (w, PEAKS_PLOT_H + key_height(&texts(&self.key()), w))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (plot, key) = root.split_vertically(PEAKS_PLOT_H);
        let names = self.p.models.iter().map(|m| m.model.clone()).collect();
        let x = Axis::names(names, "Model (ordered by parameter count)");
        let y = Axis::numeric(0.0..100.0, 0.04, 11, 1.0, "Peak position (% of depth)");
        let mut chart = frame(&plot, &self.caption(), &x, &y, ALL)?;
        let mean = self.p.abs_peak_analysis.mean_peak_pct;
        chart
            .draw_series(LineSeries::new(
                [(x.range.start, mean), (x.range.end, mean)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err)?;
        // The two marks of a model sit a fixed number of pixels apart.
        let apart = 12.0 / f64::from(chart.plotting_area().dim_in_pixel().0.max(1));
        let dx = apart * (x.range.end - x.range.start);
        for (i, m) in self.p.models.iter().enumerate() {
            peak_marks(&mut chart, m, [i as f64 - dx, i as f64 + dx], color(i))?;
        }
        draw_key(&key, &self.key())
    }
}

fn peak_marks<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    m: &ModelPooling,
    [abs_x, pos_x]: [f64; 2],
    c: RGBColor,
) -> Result<()> {
    if let Some(b) = &m.peak_bootstrap {
        error_bar(chart, abs_x, b.abs_pct_ci, c.stroke_width(3))?;
        error_bar(chart, pos_x, b.max_pos_pct_ci, c.mix(0.6).stroke_width(2))?;
    }
    chart
        .draw_series([
            Circle::new((abs_x, m.abs_peak.pct), 7, c.filled()),
            Circle::new((pos_x, m.seed_summary.max_pos_pct), 6, c.stroke_width(2)),
        ])
        .map_err(err)?;
    Ok(())
}

/// A vertical CI bar with caps.
fn error_bar<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    x: f64,
    ci: [f64; 2],
    style: ShapeStyle,
) -> Result<()> {
    if !(ci[0].is_finite() && ci[1].is_finite()) {
        return Ok(());
    }
    chart
        .draw_series([PathElement::new(vec![(x, ci[0]), (x, ci[1])], style)])
        .map_err(err)?;
    let cap = |y: f64| EmptyElement::at((x, y)) + PathElement::new(vec![(-8, 0), (8, 0)], style);
    chart.draw_series([cap(ci[0]), cap(ci[1])]).map_err(err)?;
    Ok(())
}
