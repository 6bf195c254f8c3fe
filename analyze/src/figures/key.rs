//! The key below (or above) a figure's plots: entries laid out in centred rows
//! before any text is measured, so that the figure's size and the layout agree.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::err;
use super::style::{color, draw_marker, font};
use crate::analysis::results::PoolingResult;

/// What a key entry shows beside its text.
pub enum Swatch {
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
    /// A line of this colour and width.
    Line(RGBColor, u32),
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

pub fn key_height(texts: &[String], width: u32) -> u32 {
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
        Swatch::Line(c, w) => area.draw(&PathElement::new(
            [(x, y), (x + SWATCH, y)],
            c.stroke_width(w),
        )),
    }
    .map_err(err)
}

/// A key drawn below (or above) the plots, so that it never covers data.
pub fn draw_key<DB: DrawingBackend>(
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

pub fn model_key(p: &PoolingResult) -> Vec<(Swatch, String)> {
    p.models
        .iter()
        .enumerate()
        .map(|(i, m)| (Swatch::Model(i), m.model.clone()))
        .collect()
}

pub fn texts(entries: &[(Swatch, String)]) -> Vec<String> {
    entries.iter().map(|(_, t)| t.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_fits_its_height() {
        let texts: Vec<String> = (0..9).map(|i| format!("pythia-model-{i}")).collect();
        let h = key_height(&texts, 1100);
        let at = key_layout(&texts, 1100);
        assert!(at.iter().all(|&(x, y)| x >= 10 && y + KEY_ROW <= h as i32));
    }
}
