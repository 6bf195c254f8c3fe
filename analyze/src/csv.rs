//! `layer_correlations.csv`: one row per model, view (pooling and geometry) and layer
//! (long form), with the raw vectors' anisotropy.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::analysis::results::Analysis;

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(a: &Analysis) -> String {
    let mut out = String::from(
        "model,n_parameters,n_layers,layer,depth_pct,pooling,geometry,r,p,p_holm,perm_p,perm_p_holm,spearman_rho,spearman_p,ci_low,ci_high,boot_median,loco_min,loco_max,pair_r,pair_p,pair_rho,pair_rho_p,mean_cosine,top_share\n",
    );
    for pr in &a.poolings {
        for (entry, m) in a.models.iter().zip(&pr.models) {
            for s in &m.layers {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    quote(&m.model),
                    entry
                        .n_parameters
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    m.n_layers,
                    s.layer,
                    num(s.depth_pct),
                    pr.pooling,
                    pr.geometry,
                    num(s.r),
                    num(s.p),
                    num(s.p_holm),
                    num(s.perm_p),
                    num(s.perm_p_holm),
                    num(s.spearman_rho),
                    num(s.spearman_p),
                    num(s.ci_low),
                    num(s.ci_high),
                    num(s.boot_median),
                    num(s.loco_min),
                    num(s.loco_max),
                    num(s.pair_r),
                    num(s.pair_p),
                    num(s.pair_rho),
                    num(s.pair_rho_p),
                    num(s.anisotropy.map_or(f64::NAN, |x| x.mean_cosine)),
                    num(s.anisotropy.map_or(f64::NAN, |x| x.top_share)),
                );
            }
        }
    }
    out
}

pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let path = out.join("layer_correlations.csv");
    std::fs::write(&path, render(a)).with_context(|| format!("{}: cannot write", path.display()))
}
