//! Where the model order comes from: `model.n_parameters` in each manifest, checked
//! against the shape the same manifest records (an edited count would silently
//! reorder the models and so change the verdict), else `n_layers * hidden^2`.

use anyhow::{bail, Result};

use super::types::ModelCache;

/// A generous ceiling on the vocabulary (the largest public ones are ~260k), which
/// the manifest does not record.
pub const MAX_VOCAB: u128 = 1_000_000;

/// Plausible parameter counts for a decoder of `n_layers` blocks of width `hidden`:
/// at least the blocks' square matrices (`n_layers * hidden^2`, far below the real
/// ~12x), at most ten times a dense transformer with untied embeddings of
/// `MAX_VOCAB` (`12 * n_layers * hidden^2 + 2 * MAX_VOCAB * hidden`), which leaves
/// room for mixtures of experts.
pub fn plausible_range(n_layers: u32, hidden: u32) -> (u128, u128) {
    let (l, h) = (u128::from(n_layers), u128::from(hidden));
    (l * h * h, 10 * (12 * l * h * h + 2 * MAX_VOCAB * h))
}

/// The parameter count that orders a model, and whether it is estimated (no
/// `n_parameters`).
pub fn params_for_ordering(
    manifest_path: &std::path::Path,
    m: &schemas::ModelInfo,
) -> Result<(u64, bool)> {
    let Some(n) = m.n_parameters else {
        let est = u128::from(m.n_layers) * u128::from(m.hidden_size).pow(2);
        return Ok((u64::try_from(est).unwrap_or(u64::MAX), true));
    };
    let (lo, hi) = plausible_range(m.n_layers, m.hidden_size);
    if u128::from(n) < lo || u128::from(n) > hi {
        bail!(
            "{}: model.n_parameters = {n} is implausible for {} layers of hidden size {} (expected {lo} to {hi}); it orders the models by size, so correct it, or remove it to order by n_layers * hidden_size^2",
            manifest_path.display(),
            m.n_layers,
            m.hidden_size
        );
    }
    Ok((n, false))
}

/// Notes where the recorded counts order two models against their shapes by more
/// than a factor 2 (vocabulary alone rarely does that): the order is the manifests'.
pub fn order_notes(models: &[ModelCache]) -> Vec<String> {
    let body = |m: &ModelCache| 12 * u128::from(m.n_layers()) * (m.hidden() as u128).pow(2);
    let mut notes = Vec::new();
    for (i, small) in models.iter().enumerate() {
        for big in &models[i + 1..] {
            if !small.params_estimated && !big.params_estimated && body(small) > 2 * body(big) {
                notes.push(format!(
                    "{} is ordered before {} by n_parameters ({} < {}) although its shape ({} layers x {}) is much larger than {}'s ({} x {}); check model.n_parameters in their manifest.json",
                    small.name,
                    big.name,
                    small.params,
                    big.params,
                    small.n_layers(),
                    small.hidden(),
                    big.name,
                    big.n_layers(),
                    big.hidden()
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built from JSON so that keys added to `ModelInfo` later need no change here.
    fn info(n_layers: u32, hidden: u32, n: Option<u64>) -> schemas::ModelInfo {
        serde_json::from_value(serde_json::json!({
            "id": "m", "revision": null, "display_name": "m",
            "n_layers": n_layers, "hidden_size": hidden, "n_parameters": n,
            "dtype": "float32", "onnx_sha256": "0".repeat(64), "tokenizer_sha256": "0".repeat(64)
        }))
        .expect("a valid ModelInfo")
    }

    #[test]
    fn real_pythia_counts_are_plausible() {
        let p = std::path::Path::new("m/manifest.json");
        for (l, h, n) in [
            (6, 512, 70_426_624u64),
            (24, 1024, 405_334_016),
            (24, 2048, 1_414_647_808),
            (32, 4096, 6_857_302_016),
            (36, 5120, 11_846_072_320),
        ] {
            assert_eq!(
                params_for_ordering(p, &info(l, h, Some(n))).unwrap(),
                (n, false)
            );
        }
    }

    #[test]
    fn edited_counts_are_refused() {
        let p = std::path::Path::new("m/manifest.json");
        for n in [1_000_000_000_000u64, 0, 1000] {
            let e = params_for_ordering(p, &info(24, 1024, Some(n)))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("m/manifest.json: model.n_parameters") && e.contains("implausible"),
                "{e}"
            );
        }
        assert_eq!(
            params_for_ordering(p, &info(3, 8, None)).unwrap(),
            (192, true)
        );
    }
}
