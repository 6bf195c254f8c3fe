//! The one parity rule: how far extract's numbers may be from transformers'.
//!
//! `scripts/parity.py` holds the same rule with the same constants, for the Python
//! scripts (export's verify, check-parity, real-model-check, gpu-check); a test
//! compares the two. The reasoning, in short:
//!
//! Trained models carry a few "massive activation" dimensions with values in the
//! thousands, where float32's spacing alone is ~1e-4, so an absolute bound refuses
//! plain rounding. Floating-point error is relative to the magnitudes that flow
//! through the arithmetic, so each pooled vector is judged against its own scale:
//! `max_j |ours_j - ref_j| / max_j |ref_j|`, and the NLL against `max(1, |ref|)`.
//!
//! The bound is counted in units of roundoff `u` (2^-24 for float32, 2^-11 for
//! float16): [`ACCUM_UNITS`] `u(float32)` for reduction order (ONNX Runtime and
//! PyTorch sum the same products in another order, in float32 accumulators
//! whatever the dtype: ~sqrt(n) u per sum, compounded over layers; measured up to
//! ~90 u on a real 18-layer model) plus [`STORE_UNITS`] `u(dtype)` for storage (a
//! float16 graph rounds each stored activation to 11 bits, at other places than
//! PyTorch does). float32: 1.53e-5; float16: 3.13e-2.

use crate::model_dir::Dtype;

pub const ACCUM_UNITS: f64 = 192.0;
pub const STORE_UNITS: f64 = 64.0;

/// Unit roundoff: half the spacing of floating-point numbers just above 1.
pub fn unit_roundoff(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 2f64.powi(-24),
        Dtype::F16 => 2f64.powi(-11),
    }
}

/// The largest relative error allowed for a model computing in `dtype`.
pub fn bound(dtype: Dtype) -> f64 {
    ACCUM_UNITS * unit_roundoff(Dtype::F32) + STORE_UNITS * unit_roundoff(dtype)
}

/// How far one pooled vector is from its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorError {
    /// `max_j |ours_j - ref_j| / max_j |ref_j|`; infinite when any value is not finite.
    pub relative: f64,
    /// The dimension of the largest difference.
    pub dim: usize,
    /// `max_j |ref_j|`, the vector's scale.
    pub scale: f64,
}

pub fn vector_error(ours: &[f32], reference: &[f32]) -> VectorError {
    // The smallest normal float32 keeps the ratio defined for an all-zero reference.
    let scale = reference
        .iter()
        .fold(f64::from(f32::MIN_POSITIVE), |m, &x| {
            m.max(f64::from(x).abs())
        });
    let (mut worst, mut dim) = (0.0f64, 0usize);
    for (j, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let d = (f64::from(a) - f64::from(b)).abs();
        let d = if d.is_finite() { d } else { f64::INFINITY };
        if d > worst {
            (worst, dim) = (d, j);
        }
    }
    let relative = if scale.is_finite() {
        worst / scale
    } else {
        f64::INFINITY
    };
    VectorError {
        relative,
        dim,
        scale,
    }
}

/// `|ours - ref| / max(1, |ref|)`; infinite when either is not finite.
pub fn nll_error(ours: f64, reference: f64) -> f64 {
    let e = (ours - reference).abs() / reference.abs().max(1.0);
    if e.is_finite() {
        e
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_roundoff() {
        assert!((bound(Dtype::F32) - 256.0 * 2f64.powi(-24)).abs() < 1e-18);
        assert!((bound(Dtype::F32) - 1.526e-5).abs() < 1e-8);
        assert!((bound(Dtype::F16) - 3.126e-2).abs() < 1e-5);
    }

    #[test]
    fn a_massive_dimension_scales_the_error() {
        // The case: 1755.8837 vs 1755.8835 is rounding, not a bug.
        let reference = [0.5f32, -1755.8835, 0.25];
        let ours = [0.5f32, -1755.8837, 0.25];
        let e = vector_error(&ours, &reference);
        assert_eq!(e.dim, 1);
        assert!(e.relative < 1e-7, "{e:?}");
        assert!(e.relative <= bound(Dtype::F32));
    }

    #[test]
    fn a_real_difference_is_refused() {
        let reference = [1.0f32, 2.0, 3.0];
        let e = vector_error(&[1.0, 2.001, 3.0], &reference);
        assert_eq!(e.dim, 1);
        assert!(e.relative > bound(Dtype::F32));
    }

    #[test]
    fn non_finite_values_are_infinitely_wrong() {
        assert_eq!(
            vector_error(&[f32::NAN, 0.0], &[1.0, 0.0]).relative,
            f64::INFINITY
        );
        assert_eq!(
            vector_error(&[1.0, 0.0], &[f32::INFINITY, 0.0]).relative,
            f64::INFINITY
        );
        assert_eq!(nll_error(f64::NAN, 1.0), f64::INFINITY);
    }

    #[test]
    fn zero_reference_stays_defined() {
        assert_eq!(vector_error(&[0.0, 0.0], &[0.0, 0.0]).relative, 0.0);
    }

    #[test]
    fn nll_is_relative_above_one() {
        assert!((nll_error(10.001, 10.0) - 1e-4).abs() < 1e-9);
        assert!((nll_error(0.501, 0.5) - 1e-3).abs() < 1e-9);
    }
}
