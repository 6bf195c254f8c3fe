//! The report's checkpoint sections: which checkpoint of each size the
//! cross-size verdict compares, and the training view. Both appear only when some
//! size has several checkpoints, so a plain ladder's report is unchanged.

use std::fmt::Write as _;

use crate::analysis::results::{Analysis, SizeTraining, TrainingView};
use crate::format::pct;

/// Which step the cross-size verdict uses, stated under the answer.
pub fn checkpoint_paragraph(a: &Analysis) -> Option<String> {
    a.training.as_ref()?;
    let sel = &a.selection;
    let caches: Vec<&str> = sel.chosen.iter().map(|m| m.cache.as_str()).collect();
    Some(format!(
        "**Checkpoint compared across sizes: step {}** ({}; `--revision stepN` chooses another): {}. The training view below follows each size through its checkpoints.",
        sel.step.map_or_else(|| "n/a".into(), |s| s.to_string()),
        sel.rule,
        caches.join(", ")
    ))
}

/// The training view: the definitions, one summary row per size, then each
/// size's peak track.
pub fn section(a: &Analysis) -> String {
    let mut r = String::new();
    let Some(v) = &a.training else {
        return r;
    };
    let _ = writeln!(r, "\n## Training checkpoints: does the peak settle?\n");
    let _ = writeln!(r, "{}\n", definitions(v));
    let _ = writeln!(
        r,
        "| Size | Checkpoints | Steps | \\|r\\| peak at first → last step | Settling step | 95% CI | Settled before the last step in | Verdict |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|");
    for s in &v.sizes {
        summary_row(&mut r, s);
    }
    for s in &v.sizes {
        peak_track(&mut r, s);
    }
    r
}

fn definitions(v: &TrainingView) -> String {
    let boot = if v.bootstrap > 0 {
        format!(
            "{} stratified pair-bootstrap resamples (seed {}, `--training-bootstrap`, default 1000), the same resamples at every step and size",
            v.bootstrap, v.seed
        )
    } else {
        "no bootstrap (`--training-bootstrap 0`), so no CI and no verdict \"settles\"".into()
    };
    format!(
        "Pooling `{}`, every size with several checkpoints, {boot}. At each step the |r| peak position is where |r| is largest across the sampled layers (% depth). **Settling step**: the earliest step from which the peak position stays within {} points of depth (strictly less) of its position at the last step; none when only the last step does. Its 95% CI applies the same rule in every resample (its own peak positions and final position; a resample that never settles counts as the last step) and takes the nearest-rank 2.5% and 97.5% quantiles, so both ends are checkpoints. **Verdict**: *settles* when a settling step exists and the CI ends before the last step; *keeps moving* when there is no settling step before the last; *undetermined* otherwise (a settling step whose CI reaches the last step, or no bootstrap). The figures `{}.png` (one per size) show r by depth and step and the peak track.",
        v.pooling,
        v.threshold_pct,
        crate::figures::training::file_stem("<size>")
    )
}

fn summary_row(r: &mut String, s: &SizeTraining) {
    let (first, last) = (&s.checkpoints[0], &s.checkpoints[s.checkpoints.len() - 1]);
    let st = &s.settling;
    let _ = writeln!(
        r,
        "| {} | {} | {}–{} | {} → {} | {} | {} | {} | **{}** |",
        s.label,
        s.checkpoints.len(),
        first.step,
        last.step,
        pct(first.abs_peak.pct),
        pct(last.abs_peak.pct),
        st.step.map_or_else(|| "none".into(), |v| v.to_string()),
        st.ci
            .map_or_else(|| "n/a".into(), |[lo, hi]| format!("{lo}–{hi}")),
        st.share_settled.map_or_else(
            || "n/a".into(),
            |v| format!("{:.1}% of resamples", v * 100.0)
        ),
        st.verdict.as_str()
    );
}

fn peak_track(r: &mut String, s: &SizeTraining) {
    let _ = writeln!(
        r,
        "\n### {} ({} layers)\n\n| Step | Revision | Cache | \\|r\\| peak @ | r | 95% CI of the peak |\n|---|---|---|---|---|---|",
        s.label, s.n_layers
    );
    for c in &s.checkpoints {
        let _ = writeln!(
            r,
            "| {} | {} | {} | L{} ({}) | {:+.3} | {} |",
            c.step,
            c.revision.as_deref().unwrap_or("n/a"),
            c.cache,
            c.abs_peak.layer,
            pct(c.abs_peak.pct),
            c.abs_peak.r,
            c.peak_pct_ci.map_or_else(
                || "n/a".into(),
                |[lo, hi]| format!("{}–{}", pct(lo), pct(hi))
            )
        );
    }
}
