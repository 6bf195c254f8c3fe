//! Grouping the caches as series → sizes → training steps (`Grid`), and choosing
//! the one checkpoint per size that the cross-size verdict compares (`Selection`).
//!
//! Caches that share `model.series` and `model.size` are checkpoints of one model;
//! a cache whose manifest lacks either is a size of its own. A size with several
//! checkpoints is a revision axis: each of them must record a distinct
//! `model.step`, or the steps could not be ordered.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::results::{Grid, Member, Selection, SizeGroup};
use crate::cache::ModelCache;

fn key(m: &ModelCache) -> Option<(String, String)> {
    let info = &m.manifest().model;
    Some((info.series.clone()?, info.size.clone()?))
}

fn manifest_path(m: &ModelCache) -> String {
    m.cache
        .dir
        .join(schemas::MANIFEST_FILE)
        .display()
        .to_string()
}

impl Grid {
    /// Groups `models` (already in size order) and checks each revision axis.
    pub fn group(models: &[&ModelCache]) -> Result<Grid> {
        let mut sizes: Vec<SizeGroup> = Vec::new();
        for (index, m) in models.iter().enumerate() {
            let info = &m.manifest().model;
            let member = Member {
                index,
                cache: m.name.clone(),
                revision: info.revision.clone(),
                step: info.step,
            };
            let k = key(m);
            match sizes
                .iter_mut()
                .find(|g| k.is_some() && g.series == info.series && g.size == info.size)
            {
                Some(g) => g.members.push(member),
                None => sizes.push(SizeGroup {
                    label: k.map_or_else(|| m.name.clone(), |(a, b)| format!("{a} {b}")),
                    series: info.series.clone(),
                    size: info.size.clone(),
                    members: vec![member],
                }),
            }
        }
        for g in &mut sizes {
            check_axis(g, models)?;
        }
        Ok(Grid { sizes })
    }

    /// True when some size has several checkpoints.
    pub fn has_axis(&self) -> bool {
        self.sizes.iter().any(|g| g.members.len() > 1)
    }

    /// One checkpoint per size: at `step` if given, else (with a revision axis) at
    /// the latest step every size has; without an axis, every cache.
    pub fn select(&self, step: Option<u64>, models: &[&ModelCache]) -> Result<Selection> {
        let (step, rule) = match step {
            Some(s) => (Some(s), "--revision".to_string()),
            None if !self.has_axis() => {
                return Ok(Selection {
                    step: None,
                    rule: "one cache per size".into(),
                    chosen: self.sizes.iter().map(|g| g.members[0].clone()).collect(),
                })
            }
            None => (
                Some(self.latest_common(models)?),
                "latest step common to all sizes".to_string(),
            ),
        };
        let chosen = self
            .sizes
            .iter()
            .map(|g| {
                g.members
                    .iter()
                    .find(|m| m.step == step)
                    .cloned()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--revision step{}: {} has no cache at that step (it has {}); choose a step every size has",
                            step.unwrap_or_default(),
                            g.label,
                            steps_text(g)
                        )
                    })
            })
            .collect::<Result<_>>()?;
        Ok(Selection { step, rule, chosen })
    }

    fn latest_common(&self, models: &[&ModelCache]) -> Result<u64> {
        let mut common: Option<BTreeSet<u64>> = None;
        for g in &self.sizes {
            let steps: BTreeSet<u64> = g.members.iter().filter_map(|m| m.step).collect();
            if steps.is_empty() {
                bail!(
                    "{}: records no model.step, but other sizes have several checkpoints; the cross-size verdict compares one step of every size (extract --revision stepN)",
                    manifest_path(models[g.members[0].index])
                );
            }
            common = Some(match common {
                None => steps,
                Some(c) => c.intersection(&steps).copied().collect(),
            });
        }
        common.and_then(|c| c.last().copied()).ok_or_else(|| {
            let per: Vec<String> = self
                .sizes
                .iter()
                .map(|g| format!("{}: {}", g.label, steps_text(g)))
                .collect();
            anyhow::anyhow!(
                "no training step is common to all sizes ({}); analyze a subset with --models",
                per.join("; ")
            )
        })
    }
}

/// A size's checkpoints as a phrase: "steps 1000, 2000", "one cache without a step".
fn steps_text(g: &SizeGroup) -> String {
    let steps: Vec<String> = g
        .members
        .iter()
        .filter_map(|m| m.step.map(|s| s.to_string()))
        .collect();
    let without = g.members.len() - steps.len();
    let unstepped = match without {
        0 => String::new(),
        1 => "one cache without a step".to_string(),
        n => format!("{n} caches without a step"),
    };
    match (steps.is_empty(), unstepped.is_empty()) {
        (true, _) => unstepped,
        (false, true) => format!("steps {}", steps.join(", ")),
        (false, false) => format!("steps {} and {unstepped}", steps.join(", ")),
    }
}

/// Orders a size's checkpoints by step; refuses an axis that cannot be ordered
/// (a checkpoint without a step, two at one step) or mixes shapes.
fn check_axis(g: &mut SizeGroup, models: &[&ModelCache]) -> Result<()> {
    if g.members.len() < 2 {
        return Ok(());
    }
    let first = models[g.members[0].index];
    for m in &g.members {
        let mc = models[m.index];
        if m.step.is_none() {
            bail!(
                "{}: {} has {} caches but this one records no model.step; extract it with --revision stepN, or analyze the others with --models",
                manifest_path(mc),
                g.label,
                g.members.len()
            );
        }
        if (mc.n_layers(), mc.hidden()) != (first.n_layers(), first.hidden()) {
            bail!(
                "{}: {} layers x {} differ from {}'s {} x {}, yet both say they are {}; correct model.series or model.size",
                manifest_path(mc),
                mc.n_layers(),
                mc.hidden(),
                first.name,
                first.n_layers(),
                first.hidden(),
                g.label
            );
        }
    }
    g.members.sort_by_key(|m| m.step);
    for w in g.members.windows(2) {
        if w[0].step == w[1].step {
            bail!(
                "{}: {} step {} is also {}; one cache per checkpoint",
                manifest_path(models[w[1].index]),
                g.label,
                w[1].step.unwrap_or_default(),
                w[0].cache
            );
        }
    }
    Ok(())
}
