//! Whether the answer survives the geometry: each model's |r| peak in the other
//! geometries of the primary pooling, the verdict there, and the raw vectors'
//! anisotropy that makes the difference.

use std::fmt::Write as _;

use schemas::geometry::{Anisotropy, TOP_DIMS};

use crate::analysis::results::{Analysis, GeometryCheck, ModelPooling};
use crate::format::{f3, pct};

/// The evidence bullet: whether every peak and the verdict survive the other
/// geometries, with the moves where they do not; None when nothing else was computed.
pub fn bullet(a: &Analysis) -> Option<String> {
    let rb = &a.robustness;
    let skipped = || -> String {
        rb.not_computed
            .iter()
            .map(|n| format!(" The {} geometry was not computed: {}.", n.geometry, n.why))
            .collect()
    };
    if rb.checks.is_empty() {
        return (!rb.not_computed.is_empty()).then(|| {
            format!(
                "Whether the answer survives the geometry was not checked.{}",
                skipped()
            )
        });
    }
    let moved: Vec<String> = rb.checks.iter().filter_map(moves).collect();
    let verdicts: Vec<String> = rb
        .checks
        .iter()
        .filter(|c| !c.verdict_survives)
        .map(|c| {
            format!(
                "in the {} vectors the answer is *{}*",
                c.geometry,
                c.answer_class.as_str()
            )
        })
        .collect();
    let names = rb
        .checks
        .iter()
        .map(|c| c.geometry.as_str())
        .collect::<Vec<_>>()
        .join(" and ");
    let rogue = anisotropy_range(a).map_or(String::new(), |(cos, top)| {
        format!(
            " The {} vectors' mean cosine between statements is {} and their top {TOP_DIMS} dimensions hold {} of the squared norm (`geometry.png`).",
            rb.geometry, cos, top
        )
    });
    if moved.is_empty() && verdicts.is_empty() {
        return Some(format!(
            "The answer survives the geometry: in the {names} vectors every |r| peak stays within {:.0} points of depth and the verdict is the same.{rogue}{}",
            rb.threshold_pct,
            skipped()
        ));
    }
    let mut what = moved;
    what.extend(verdicts);
    Some(format!(
        "**The answer does not survive the geometry**: {}. Read the {} peak as a property of these vectors' geometry, not of the model alone.{rogue}{}",
        what.join("; "),
        rb.geometry,
        skipped()
    ))
}

/// Per geometry: "when the vectors are centred, A's |r| peak moves from 13% to 93% of
/// depth (r ... → ...), B's from ... to ..."; None where every peak survives.
fn moves(c: &GeometryCheck) -> Option<String> {
    let each: Vec<String> = c
        .peaks
        .iter()
        .filter(|m| !m.survives)
        .enumerate()
        .map(|(k, m)| {
            format!(
                "{}'s{} from {} to {}{} (r {} → {})",
                m.model,
                if k == 0 { " |r| peak moves" } else { "" },
                pct(m.pct),
                pct(m.other_pct),
                if k == 0 { " of depth" } else { "" },
                f3(m.r),
                f3(m.other_r)
            )
        })
        .collect();
    (!each.is_empty()).then(|| format!("when the vectors are {}, {}", c.geometry, each.join(", ")))
}

/// The range over the compared models' layers of the raw mean cosine and top share,
/// as "0.94–1.00" and "93%–99%"; None without anisotropy (an older sidecar).
fn anisotropy_range(a: &Analysis) -> Option<(String, String)> {
    let all: Vec<&Anisotropy> = a
        .primary()
        .models
        .iter()
        .flat_map(|m| m.layers.iter().filter_map(|s| s.anisotropy.as_ref()))
        .collect();
    let range = |f: fn(&Anisotropy) -> f64| {
        let v = all.iter().map(|x| f(x)).filter(|v| v.is_finite());
        (
            v.clone().fold(f64::INFINITY, f64::min),
            v.fold(f64::NEG_INFINITY, f64::max),
        )
    };
    (!all.is_empty()).then(|| {
        let (c0, c1) = range(|x| x.mean_cosine);
        let (t0, t1) = range(|x| x.top_share);
        (
            format!("{c0:.2}–{c1:.2}"),
            format!("{}–{}", pct(t0 * 100.0), pct(t1 * 100.0)),
        )
    })
}

/// The report section: the peaks in every geometry, the verdict there, the geometries
/// not computed, and each model's anisotropy by layer.
pub fn section(a: &Analysis) -> String {
    let rb = &a.robustness;
    let mut out = String::new();
    let r = &mut out;
    if rb.checks.is_empty() && rb.not_computed.is_empty() {
        return out;
    }
    let _ = writeln!(r, "## Robustness across geometries\n");
    let _ = writeln!(
        r,
        "UA takes cosines between pooled vectors. In trained models a few dimensions hold most of every vector's norm, so raw cosines sit near 1 and those dimensions can decide UA. The same statistics in the other geometries of `{}` (centred: minus each layer's mean over all statements; standardised: also divided by each dimension's standard deviation). A peak survives where it moves by less than {:.0} points of depth.\n",
        a.primary().pooling,
        rb.threshold_pct
    );
    if !rb.checks.is_empty() {
        let _ = writeln!(r, "| Model | geometry | \\|r\\| peak @ | r | moved by | survives | r there at the {} peak's layer |", rb.geometry);
        let _ = writeln!(r, "|---|---|---|---|---|---|---|");
        for c in &rb.checks {
            rows(r, c);
        }
        let _ = writeln!(r);
        for c in &rb.checks {
            let _ = writeln!(
                r,
                "- The answer in the {} vectors: *{}* (in the {}: *{}*).",
                c.geometry,
                c.answer_class.as_str(),
                rb.geometry,
                a.answer_class().as_str()
            );
        }
    }
    for n in &rb.not_computed {
        let _ = writeln!(
            r,
            "- The {} geometry was not computed: {}.",
            n.geometry, n.why
        );
    }
    let _ = writeln!(r);
    anisotropy_table(r, &a.primary().models);
    out
}

fn rows(r: &mut String, c: &GeometryCheck) {
    for m in &c.peaks {
        let _ = writeln!(
            r,
            "| {} | {} | L{} ({}) | {} | {:+.0} points | {} | {} |",
            m.model,
            c.geometry,
            m.other_layer,
            pct(m.other_pct),
            f3(m.other_r),
            m.other_pct - m.pct,
            if m.survives { "yes" } else { "**no**" },
            f3(m.other_r_at_layer)
        );
    }
}

fn anisotropy_table(r: &mut String, models: &[ModelPooling]) {
    if !models
        .iter()
        .any(|m| m.layers.iter().any(|s| s.anisotropy.is_some()))
    {
        let _ = writeln!(r, "The anisotropy of the raw vectors is not reported: a cache's grams.parquet predates it (upgrade with `analyze index`).\n");
        return;
    }
    let _ = writeln!(
        r,
        "Anisotropy of the raw vectors by layer: the mean cosine between all pairs of statements, and the share of the squared norm in the top {TOP_DIMS} dimensions.\n"
    );
    let _ = writeln!(
        r,
        "| Model | layer | % depth | mean cosine | top-{TOP_DIMS} share | r |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|");
    for m in models {
        for s in &m.layers {
            if let Some(x) = &s.anisotropy {
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {:.3} | {} | {} |",
                    m.model,
                    s.layer,
                    pct(s.depth_pct),
                    x.mean_cosine,
                    pct(x.top_share * 100.0),
                    f3(s.r)
                );
            }
        }
    }
    let _ = writeln!(r);
}
