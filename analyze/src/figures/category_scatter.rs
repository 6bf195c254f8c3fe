//! `category_scatter`: the categories behind r at each model's |r| peak, UA
//! against mean preference, each point named, with the least-squares line.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{frame, Axis};
use super::canvas::{err, panels, panels_size, save, Figure, ALL, PANELS_HEAD};
use super::labels::label_points;
use super::style::{draw_markers, title};
use crate::analysis::results::{Analysis, LayerStats, ModelPooling, PeakEvidence, PoolingResult};
use crate::format::signed;

/// The figure's file stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "category_scatter",
    "the categories behind r at each model's |r| peak: UA against mean preference, each point named, with the least-squares line; a ring marks the category whose removal moves r the most (red where it carries r)",
);

/// Writes the figure of the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let p = a.primary();
    let categories = &a.categories;
    let evidence = &a.peak_evidence;
    save(
        &CategoryScatter {
            p,
            categories,
            evidence,
        },
        out,
        FIGURE.0,
    )
}

/// Each model's categories at its |r| peak layer: what r is computed from.
struct CategoryScatter<'a> {
    p: &'a PoolingResult,
    categories: &'a [String],
    /// Which category each panel rings: the one whose removal moves r the most.
    evidence: &'a [PeakEvidence],
}

const SCATTER: (u32, u32) = (660, 540);

impl Figure for CategoryScatter<'_> {
    fn size(&self) -> (u32, u32) {
        panels_size(self.p.models.len(), SCATTER, PANELS_HEAD)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (rows, cols) = panels(self.p.models.len());
        let (heading, body) = root.split_vertically(PANELS_HEAD);
        title(
            &heading,
            "The categories behind r at each model's |r| peak (line: least squares)",
        )?;
        for (i, (m, area)) in self
            .p
            .models
            .iter()
            .zip(body.split_evenly((rows, cols)))
            .enumerate()
        {
            let e = self.evidence.iter().find(|e| e.model == m.model);
            scatter_panel(&area, m, i, self.categories, e)?;
        }
        Ok(())
    }
}

/// Least-squares slope and intercept; none for fewer than two distinct x.
fn least_squares(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

fn peak_layer(m: &ModelPooling) -> Option<&LayerStats> {
    m.layers.iter().find(|s| s.layer == m.abs_peak.layer)
}

fn scatter_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &ModelPooling,
    i: usize,
    categories: &[String],
    evidence: Option<&PeakEvidence>,
) -> Result<()> {
    let Some(s) = peak_layer(m) else {
        return Ok(());
    };
    let pts: Vec<(f64, f64, &str)> =
        s.ua.iter()
            .zip(&s.pref)
            .zip(categories)
            .filter(|((u, p), _)| u.is_finite() && p.is_finite())
            .map(|((&u, &p), name)| (u, p, name.as_str()))
            .collect();
    let x = Axis::around(&s.ua, "UA = U(A) − U(B)");
    let y = Axis::around(&s.pref, "mean preference, NLL(B) − NLL(A)");
    // The ring marks the category whose removal moves r the most.
    let ring = match evidence {
        Some(e) if e.carried() => ", red ring: carries r",
        Some(_) => ", ring: most influential",
        None => "",
    };
    let heading = format!(
        "{}: layer {} ({:.0}% depth), r = {}{ring}",
        m.model,
        s.layer,
        s.depth_pct,
        signed(s.r)
    );
    let mut chart = frame(area, &heading, &x, &y, ALL)?;
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    if let Some((slope, icpt)) = least_squares(&xy) {
        let (lo, hi) = (x.range.start, x.range.end);
        chart
            .draw_series(LineSeries::new(
                [(lo, icpt + slope * lo), (hi, icpt + slope * hi)],
                BLACK.mix(0.45).stroke_width(2),
            ))
            .map_err(err)?;
    }
    draw_markers(chart.plotting_area(), &xy, i, 5)?;
    if let Some(e) = evidence {
        ring_influential(chart.plotting_area(), e, &pts)?;
    }
    let names: Vec<&str> = pts.iter().map(|p| p.2).collect();
    label_points(area, &chart, &xy, &names)
}

/// Rings the most influential category's point: red and thick where it carries r.
fn ring_influential<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    area: &DrawingArea<DB, CT>,
    e: &PeakEvidence,
    pts: &[(f64, f64, &str)],
) -> Result<()> {
    let Some(&(x, y, _)) = pts
        .iter()
        .find(|p| Some(p.2) == e.influential_category.as_deref())
    else {
        return Ok(());
    };
    let style = if e.carried() {
        RED.stroke_width(3)
    } else {
        BLACK.mix(0.6).stroke_width(1)
    };
    area.draw(&Circle::new((x, y), 11, style)).map_err(err)
}
