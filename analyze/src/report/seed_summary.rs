//! The seed's per-model summary of the primary pooling, with the |r| peak and
//! its CI beside it.

use std::fmt::Write as _;

use crate::analysis::results::Analysis;
use crate::format::{f3, pct};

/// The seed's per-model summary, with the |r| peak and its CI beside it.
pub fn section(a: &Analysis) -> String {
    let mut out = String::new();
    let r = &mut out;
    let p = a.primary();
    let _ = writeln!(r, "\n## Seed-exact summary (pooling `{}`)\n", p.pooling);
    let _ = writeln!(r, "| Model | Layers | Peak r (max positive) | Peak @ | Max \\|r\\| | \\|r\\| peak @ (95% CI) | Most negative r | @ | Final r | Sign changes (midpoint) |");
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
    for m in &p.models {
        let s = &m.seed_summary;
        let ci = m
            .peak_bootstrap
            .as_ref()
            .map(|b| format!(" ({}–{})", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
            .unwrap_or_default();
        let sc: Vec<String> = s
            .sign_changes
            .iter()
            .map(|c| {
                format!(
                    "{}→{} ({:.0}%)",
                    c.layer_before, c.layer_after, c.midpoint_pct
                )
            })
            .collect();
        let _ = writeln!(
            r,
            "| {} | {} | {} | L{} ({}) | {} | L{} ({}){ci} | {} | L{} ({}) | {} | {} |",
            s.model,
            s.n_layers,
            f3(s.max_pos_r),
            s.max_pos_layer,
            pct(s.max_pos_pct),
            f3(m.abs_peak.r),
            m.abs_peak.layer,
            pct(m.abs_peak.pct),
            f3(s.max_neg_r),
            s.max_neg_layer,
            pct(s.max_neg_pct),
            f3(s.final_r),
            if sc.is_empty() {
                "none".into()
            } else {
                sc.join(", ")
            }
        );
    }
    let pa = &p.peak_analysis;
    let _ = writeln!(
        r,
        "\nSeed's peak_analysis (max positive r): mean {:.1}%, std {}, stable: {}.",
        pa.mean_peak_pct,
        pa.std_peak_pct
            .map(|v| format!("{v:.1}%"))
            .unwrap_or_else(|| "n/a".into()),
        pa.peaks_stable
            .map(|v| v.to_string())
            .unwrap_or_else(|| "not applicable (one model)".into())
    );
    out
}
