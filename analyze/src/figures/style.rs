//! The figures' style: the palette, the font, titles and each model's marker.

use std::sync::Once;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::err;

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
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bytes);
    });
}

pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

pub fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

pub fn bold(size: u32) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK)
}

/// A figure title across the top of `area`.
pub fn title<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str) -> Result<()> {
    let x = area.dim_in_pixel().0 as i32 / 2;
    let style = bold(22).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(text.to_string(), (x, 12), style))
        .map_err(err)
}

/// Model `i`'s marker (one of four shapes) at `at`, `s` pixels across its middle;
/// on a chart's plotting area or in a key alike.
pub fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
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

pub fn draw_markers<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    area: &DrawingArea<DB, CT>,
    pts: &[(f64, f64)],
    i: usize,
    s: i32,
) -> Result<()> {
    for &p in pts {
        draw_marker(area, p, i, s, color(i).filled())?;
    }
    Ok(())
}
