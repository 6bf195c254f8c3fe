//! The training view's figure, one per size with several checkpoints
//! (`training_<series>-<size>.{png,svg}`, e.g. `training_pythia-410m.png`, or
//! `training_<cache folder>` where the manifests name no series and size; see
//! `file_stem`): left, r at every sampled layer (% depth) and
//! checkpoint as a heatmap; right, the |r|-peak position at each checkpoint with
//! its bootstrap CI, the settling step and its CI.
//!
//! Checkpoints sit at equal spacing, labelled by step: Pythia's steps are
//! log-spaced early and linear later, and either axis alone would crush one part.

use std::path::Path;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::cell_edges;
use super::canvas::{err, save, Figure};
use crate::analysis::results::{Analysis, SizeTraining};

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Blue (r = -1) through white (0) to red (+1); grey for NaN.
fn diverging(r: f64) -> RGBColor {
    if !r.is_finite() {
        return RGBColor(0xbb, 0xbb, 0xbb);
    }
    let t = r.clamp(-1.0, 1.0);
    let mix = |to: (f64, f64, f64)| {
        let a = t.abs();
        let c = |v: f64| (255.0 + (v - 255.0) * a).round() as u8;
        RGBColor(c(to.0), c(to.1), c(to.2))
    };
    if t < 0.0 {
        mix((0x21 as f64, 0x66 as f64, 0xac as f64))
    } else {
        mix((0xb2 as f64, 0x18 as f64, 0x2b as f64))
    }
}

/// The step axis (checkpoints as columns), the y axis named `y`, and the legend.
/// A panel with one column per checkpoint (x) and % of depth (y).
fn step_chart<'a, DB: DrawingBackend + 'a>(
    root: &'a DrawingArea<DB, Shift>,
    s: &SizeTraining,
    caption: String,
) -> Result<Chart<'a, DB>> {
    let t = s.checkpoints.len() as f64;
    ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..t - 0.5, 0f64..100f64)
        .map_err(err)
}

fn step_axis<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    s: &SizeTraining,
    y: &str,
) -> Result<()> {
    let steps: Vec<u64> = s.checkpoints.iter().map(|c| c.step).collect();
    chart
        .configure_mesh()
        .x_desc("Training step (one column per checkpoint)")
        .y_desc(y)
        .x_labels(steps.len().min(12))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < steps.len() {
                steps[i as usize].to_string()
            } else {
                String::new()
            }
        })
        // Both panels are in % of depth, whole points at this scale.
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(err)
}

fn heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, s: &SizeTraining) -> Result<()> {
    let mut chart = step_chart(root, s, format!("{}: r by depth and step", s.label))?;
    let d = &s.depth_pct;
    // The outer cells end at the first and last layer: depth has no room beyond.
    let edges: Vec<(f64, f64)> = cell_edges(d, d[0], d[d.len() - 1])
        .windows(2)
        .map(|w| (w[0], w[1]))
        .collect();
    for (x, c) in s.checkpoints.iter().enumerate() {
        let x = x as f64;
        chart
            .draw_series(c.r.iter().zip(&edges).map(|(&r, &(lo, hi))| {
                Rectangle::new([(x - 0.5, lo), (x + 0.5, hi)], diverging(r).filled())
            }))
            .map_err(err)?;
    }
    let peaks = s
        .checkpoints
        .iter()
        .enumerate()
        .map(|(x, c)| (x as f64, c.abs_peak.pct));
    chart
        .draw_series(LineSeries::new(peaks, BLACK.stroke_width(2)))
        .map_err(err)?
        .label("|r| peak (blue: r < 0, red: r > 0)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    step_axis(&mut chart, s, "% of depth")
}

fn peak_track<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &SizeTraining,
    threshold: f64,
) -> Result<()> {
    let t = s.checkpoints.len() as f64;
    let st = &s.settling;
    let mut chart = step_chart(
        root,
        s,
        format!("|r| peak position: {}", st.verdict.as_str()),
    )?;
    let index_of = |step: u64| s.checkpoints.iter().position(|c| c.step == step);
    if let Some([lo, hi]) = st.ci {
        let (a, b) = (index_of(lo).unwrap_or(0), index_of(hi).unwrap_or(0));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a as f64 - 0.5, 0.0), (b as f64 + 0.5, 100.0)],
                RGBColor(0xf3, 0x9c, 0x12).mix(0.18).filled(),
            )))
            .map_err(err)?
            .label("95% CI of the settling step")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 20, y + 5)],
                    RGBColor(0xf3, 0x9c, 0x12).mix(0.3).filled(),
                )
            });
    }
    let last = s.checkpoints[s.checkpoints.len() - 1].abs_peak.pct;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(-0.5, last - threshold), (t - 0.5, last + threshold)],
            BLACK.mix(0.06).filled(),
        )))
        .map_err(err)?
        .label(format!("final position ± {threshold} points"))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.12).filled()));
    for (x, c) in s.checkpoints.iter().enumerate() {
        if let Some([lo, hi]) = c.peak_pct_ci {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x as f64, lo), (x as f64, hi)],
                    BLACK.mix(0.6).stroke_width(2),
                )))
                .map_err(err)?;
        }
    }
    chart
        .draw_series(
            s.checkpoints
                .iter()
                .enumerate()
                .map(|(x, c)| Circle::new((x as f64, c.abs_peak.pct), 5, BLACK.filled())),
        )
        .map_err(err)?
        .label("|r| peak, 95% CI")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    if let Some(x) = st.step.and_then(index_of) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x as f64, 0.0), (x as f64, 100.0)],
                RGBColor(0xd3, 0x54, 0x00).stroke_width(2),
            )))
            .map_err(err)?
            .label("settling step")
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    RGBColor(0xd3, 0x54, 0x00).stroke_width(2),
                )
            });
    }
    step_axis(&mut chart, s, "|r| peak (% of depth)")
}

/// One size's training view: the heatmap left, the peak track right.
struct TrainingFigure<'a> {
    s: &'a SizeTraining,
    threshold: f64,
}

impl Figure for TrainingFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let w = (700 + 40 * self.s.checkpoints.len() as u32).min(2400) * 2;
        (w, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        heatmap(&left, self.s)?;
        peak_track(&right, self.s, self.threshold)
    }
}

/// The file stem of a size's figure: its label with anything but letters, digits,
/// `.` and `-` replaced by `-`.
pub fn file_stem(label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("training_{safe}")
}

/// Writes one figure per size of the training view; nothing without one.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let Some(view) = &a.training else {
        return Ok(());
    };
    for s in &view.sizes {
        let fig = TrainingFigure {
            s,
            threshold: view.threshold_pct,
        };
        save(&fig, out, &file_stem(&s.label))?;
    }
    Ok(())
}
