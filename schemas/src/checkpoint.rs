//! Where a cache sits in a grid of model sizes × training checkpoints: the
//! model's series and size, and the training step of its revision.
//!
//! The rules are the contract's (`CONTRACT.md`, `model.series`, `model.size`,
//! `model.step`); `scripts/pythia-suite` applies the same ones in Python.

/// The training step a revision names: `step<N>` (Pythia's `step143000`), or
/// `step<N>-...` (OLMo's `step1000-tokens4B`). Anything else names no step.
pub fn step_of(revision: &str) -> Option<u64> {
    let rest = revision.strip_prefix("step")?;
    let digits = rest.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A size token: digits, an optional decimal part, then `m` or `b` (`410m`, `1.4b`).
fn is_size(token: &str) -> bool {
    let Some(num) = token
        .strip_suffix(['m', 'b', 'M', 'B'])
        .filter(|n| !n.is_empty())
    else {
        return false;
    };
    let mut parts = num.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && frac.is_none_or(digits)
}

/// Series and size from a model id, where exactly one `-`-separated token of its
/// last path component is a size: `EleutherAI/pythia-410m` → (`pythia`, `410m`),
/// `EleutherAI/pythia-1.4b-deduped` → (`pythia-deduped`, `1.4b`),
/// `google/gemma-3-270m` → (`gemma-3`, `270m`). None when no token or several are
/// sizes, or nothing is left for the series: the id does not say unambiguously.
pub fn series_and_size(model_id: &str) -> Option<(String, String)> {
    let last = model_id.trim_end_matches('/').rsplit('/').next()?;
    let tokens: Vec<&str> = last.split('-').collect();
    let sizes: Vec<usize> = (0..tokens.len()).filter(|&i| is_size(tokens[i])).collect();
    let [at] = sizes[..] else {
        return None;
    };
    let series: Vec<&str> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, t)| i != at && !t.is_empty())
        .map(|(_, t)| *t)
        .collect();
    if series.is_empty() {
        return None;
    }
    Some((series.join("-"), tokens[at].to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases both implementations run (scripts/pythia-suite's Python copy of these
    /// rules reads the same file: python/tests/test_checkpoint_names.py).
    fn cases(rule: &str) -> Vec<(String, serde_json::Value)> {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../tests/checkpoint_names.json")).expect("JSON");
        let cases = table[rule].as_array().expect("a list of cases");
        assert!(cases.len() > 10, "{rule}: {} cases", cases.len());
        cases
            .iter()
            .map(|c| (c[0].as_str().expect("input").to_string(), c[1].clone()))
            .collect()
    }

    #[test]
    fn steps() {
        for (revision, expected) in cases("step") {
            assert_eq!(step_of(&revision), expected.as_u64(), "{revision:?}");
            assert!(expected.is_null() || expected.is_u64(), "{expected}");
        }
    }

    #[test]
    fn series_and_sizes() {
        for (id, expected) in cases("series_and_size") {
            let expected = (!expected.is_null()).then(|| {
                let s = |i: usize| expected[i].as_str().expect("a string").to_string();
                (s(0), s(1))
            });
            assert_eq!(series_and_size(&id), expected, "{id:?}");
        }
    }
}
