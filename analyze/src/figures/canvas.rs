//! The canvas every figure is drawn on: the `Figure` trait, drawn once for PNG and
//! once for SVG by `save`, and the grid of panels on shared axes.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// A plotters error (backend, font or layout) as an error of the figure's write.
pub fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

/// A figure drawn the same way on the PNG and on the SVG backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

fn render<DB: DrawingBackend>(fig: &impl Figure, root: DrawingArea<DB, Shift>) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    fig.draw(&root)?;
    root.present().map_err(err)
}

/// Draws `fig` into `<out>/<stem>.png` and `<out>/<stem>.svg`.
pub fn save(fig: &impl Figure, out: &Path, stem: &str) -> Result<()> {
    // Appended, not `with_extension`: a stem like `training_pythia-1.4b` has a dot.
    let size = fig.size();
    let (png, svg) = (
        out.join(format!("{stem}.png")),
        out.join(format!("{stem}.svg")),
    );
    render(fig, BitMapBackend::new(&png, size).into_drawing_area())
        .map_err(|e| in_file(&png, e))?;
    render(fig, SVGBackend::new(&svg, size).into_drawing_area()).map_err(|e| in_file(&svg, e))
}

/// A figure's error naming its file, with the operating system's words where the
/// backend failed to write it (a full disk: "No space left on device").
fn in_file(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let text = e.to_string();
    let os = text
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(message, _)| message);
    match os {
        Some(message) => anyhow!("{}: cannot write the figure: {message}", path.display()),
        None => anyhow!("{}: {text}", path.display()),
    }
}

/// Which axes of a panel carry tick labels and a description: in a grid of panels
/// on shared axes only the outer ones do.
#[derive(Clone, Copy)]
pub struct Show {
    pub x: bool,
    pub y: bool,
}

/// A panel on its own: both axes labelled.
pub const ALL: Show = Show { x: true, y: true };

/// Rows and columns for `n` panels: one row up to three, then near square.
pub fn panels(n: usize) -> (usize, usize) {
    let cols = if n <= 3 {
        n.max(1)
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    (n.div_ceil(cols), cols)
}

/// Panel `i` of a grid on shared axes: y labels on the left column, x labels on
/// the lowest panel of each column.
pub fn shared_show(i: usize, n: usize) -> Show {
    let cols = panels(n).1;
    Show {
        x: i + cols >= n,
        y: i.is_multiple_of(cols),
    }
}

/// Wide enough for a figure title and its key whatever the number of panels.
const MIN_WIDTH: u32 = 1000;

/// The pixel size of a figure holding `n` panels of `panel` below a `head`.
pub fn panels_size(n: usize, panel: (u32, u32), head: u32) -> (u32, u32) {
    let (rows, cols) = panels(n);
    (
        (panel.0 * cols as u32).max(MIN_WIDTH),
        head + panel.1 * rows as u32,
    )
}

/// The height of the title above a grid of panels.
pub const PANELS_HEAD: u32 = 56;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_hold_every_panel() {
        for n in 1..=12 {
            let (rows, cols) = panels(n);
            assert!(rows * cols >= n && (rows - 1) * cols < n, "{n}");
            let labelled = (0..n).filter(|&i| shared_show(i, n).x).count();
            assert_eq!(labelled, cols.min(n), "{n}");
        }
    }
}
