//! Axes: their ranges, ticks exactly where wanted and their labels, the titled
//! chart on them, and the cells of a heatmap along one.

use std::ops::Range;

use anyhow::Result;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::canvas::{err, Show};
use super::style::{bold, font};

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
pub struct Axis {
    pub range: Range<f64>,
    pub ticks: Vec<f64>,
    pub decimals: usize,
    /// Tick i reads `names[i]` when set (a categorical axis).
    pub names: Vec<String>,
    pub desc: String,
}

impl Axis {
    /// Ticks every round step over `data`, the range padded by `pad` of its span on
    /// each side; `min_step` 1 keeps ticks on integers.
    pub fn numeric(
        data: Range<f64>,
        pad: f64,
        max_ticks: usize,
        min_step: f64,
        desc: &str,
    ) -> Axis {
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

    pub fn r() -> Axis {
        Axis::numeric(-1.0..1.0, 0.04, 5, 0.0, "r(UA, output preference)")
    }

    pub fn depth() -> Axis {
        Axis::numeric(0.0..100.0, 0.03, 6, 1.0, "Layer position (% of depth)")
    }

    pub fn layers(n_layers: u32) -> Axis {
        Axis::numeric(0.0..f64::from(n_layers.max(1)), 0.02, 10, 1.0, "Layer")
    }

    /// Padded around the finite `values`, so that points and their labels fit.
    pub fn around(values: &[f64], desc: &str) -> Axis {
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
    pub fn names(names: Vec<String>, desc: &str) -> Axis {
        Axis {
            range: -0.5..names.len() as f64 - 0.5,
            ticks: (0..names.len()).map(|i| i as f64).collect(),
            decimals: 0,
            names,
            desc: desc.to_string(),
        }
    }

    pub fn coord(&self) -> Ticked {
        Ticked {
            range: self.range.clone().into(),
            ticks: self.ticks.clone(),
        }
    }

    pub fn label(&self, v: f64) -> String {
        if self.names.is_empty() {
            return tick_label(v, self.decimals);
        }
        let i = v.round().max(0.0) as usize;
        self.names.get(i).cloned().unwrap_or_default()
    }

    /// Pixels beside the plot for the widest tick label and the description.
    pub fn room(&self) -> u32 {
        let widest = self.ticks.iter().map(|&t| self.label(t).len()).max();
        40 + 9 * widest.unwrap_or(1) as u32
    }
}

/// An f64 axis ticked exactly at the given values, without light lines: plotters'
/// own choice puts ticks such as "2.5" on layers.
pub struct Ticked {
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

pub type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// A titled chart with the axes' own ticks; hidden labels keep their room so that
/// the panels of a grid line up.
pub fn frame<'a, DB: DrawingBackend>(
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

pub fn zero_line<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, x: &Axis) -> Result<()> {
    chart
        .draw_series(LineSeries::new(
            [(x.range.start, 0.0), (x.range.end, 0.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(err)?;
    Ok(())
}

/// The edges of a heatmap's cells around ascending `centres`: halfway between
/// neighbours, `first` and `last` outside the outer ones.
pub fn cell_edges(centres: &[f64], first: f64, last: f64) -> Vec<f64> {
    let mut e = vec![first];
    e.extend(centres.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    e.push(last);
    e
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
}
