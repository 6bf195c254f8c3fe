//! The models compared, in size order, and where each cache came from.

use std::fmt::Write as _;

use crate::analysis::results::Analysis;

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
        let params = match (m.n_parameters, m.size_estimated) {
            (Some(n), _) => n.to_string(),
            (None, _) => format!("~{} (n_layers·hidden², estimated)", m.size_for_ordering),
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
    out
}
