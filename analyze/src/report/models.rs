//! The models compared, in size order, where each cache came from, and whether
//! the data place each one's |r| peak.

use std::fmt::Write as _;

use super::headline::plateau_words;
use crate::analysis::results::{Analysis, ModelPooling};
use crate::format::{f3, pct};

/// Which caches were compared, in size order, and where each came from.
pub fn section(a: &Analysis) -> String {
    let mut out = String::new();
    let r = &mut out;
    let _ = writeln!(r, "## Models (ordered by parameter count)\n");
    let _ = writeln!(
        r,
        "The order comes from `model.n_parameters` in each cache's manifest.json (refused when implausible for the recorded n_layers and hidden_size); a manifest without it is ordered by n_layers·hidden², marked estimated.\n"
    );
    let _ = writeln!(
        r,
        "| Model | Cache folder | Layers | Hidden | Parameters | Dataset sha256 | Extracted on |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for m in &a.models {
        let params = match (m.n_parameters, m.params_estimated) {
            (Some(n), _) => n.to_string(),
            (None, _) => format!("~{} (n_layers·hidden², estimated)", m.params_for_ordering),
        };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {}… | {} ({}) |",
            m.display,
            m.name,
            m.n_layers,
            m.hidden_size,
            params,
            &m.manifest
                .dataset
                .sha256
                .chars()
                .take(12)
                .collect::<String>(),
            m.manifest.run.device_name,
            m.manifest.run.execution_provider
        );
    }
    out.push_str(&peak_places(a));
    out
}

/// Per model of the primary pooling: its |r| peak, the bootstrap CI of its position,
/// and whether the data place it (else its plateau, with the spans that decided).
fn peak_places(a: &Analysis) -> String {
    let p = a.primary();
    let mut r = format!(
        "\n### Where each |r| peak lies (pooling `{}`)\n\n| Model | \\|r\\| peak | 95% CI of its position | Position |\n|---|---|---|---|\n",
        p.pooling
    );
    for m in &p.models {
        let ci = m
            .peak_bootstrap
            .as_ref()
            .map(|b| format!("{}–{}", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            r,
            "| {} | L{} ({}, r = {}) | {ci} | {} |",
            m.model,
            m.abs_peak.layer,
            pct(m.abs_peak.pct),
            f3(m.abs_peak.r),
            position(m)
        );
    }
    r
}

fn position(m: &ModelPooling) -> String {
    match (m.abs_peak_identified, &m.plateau) {
        (Some(false), Some(pl)) => format!(
            "**not identified by these data**: {} (the position's CI spans {:.0} points; the layers whose \\|r\\| reaches the peak's CI, {:.0})",
            plateau_words(pl),
            pl.peak_ci_span_pct,
            pl.within_ci_span_pct
        ),
        (Some(_), _) => "identified".into(),
        (None, _) => "not judged without the bootstrap".into(),
    }
}
