//! Each model's planted vectors: the layer profile `k(t)` (where the |r| peak
//! sits, which in grid mode moves with the training step) and every statement's
//! vector at every layer and pooling.

use rayon::prelude::*;
use schemas::Pooling;

use crate::dataset::Prefs;
use crate::options::{Options, Spec};
use crate::random::{normal, stream, unit_vector};

/// Where one cache sits in the grid: None in ladder mode.
#[derive(Clone, Copy)]
pub(crate) struct Checkpoint {
    pub(crate) step: u64,
    pub(crate) settle_step: u64,
}

/// Depth (fraction) of the positive bump of model `mi`'s layer profile: fixed in
/// ladder mode; in grid mode `drift` deeper before the settle step, moving from 0.40
/// to 0.25 as training goes on (always beyond the seed's 10-point threshold), and
/// at its final depth from the settle step on.
fn bump_center(mi: usize, checkpoint: Option<Checkpoint>) -> f64 {
    let fin = 0.3 + 0.04 * mi as f64;
    let drift = match checkpoint {
        Some(c) if c.step < c.settle_step => {
            0.40 - 0.15 * c.step as f64 / c.settle_step.max(1) as f64
        }
        _ => 0.0,
    };
    fin + drift
}

/// The layer profile and what each statement's side coefficient follows. In grid
/// mode the peak must be the |r| peak of every step and of nearly every pair
/// resample, for the settling step's CI to find the planted one: no late lobe (r is
/// a correlation, so even a weak lobe can rival the bump in |r|), a narrower bump
/// (on a wide one r is near 1 over many layers and the resampled peak wanders among
/// them), and a side coefficient that follows each pair's own preference, so a
/// resample's UA follows its resampled preferences (with the category means it
/// would not, and a step's chance correlation at the other layers could win).
/// `--flat` (ladder mode only) makes the profile 1 at every depth.
pub(crate) fn plant(
    mi: usize,
    spec: &Spec,
    checkpoint: Option<Checkpoint>,
    flat: bool,
    cat_of: &[usize],
    prefs: Prefs,
) -> (Profile, Vec<f64>) {
    let center = bump_center(mi, checkpoint);
    match checkpoint {
        Some(_) => (
            Profile {
                center,
                // About 1.5 layer spacings: narrow, but never between two layers.
                width: (1.5 / f64::from(spec.layers)).clamp(0.06, 0.12),
                lobe: 0.0,
            },
            prefs.pair,
        ),
        None => (
            Profile {
                center,
                // Infinitely wide: k(t) = 1 at every depth.
                width: if flat { f64::INFINITY } else { 0.12 },
                lobe: if flat { 0.0 } else { 0.8 },
            },
            cat_of.iter().map(|&c| prefs.category[c]).collect(),
        ),
    }
}

/// The layer profile `k(t)`: a bump of `width` at `center`, a negative lobe of
/// depth `lobe` at 0.85.
#[derive(Clone, Copy)]
pub(crate) struct Profile {
    center: f64,
    width: f64,
    lobe: f64,
}

impl Profile {
    fn at(self, t: f64) -> f64 {
        (-((t - self.center) / self.width).powi(2)).exp()
            - self.lobe * (-((t - 0.85) / 0.12).powi(2)).exp()
    }
}

/// One model's planted vectors: a statement's vector at layer l is
/// `u + a * v_{c,S} + noise`, with the side coefficient `a` following the layer
/// profile around its centre.
pub(crate) struct Planted<'a> {
    pub(crate) options: &'a Options,
    pub(crate) hidden: usize,
    pub(crate) layers: u32,
    mseed: u64,
    profile: Profile,
    u: Vec<f64>,
    /// Per category, the A and B directions.
    dirs: Vec<[Vec<f64>; 2]>,
    pub(crate) cat_of: &'a [usize],
    /// Per statement, the preference its side coefficient follows.
    drive: Vec<f64>,
}

impl<'a> Planted<'a> {
    pub(crate) fn new(
        options: &'a Options,
        spec: &Spec,
        mseed: u64,
        profile: Profile,
        cat_of: &'a [usize],
        drive: Vec<f64>,
    ) -> Self {
        let hidden = spec.hidden;
        let dirs = (0..options.categories.len())
            .map(|c| [0, 1].map(|side| unit_vector(hidden, stream(&[mseed, 4, c as u64, side]))))
            .collect();
        Planted {
            options,
            hidden,
            layers: spec.layers,
            mseed,
            profile,
            u: unit_vector(hidden, stream(&[mseed, 3])),
            dirs,
            cat_of,
            drive,
        }
    }

    /// One layer's `n_statements x hidden` matrix per pooling of `--poolings`.
    pub(crate) fn layer(&self, layer: u32) -> Vec<Vec<f32>> {
        let k = self.profile.at(f64::from(layer) / f64::from(self.layers));
        self.options
            .poolings
            .par_iter()
            .map(|&p| {
                let mut block = vec![0f32; self.cat_of.len() * self.hidden];
                block
                    .par_chunks_mut(self.hidden)
                    .enumerate()
                    .for_each(|(i, out)| self.statement(out, i, layer, p, k));
                block
            })
            .collect()
    }

    fn statement(&self, out: &mut [f32], i: usize, layer: u32, p: Pooling, k: f64) {
        let (mseed, hidden) = (self.mseed, self.hidden);
        let c = self.cat_of[i];
        let side = i % 2;
        let sign = if side == 0 { 1.0 } else { -1.0 };
        let a = (0.8 + sign * 0.5 * k * self.drive[i]).max(0.05);
        let mut base = stream(&[mseed, 5, i as u64]);
        let mut lay = stream(&[mseed, 6, i as u64, u64::from(layer), p as u64]);
        let (w_base, w_layer, scale) = match p {
            Pooling::MeanSkipFirst => (0.8, 0.6, 1.0),
            Pooling::Mean => (0.8, 0.7, 1.0),
            Pooling::Last => (0.5, 1.2, 0.6),
        };
        let sigma = 1.2 / (hidden as f64).sqrt();
        let (u, v) = (&self.u, &self.dirs[c][side]);
        let rogue = self.options.rogue.map_or(0.0, |depth| {
            (-((f64::from(layer) / f64::from(self.layers) - depth) / 0.08).powi(2)).exp()
        });
        if rogue < 1e-3 {
            for d in 0..hidden {
                let noise = w_base * normal(&mut base) + w_layer * normal(&mut lay);
                out[d] = (scale * (u[d] + a * v[d]) + sigma * noise) as f32;
            }
        } else {
            // The planted directions fade out; what is left, noise of mean about zero,
            // is scaled by the statement's side and preference. Raw cosines around the
            // rogue dimension rank UA by those norms; centred cosines of zero-mean noise
            // do not depend on its scale, so centring takes that signal away.
            let f = (1.0 + sign * 0.6 * rogue * self.drive[i]).max(0.1);
            for d in 0..hidden {
                let noise = w_base * normal(&mut base) + w_layer * normal(&mut lay);
                out[d] = ((1.0 - rogue) * scale * (u[d] + a * v[d]) + f * sigma * noise) as f32;
            }
            out[hidden - 1] += (50.0 * rogue) as f32;
        }
        if let Some(m) = self.options.massive.filter(|_| layer > 0) {
            // Fixed dimensions (the first `count`), about `scale`, varying by 1%
            // between statements.
            for o in out.iter_mut().take(m.count) {
                *o = (m.scale * (1.0 + 0.01 * normal(&mut lay))) as f32;
            }
        }
    }
}
