//! `report.md`: the headline and its evidence, the answer in one paragraph with its
//! uncertainty, then tables, the
//! seed's interpretation template filled in, and notes on the seed's quirks. One
//! file per section, each `section(&Analysis) -> String`, in report order here.

use std::path::Path;

use anyhow::{Context, Result};

use crate::analysis::results::Analysis;

mod answer;
mod cka;
mod figure_list;
mod headline;
mod method;
mod models;
mod other_poolings;
mod per_layer;
mod robustness;
mod seed_interpretation;
mod seed_summary;
mod training;

pub use answer::answer_paragraph;
pub use headline::{evidence, headline};

/// The sections in the order the report shows them.
const SECTIONS: [fn(&Analysis) -> String; 11] = [
    answer::section,
    robustness::section,
    models::section,
    training::section,
    seed_summary::section,
    cka::section,
    per_layer::section,
    other_poolings::section,
    seed_interpretation::section,
    figure_list::section,
    method::section,
];

pub fn render(a: &Analysis) -> String {
    SECTIONS.iter().map(|section| section(a)).collect()
}

pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let path = out.join("report.md");
    std::fs::write(&path, render(a)).with_context(|| format!("{}: cannot write", path.display()))
}
