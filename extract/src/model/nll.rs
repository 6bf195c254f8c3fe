//! Statement NLL from the graph's `token_logprobs`: position t >= 1 holds
//! log p(input_ids[t] | tokens < t), position 0 holds 0.

/// `-sum_{t=1}^{n-1} logprobs[t]` in f64 over a row's `n` real tokens, and
/// `n - 1`, the number of predicted tokens. transformers' loss with
/// `labels = input_ids` is `nll_sum / n_predicted`.
pub fn nll_sum(row: &[f32], n: usize) -> (f64, u32) {
    debug_assert!(n >= 2 && row.len() >= n);
    let sum: f64 = row[1..n].iter().map(|&x| -f64::from(x)).sum();
    (sum, (n - 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_position_zero_and_padding() {
        let row = [0.0f32, -1.0, -2.5, -100.0];
        let (s, k) = nll_sum(&row, 3);
        assert_eq!((s, k), (3.5, 2));
        assert_eq!(s / f64::from(k), 1.75);
    }

    #[test]
    fn two_tokens_predict_one() {
        let (s, k) = nll_sum(&[123.0, -0.25], 2);
        assert_eq!((s, k), (0.25, 1));
    }
}
