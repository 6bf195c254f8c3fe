//! The `--out` folder of `analyze` and `analyze convert`: where it may lie, and how it
//! is written. Everything goes into a temporary folder beside it, which is renamed
//! into place only once complete, so a failure (full disk, unwritable file) leaves
//! the previous output untouched and nothing half-written behind.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use sha2::{Digest, Sha256};

/// Which marker makes `dir` a cache folder (a `manifest.json` that reads as a cache
/// manifest) or a model folder (`export.json` beside `model.onnx`); these generic
/// names alone would also match unrelated projects.
fn folder_marker(dir: &Path) -> Option<&'static str> {
    let manifest = dir.join(schemas::MANIFEST_FILE);
    if manifest.is_file() && schemas::Manifest::read(&manifest).is_ok() {
        return Some(schemas::MANIFEST_FILE);
    }
    if dir.join("export.json").is_file() && dir.join("model.onnx").is_file() {
        return Some("export.json");
    }
    None
}

/// What an output folder holds, so that an existing one is replaced only when it is
/// an earlier output of the same command.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `analyze`: results.json, report.md, layer_correlations.csv, plots.
    Analysis,
    /// `analyze convert`: one `.safetensors` file per model.
    Convert,
}

impl Kind {
    fn owns(self, name: &str) -> bool {
        match self {
            Kind::Analysis => {
                matches!(
                    name,
                    "results.json" | "report.md" | "layer_correlations.csv"
                ) || name.ends_with(".png")
                    || name.ends_with(".svg")
            }
            Kind::Convert => name.ends_with(".safetensors"),
        }
    }
}

/// `p` made absolute with symlinks resolved as far as it exists (the rest is
/// appended lexically), so that containment can be compared.
fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut existing = abs.clone();
    let mut rest: Vec<&OsStr> = Vec::new();
    let mut comps = abs.components().rev();
    while std::fs::canonicalize(&existing).is_err() {
        match comps.next() {
            Some(c) => rest.push(c.as_os_str()),
            None => break,
        }
        if !existing.pop() {
            break;
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for c in rest.iter().rev() {
        match Path::new(c).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => out.push(c),
        }
    }
    out
}

/// Checks, before any work, that `out` may be written: `check_place`, then puts back
/// an earlier output that a killed run left moved aside (`recover`), and, where `out`
/// exists, checks that it holds only an earlier output of `kind`. Returns notes.
pub fn check(out: &Path, cache: &Path, kind: Kind) -> Result<Vec<String>> {
    check_place(out, cache)?;
    let notes = recover(out);
    check_replaceable(out, kind)?;
    Ok(notes)
}

/// Refuses an `--out` that would mix results with caches: the `--cache` folder
/// itself, a folder inside it or around it, or a folder in a cache or model folder.
pub fn check_place(out: &Path, cache: &Path) -> Result<()> {
    let (o, c) = (resolve(out), resolve(cache));
    if o == c {
        bail!(
            "--out {} is the --cache folder; write the results to a folder of their own",
            out.display()
        );
    }
    if o.starts_with(&c) {
        bail!(
            "--out {} lies inside the --cache folder {}; the next analysis would take it for a model; write the results outside the cache",
            out.display(),
            cache.display()
        );
    }
    if c.starts_with(&o) {
        bail!(
            "--out {} holds the --cache folder {}; --out is replaced as a whole, which would delete the caches; choose another folder",
            out.display(),
            cache.display()
        );
    }
    for dir in o.ancestors() {
        if let Some(marker) = folder_marker(dir) {
            bail!(
                "--out {} lies in {}, a cache or model folder (it holds {marker}); write the results outside it",
                out.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuses to replace an existing `out` that holds anything `kind` did not write.
fn check_replaceable(out: &Path, kind: Kind) -> Result<()> {
    // Renamed aside and replaced, a link would become a folder and leave the one it
    // points to as it was, with no word.
    if out.is_symlink() {
        let target = std::fs::read_link(out).unwrap_or_default();
        bail!(
            "--out {} is a symbolic link (to {}); the output replaces --out as a whole, so pass the folder itself or another one",
            out.display(),
            target.display()
        );
    }
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("--out {} exists and is not a folder", out.display());
    }
    let entries =
        std::fs::read_dir(out).map_err(|e| anyhow!("--out {}: cannot list: {e}", out.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("--out {}: cannot list: {e}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || !kind.owns(&name) {
            bail!(
                "--out {} already holds '{name}', which this command does not write; the folder is replaced as a whole, so choose a new or empty folder",
                out.display()
            );
        }
    }
    Ok(())
}

/// Where `out`'s temp folder and its moved-aside earlier output lie: the folder
/// around `out`, and the stem of `.STEM.tmp-PID` and `.STEM.old-PID` there. The stem
/// is `out`'s name, or for a long one (a legal 255-byte name leaves no room for the
/// suffixes) its start and a hash of the whole name, so that two outputs in one folder
/// never share one. None when `out` does not end in a name.
fn aside(out: &Path) -> Option<(PathBuf, String)> {
    /// Bytes of a name kept whole: `.`, `.old-` and a pid add at most 16 of the 255.
    const KEPT: usize = 200;
    let name = out.file_name()?.to_string_lossy().into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if name.len() <= KEPT {
        return Some((parent, name));
    }
    let mut cut = KEPT - 20;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
    Some((parent, format!("{}~{hash}", &name[..cut])))
}

/// Flushes every file in `dir` and the folder itself to disk, so that the rename
/// publishes complete files even across a crash.
fn sync_all(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the output through `write` (given the temporary folder) and renames the
/// result to `out`, replacing an earlier output: the old folder is renamed aside,
/// the new one in, then the old one removed. On any failure the temporary folder is
/// removed and `out` is as before. Returns notes (a leftover that could not be removed).
pub fn write_atomically<T>(
    out: &Path,
    kind: Kind,
    write: impl FnOnce(&Path) -> Result<T>,
) -> Result<(T, Vec<String>)> {
    let (parent, stem) = aside(out)
        .ok_or_else(|| anyhow!("--out {} does not end in a folder name", out.display()))?;
    let mut notes = recover(out);
    check_replaceable(out, kind)?;
    std::fs::create_dir_all(&parent).map_err(|e| {
        anyhow!(
            "{}: cannot create the folder for --out: {e}",
            parent.display()
        )
    })?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{stem}.tmp-{pid}"));
    let old = parent.join(format!(".{stem}.old-{pid}"));
    let _cleanup = InProgress::register(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| {
        anyhow!(
            "{}: cannot create a temporary folder for --out: {e}; choose an --out in a writable folder",
            tmp.display()
        )
    })?;
    let written = write(&tmp).and_then(|v| {
        sync_all(&tmp).map_err(|e| anyhow!("{}: cannot flush to disk: {e}", tmp.display()))?;
        Ok(v)
    });
    let value = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let replacing = out.exists();
    {
        // SIGINT and SIGTERM wait for this lock (`remove_in_progress_on_signal`), so
        // a signal never falls between the two renames: `out` holds the earlier
        // output until the new one is in place. Published, the temp folder is no
        // longer the handler's to remove.
        let mut in_progress = IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
        let published = publish(out, &tmp, &old, replacing);
        in_progress.retain(|p| *p != tmp);
        published?;
        // The earlier output is removed under the lock too: a signal that came just
        // after the renames would otherwise exit with it still moved aside.
        let _ = std::fs::File::open(&parent).and_then(|d| d.sync_all());
        if replacing {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                notes.push(format!(
                    "{}: the earlier output, moved aside, could not be removed ({e}); delete it by hand",
                    old.display()
                ));
            }
        }
    }
    Ok((value, notes))
}

/// Moves the earlier output (if `replacing`) aside to `old` and the complete new one
/// from `tmp` into `out`; on failure `out` is as before and `tmp` removed.
fn publish(out: &Path, tmp: &Path, old: &Path, replacing: bool) -> Result<()> {
    if replacing {
        if let Err(e) = std::fs::rename(out, old) {
            let _ = std::fs::remove_dir_all(tmp);
            bail!(
                "--out {}: cannot move the earlier output aside: {e}; it is unchanged",
                out.display()
            );
        }
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        let _ = std::fs::remove_dir_all(tmp);
        if replacing {
            let _ = std::fs::rename(old, out);
        }
        bail!(
            "--out {}: cannot move the new output into place: {e}; the earlier output is unchanged",
            out.display()
        );
    }
    Ok(())
}

/// The temp folders of this process's unfinished outputs: SIGINT or SIGTERM removes
/// them before the process exits, so a stopped run leaves no half-written copy.
static IN_PROGRESS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Lists a temp folder in `IN_PROGRESS` while it lives.
struct InProgress(PathBuf);

impl InProgress {
    fn register(tmp: &Path) -> InProgress {
        static HANDLER: std::sync::Once = std::sync::Once::new();
        HANDLER.call_once(remove_in_progress_on_signal);
        if let Ok(mut v) = IN_PROGRESS.lock() {
            v.push(tmp.to_path_buf());
        }
        InProgress(tmp.to_path_buf())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Ok(mut v) = IN_PROGRESS.lock() {
            v.retain(|p| *p != self.0);
        }
    }
}

#[cfg(unix)]
fn remove_in_progress_on_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Held until the exit: an output being published is published first, and
            // none starts after. The writer may still add a file to a temp folder
            // while it is removed: a few tries (what stays is a later run's to remove).
            let v = IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
            for p in v.iter() {
                for _ in 0..5 {
                    if std::fs::remove_dir_all(p).is_ok() || !p.exists() {
                        break;
                    }
                }
            }
            std::process::exit(128 + sig);
        }
    });
}

#[cfg(not(unix))]
fn remove_in_progress_on_signal() {}

/// Removes what runs that died without cleaning up (SIGKILL, power loss) left beside
/// `out`: their temp folders, and an earlier output they had moved aside, which goes
/// back into place when `out` itself is gone (killed between the two renames of
/// `publish`: the earlier output is complete, the new one may not have been). Only
/// where a pid can be checked (/proc). Leftovers named with this process's pid are an
/// earlier process's that had it: this one calls it before writing anything.
fn recover(out: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let Some((parent, stem)) = aside(out) else {
        return notes;
    };
    if !Path::new("/proc/self").exists() {
        return notes;
    }
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return notes;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{stem}.")) else {
            continue;
        };
        let Some((what, pid)) = rest.split_once('-') else {
            continue;
        };
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|p| p == std::process::id() || !Path::new(&format!("/proc/{p}")).exists());
        if !dead {
            continue;
        }
        let path = entry.path();
        match what {
            "tmp" => {
                let _ = std::fs::remove_dir_all(&path);
            }
            "old" if out.exists() => {
                let _ = std::fs::remove_dir_all(&path);
            }
            // `out` is gone: this is the earlier output, moved aside and never replaced.
            "old" => {
                let restored = std::fs::rename(&path, out);
                if restored.is_ok() {
                    notes.push(format!(
                        "{}: restored the earlier output that a stopped run had moved aside",
                        out.display()
                    ));
                }
            }
            _ => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_beside_the_cache_is_fine_and_in_or_around_it_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(cache.join("m")).unwrap();
        check_place(&tmp.path().join("out"), &cache).unwrap();
        let cases = [
            (cache.clone(), "is the --cache folder"),
            (cache.join("results"), "inside the --cache folder"),
            (cache.join("x/../results"), "inside the --cache folder"),
            (tmp.path().to_path_buf(), "holds the --cache folder"),
        ];
        for (out, want) in cases {
            let e = check_place(&out, &cache).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", out.display());
        }
        let model = tmp.path().join("models/pythia");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("export.json"), "{}").unwrap();
        // export.json alone is someone else's file name too.
        check_place(&model.join("res"), &cache).unwrap();
        std::fs::write(model.join("model.onnx"), "").unwrap();
        let e = check_place(&model.join("res"), &cache)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cache or model folder (it holds export.json)"),
            "{e}"
        );
    }

    #[test]
    fn replaces_an_earlier_output_and_keeps_it_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let write = |text: &'static str| {
            move |dir: &Path| -> Result<()> {
                std::fs::write(dir.join("report.md"), text)?;
                Ok(())
            }
        };
        write_atomically(&out, Kind::Analysis, write("one")).unwrap();
        write_atomically(&out, Kind::Analysis, write("two")).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("report.md")).unwrap(),
            "two"
        );
        let e = write_atomically(&out, Kind::Analysis, |dir: &Path| -> Result<()> {
            std::fs::write(dir.join("results.json"), "{")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(
            std::fs::read_to_string(out.join("report.md")).unwrap(),
            "two"
        );
        assert!(!out.join("results.json").exists());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary folders left behind");
    }

    #[test]
    fn a_folder_with_other_files_is_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let e = write_atomically(tmp.path(), Kind::Convert, |_: &Path| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already holds 'notes.txt'"), "{e}");
        assert!(tmp.path().join("notes.txt").is_file());
    }
}
