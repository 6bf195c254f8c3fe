//! `geometry`: one panel per model, r against % depth in every geometry the
//! robustness check computed, beside the raw vectors' anisotropy (the mean cosine
//! between statements and the share of the squared norm in the top dimensions), so
//! that a reader sees the rogue dimensions next to the peak they move.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{frame, zero_line, Axis};
use super::canvas::{err, panels, panels_size, save, shared_show, Figure, PANELS_HEAD};
use super::key::{draw_key, key_height, texts, Swatch};
use super::series::curve;
use super::style::{color, title};
use crate::analysis::results::{Analysis, ModelPooling};
use schemas::geometry::TOP_DIMS;

/// The figure's file stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "geometry",
    "one panel per model: r against % depth in each geometry computed (raw, centred, standardised), with the raw vectors' mean cosine between statements and the share of their squared norm in the top dimensions",
);

pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    save(&GeometryPanels { a }, out, FIGURE.0)
}

struct GeometryPanels<'a> {
    a: &'a Analysis,
}

const PANEL: (u32, u32) = (620, 440);
const MEAN_COSINE: RGBColor = RGBColor(0x80, 0x80, 0x80);

/// Each geometry's colour: the palette's black, vermillion and green.
fn geometry_color(name: &str) -> RGBColor {
    match name {
        "raw" => color(6),
        "centred" => color(3),
        _ => color(2),
    }
}

impl GeometryPanels<'_> {
    /// The views drawn: the primary and the other geometries of its pooling.
    fn views(&self) -> Vec<usize> {
        std::iter::once(0)
            .chain(self.a.robustness.checks.iter().map(|c| c.view))
            .collect()
    }

    fn key(&self) -> Vec<(Swatch, String)> {
        let mut k: Vec<(Swatch, String)> = self
            .views()
            .into_iter()
            .map(|v| {
                let g = &self.a.poolings[v].geometry;
                (
                    Swatch::Line(geometry_color(g), 2),
                    format!("r, {g} vectors"),
                )
            })
            .collect();
        k.push((Swatch::Line(MEAN_COSINE, 1), "mean cosine (raw)".into()));
        k.push((
            Swatch::Line(color(4), 1),
            format!("top-{TOP_DIMS} dimensions' share of |x|² (raw)"),
        ));
        k
    }
}

impl Figure for GeometryPanels<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.a.primary().models.len();
        let w = panels_size(n, PANEL, 0).0;
        panels_size(n, PANEL, PANELS_HEAD + key_height(&texts(&self.key()), w))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.a.primary().models.len();
        let (rows, cols) = panels(n);
        let head = self.size().1 - PANEL.1 * rows as u32;
        let (top, body) = root.split_vertically(head);
        let (heading, key) = top.split_vertically(PANELS_HEAD);
        title(&heading, "r by geometry, and the raw vectors' anisotropy")?;
        draw_key(&key, &self.key())?;
        let views = self.views();
        for (i, area) in body.split_evenly((rows, cols)).iter().enumerate().take(n) {
            let models: Vec<(&str, &ModelPooling)> = views
                .iter()
                .map(|&v| {
                    (
                        self.a.poolings[v].geometry.as_str(),
                        &self.a.poolings[v].models[i],
                    )
                })
                .collect();
            panel(area, &models, shared_show(i, n))?;
        }
        Ok(())
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    models: &[(&str, &ModelPooling)],
    show: super::canvas::Show,
) -> Result<()> {
    let primary = models[0].1;
    let x = Axis::depth();
    let heading = format!("{} ({} layers)", primary.model, primary.n_layers);
    let mut chart = frame(area, &heading, &x, &Axis::r(), show)?;
    zero_line(&mut chart, &x)?;
    let anisotropy = |f: fn(&schemas::geometry::Anisotropy) -> f64| -> Vec<(f64, f64)> {
        primary
            .layers
            .iter()
            .filter_map(|s| s.anisotropy.as_ref().map(|a| (s.depth_pct, f(a))))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    chart
        .draw_series(LineSeries::new(
            anisotropy(|a| a.mean_cosine),
            MEAN_COSINE.stroke_width(1),
        ))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            anisotropy(|a| a.top_share),
            color(4).stroke_width(1),
        ))
        .map_err(err)?;
    for (g, m) in models {
        let c = geometry_color(g);
        chart
            .draw_series(LineSeries::new(curve(m, true), c.stroke_width(2)))
            .map_err(err)?;
        let peak = (m.abs_peak.pct, m.abs_peak.r);
        chart
            .draw_series([Circle::new(peak, 5, c.filled())])
            .map_err(err)?;
    }
    Ok(())
}
