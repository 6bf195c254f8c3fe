//! One model counted twice gives two identical peak positions, a std of 0 and a
//! confident "stable" verdict. These checks refuse a `--models` list naming a
//! folder twice, two folders that are one (a symlink), and two folders holding the
//! same model (a backup copy), recognised by the weights' hashes in the manifests.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::types::ModelCache;

/// `--models a,a`: refused rather than silently de-duplicated, since a repeated
/// name is usually a typo for another model.
pub fn check_names(only: &[String]) -> Result<()> {
    for (i, name) in only.iter().enumerate() {
        if only[..i].contains(name) {
            bail!("--models names '{name}' twice; name each model folder once");
        }
    }
    Ok(())
}

/// Two listed folders that resolve to the same directory.
pub fn check_same_folders(dirs: &[(String, PathBuf)]) -> Result<()> {
    let real: Vec<Option<PathBuf>> = dirs
        .iter()
        .map(|(_, d)| std::fs::canonicalize(d).ok())
        .collect();
    for i in 0..dirs.len() {
        for j in i + 1..dirs.len() {
            if real[i].is_some() && real[i] == real[j] {
                bail!(
                    "{} and {} are the same folder (one is a symlink to the other): the model would count twice; keep one, or pick folders with --models",
                    dirs[i].1.display(),
                    dirs[j].1.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether two caches hold the same model. The graph hash decides; where both
/// manifests list the model's files (`model.files`, newer caches) those must match
/// too, since a graph with external weights is the same for every checkpoint; for
/// older caches two different recorded revisions keep such checkpoints apart.
pub fn same_model(a: &ModelCache, b: &ModelCache) -> bool {
    let (ma, mb) = (&a.manifest().model, &b.manifest().model);
    if ma.onnx_sha256 != mb.onnx_sha256 {
        return false;
    }
    if !ma.files.is_empty() && !mb.files.is_empty() {
        return ma.files == mb.files;
    }
    !matches!((&ma.revision, &mb.revision), (Some(ra), Some(rb)) if ra != rb)
}

/// Refuses two caches of the same model, naming both folders.
pub fn check_same_weights(models: &[ModelCache]) -> Result<()> {
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            if same_model(a, b) {
                bail!(
                    "{} and {} hold the same model (model.onnx sha256 {}…): counting it twice fakes agreement across sizes; keep one (a backup copy?), or pick folders with --models",
                    a.cache.dir.display(),
                    b.cache.dir.display(),
                    &a.manifest().model.onnx_sha256.chars().take(12).collect::<String>()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_are_refused() {
        check_names(&["a".into(), "b".into()]).unwrap();
        let e = check_names(&["a".into(), "b".into(), "a".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--models names 'a' twice; name each model folder once");
    }
}
