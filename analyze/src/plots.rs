//! Figures (PNG and SVG) of the primary pooling: every model's r against layer and
//! depth in one overlay, the same one panel per model with its bootstrap band and
//! peaks, the category points behind r at each model's |r| peak, and the peak
//! positions with their bootstrap CIs.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analysis::{Analysis, LayerStats, ModelPooling, PoolingResult};

/// The figures `write` produces, each as .png and .svg, with what each shows.
pub const FIGURES: [(&str, &str); 4] = [
    (
        "scaling_comparison",
        "r against layer and against % depth, one line per model (the seed's figure)",
    ),
    (
        "layer_panels",
        "one panel per model on shared axes: r against % depth with its 95% bootstrap band, the |r| peak (filled dot) and the max positive r (ring)",
    ),
    (
        "category_scatter",
        "the categories behind r at each model's |r| peak: UA against mean preference, each point named, with the least-squares line",
    ),
    (
        "peak_positions",
        "each model's |r| peak position with its 95% bootstrap CI, beside the seed's max positive r peak",
    ),
];

/// The report's list of figures.
pub fn figure_list(a: &Analysis) -> String {
    let mut s = String::from("## Figures\n\n");
    for (stem, what) in written(a) {
        s.push_str(&format!("- `{stem}.png` (and `.svg`): {what}.\n"));
    }
    s
}

/// The figure files for the console's `wrote ...` line.
pub fn figure_files(a: &Analysis) -> String {
    written(a)
        .map(|(stem, _)| format!("{stem}.png/svg"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FIGURES`, then the CKA heatmap where there is a second model to align, then
/// the training view's figure of each size where there is a revision axis.
fn written(a: &Analysis) -> impl Iterator<Item = (String, &'static str)> + '_ {
    let training = a.training.iter().flat_map(|v| &v.sizes).map(|s| {
        (
            crate::plots_training::file_stem(&s.label),
            "this size's training view: r by % depth and step, and the |r| peak per step with its CI and the settling step",
        )
    });
    FIGURES
        .into_iter()
        .chain(a.cka.applicable.then_some(crate::cka_plot::FIGURE))
        .map(|(stem, what)| (stem.to_string(), what))
        .chain(training)
}

/// Okabe and Ito's colour-blind-safe palette without its yellow, which is too faint
/// on white for thin lines; models take the colours in size order, and beyond seven
/// the marker shape (four kinds) keeps them apart.
const COLORS: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xd5, 0x5e, 0x00),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0x00, 0x00, 0x00),
];

static FONT: Once = Once::new();

/// Registers the DejaVu Sans font shipped in `analyze/assets` as "sans-serif".
pub fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bytes);
    });
}

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

fn bold(size: u32) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK)
}

// ---------------------------------------------------------------- ticks and axes

/// A tick label with `decimals` digits; anything that rounds to zero reads "0",
/// never "-0.0".
fn tick_label(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .bytes()
        .all(|b| b == b'0' || b == b'.')
    {
        "0".to_string()
    } else {
        s
    }
}

/// The round step (1, 2 or 5 times a power of ten, at least `min_step`) that puts
/// at most `max_ticks` ticks on `span`.
fn nice_step(span: f64, max_ticks: usize, min_step: f64) -> f64 {
    let raw = span / (max_ticks.max(2) - 1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    step.max(min_step)
}

/// One axis: its range, where its ticks sit and how they read.
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
    decimals: usize,
    /// Tick i reads `names[i]` when set (a categorical axis).
    names: Vec<String>,
    desc: String,
}

impl Axis {
    /// Ticks every round step over `data`, the range padded by `pad` of its span on
    /// each side; `min_step` 1 keeps ticks on integers.
    fn numeric(data: Range<f64>, pad: f64, max_ticks: usize, min_step: f64, desc: &str) -> Axis {
        let span = data.end - data.start;
        let step = nice_step(span, max_ticks, min_step);
        let range = data.start - pad * span..data.end + pad * span;
        let first = (range.start / step).ceil() as i64;
        let last = (range.end / step).floor() as i64;
        Axis {
            ticks: (first..=last).map(|k| k as f64 * step).collect(),
            decimals: (-step.log10().floor()).max(0.0) as usize,
            range,
            names: Vec::new(),
            desc: desc.to_string(),
        }
    }

    fn r() -> Axis {
        Axis::numeric(-1.0..1.0, 0.04, 5, 0.0, "r(UA, output preference)")
    }

    fn depth() -> Axis {
        Axis::numeric(0.0..100.0, 0.03, 6, 1.0, "Layer position (% of depth)")
    }

    fn layers(n_layers: u32) -> Axis {
        Axis::numeric(0.0..f64::from(n_layers.max(1)), 0.02, 10, 1.0, "Layer")
    }

    /// Padded around the finite `values`, so that points and their labels fit.
    fn around(values: &[f64], desc: &str) -> Axis {
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let lo = finite.clone().fold(f64::INFINITY, f64::min);
        let hi = finite.fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
        // A flat axis still needs a span for the ticks to divide.
        let half = if hi > lo {
            0.0
        } else {
            lo.abs().max(1e-3) * 0.1
        };
        Axis::numeric(lo - half..hi + half, 0.12, 5, 0.0, desc)
    }

    /// Models at 0, 1, ... named on the axis.
    fn names(names: Vec<String>, desc: &str) -> Axis {
        Axis {
            range: -0.5..names.len() as f64 - 0.5,
            ticks: (0..names.len()).map(|i| i as f64).collect(),
            decimals: 0,
            names,
            desc: desc.to_string(),
        }
    }

    fn coord(&self) -> Ticked {
        Ticked {
            range: self.range.clone().into(),
            ticks: self.ticks.clone(),
        }
    }

    fn label(&self, v: f64) -> String {
        if self.names.is_empty() {
            return tick_label(v, self.decimals);
        }
        let i = v.round().max(0.0) as usize;
        self.names.get(i).cloned().unwrap_or_default()
    }

    /// Pixels beside the plot for the widest tick label and the description.
    fn room(&self) -> u32 {
        let widest = self.ticks.iter().map(|&t| self.label(t).len()).max();
        40 + 9 * widest.unwrap_or(1) as u32
    }
}

/// An f64 axis ticked exactly at the given values, without light lines: plotters'
/// own choice puts ticks such as "2.5" on layers.
struct Ticked {
    range: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(v, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.range()
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// Which axes of a panel carry tick labels and a description: in a grid of panels
/// on shared axes only the outer ones do.
#[derive(Clone, Copy)]
struct Show {
    x: bool,
    y: bool,
}

const ALL: Show = Show { x: true, y: true };

/// A titled chart with the axes' own ticks; hidden labels keep their room so that
/// the panels of a grid line up.
fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: &Axis,
    y: &Axis,
    show: Show,
) -> Result<Chart<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, bold(19))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(y.room())
        .build_cartesian_2d(x.coord(), y.coord())
        .map_err(err)?;
    let fx = |v: &f64| if show.x { x.label(*v) } else { String::new() };
    let fy = |v: &f64| if show.y { y.label(*v) } else { String::new() };
    chart
        .configure_mesh()
        .x_desc(if show.x { x.desc.as_str() } else { "" })
        .y_desc(if show.y { y.desc.as_str() } else { "" })
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style(font(16))
        .axis_desc_style(font(17))
        .bold_line_style(BLACK.mix(0.08))
        .axis_style(BLACK.mix(0.6))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn zero_line<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, x: &Axis) -> Result<()> {
    chart
        .draw_series(LineSeries::new(
            [(x.range.start, 0.0), (x.range.end, 0.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(err)?;
    Ok(())
}

// ---------------------------------------------------------------- marks and keys

/// Model `i`'s marker (one of four shapes) at `at`, `s` pixels across its middle;
/// on a chart's plotting area or in a key alike.
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    i: usize,
    s: i32,
    style: ShapeStyle,
) -> Result<()>
where
    CT::From: Clone,
{
    let at = EmptyElement::at(at);
    match i % 4 {
        0 => area.draw(&(at + Circle::new((0, 0), s, style))),
        1 => area.draw(&(at + Rectangle::new([(-s, -s), (s, s)], style))),
        2 => area.draw(&(at + TriangleMarker::new((0, 0), s + 1, style))),
        _ => {
            let d = s + 1;
            area.draw(&(at + Polygon::new(vec![(0, -d), (d, 0), (0, d), (-d, 0)], style)))
        }
    }
    .map_err(err)
}

fn draw_markers<DB: DrawingBackend>(
    chart: &Chart<'_, DB>,
    pts: &[(f64, f64)],
    i: usize,
    s: i32,
) -> Result<()> {
    for &p in pts {
        draw_marker(chart.plotting_area(), p, i, s, color(i).filled())?;
    }
    Ok(())
}

/// What a key entry shows beside its text.
enum Swatch {
    /// Model i's line and marker.
    Model(usize),
    /// A shaded band.
    Band,
    /// A filled dot (the |r| peak).
    Dot,
    /// A ring (the max positive r).
    Ring,
    /// A thin grey rule (a reference line).
    Rule,
}

const KEY_ROW: i32 = 30;
const SWATCH: i32 = 36;

/// DejaVu Sans at 16 px is under 8 px a character; the key is laid out before
/// any text is measured, so the layout and the figure's size agree.
fn entry_width(text: &str) -> i32 {
    SWATCH + 8 + 8 * text.chars().count() as i32 + 28
}

/// Each entry's top-left corner: rows filled left to right, each row centred.
fn key_layout(texts: &[String], width: i32) -> Vec<(i32, i32)> {
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    let mut used = 0;
    for (i, t) in texts.iter().enumerate() {
        let w = entry_width(t);
        if used + w > width - 20 && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(Vec::new());
            used = 0;
        }
        rows.last_mut().expect("one row").push(i);
        used += w;
    }
    let mut at = vec![(0, 0); texts.len()];
    for (r, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|&i| entry_width(&texts[i])).sum();
        let mut x = ((width - total) / 2).max(10);
        for &i in row {
            at[i] = (x, 8 + r as i32 * KEY_ROW);
            x += entry_width(&texts[i]);
        }
    }
    at
}

fn key_height(texts: &[String], width: u32) -> u32 {
    let rows = key_layout(texts, width as i32)
        .iter()
        .map(|&(_, y)| y)
        .max()
        .map_or(0, |y| (y - 8) / KEY_ROW + 1);
    (rows * KEY_ROW + 16) as u32
}

fn draw_swatch<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    s: &Swatch,
) -> Result<()> {
    let mid = (x + SWATCH / 2, y);
    match *s {
        Swatch::Model(i) => {
            area.draw(&PathElement::new(
                [(x, y), (x + SWATCH, y)],
                color(i).stroke_width(2),
            ))
            .map_err(err)?;
            return draw_marker(area, mid, i, 4, color(i).filled());
        }
        Swatch::Band => area.draw(&Rectangle::new(
            [(x, y - 8), (x + SWATCH, y + 8)],
            BLACK.mix(0.15).filled(),
        )),
        Swatch::Dot => area.draw(&Circle::new(mid, 6, BLACK.filled())),
        Swatch::Ring => area.draw(&Circle::new(mid, 8, BLACK.stroke_width(2))),
        Swatch::Rule => area.draw(&PathElement::new(
            [(x, y), (x + SWATCH, y)],
            BLACK.mix(0.4).stroke_width(1),
        )),
    }
    .map_err(err)
}

/// A key drawn below (or above) the plots, so that it never covers data.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(Swatch, String)],
) -> Result<()> {
    let at = key_layout(&texts(entries), area.dim_in_pixel().0 as i32);
    for ((swatch, text), (x, y)) in entries.iter().zip(at) {
        let y = y + KEY_ROW / 2;
        draw_swatch(area, (x, y), swatch)?;
        let style = font(16).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(text.clone(), (x + SWATCH + 8, y), style))
            .map_err(err)?;
    }
    Ok(())
}

fn model_key(p: &PoolingResult) -> Vec<(Swatch, String)> {
    p.models
        .iter()
        .enumerate()
        .map(|(i, m)| (Swatch::Model(i), m.model.clone()))
        .collect()
}

fn texts(entries: &[(Swatch, String)]) -> Vec<String> {
    entries.iter().map(|(_, t)| t.clone()).collect()
}

/// A figure title across the top of `area`.
fn title<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str) -> Result<()> {
    let x = area.dim_in_pixel().0 as i32 / 2;
    let style = bold(22).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(text.to_string(), (x, 12), style))
        .map_err(err)
}

// ---------------------------------------------------------------- figures

/// A figure drawn the same way on the PNG and on the SVG backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

fn render<DB: DrawingBackend>(fig: &impl Figure, root: DrawingArea<DB, Shift>) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    fig.draw(&root)?;
    root.present().map_err(err)
}

fn save(fig: &impl Figure, out: &Path, stem: &str) -> Result<()> {
    let path = out.join(stem);
    let size = fig.size();
    render(
        fig,
        BitMapBackend::new(&path.with_extension("png"), size).into_drawing_area(),
    )?;
    render(
        fig,
        SVGBackend::new(&path.with_extension("svg"), size).into_drawing_area(),
    )
}

/// Rows and columns for `n` panels: one row up to three, then near square.
fn grid(n: usize) -> (usize, usize) {
    let cols = if n <= 3 {
        n.max(1)
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    (n.div_ceil(cols), cols)
}

/// Panel `i` of a grid on shared axes: y labels on the left column, x labels on
/// the lowest panel of each column.
fn shared_show(i: usize, n: usize) -> Show {
    let cols = grid(n).1;
    Show {
        x: i + cols >= n,
        y: i.is_multiple_of(cols),
    }
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

fn curve(m: &ModelPooling, by_depth: bool) -> Vec<(f64, f64)> {
    m.layers
        .iter()
        .filter(|s| s.r.is_finite())
        .map(|s| {
            let x = if by_depth {
                s.depth_pct
            } else {
                f64::from(s.layer)
            };
            (x, s.r)
        })
        .collect()
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
        draw_markers(&chart, &pts, i, 3)?;
        chart
            .draw_series(LineSeries::new(pts, color(i).stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

/// Small multiples: one panel per model on the same axes, with its bootstrap band
/// and its peaks.
struct LayerPanels<'a> {
    p: &'a PoolingResult,
    resamples: usize,
}

const PANEL: (u32, u32) = (620, 440);

/// Wide enough for a figure title and its key whatever the number of panels.
const MIN_WIDTH: u32 = 1000;

/// The pixel size of a figure holding `n` panels of `panel` below a `head`.
fn grid_size(n: usize, panel: (u32, u32), head: u32) -> (u32, u32) {
    let (rows, cols) = grid(n);
    (
        (panel.0 * cols as u32).max(MIN_WIDTH),
        head + panel.1 * rows as u32,
    )
}
const PANELS_HEAD: u32 = 56;

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
        let w = grid_size(n, PANEL, 0).0;
        grid_size(n, PANEL, PANELS_HEAD + key_height(&texts(&self.key()), w))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (rows, cols) = grid(self.p.models.len());
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

/// The band between each layer's bootstrap bounds, where the bootstrap ran.
fn band(m: &ModelPooling) -> Vec<(f64, f64)> {
    let bounded = || {
        m.layers
            .iter()
            .filter(|s| s.ci_low.is_finite() && s.ci_high.is_finite())
    };
    bounded()
        .map(|s| (s.depth_pct, s.ci_high))
        .chain(bounded().rev().map(|s| (s.depth_pct, s.ci_low)))
        .collect()
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

/// r with two decimals and an explicit sign ("+0.84", "-0.62"; zero reads "0.00").
fn signed(r: f64) -> String {
    let s = format!("{r:+.2}");
    if s == "-0.00" || s == "+0.00" {
        "0.00".to_string()
    } else {
        s
    }
}

/// Each model's categories at its |r| peak layer: what r is computed from.
struct CategoryScatter<'a> {
    p: &'a PoolingResult,
    categories: &'a [String],
}

const SCATTER: (u32, u32) = (660, 540);

impl Figure for CategoryScatter<'_> {
    fn size(&self) -> (u32, u32) {
        grid_size(self.p.models.len(), SCATTER, PANELS_HEAD)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (rows, cols) = grid(self.p.models.len());
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
            scatter_panel(&area, m, i, self.categories)?;
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
    let heading = format!(
        "{}: layer {} ({:.0}% depth), r = {}",
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
    draw_markers(&chart, &xy, i, 5)?;
    let names: Vec<&str> = pts.iter().map(|p| p.2).collect();
    label_points(area, &chart, &xy, &names)
}

/// Category names beside their points, each where it overlaps nothing and stays
/// inside the plot when it can (never outside it).
fn label_points<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    xy: &[(f64, f64)],
    names: &[&str],
) -> Result<()> {
    let style = font(14);
    let px: Vec<(i32, i32)> = xy.iter().map(|p| chart.backend_coord(p)).collect();
    let sizes = names
        .iter()
        .map(|n| {
            area.estimate_text_size(n, &style)
                .map(|(w, h)| (w as i32, h as i32))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let boxes = place_labels(&px, &sizes, [xr.start, yr.start, xr.end, yr.end]);
    let (bx, by) = area.get_base_pixel();
    for (name, b) in names.iter().zip(boxes) {
        let at = (b[0] - bx, b[1] - by);
        let style = style.pos(Pos::new(HPos::Left, VPos::Top));
        area.draw(&Text::new(name.to_string(), at, style))
            .map_err(err)?;
    }
    Ok(())
}

/// A box in pixels: left, top, right, bottom.
type Px = [i32; 4];

fn overlap(a: &Px, b: &Px) -> i64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0);
    i64::from(w) * i64::from(h)
}

/// The area of `b` outside `bounds`.
fn outside(b: &Px, bounds: &Px) -> i64 {
    let area = i64::from(b[2] - b[0]) * i64::from(b[3] - b[1]);
    area - overlap(b, bounds)
}

/// Boxes beside a point at (x, y) for a label of size (w, h): right, left, above,
/// below, then the four diagonals.
fn candidates((x, y): (i32, i32), (w, h): (i32, i32)) -> [Px; 8] {
    let g = 8;
    let (cx, cy) = (x - w / 2, y - h / 2);
    [
        [x + g, cy, x + g + w, cy + h],
        [x - g - w, cy, x - g, cy + h],
        [cx, y - g - h, cx + w, y - g],
        [cx, y + g, cx + w, y + g + h],
        [x + g / 2, y - g / 2 - h, x + g / 2 + w, y - g / 2],
        [x - g / 2 - w, y - g / 2 - h, x - g / 2, y - g / 2],
        [x + g / 2, y + g / 2, x + g / 2 + w, y + g / 2 + h],
        [x - g / 2 - w, y + g / 2, x - g / 2, y + g / 2 + h],
    ]
}

/// Greedy placement, point by point: the candidate box that least covers the
/// labels already placed and the points, with leaving `bounds` worst of all; then
/// shifted inside `bounds`, so that no label is ever clipped.
fn place_labels(points: &[(i32, i32)], sizes: &[(i32, i32)], bounds: Px) -> Vec<Px> {
    let dots: Vec<Px> = points
        .iter()
        .map(|&(x, y)| [x - 6, y - 6, x + 6, y + 6])
        .collect();
    let mut placed: Vec<Px> = Vec::new();
    for (&p, &size) in points.iter().zip(sizes) {
        let cost = |b: &Px| {
            let covered: i64 = placed.iter().chain(&dots).map(|o| overlap(b, o)).sum();
            covered + 100 * outside(b, &bounds)
        };
        let best = candidates(p, size)
            .into_iter()
            .min_by_key(cost)
            .expect("eight candidates");
        placed.push(clamp(best, &bounds));
    }
    placed
}

fn clamp(b: Px, bounds: &Px) -> Px {
    let dx = (bounds[0] - b[0]).max(0) - (b[2] - bounds[2]).max(0);
    let dy = (bounds[1] - b[1]).max(0) - (b[3] - bounds[3]).max(0);
    [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
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

/// Writes every figure of `FIGURES` for the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    register_font();
    let p = a.primary();
    save(&Comparison(p), out, "scaling_comparison")?;
    let resamples = a.settings.bootstrap;
    save(&LayerPanels { p, resamples }, out, "layer_panels")?;
    let categories = &a.categories;
    save(&CategoryScatter { p, categories }, out, "category_scatter")?;
    let threshold = a.settings.stability_threshold;
    save(&PeakPositions { p, threshold }, out, "peak_positions")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &Axis) -> Vec<String> {
        a.ticks.iter().map(|&t| a.label(t)).collect()
    }

    #[test]
    fn zero_never_reads_negative() {
        assert_eq!(tick_label(-0.0, 1), "0");
        assert_eq!(tick_label(-0.004, 2), "0");
        assert_eq!(tick_label(0.0, 0), "0");
        assert_eq!(tick_label(-0.5, 1), "-0.5");
        assert_eq!(labels(&Axis::r()), ["-1.0", "-0.5", "0", "0.5", "1.0"]);
        let around = Axis::around(&[-0.3, -0.1, 0.2], "");
        assert!(labels(&around)
            .iter()
            .all(|l| !l.starts_with("-0.0") && l != "-0"));
    }

    #[test]
    fn layer_ticks_are_integers() {
        for n in 1..=96 {
            let a = Axis::layers(n);
            assert!(
                a.ticks.len() >= 2 && a.ticks.len() <= 11,
                "{n}: {:?}",
                a.ticks
            );
            for (t, l) in a.ticks.iter().zip(labels(&a)) {
                assert_eq!(t.fract(), 0.0, "{n}: {t}");
                assert!(!l.contains('.'), "{n}: {l}");
            }
        }
        assert_eq!(labels(&Axis::depth()), ["0", "20", "40", "60", "80", "100"]);
    }

    #[test]
    fn labels_stay_inside_and_apart() {
        let bounds = [0, 0, 400, 300];
        // A crowded cluster and points on every edge.
        let points = [
            (200, 150),
            (205, 152),
            (210, 148),
            (0, 0),
            (400, 300),
            (395, 10),
            (5, 290),
        ];
        let sizes = [(150, 16); 7];
        let boxes = place_labels(&points, &sizes, bounds);
        for (i, b) in boxes.iter().enumerate() {
            assert_eq!(outside(b, &bounds), 0, "{b:?}");
            for o in &boxes[..i] {
                assert_eq!(overlap(b, o), 0, "{b:?} covers {o:?}");
            }
        }
    }

    #[test]
    fn grids_hold_every_panel() {
        for n in 1..=12 {
            let (rows, cols) = grid(n);
            assert!(rows * cols >= n && (rows - 1) * cols < n, "{n}");
            let labelled = (0..n).filter(|&i| shared_show(i, n).x).count();
            assert_eq!(labelled, cols.min(n), "{n}");
        }
    }

    #[test]
    fn the_key_fits_its_height() {
        let texts: Vec<String> = (0..9).map(|i| format!("pythia-model-{i}")).collect();
        let h = key_height(&texts, 1100);
        let at = key_layout(&texts, 1100);
        assert!(at.iter().all(|&(x, y)| x >= 10 && y + KEY_ROW <= h as i32));
    }
}
