//! `--cache URL`: a cache root on a web server (`http://`, `https://`) or on the
//! Hugging Face Hub (`hf://datasets/ORG/NAME[@REVISION]/path`, mapped to the Hub's
//! plain HTTPS file URLs). analyze fetches what this run reads into a local download
//! folder, then reads that folder like any cache: every manifest fresh, the statements,
//! the sidecar (`grams.parquet`) where the analysis reads it, and the embeddings only
//! where it needs the vectors. Each file is checked against the manifest's size and
//! sha256 as it arrives; an interrupted download resumes with an HTTP Range request.
//!
//! A web server lists no folders, so the model folders are named with `--models`.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{FileEntry, Manifest, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE, STATEMENTS_FILE};
use sha2::{Digest, Sha256};

const HUB: &str = "https://huggingface.co";
/// Transfers of one file before giving up: each resumes where the last stopped.
const ATTEMPTS: usize = 5;
/// A manifest is a few kB; anything far larger is not one.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Whether `--cache` names a URL rather than a folder.
pub fn is_url(cache: &Path) -> bool {
    let s = cache.to_string_lossy();
    ["http://", "https://", "hf://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// The HTTPS URL of a cache root, ending in `/`.
pub fn root_url(cache: &str) -> Result<String> {
    let url = match cache.strip_prefix("hf://") {
        Some(rest) => hub_url(cache, rest)?,
        None => cache.to_string(),
    };
    Ok(if url.ends_with('/') { url } else { url + "/" })
}

/// `datasets/ORG/NAME[@REVISION]/path` -> the Hub's `resolve` URL of that folder
/// (REVISION defaults to `main`; one with a slash, like `refs/pr/1`, is given
/// percent-encoded: `refs%2Fpr%2F1`).
fn hub_url(whole: &str, rest: &str) -> Result<String> {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let bad = || {
        anyhow!("{whole}: not a Hub dataset URL; expected hf://datasets/ORG/NAME[@REVISION]/path")
    };
    if parts.len() < 3 || parts[0] != "datasets" || parts[1].is_empty() {
        return Err(bad());
    }
    let (name, revision) = match parts[2].split_once('@') {
        Some((n, r)) => (n, r),
        None => (parts[2], "main"),
    };
    if name.is_empty() || revision.is_empty() {
        return Err(bad());
    }
    let path: String = parts[3..]
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/"))
        .collect();
    Ok(format!(
        "{HUB}/datasets/{}/{name}/resolve/{revision}/{path}",
        parts[1]
    ))
}

/// Where downloads go when `--download-dir` is not given: `$UA_DOWNLOAD_DIR`, else the
/// user's cache folder (`$XDG_CACHE_HOME` or `~/.cache`) under `ua-scaling/downloads`.
pub fn default_download_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("UA_DOWNLOAD_DIR") {
        return Ok(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| anyhow!("no download folder: set --download-dir, or UA_DOWNLOAD_DIR"))?;
    Ok(base.join("ua-scaling").join("downloads"))
}

/// What one run fetched: the local root to read, and the bytes that came over the wire.
pub struct Fetched {
    pub root: PathBuf,
    pub bytes: u64,
}

/// Fetches the `models` of the cache root at `url` into a folder of `download_dir`
/// (one per root URL); `embeddings`: whether this run reads the vectors.
pub fn fetch(
    url: &str,
    models: &[String],
    embeddings: bool,
    download_dir: &Path,
) -> Result<Fetched> {
    let base = root_url(url)?;
    if models.is_empty() {
        bail!("--cache {url}: a web server lists no folders; name the model folders with --models NAME,...");
    }
    let key = hex::encode(&Sha256::digest(base.as_bytes())[..8]);
    let root = download_dir.join(format!("analyze-{key}"));
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the download folder {}", root.display()))?;
    std::fs::write(root.join("url.txt"), format!("{base}\n"))
        .with_context(|| format!("cannot write in {}", root.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut bytes = 0;
    for model in models {
        let folder = format!("{base}{}/", model.trim_matches('/'));
        bytes += fetch_model(&agent, &folder, &root.join(model), embeddings)?;
    }
    Ok(Fetched { root, bytes })
}

/// The manifest fresh, then each file this run reads that is not already here
/// with the manifest's sha256; returns the bytes fetched.
fn fetch_model(agent: &ureq::Agent, folder: &str, dir: &Path, embeddings: bool) -> Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let manifest_url = format!("{folder}{MANIFEST_FILE}");
    let text = get_text(agent, &manifest_url)?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{manifest_url}: not a cache manifest ({e})"))?;
    let mut wanted = vec![STATEMENTS_FILE];
    let compact = manifest.files.contains_key(GRAMS_FILE);
    if compact && !embeddings {
        wanted.push(GRAMS_FILE);
    } else {
        wanted.push(EMBEDDINGS_FILE);
        if compact {
            wanted.push(GRAMS_FILE);
        }
    }
    let mut bytes = text.len() as u64;
    for name in wanted {
        let Some(entry) = manifest.files.get(name) else {
            continue;
        };
        bytes += fetch_file(agent, &format!("{folder}{name}"), &dir.join(name), entry)?;
    }
    // Written last, so a folder whose files do not match its manifest is never left
    // looking complete.
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.part"));
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bytes)
}

fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    let resp = agent.get(url).call().map_err(|e| anyhow!("{url}: {e}"))?;
    check_status(url, resp.status().as_u16(), &[200])?;
    resp.into_body()
        .with_config()
        .limit(MAX_MANIFEST_BYTES)
        .read_to_string()
        .map_err(|e| anyhow!("{url}: {e}"))
}

fn check_status(url: &str, status: u16, ok: &[u16]) -> Result<()> {
    if ok.contains(&status) {
        return Ok(());
    }
    let hint = match status {
        404 => ": not found (is the --cache URL the root holding the model folders, and each --models name right?)",
        401 | 403 => ": not allowed (a private dataset needs credentials analyze does not send)",
        _ => "",
    };
    bail!("{url}: HTTP {status}{hint}")
}

/// `dest` as the manifest lists it: kept when already here with that sha256, else
/// downloaded into `dest.part` (resumed where an earlier transfer stopped) and
/// checked. Returns the bytes fetched.
fn fetch_file(agent: &ureq::Agent, url: &str, dest: &Path, entry: &FileEntry) -> Result<u64> {
    if dest.is_file() && std::fs::metadata(dest)?.len() == entry.bytes {
        if sha256_of(dest)? == entry.sha256 {
            return Ok(0);
        }
        std::fs::remove_file(dest).with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    let part = dest.with_extension(format!(
        "{}.part",
        dest.extension().unwrap_or_default().to_string_lossy()
    ));
    eprintln!("fetching {url} ({:.1} MB)", entry.bytes as f64 / 1e6);
    let bar = progress_bar(entry.bytes);
    let mut fetched = 0;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        match transfer(agent, url, &part, entry.bytes, &bar) {
            Ok(n) => {
                fetched += n;
                last_error = None;
                break;
            }
            Err((n, e)) => {
                fetched += n;
                last_error = Some(e);
            }
        }
    }
    bar.finish_and_clear();
    if let Some(e) = last_error {
        bail!(
            "{e} (after {ATTEMPTS} tries; rerun to resume from {})",
            part.display()
        );
    }
    if sha256_of(&part)? != entry.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!("{url}: its sha256 differs from the manifest's (the file changed on the server, or the copy there is damaged); refused");
    }
    std::fs::rename(&part, dest)
        .with_context(|| format!("cannot move {} into place", dest.display()))?;
    Ok(fetched)
}

/// One request for the rest of `part` (a Range request when some is already here);
/// the bytes written, or those and the error that stopped it.
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    expected: u64,
    bar: &ProgressBar,
) -> Result<u64, (u64, anyhow::Error)> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have > expected {
        let _ = std::fs::remove_file(part);
        return Err((
            0,
            anyhow!("{url}: the partial download is longer than the file; starting over"),
        ));
    }
    if have == expected {
        return Ok(0);
    }
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| (0, anyhow!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    check_status(url, status, &[200, 206]).map_err(|e| (0, e))?;
    // A server that ignores Range sends the whole file again (200).
    let mut file = if status == 206 {
        OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .map_err(|e| (0, anyhow!("{}: {e}", part.display())))?;
    let mut body = resp.into_body();
    let mut reader = body.as_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err((
                    written,
                    anyhow!(
                        "{url}: the connection broke after {} bytes ({e})",
                        have + written
                    ),
                ))
            }
        };
        // The manifest says how long the file is: a server that sends more is not
        // serving it, and would otherwise fill the disk.
        if have + written + n as u64 > expected {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err((
                written,
                anyhow!(
                    "{url}: the server sends more than the manifest's {expected} bytes; refused"
                ),
            ));
        }
        file.write_all(&buf[..n])
            .map_err(|e| (written, anyhow!("{}: {e}", part.display())))?;
        written += n as u64;
        bar.set_position(have + written);
    }
    file.sync_all()
        .map_err(|e| (written, anyhow!("{}: {e}", part.display())))?;
    let now = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if now < expected {
        return Err((
            written,
            anyhow!("{url}: the connection closed after {now} of {expected} bytes"),
        ));
    }
    Ok(written)
}

/// A byte counter on a terminal, nothing in a log.
fn progress_bar(bytes: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(bytes);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn sha256_of(path: &Path) -> Result<String> {
    schemas::sha256_file(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_map_to_resolve_urls() {
        assert_eq!(
            root_url("hf://datasets/org/name/caches/pythia").unwrap(),
            "https://huggingface.co/datasets/org/name/resolve/main/caches/pythia/"
        );
        assert_eq!(
            root_url("hf://datasets/org/name@v1.0").unwrap(),
            "https://huggingface.co/datasets/org/name/resolve/v1.0/"
        );
        assert_eq!(
            root_url("hf://datasets/org/name@refs%2Fpr%2F1/x").unwrap(),
            "https://huggingface.co/datasets/org/name/resolve/refs%2Fpr%2F1/x/"
        );
        for bad in [
            "hf://models/org/name",
            "hf://datasets/org",
            "hf://datasets/org/@main",
        ] {
            assert!(root_url(bad).is_err(), "{bad}");
        }
        assert_eq!(root_url("https://host/c").unwrap(), "https://host/c/");
        assert!(is_url(Path::new("hf://datasets/a/b")) && !is_url(Path::new("cache")));
    }
}
