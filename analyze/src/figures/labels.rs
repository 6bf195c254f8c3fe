//! Names beside points (the categories of a scatter), each placed where it
//! overlaps nothing and stays inside the plot.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Chart;
use super::canvas::err;
use super::style::font;

/// Category names beside their points, each where it overlaps nothing and stays
/// inside the plot when it can (never outside it).
/// Longest name drawn beside a point; a longer one is cut with "…".
const MAX_LABEL_CHARS: usize = 40;

/// A category name as a figure can draw it: control characters (an ESC makes the
/// SVG invalid XML) shown as U+FFFD, and cut at `MAX_LABEL_CHARS` so that one long
/// name does not run across the other panels.
pub fn drawable(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .take(MAX_LABEL_CHARS)
        .collect();
    if name.chars().count() > MAX_LABEL_CHARS {
        s.pop();
        s.push('…');
    }
    s
}

pub fn label_points<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    xy: &[(f64, f64)],
    names: &[&str],
) -> Result<()> {
    let style = font(14);
    let names: Vec<String> = names.iter().map(|n| drawable(n)).collect();
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

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_drawable() {
        assert_eq!(super::drawable("a\u{1b}[31mb"), "a\u{fffd}[31mb");
        let long = "x".repeat(300);
        let cut = super::drawable(&long);
        assert_eq!(cut.chars().count(), super::MAX_LABEL_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(super::drawable("geography"), "geography");
    }

    use super::*;

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
}
