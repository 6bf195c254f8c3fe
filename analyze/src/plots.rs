//! Figures (PNG and SVG): the seed's two-panel figure (r against layer and
//! against % depth, one line per model) with bootstrap bands, and each model's
//! peak position with its bootstrap CI.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analysis::{Analysis, PoolingResult};

/// The seed's colours (green, blue, purple, red), then a few more for larger sets.
const COLORS: [RGBColor; 8] = [
    RGBColor(0x2e, 0xcc, 0x71),
    RGBColor(0x34, 0x98, 0xdb),
    RGBColor(0x9b, 0x59, 0xb6),
    RGBColor(0xe7, 0x4c, 0x3c),
    RGBColor(0xf3, 0x9c, 0x12),
    RGBColor(0x16, 0xa0, 0x85),
    RGBColor(0x34, 0x49, 0x5e),
    RGBColor(0xd3, 0x54, 0x00),
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

/// The legend box, the same in every figure but for its corner and text size.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)
}

fn draw_marker<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    pts: &[(f64, f64)],
    idx: usize,
    c: RGBColor,
) -> Result<()> {
    let style = c.filled();
    match idx % 4 {
        0 => chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, style)))
            .map_err(err)?,
        1 => chart
            .draw_series(
                pts.iter()
                    .map(|&p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], style)),
            )
            .map_err(err)?,
        2 => chart
            .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, style)))
            .map_err(err)?,
        _ => chart
            .draw_series(pts.iter().map(|&p| {
                EmptyElement::at(p) + Polygon::new(vec![(0, -6), (6, 0), (0, 6), (-6, 0)], style)
            }))
            .map_err(err)?,
    };
    Ok(())
}

fn curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &PoolingResult,
    normalized: bool,
) -> Result<()> {
    let x_max = if normalized {
        100.0
    } else {
        p.models
            .iter()
            .map(|m| f64::from(m.n_layers))
            .fold(1.0, f64::max)
    };
    let title = if normalized {
        "Layer Correlation by Model Size (Normalized)"
    } else {
        "Layer Correlation by Model Size (Absolute)"
    };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.02 * x_max..x_max * 1.02, -1.05f64..1.05f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(if normalized {
            "Layer Position (% of total depth)"
        } else {
            "Layer Number"
        })
        .y_desc("r(UA, Output Preference)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            vec![(-0.02 * x_max, 0.0), (x_max * 1.02, 0.0)],
            ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
        ))
        .map_err(err)?;
    for (i, m) in p.models.iter().enumerate() {
        let c = color(i);
        let x = |layer: u32| {
            if normalized {
                f64::from(layer) / f64::from(m.n_layers) * 100.0
            } else {
                f64::from(layer)
            }
        };
        let band: Vec<(f64, f64)> = m
            .layers
            .iter()
            .filter(|s| s.ci_high.is_finite())
            .map(|s| (x(s.layer), s.ci_high))
            .chain(
                m.layers
                    .iter()
                    .rev()
                    .filter(|s| s.ci_low.is_finite())
                    .map(|s| (x(s.layer), s.ci_low)),
            )
            .collect();
        if band.len() >= 3 {
            chart
                .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15).filled())))
                .map_err(err)?;
        }
        let pts: Vec<(f64, f64)> = m
            .layers
            .iter()
            .filter(|s| s.r.is_finite())
            .map(|s| (x(s.layer), s.r))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(m.model.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        draw_marker(&mut chart, &pts, i, c)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 16)?;
    Ok(())
}

fn comparison<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, p: &PoolingResult) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    curves(&left, p, false)?;
    curves(&right, p, true)?;
    root.present().map_err(err)
}

/// A vertical CI bar with caps.
fn error_bar<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: f64,
    ci: [f64; 2],
    style: ShapeStyle,
) -> Result<()> {
    if !(ci[0].is_finite() && ci[1].is_finite()) {
        return Ok(());
    }
    let w = 0.05;
    for path in [
        vec![(x, ci[0]), (x, ci[1])],
        vec![(x - w, ci[0]), (x + w, ci[0])],
        vec![(x - w, ci[1]), (x + w, ci[1])],
    ] {
        chart
            .draw_series(std::iter::once(PathElement::new(path, style)))
            .map_err(err)?;
    }
    Ok(())
}

fn peaks<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    p: &PoolingResult,
    threshold: f64,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let n = p.models.len();
    let names: Vec<String> = p.models.iter().map(|m| m.model.clone()).collect();
    let caption = match (&p.stability_abs, p.abs_peak_analysis.std_peak_pct) {
        (Some(s), Some(std)) => format!(
            "Peak position of |r| with 95% bootstrap CI (std {std:.1} pts; stable (<{threshold}) in {:.0}% of resamples)",
            s.share_stable * 100.0
        ),
        (None, Some(std)) => format!("Peak position of |r| (std {std:.1} pts across models)"),
        _ => "Peak position of |r| (one model: no cross-model verdict)".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            caption,
            ("sans-serif", 20).into_font().style(FontStyle::Bold),
        )
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_desc("Peak position (% of depth)")
        .x_desc("Model (ordered by parameter count)")
        .x_label_formatter(&|_| String::new())
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(err)?;
    let mean = p.abs_peak_analysis.mean_peak_pct;
    chart
        .draw_series(LineSeries::new(
            vec![(-0.5, mean), (n as f64 - 0.5, mean)],
            ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("mean |r| peak ({mean:.0}%)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.35)));
    for (i, m) in p.models.iter().enumerate() {
        let c = color(i);
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Text::new(
                names[i].clone(),
                (x, 2.5),
                ("sans-serif", 18)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(err)?;
        if let Some(b) = &m.peak_bootstrap {
            error_bar(&mut chart, x - 0.08, b.abs_pct_ci, c.stroke_width(3))?;
            error_bar(
                &mut chart,
                x + 0.08,
                b.max_pos_pct_ci,
                c.mix(0.6).stroke_width(2),
            )?;
        }
        chart
            .draw_series(std::iter::once(Circle::new(
                (x - 0.08, m.abs_peak.pct),
                7,
                c.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Circle::new(
                (x + 0.08, m.seed_summary.max_pos_pct),
                6,
                c.stroke_width(2),
            )))
            .map_err(err)?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(err)?
        .label("|r| peak (filled), 95% CI")
        .legend(|(x, y)| Circle::new((x + 12, y), 6, BLACK.filled()));
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(err)?
        .label("seed's max positive r peak (open), 95% CI")
        .legend(|(x, y)| Circle::new((x + 12, y), 6, BLACK.stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 15)?;
    root.present().map_err(err)
}

/// Writes `scaling_comparison.{png,svg}` and `peak_positions.{png,svg}` for the primary pooling.
pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    register_font();
    let p = a.primary();
    let cmp = out.join("scaling_comparison");
    comparison(
        BitMapBackend::new(&cmp.with_extension("png"), (2400, 900)).into_drawing_area(),
        p,
    )?;
    comparison(
        SVGBackend::new(&cmp.with_extension("svg"), (2400, 900)).into_drawing_area(),
        p,
    )?;
    let pk = out.join("peak_positions");
    let w = 500 + 220 * p.models.len() as u32;
    peaks(
        BitMapBackend::new(&pk.with_extension("png"), (w.max(1100), 700)).into_drawing_area(),
        p,
        a.settings.stability_threshold,
    )?;
    peaks(
        SVGBackend::new(&pk.with_extension("svg"), (w.max(1100), 700)).into_drawing_area(),
        p,
        a.settings.stability_threshold,
    )?;
    Ok(())
}
