//! `cka_alignment`: one heatmap per model against the largest (linear CKA
//! of every layer pair), with each row's best match and the |r| peak's match marked,
//! and a shared colour scale.

use std::path::Path;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::cell_edges;
use super::canvas::{err, save, Figure};
use crate::analysis::results::{Alignment, Analysis};
use crate::stats::cka::CkaPair;
use crate::stats::peaks::first_argmax;

const PANEL: (u32, u32) = (620, 600);
const COLUMNS: usize = 3;
const SCALE_WIDTH: u32 = 150;
const TITLE_HEIGHT: u32 = 64;

type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Viridis for CKA in [0, 1]; grey where CKA is undefined.
fn cka_color(v: f64) -> RGBColor {
    if v.is_finite() {
        ViridisRGB::get_color(v.clamp(0.0, 1.0))
    } else {
        RGBColor(190, 190, 190)
    }
}

/// Cell edges around sampled layers: halfway between neighbours, so that
/// `--layer-step 4` draws cells four layers wide rather than gaps.
fn edges(layers: &[u32]) -> Vec<f64> {
    let l: Vec<f64> = layers.iter().map(|&v| f64::from(v)).collect();
    let first_gap = l.get(1).map_or(1.0, |b| b - l[0]);
    let last_gap = if l.len() > 1 {
        l[l.len() - 1] - l[l.len() - 2]
    } else {
        1.0
    };
    cell_edges(&l, l[0] - first_gap / 2.0, l[l.len() - 1] + last_gap / 2.0)
}

/// Layer numbers as tick labels within the analysed layers; plotters' in-between
/// ticks and those on the outer cell edges stay blank.
fn integer_label(v: f64, layers: &[u32]) -> String {
    let inside = v >= f64::from(layers[0]) && v <= f64::from(layers[layers.len() - 1]);
    if inside && (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

fn panel_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    pair: &CkaPair,
    x: &[f64],
    y: &[f64],
) -> Result<Panel<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} vs {}", pair.model, pair.other),
            ("sans-serif", 20).into_font().style(FontStyle::Bold),
        )
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(x[0]..x[x.len() - 1], y[0]..y[y.len() - 1])
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(10)
        .y_labels(10)
        .x_label_formatter(&|v| integer_label(*v, &pair.other_layers))
        .y_label_formatter(&|v| integer_label(*v, &pair.layers))
        .x_desc(format!("{} layer", pair.other))
        .y_desc(format!("{} layer", pair.model))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The heatmap of one pair, with a dot on each row's best match and a ring around
/// the best match of the |r| peak layer (`peak_layer`).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    pair: &CkaPair,
    peak_layer: Option<u32>,
) -> Result<()> {
    let (x, y) = (edges(&pair.other_layers), edges(&pair.layers));
    let mut chart = panel_chart(area, pair, &x, &y)?;
    let cells = pair.cka.iter().enumerate().flat_map(|(i, row)| {
        let (x, y) = (&x, &y);
        row.iter().enumerate().map(move |(j, &v)| {
            Rectangle::new([(x[j], y[i]), (x[j + 1], y[i + 1])], cka_color(v).filled())
        })
    });
    chart.draw_series(cells).map_err(err)?;
    for (i, row) in pair.cka.iter().enumerate() {
        let j = first_argmax(row, |v| v);
        let centre = ((x[j] + x[j + 1]) / 2.0, (y[i] + y[i + 1]) / 2.0);
        chart
            .draw_series(std::iter::once(Circle::new(centre, 3, WHITE.filled())))
            .map_err(err)?;
        if peak_layer == Some(pair.layers[i]) {
            chart
                .draw_series(std::iter::once(Circle::new(centre, 9, RED.stroke_width(3))))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The colour scale shared by every panel.
fn scale<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(62)
        .margin_right(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_desc("linear CKA")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    let steps = 100;
    chart
        .draw_series((0..steps).map(|k| {
            let (lo, hi) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
            Rectangle::new([(0.0, lo), (1.0, hi)], cka_color(lo).filled())
        }))
        .map_err(err)?;
    Ok(())
}

/// Two lines: what is compared, and what the marks mean.
fn title<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Alignment) -> Result<()> {
    let lines = [
        (
            format!(
                "Linear CKA with {}'s layers (pooling {}, {} statements, raw vectors)",
                c.reference.as_deref().unwrap_or_default(),
                c.pooling,
                c.n_statements
            ),
            ("sans-serif", 20).into_font().style(FontStyle::Bold),
        ),
        (
            "white dot: best match of each row; red ring: best match of the |r| peak layer"
                .to_string(),
            ("sans-serif", 16).into_font(),
        ),
    ];
    for (k, (text, font)) in lines.into_iter().enumerate() {
        area.draw_text(&text, &font.color(&BLACK), (16, 8 + 28 * k as i32))
            .map_err(err)?;
    }
    Ok(())
}

/// One heatmap per smaller model against the largest, beside the shared scale.
struct CkaAlignment<'a> {
    c: &'a Alignment,
    panels: Vec<&'a CkaPair>,
}

impl Figure for CkaAlignment<'_> {
    fn size(&self) -> (u32, u32) {
        let cols = self.panels.len().min(COLUMNS) as u32;
        let rows = self.panels.len().div_ceil(COLUMNS) as u32;
        (PANEL.0 * cols + SCALE_WIDTH, PANEL.1 * rows + TITLE_HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.c;
        let (top, body) = root.split_vertically(TITLE_HEIGHT);
        title(&top, c)?;
        let (heatmaps, bar) = body.split_horizontally(body.dim_in_pixel().0 - SCALE_WIDTH);
        let cols = self.panels.len().min(COLUMNS);
        let rows = self.panels.len().div_ceil(COLUMNS);
        for (area, pair) in heatmaps.split_evenly((rows, cols)).iter().zip(&self.panels) {
            let peak = c
                .depth
                .iter()
                .find(|d| d.model_index == pair.model_index)
                .map(|d| d.peak_layer);
            panel(area, pair, peak)?;
        }
        scale(&bar)
    }
}

/// The heatmap's stem and its line in the report's list of figures.
pub const FIGURE: (&str, &str) = (
    "cka_alignment",
    "linear CKA between every layer of each model and every layer of the largest, the best-matching layer per row and the |r| peak's match marked",
);

/// Writes `cka_alignment.{png,svg}` when there are models to align.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let c = &a.cka;
    let last = a.models.len().saturating_sub(1);
    let panels: Vec<&CkaPair> = c.pairs.iter().filter(|p| p.other_index == last).collect();
    if !c.applicable || panels.is_empty() {
        return Ok(());
    }
    save(&CkaAlignment { c, panels }, out, FIGURE.0)
}
