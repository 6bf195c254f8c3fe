//! Pooling one statement's hidden states at one layer into one vector each
//! for `mean`, `mean_skip_first` and `last`, over its real tokens only.
//! Sums run in f64 whatever the model dtype.

use schemas::Pooling;

/// A hidden-state element the graph may output.
pub trait Elem: Copy {
    fn to_f64(self) -> f64;
}

impl Elem for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Elem for half::f16 {
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
}

/// Pools `slab` (`[seq, hidden]` row-major, of which the first `n` tokens are
/// real) and appends one `hidden`-long vector per pooling to `out`, in the
/// order of `poolings`. `n` must meet every pooling's minimum (checked before
/// the run); `acc` is scratch space.
pub fn pool_into<T: Elem>(
    slab: &[T],
    hidden: usize,
    n: usize,
    poolings: &[Pooling],
    acc: &mut Vec<f64>,
    out: &mut Vec<f32>,
) {
    debug_assert!(n >= 1 && slab.len() >= n * hidden);
    // acc = sum over tokens 1..n
    acc.clear();
    acc.resize(hidden, 0.0);
    for t in 1..n {
        let row = &slab[t * hidden..(t + 1) * hidden];
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x.to_f64();
        }
    }
    for &p in poolings {
        match p {
            Pooling::Mean => {
                let first = &slab[..hidden];
                out.extend(
                    acc.iter()
                        .zip(first)
                        .map(|(&a, &x)| ((a + x.to_f64()) / n as f64) as f32),
                );
            }
            Pooling::MeanSkipFirst => {
                let d = (n - 1) as f64;
                out.extend(acc.iter().map(|&a| (a / d) as f32));
            }
            Pooling::Last => {
                out.extend(
                    slab[(n - 1) * hidden..n * hidden]
                        .iter()
                        .map(|&x| x.to_f64() as f32),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_real_tokens_only() {
        // seq 4 (last token is padding), hidden 2
        let slab: Vec<f32> = vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 99.0, 99.0];
        let mut acc = Vec::new();
        let mut out = Vec::new();
        pool_into(&slab, 2, 3, &Pooling::ALL, &mut acc, &mut out);
        assert_eq!(out, vec![2.0, 20.0, 2.5, 25.0, 3.0, 30.0]);
    }

    #[test]
    fn pools_f16_in_order_given() {
        let slab: Vec<half::f16> = [0.5f32, 1.5, 2.5]
            .iter()
            .map(|&x| half::f16::from_f32(x))
            .collect();
        let mut acc = Vec::new();
        let mut out = Vec::new();
        pool_into(
            &slab,
            1,
            3,
            &[Pooling::Last, Pooling::MeanSkipFirst, Pooling::Mean],
            &mut acc,
            &mut out,
        );
        assert_eq!(out, vec![2.5, 2.0, 1.5]);
    }

    #[test]
    fn single_token_mean_and_last() {
        let slab = [4.0f32, -4.0];
        let mut acc = Vec::new();
        let mut out = Vec::new();
        pool_into(
            &slab,
            2,
            1,
            &[Pooling::Mean, Pooling::Last],
            &mut acc,
            &mut out,
        );
        assert_eq!(out, vec![4.0, -4.0, 4.0, -4.0]);
    }
}
