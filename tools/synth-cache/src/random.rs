//! The deterministic streams every value is drawn from: a cache's bytes depend on
//! the seed and the options only.

pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the stream named by `parts` (seed, model, purpose, ...).
pub(crate) fn stream(parts: &[u64]) -> u64 {
    let mut s = 0x1234_5678_9abc_def0u64;
    for &p in parts {
        s ^= p.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        splitmix(&mut s);
    }
    s
}

/// Approximately standard normal (Irwin–Hall of four 16-bit uniforms): fast and deterministic.
pub(crate) fn normal(state: &mut u64) -> f64 {
    let x = splitmix(state);
    let s: f64 = (0..4)
        .map(|k| ((x >> (16 * k)) & 0xffff) as f64 / 65535.0)
        .sum();
    (s - 2.0) * 3f64.sqrt()
}

pub(crate) fn unit_vector(hidden: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let v: Vec<f64> = (0..hidden).map(|_| normal(&mut s)).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}
