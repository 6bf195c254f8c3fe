//! `--cache URL`: a cache root on a web server (`http://`, `https://`) or on the
//! Hugging Face Hub (`hf://datasets/ORG/NAME[@REVISION]/path`, mapped to the Hub's
//! plain HTTPS file URLs). analyze fetches what this run reads into a local download
//! folder, then reads that folder like any cache: every manifest fresh, the statements,
//! the sidecar (`grams.parquet`) where the analysis reads it, and the embeddings only
//! where it needs the vectors. Each file is checked against the manifest's size and
//! sha256 as it arrives; an interrupted download resumes with an HTTP Range request.
//!
//! A web server lists no folders: the model folders are `--models`, else those the
//! root card (`README.md` in the root, `schemas::listed_models`) lists.
//!
//! The download folder is shared with the Python reader (`uatools/remote.py`), so a
//! notebook and analyze never fetch a file twice: `DOWNLOAD_DIR/<16 hex of the root
//! URL's sha256>/<model>/<file>`, with `url.txt` beside the model folders.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{
    FileEntry, Manifest, CARD_FILE, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE, STATEMENTS_FILE,
};
use sha2::{Digest, Sha256};

const HUB: &str = "https://huggingface.co";
/// Transfers of one file in one run; a transfer is repeated only after one that
/// moved bytes and then broke (a server that fails at once fails again at once).
const ATTEMPTS: usize = 5;
/// A manifest or a root card is a few kB (a root of thousands of models some
/// hundred kB); anything far larger is not one.
const MAX_TEXT_BYTES: u64 = 64 << 20;
/// Seconds without a byte after which a transfer counts as stalled: the limit is
/// on progress, so a slow but moving download of a large file goes on.
pub const STALL_ENV: &str = "UA_STALL_SECONDS";
const DEFAULT_STALL_S: f64 = 60.0;

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

/// Where downloads go when `--download-dir` is not given: `$UA_DOWNLOAD_DIR` (set and
/// not empty), else the user's cache folder (`$XDG_CACHE_HOME` or `~/.cache`) under
/// `ua-scaling/downloads`. An empty variable counts as unset, as in the Python reader.
pub fn default_download_dir() -> Result<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = set("UA_DOWNLOAD_DIR") {
        return Ok(PathBuf::from(d));
    }
    let base = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| anyhow!("no download folder: set --download-dir, or UA_DOWNLOAD_DIR"))?;
    Ok(base.join("ua-scaling").join("downloads"))
}

/// `$UA_STALL_SECONDS`, else 60 s.
fn stall_limit() -> Result<Duration> {
    let Some(v) = std::env::var_os(STALL_ENV).filter(|v| !v.is_empty()) else {
        return Ok(Duration::from_secs_f64(DEFAULT_STALL_S));
    };
    let text = v.to_string_lossy();
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e6 => Ok(Duration::from_secs_f64(s)),
        _ => bail!("{STALL_ENV}={text}: not a number of seconds above 0 (how long a download may go without a byte; default {DEFAULT_STALL_S})"),
    }
}

/// A `--models` name (or one the root card lists) is a folder name, never a path:
/// the files go to `<download folder>/<name>/`, which must stay inside it.
fn check_model_name(name: &str, from: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        bail!("{from} names {name:?}: a model folder's name, not a path (no '/' or '\\', not '.' or '..'); name the folders directly under the --cache URL");
    }
    Ok(())
}

/// A folder name as one URL path segment (RFC 3986 unreserved characters kept,
/// as Python's `urllib.parse.quote` keeps them).
fn url_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The download folder of one root URL: shared with the Python reader, which
/// computes the same key from the same URL.
pub fn root_folder(download_dir: &Path, base: &str) -> PathBuf {
    download_dir.join(hex::encode(&Sha256::digest(base.as_bytes())[..8]))
}

/// What one run fetched: the local root to read, the model folders in it that this
/// run reads, and the bytes that came over the wire.
pub struct Fetched {
    pub root: PathBuf,
    pub models: Vec<String>,
    pub bytes: u64,
}

/// Fetches the `models` (else those the root card lists) of the cache root at `url`
/// into its folder of `download_dir`; `embeddings`: whether this run reads the vectors.
pub fn fetch(
    url: &str,
    models: Option<&[String]>,
    embeddings: bool,
    download_dir: &Path,
) -> Result<Fetched> {
    let base = root_url(url)?;
    if download_dir.as_os_str().is_empty() {
        bail!("--download-dir is empty; name a folder, or leave the flag out for the default");
    }
    let agent = agent(stall_limit()?);
    let models = match models {
        Some(m) => {
            for name in m {
                check_model_name(name, "--models")?;
            }
            m.to_vec()
        }
        None => fetch_listed_models(&agent, &base)?,
    };
    let root = root_folder(download_dir, &base);
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the download folder {}", root.display()))?;
    std::fs::write(root.join("url.txt"), format!("{base}\n"))
        .with_context(|| format!("cannot write in {}", root.display()))?;
    let mut bytes = 0;
    for model in &models {
        bytes += fetch_model(&agent, &base, model, &root.join(model), embeddings)?;
    }
    Ok(Fetched {
        root,
        models,
        bytes,
    })
}

/// Receives with no limit on a whole response, only on the time between bytes.
fn agent(stall: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(stall))
        .timeout_per_read(Some(stall))
        .timeout_per_write(Some(stall))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The model folders the root card lists.
fn fetch_listed_models(agent: &ureq::Agent, base: &str) -> Result<Vec<String>> {
    let url = format!("{base}{CARD_FILE}");
    let text = get_text(agent, &url, || {
        anyhow!(
        "--cache {base}: the root has no card listing its model folders ({url}: HTTP 404); name them with --models NAME,... (extract, extract merge and analyze index write the card where the caches are written)"
    )
    })?;
    let models = schemas::listed_models(&text).ok_or_else(|| {
        anyhow!("{url}: no `configs` in its front matter, so it lists no model folders; name them with --models NAME,...")
    })?;
    if models.is_empty() {
        bail!("{url}: lists no model folders (no complete cache in the root yet)");
    }
    for name in &models {
        check_model_name(name, &url)?;
    }
    Ok(models)
}

/// How a transfer ended without the whole file.
enum Stop {
    /// The connection broke or closed early: worth resuming at once where bytes arrived.
    Broken(anyhow::Error),
    /// No byte for the stall limit.
    Stalled(Duration),
    /// Nothing a retry or a rerun changes: an HTTP error, a size that is not the
    /// manifest's, a local write error.
    Refused(anyhow::Error),
}

impl Stop {
    /// The one line for a transfer of `url` that ended so; `part`: where the bytes
    /// that arrived are kept, and how many there are, for a rerun to resume.
    fn into_error(self, url: &str, part: Option<(&Path, u64, u64)>) -> anyhow::Error {
        let rerun = match part {
            Some((p, have, _)) if have > 0 => format!("rerun to resume from {}", p.display()),
            _ => "rerun to try again".to_string(),
        };
        let at = match part {
            Some((_, have, total)) => format!(" after {have} of {total} bytes"),
            None => String::new(),
        };
        match self {
            Stop::Stalled(limit) => anyhow!(
                "{url}: stalled: the server sent no byte for {} s{at}; {rerun} ({STALL_ENV} sets the limit)",
                limit.as_secs_f64()
            ),
            Stop::Broken(e) => anyhow!("{e}; {rerun}"),
            Stop::Refused(e) => e,
        }
    }
}

/// A failed request: a timeout is a stall, a TLS failure against a plain-HTTP
/// server says so (rustls reads its plain answer as a record of no known type),
/// the rest broke the connection.
fn request_error(url: &str, e: ureq::Error, stall: Duration) -> Stop {
    if e.to_string().contains("InvalidContentType") {
        return Stop::Refused(anyhow!(
            "{url}: the server does not answer in TLS (a plain-HTTP server?); use http:// for it"
        ));
    }
    match e {
        ureq::Error::Timeout(_) => Stop::Stalled(stall),
        ureq::Error::Io(io) => read_error(url, io, stall),
        ureq::Error::Rustls(t) => Stop::Refused(anyhow!("{url}: TLS failed ({t})")),
        e => Stop::Broken(anyhow!("{url}: {e}")),
    }
}

fn read_error(url: &str, e: std::io::Error, stall: Duration) -> Stop {
    let timed_out = e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
    if timed_out {
        Stop::Stalled(stall)
    } else {
        Stop::Broken(anyhow!("{url}: the connection broke ({e})"))
    }
}

/// The stall limit the agent was built with (for messages).
fn stall_of(agent: &ureq::Agent) -> Duration {
    agent
        .config()
        .timeout_per_read()
        .unwrap_or(Duration::from_secs_f64(DEFAULT_STALL_S))
}

/// The manifest fresh, refused at once when the cache there is unfinished, then
/// each file this run reads that is not already here with the manifest's sha256;
/// returns the bytes fetched.
fn fetch_model(
    agent: &ureq::Agent,
    base: &str,
    model: &str,
    dir: &Path,
    embeddings: bool,
) -> Result<u64> {
    let folder = format!("{base}{}/", url_segment(model));
    let manifest_url = format!("{folder}{MANIFEST_FILE}");
    let text = get_text(agent, &manifest_url, || {
        anyhow!(
        "{manifest_url}: HTTP 404: no model folder '{model}' under {base} (check the name; the root's other folders are not affected)"
    )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{manifest_url}: not a cache manifest ({e})"))?;
    if !manifest.complete {
        bail!("{manifest_url}: complete: false: the cache on the server is unfinished (its extract is running or was interrupted); nothing fetched: finish it where it is written and serve it again, or leave '{model}' out of --models");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut wanted = vec![STATEMENTS_FILE];
    let has_sidecar = manifest.files.contains_key(GRAMS_FILE);
    if has_sidecar && !embeddings {
        wanted.push(GRAMS_FILE);
    } else {
        wanted.push(EMBEDDINGS_FILE);
        if has_sidecar {
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

/// A small text file (a manifest, the root card), whole; a 404 is `missing`'s error,
/// which says what the file's absence means.
fn get_text(
    agent: &ureq::Agent,
    url: &str,
    missing: impl FnOnce() -> anyhow::Error,
) -> Result<String> {
    let stall = stall_of(agent);
    let failed = |e: ureq::Error| request_error(url, e, stall).into_error(url, None);
    let resp = agent.get(url).call().map_err(failed)?;
    match resp.status().as_u16() {
        404 => return Err(missing()),
        status => check_status(url, status, &[200])?,
    }
    resp.into_body()
        .with_config()
        .limit(MAX_TEXT_BYTES)
        .read_to_string()
        .map_err(failed)
}

fn check_status(url: &str, status: u16, ok: &[u16]) -> Result<()> {
    if ok.contains(&status) {
        return Ok(());
    }
    let hint = match status {
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
    // Bytes left by an earlier run: another version of the file may have written
    // them, so a mismatch of the whole is first blamed on them, not on the server.
    let mut earlier = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if earlier >= entry.bytes {
        if earlier == entry.bytes && sha256_of(&part)? == entry.sha256 {
            std::fs::rename(&part, dest)
                .with_context(|| format!("cannot move {} into place", dest.display()))?;
            return Ok(0);
        }
        remove(&part)?;
        earlier = 0;
    }
    eprintln!("fetching {url} ({:.1} MB)", entry.bytes as f64 / 1e6);
    let mut fetched = download(agent, url, &part, entry.bytes)?;
    let mut sha = sha256_of(&part)?;
    if sha != entry.sha256 && earlier > 0 {
        remove(&part)?;
        fetched += download(agent, url, &part, entry.bytes)?;
        sha = sha256_of(&part)?;
    }
    if sha != entry.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!("{url}: its sha256 differs from the manifest's (the file changed on the server, or the copy there is damaged); refused");
    }
    std::fs::rename(&part, dest)
        .with_context(|| format!("cannot move {} into place", dest.display()))?;
    Ok(fetched)
}

/// Transfers into `part` until it holds `expected` bytes: again after a transfer
/// that moved bytes and broke, up to [`ATTEMPTS`] in all. Returns the bytes fetched.
fn download(agent: &ureq::Agent, url: &str, part: &Path, expected: u64) -> Result<u64> {
    let bar = progress_bar(expected);
    let mut fetched = 0;
    let mut tries = 0;
    let result = loop {
        tries += 1;
        match transfer(agent, url, part, expected, &bar) {
            Ok(n) => break Ok(fetched + n),
            Err((n, stop)) => {
                fetched += n;
                if !(matches!(stop, Stop::Broken(_)) && n > 0 && tries < ATTEMPTS) {
                    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
                    break Err(stop.into_error(url, Some((part, have, expected))));
                }
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// The length a response says the whole file has: `Content-Range`'s total for a
/// 206, `Content-Length` for a 200; and where a 206's bytes start.
fn announced(resp: &ureq::http::Response<ureq::Body>, status: u16) -> (Option<u64>, Option<u64>) {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if status == 206 {
        // "bytes START-END/TOTAL"
        let range = header("content-range").unwrap_or_default();
        let spec = range.trim().strip_prefix("bytes ").unwrap_or("");
        let (span, total) = spec.split_once('/').unwrap_or(("", ""));
        let start = span.split('-').next().and_then(|s| s.parse().ok());
        (total.parse().ok(), start)
    } else {
        (
            header("content-length").and_then(|v| v.parse().ok()),
            Some(0),
        )
    }
}

/// One request for the rest of `part` (a Range request when some is already here);
/// the bytes written, or those and how it stopped.
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    expected: u64,
    bar: &ProgressBar,
) -> Result<u64, (u64, Stop)> {
    let stall = stall_of(agent);
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have == expected {
        return Ok(0);
    }
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| (0, request_error(url, e, stall)))?;
    let (mut file, have) = open_part(url, &resp, part, have, expected).map_err(|s| (0, s))?;
    let mut body = resp.into_body();
    let mut reader = body.as_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let local = |e: std::io::Error| Stop::Refused(anyhow!("{}: {e}", part.display()));
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err((written, read_error(url, e, stall))),
        };
        // The manifest says how long the file is: a server that sends more (one that
        // gave no length) is not serving it, and would otherwise fill the disk.
        if have + written + n as u64 > expected {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err((
                written,
                Stop::Refused(anyhow!(
                    "{url}: the server sends more than the manifest's {expected} bytes; refused"
                )),
            ));
        }
        file.write_all(&buf[..n]).map_err(|e| (written, local(e)))?;
        written += n as u64;
        bar.set_position(have + written);
    }
    file.sync_all().map_err(|e| (written, local(e)))?;
    if have + written < expected {
        return Err((
            written,
            Stop::Broken(anyhow!(
                "{url}: the connection closed after {} of {expected} bytes",
                have + written
            )),
        ));
    }
    Ok(written)
}

/// Checks a response's status and announced size against the manifest before any
/// byte is read, then opens `part` to append to (a 206 for the bytes asked for) or
/// to write from its start (a 200: a server that ignores Range sends it all again);
/// returns the file and the bytes it keeps.
fn open_part(
    url: &str,
    resp: &ureq::http::Response<ureq::Body>,
    part: &Path,
    have: u64,
    expected: u64,
) -> Result<(File, u64), Stop> {
    let status = resp.status().as_u16();
    let refuse = |why: String| Err(Stop::Refused(anyhow!("{url}: {why}; refused")));
    match status {
        404 => return refuse("HTTP 404: the server lacks a file that the model's manifest.json lists (an incomplete upload)".into()),
        416 => return refuse(format!("HTTP 416: the server's file is not longer than the {have} bytes already here, but the manifest says {expected}")),
        _ => check_status(url, status, &[200, 206]).map_err(Stop::Refused)?,
    }
    let (total, start) = announced(resp, status);
    if let Some(total) = total.filter(|&t| t != expected) {
        return refuse(format!("the server's file is {total} bytes, but the manifest says {expected} (the file changed on the server, or the manifest is another cache's)"));
    }
    if status == 206 && start != Some(have) {
        return refuse(format!(
            "the server answered another range than the bytes={have}- asked for"
        ));
    }
    let opened = if status == 206 {
        OpenOptions::new()
            .append(true)
            .open(part)
            .map(|f| (f, have))
    } else {
        File::create(part).map(|f| (f, 0))
    };
    opened.map_err(|e| Stop::Refused(anyhow!("{}: {e}", part.display())))
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

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
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
