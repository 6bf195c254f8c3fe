//! The sensitivity table: the same verdict under the cache's other poolings (in the
//! primary geometry; the other geometries have a section of their own).

use std::fmt::Write as _;

use crate::analysis::results::Analysis;
use crate::format::pct;

/// The sensitivity table: the same verdict under the cache's other poolings.
pub fn section(a: &Analysis) -> String {
    let mut out = String::new();
    let r = &mut out;
    let primary = a.primary();
    let shown: Vec<_> = a
        .poolings
        .iter()
        .filter(|p| p.geometry == primary.geometry)
        .collect();
    if shown.len() > 1 {
        let _ = writeln!(r, "## Other poolings (sensitivity)\n");
        let _ = writeln!(r, "| Pooling | Model | \\|r\\| peak @ | 95% CI | max positive r @ | verdict (\\|r\\|) | stable in resamples |");
        let _ = writeln!(r, "|---|---|---|---|---|---|---|");
        for pr in shown {
            for m in &pr.models {
                let ci = m
                    .peak_bootstrap
                    .as_ref()
                    .map(|b| format!("{}–{}", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
                    .unwrap_or_else(|| "n/a".into());
                let verdict = match pr.abs_peak_analysis.peaks_stable {
                    Some(true) => "stable",
                    Some(false) => "shifts",
                    None => "n/a",
                };
                let share = pr
                    .stability_abs
                    .as_ref()
                    .map(|s| format!("{:.1}%", s.share_stable * 100.0))
                    .unwrap_or_else(|| "n/a".into());
                let _ = writeln!(
                    r,
                    "| {} | {} | L{} ({}) | {} | L{} ({}) | {} | {} |",
                    pr.pooling,
                    m.model,
                    m.abs_peak.layer,
                    pct(m.abs_peak.pct),
                    ci,
                    m.seed_summary.max_pos_layer,
                    pct(m.seed_summary.max_pos_pct),
                    verdict,
                    share
                );
            }
        }
        let _ = writeln!(r);
    }
    out
}
