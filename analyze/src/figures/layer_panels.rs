//! `layer_panels`: one panel per model on shared axes, r against % depth with
//! its bootstrap band and its peaks.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{frame, zero_line, Axis, Chart};
use super::canvas::{err, panels, panels_size, save, shared_show, Figure, Show, PANELS_HEAD};
use super::key::{draw_key, key_height, texts, Swatch};
use super::series::{band, curve};
use super::style::{color, font, title};
use crate::analysis::results::{Analysis, ModelPooling, PoolingResult};
use crate::format::signed;

/// The figure's file stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "layer_panels",
    "one panel per model on shared axes: r against % depth with its 95% bootstrap band, the |r| peak (filled dot) and the max positive r (ring)",
);

/// Writes the figure of the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let p = a.primary();
    let resamples = a.settings.bootstrap;
    save(&LayerPanels { p, resamples }, out, FIGURE.0)
}

/// Small multiples: one panel per model on the same axes, with its bootstrap band
/// and its peaks.
struct LayerPanels<'a> {
    p: &'a PoolingResult,
    resamples: usize,
}

const PANEL: (u32, u32) = (620, 440);

impl LayerPanels<'_> {
    fn key(&self) -> Vec<(Swatch, String)> {
        let mut k = Vec::new();
        if self.p.models.iter().any(|m| m.peak_bootstrap.is_some()) {
            let text = format!("95% bootstrap CI of r ({} resamples)", self.resamples);
            k.push((Swatch::Band, text));
        }
        k.push((Swatch::Dot, "|r| peak".to_string()));
        k.push((Swatch::Ring, "max positive r (the seed's peak)".to_string()));
        k
    }
}

impl Figure for LayerPanels<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.p.models.len();
        let w = panels_size(n, PANEL, 0).0;
        panels_size(n, PANEL, PANELS_HEAD + key_height(&texts(&self.key()), w))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (rows, cols) = panels(self.p.models.len());
        let head = self.size().1 - PANEL.1 * rows as u32;
        let (top, body) = root.split_vertically(head);
        let (heading, key) = top.split_vertically(PANELS_HEAD);
        title(
            &heading,
            "r(UA, output preference) against depth, one panel per model",
        )?;
        draw_key(&key, &self.key())?;
        let n = self.p.models.len();
        for (i, (m, area)) in self
            .p
            .models
            .iter()
            .zip(body.split_evenly((rows, cols)))
            .enumerate()
        {
            layer_panel(&area, m, i, shared_show(i, n))?;
        }
        Ok(())
    }
}

fn layer_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &ModelPooling,
    i: usize,
    show: Show,
) -> Result<()> {
    let x = Axis::depth();
    let heading = format!("{} ({} layers)", m.model, m.n_layers);
    let mut chart = frame(area, &heading, &x, &Axis::r(), show)?;
    zero_line(&mut chart, &x)?;
    let c = color(i);
    let b = band(m);
    if b.len() >= 4 {
        chart
            .draw_series(std::iter::once(Polygon::new(b, c.mix(0.2).filled())))
            .map_err(err)?;
    }
    chart
        .draw_series(LineSeries::new(curve(m, true), c.stroke_width(2)))
        .map_err(err)?;
    mark_peaks(&mut chart, m, c)
}

/// The |r| peak as a dot named by its layer and r, the max positive r as a ring
/// (a ring around the dot when they coincide).
fn mark_peaks<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    m: &ModelPooling,
    c: RGBColor,
) -> Result<()> {
    let s = &m.seed_summary;
    let ring = (s.max_pos_pct, s.max_pos_r);
    let peak = (m.abs_peak.pct, m.abs_peak.r);
    chart
        .draw_series([Circle::new(ring, 9, BLACK.stroke_width(2))])
        .map_err(err)?;
    chart
        .draw_series([
            Circle::new(peak, 6, c.filled()),
            Circle::new(peak, 6, BLACK.stroke_width(1)),
        ])
        .map_err(err)?;
    // The note sits toward the middle of the panel, away from the frame.
    let (h, dx) = if peak.0 < 60.0 {
        (HPos::Left, 12)
    } else {
        (HPos::Right, -12)
    };
    let (v, dy) = if peak.1 >= 0.0 {
        (VPos::Top, 12)
    } else {
        (VPos::Bottom, -12)
    };
    let note = format!("L{}, r = {}", m.abs_peak.layer, signed(m.abs_peak.r));
    let style = font(15).pos(Pos::new(h, v));
    let (w, ht) = chart
        .plotting_area()
        .estimate_text_size(&note, &style)
        .map_err(err)?;
    let (w, ht) = (w as i32 + 6, ht as i32 + 4);
    // A pale box keeps the note legible where it crosses the line or the band.
    let x0 = if dx > 0 { dx - 3 } else { dx - w + 3 };
    let y0 = if dy > 0 { dy - 2 } else { dy - ht + 2 };
    let backing = Rectangle::new([(x0, y0), (x0 + w, y0 + ht)], WHITE.mix(0.8).filled());
    chart
        .draw_series([EmptyElement::at(peak) + backing + Text::new(note, (dx, dy), style)])
        .map_err(err)?;
    Ok(())
}
