//! `analyze --cache URL` against a real web server, nginx, started on localhost for
//! each test (static files, HTTP Range as nginx serves them): the same numbers as from
//! the local folder with fewer bytes than the embeddings, a connection dropped
//! mid-file and resumed, a tampered file refused, a 404 named, the weak cases of
//! issue 29 refused in one line, the download folder shared with the Python reader,
//! and the root card read when --models is absent. A stalling server is a small one
//! of this file's own (`StallServer`), since nginx cannot be made to stall.
//!
//! They need nginx, which CI installs (`.ci/run`); `scripts/test` runs them where
//! nginx is installed and says plainly when it did not:
//! `cargo test --release --workspace --test e2e remote:: -- --ignored`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{run_cmd, synth_cache};

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect(
            "nginx not found: install it (Debian: apt-get install nginx-light) to run these tests",
        )
}

/// nginx serving `root` on a free localhost port, at `rate` bytes/s per connection
/// (0: unlimited); stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    prefix: PathBuf,
}

impl Server {
    fn start(root: &Path, prefix: &Path, rate: u64) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server::on(root, prefix, rate, port)
    }

    fn on(root: &Path, prefix: &Path, rate: u64, port: u16) -> Server {
        std::fs::create_dir_all(prefix).unwrap();
        let p = prefix.display();
        // As root, nginx's workers would switch to `nobody`, who cannot read a temp dir.
        let user = if is_root() { "user root;" } else { "" };
        let conf = format!(
            "{user}\ndaemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{}}\nhttp {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
             scgi_temp_path {p}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    root {};\n    \
             limit_rate {rate};\n  }}\n}}\n",
            root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let server = Server {
            child,
            port,
            prefix: prefix.to_path_buf(),
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                server.log("error.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.prefix.join(name)).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // One process (`master_process off`): killing it closes every connection.
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A served tree `www/caches/` holding two synthetic models, and a folder for nginx.
fn served(tmp: &Path, hidden: usize) -> PathBuf {
    let models = format!("a:6:{hidden}:100000000,b:8:{hidden}:300000000");
    synth_cache(
        &tmp.join("www/caches"),
        &["--models", &models, "--categories", "20,20,20,20,20,20"],
    );
    tmp.join("www")
}

fn analyze(cache: &str, out: &Path, downloads: &Path, extra: &[&str]) -> Output {
    analyze_env(cache, out, downloads, extra, &[])
}

/// `analyze` with these environment variables set.
fn analyze_env(
    cache: &str,
    out: &Path,
    downloads: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut args = vec![
        "--cache",
        cache,
        "--out",
        out.to_str().unwrap(),
        "--download-dir",
        downloads.to_str().unwrap(),
        "--bootstrap",
        "100",
    ];
    args.extend_from_slice(extra);
    Command::new(e2e::binary("analyze"))
        .args(&args)
        .envs(env.iter().copied())
        .output()
        .expect("analyze runs")
}

/// GETs of paths containing `file` in nginx's access log.
fn gets(log: &str, file: &str) -> usize {
    log.lines().filter(|l| l.contains(file)).count()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "analyze failed: {err}");
    err
}

fn failed(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "analyze should have failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The one folder of the download root that holds a run's models.
fn downloaded(downloads: &Path) -> PathBuf {
    std::fs::read_dir(downloads)
        .unwrap()
        .flatten()
        .next()
        .expect("a download folder")
        .path()
}

#[test]
#[ignore = "needs nginx"]
fn a_cache_read_over_http_gives_the_local_numbers_without_the_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 64);
    let server = Server::start(&www, &tmp.path().join("nginx"), 0);
    let local = tmp.path().join("local");
    ok(&analyze(
        www.join("caches").to_str().unwrap(),
        &local,
        &tmp.path().join("unused"),
        &[],
    ));
    let remote = tmp.path().join("remote");
    let downloads = tmp.path().join("downloads");
    let url = server.url("caches");
    let err = ok(&analyze(&url, &remote, &downloads, &["--models", "a,b"]));
    assert!(err.contains("fetched") && err.contains(&url), "{err}");
    for file in ["report.md", "layer_correlations.csv"] {
        assert!(
            std::fs::read(local.join(file)).unwrap() == std::fs::read(remote.join(file)).unwrap(),
            "{file} differs between the local folder and its URL"
        );
    }
    let root = downloaded(&downloads);
    for m in ["a", "b"] {
        assert!(root.join(m).join("grams.parquet").is_file());
        assert!(
            !root.join(m).join("embeddings.parquet").exists(),
            "the embeddings stay on the server"
        );
    }
    let log = server.log("access.log");
    assert!(!log.contains("embeddings.parquet"), "{log}");

    // A second run fetches nothing but the manifests; --from-embeddings fetches the vectors.
    ok(&analyze(&url, &remote, &downloads, &["--models", "a,b"]));
    assert_eq!(
        gets(&server.log("access.log"), "grams.parquet"),
        2,
        "reused, not fetched again"
    );
    ok(&analyze(
        &url,
        &remote,
        &downloads,
        &["--models", "a,b", "--from-embeddings"],
    ));
    assert!(root.join("a/embeddings.parquet").is_file());
}

#[test]
#[ignore = "needs nginx"]
fn a_dropped_connection_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 512);
    let prefix = tmp.path().join("nginx");
    let mut slow = Server::start(&www, &prefix, 400_000);
    let url = slow.url("caches");
    let downloads = tmp.path().join("downloads");
    let out = tmp.path().join("out");
    let run = Command::new(e2e::binary("analyze"))
        .args([
            "--cache",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--download-dir",
        ])
        .arg(&downloads)
        .args(["--models", "a,b", "--from-embeddings", "--bootstrap", "100"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the embeddings are arriving, then cut the server off.
    let t = Instant::now();
    let part = loop {
        let found = std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("a/embeddings.parquet.part"))
            .find(|p| {
                std::fs::metadata(p)
                    .map(|m| m.len() > 100_000)
                    .unwrap_or(false)
            });
        if let Some(p) = found {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the download never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let port = slow.port;
    slow.stop();
    let res = run.wait_with_output().unwrap();
    let err = failed(&res);
    assert!(err.contains("rerun to resume"), "{err}");
    let kept = std::fs::metadata(&part)
        .expect("the partial file is kept")
        .len();
    assert!(kept > 100_000, "{kept}");

    let server = Server::on(&www, &prefix, 0, port);
    ok(&analyze(
        &url,
        &out,
        &downloads,
        &["--models", "a,b", "--from-embeddings"],
    ));
    let log = server.log("access.log");
    assert!(
        log.lines()
            .any(|l| l.contains("a/embeddings.parquet") && l.contains("\" 206 ")),
        "resumed with a Range request: {log}"
    );
    assert!(!part.exists());
}

#[test]
#[ignore = "needs nginx"]
fn a_tampered_file_and_a_missing_one_are_refused_naming_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 32);
    let server = Server::start(&www, &tmp.path().join("nginx"), 0);
    let url = server.url("caches");
    let file = www.join("caches/b/statements.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let downloads = tmp.path().join("downloads");
    let err = failed(&analyze(
        &url,
        &tmp.path().join("o1"),
        &downloads,
        &["--models", "a,b"],
    ));
    assert!(
        err.contains(&format!("{url}/b/statements.parquet")) && err.contains("sha256 differs"),
        "{err}"
    );
    assert!(
        !downloaded(&downloads).join("b/statements.parquet").exists(),
        "nothing kept"
    );

    // A server that sends more than the manifest's size is cut off, not followed to a full disk.
    let grams = www.join("caches/a/grams.parquet");
    let mut longer = std::fs::read(&grams).unwrap();
    longer.extend(vec![0u8; 4 << 20]);
    std::fs::write(&grams, longer).unwrap();
    // Earlier runs of this test may have fetched it already: count this run's requests.
    let before = gets(&server.log("access.log"), "a/grams.parquet");
    let err = failed(&analyze(
        &url,
        &tmp.path().join("o4"),
        &tmp.path().join("d2"),
        &["--models", "a"],
    ));
    assert!(
        err.contains(&format!("{url}/a/grams.parquet: the server's file is"))
            && err.contains("but the manifest says")
            && !err.contains("rerun"),
        "{err}"
    );
    // nginx logs a request when its connection ends, which for a response cut off by
    // the client can come after analyze has exited: wait for the line, then a moment
    // for a second request's.
    let requests = || gets(&server.log("access.log"), "a/grams.parquet") - before;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while requests() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        requests(),
        1,
        "refused at the first response, not tried again"
    );

    let err = failed(&analyze(
        &url,
        &tmp.path().join("o2"),
        &downloads,
        &["--models", "a,nope"],
    ));
    assert!(
        err.contains(&format!("{url}/nope/manifest.json")) && err.contains("HTTP 404"),
        "{err}"
    );

    let err = failed(&analyze(&url, &tmp.path().join("o3"), &downloads, &[]));
    assert!(err.contains("--models"), "a server lists no folders: {err}");
}

/// A small HTTP/1.1 server of plain files from `root` (Range honoured, one
/// connection per request) whose first GET of a path in `stalls` gets the headers
/// and that many bytes of the body, then nothing until the server is dropped: what
/// nginx cannot be made to do. Logs "PATH RANGE" per GET.
struct StallServer {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stalls: Arc<Mutex<HashMap<String, usize>>>,
    done: Arc<AtomicBool>,
}

impl StallServer {
    fn start(root: &Path) -> StallServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = StallServer {
            port,
            log: Arc::default(),
            stalls: Arc::default(),
            done: Arc::default(),
        };
        let (root, log, stalls, done) = (
            root.to_path_buf(),
            server.log.clone(),
            server.stalls.clone(),
            server.done.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, log, stalls, done) =
                    (root.clone(), log.clone(), stalls.clone(), done.clone());
                std::thread::spawn(move || serve(stream, &root, &log, &stalls, &done));
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn stall(&self, path: &str, after: usize) {
        self.stalls.lock().unwrap().insert(path.to_string(), after);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for StallServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    log: &Mutex<Vec<String>>,
    stalls: &Mutex<HashMap<String, usize>>,
    done: &AtomicBool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut path, mut range) = (String::new(), String::new());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
        if let Some(rest) = line.strip_prefix("GET ") {
            path = rest.split(' ').next().unwrap_or("").to_string();
        } else if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = r.trim().trim_end_matches('-').to_string();
        }
        line.clear();
    }
    log.lock().unwrap().push(format!("{path} {range}"));
    let Ok(data) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let start: usize = range.parse().unwrap_or(0);
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n",
            data.len() - 1,
            data.len()
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    let body = &data[start..];
    let head = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    // Taken out first: the guard of a `match` on it would hold the lock while stalling.
    let stall = stalls.lock().unwrap().remove(&path);
    match stall {
        Some(after) => {
            let _ = stream.write_all(&body[..after]);
            let _ = stream.flush();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        None => {
            let _ = stream.write_all(body);
        }
    }
}

#[test]
#[ignore = "needs nginx"]
fn a_stalled_server_ends_the_run_naming_the_url_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 64);
    let server = StallServer::start(&www);
    let url = server.url("caches");
    let downloads = tmp.path().join("downloads");
    let out = tmp.path().join("out");
    let stall = [("UA_STALL_SECONDS", "1")];
    let args = ["--models", "a,b"];

    // The headers and one byte of a manifest, then nothing.
    server.stall("/caches/a/manifest.json", 1);
    let t = Instant::now();
    let err = failed(&analyze_env(&url, &out, &downloads, &args, &stall));
    assert!(
        err.contains(&format!(
            "{url}/a/manifest.json: stalled: the server sent no byte for 1 s; rerun to try again"
        )),
        "{err}"
    );
    // 100 bytes of a data file, then nothing: the bytes are kept for the rerun.
    server.stall("/caches/b/grams.parquet", 100);
    let err = failed(&analyze_env(&url, &out, &downloads, &args, &stall));
    let size = std::fs::metadata(www.join("caches/b/grams.parquet"))
        .unwrap()
        .len();
    assert!(
        err.contains(&format!(
            "{url}/b/grams.parquet: stalled: the server sent no byte for 1 s after 100 of {size} bytes; rerun to resume from"
        )) && err.trim().lines().last().unwrap().contains("stalled"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "each stall ends after about the limit: {:?}",
        t.elapsed()
    );
    assert_eq!(
        server
            .log()
            .iter()
            .filter(|l| l.starts_with("/caches/b/grams.parquet"))
            .count(),
        1,
        "a stall is not tried again at once"
    );
    ok(&analyze_env(&url, &out, &downloads, &args, &stall));
    assert_eq!(
        server.log().last().unwrap(),
        "/caches/b/grams.parquet 100",
        "the rerun resumed from the 100 bytes: {:?}",
        server.log()
    );
}

#[test]
#[ignore = "needs nginx"]
fn a_slow_but_moving_download_is_not_cut_by_the_stall_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 512);
    // nginx's limit_rate: the embeddings (several MB) take seconds, each byte moving.
    let server = Server::start(&www, &tmp.path().join("nginx"), 400_000);
    let url = server.url("caches");
    let t = Instant::now();
    ok(&analyze_env(
        &url,
        &tmp.path().join("out"),
        &tmp.path().join("downloads"),
        &["--models", "a", "--from-embeddings"],
        &[("UA_STALL_SECONDS", "1")],
    ));
    assert!(
        t.elapsed() > Duration::from_secs(2),
        "the download took longer than the stall limit: {:?}",
        t.elapsed()
    );
    assert_eq!(gets(&server.log("access.log"), "a/embeddings.parquet"), 1);
}

/// nginx serving two synthetic models, a download folder and an --out for the test.
struct Site {
    tmp: tempfile::TempDir,
    www: PathBuf,
    server: Server,
    url: String,
    downloads: PathBuf,
    out: PathBuf,
}

fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 32);
    let server = Server::start(&www, &tmp.path().join("nginx"), 0);
    let url = server.url("caches");
    let (downloads, out) = (tmp.path().join("downloads"), tmp.path().join("out"));
    Site {
        tmp,
        www,
        server,
        url,
        downloads,
        out,
    }
}

#[test]
#[ignore = "needs nginx"]
fn a_models_name_that_is_a_path_and_https_against_http_are_refused_up_front() {
    let s = site();
    for bad in ["sub/a", "../b", ".."] {
        let err = failed(&analyze(&s.url, &s.out, &s.downloads, &["--models", bad]));
        assert!(
            err.contains(&format!(
                "--models names \"{bad}\": a model folder's name, not a path"
            )),
            "{err}"
        );
    }
    let log = s.server.log("access.log");
    assert!(
        log.is_empty() && !s.downloads.exists(),
        "nothing asked, nothing written: {log}"
    );

    let https = s.url.replacen("http://", "https://", 1);
    let err = failed(&analyze(&https, &s.out, &s.downloads, &["--models", "a"]));
    assert!(
        err.contains(&format!("{https}/a/manifest.json: the server does not answer in TLS (a plain-HTTP server?); use http:// for it")),
        "{err}"
    );
}

#[test]
#[ignore = "needs nginx"]
fn a_missing_file_and_an_unfinished_cache_end_at_once_without_rerun() {
    let s = site();
    // A data file missing on the server: one request, and no rerun to suggest.
    std::fs::remove_file(s.www.join("caches/b/grams.parquet")).unwrap();
    let err = failed(&analyze(&s.url, &s.out, &s.downloads, &["--models", "b"]));
    assert!(
        err.contains(&format!("{}/b/grams.parquet: HTTP 404: the server lacks a file that the model's manifest.json lists", s.url)) && !err.contains("rerun"),
        "{err}"
    );
    assert_eq!(gets(&s.server.log("access.log"), "b/grams.parquet"), 1);

    // An unfinished cache on the server: refused after its manifest, before any data file.
    let manifest = s.www.join("caches/a/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["complete"] = false.into();
    std::fs::write(&manifest, m.to_string()).unwrap();
    let before = s.server.log("access.log").lines().count();
    let err = failed(&analyze(&s.url, &s.out, &s.downloads, &["--models", "a"]));
    assert!(
        err.contains(&format!(
            "{}/a/manifest.json: complete: false: the cache on the server is unfinished",
            s.url
        )) && !err.contains("rerun the same extract"),
        "{err}"
    );
    let log = s.server.log("access.log");
    assert_eq!(log.lines().skip(before).count(), 1, "{log}");
}

#[test]
#[ignore = "needs nginx"]
fn a_stale_part_is_checked_and_the_download_variables_are_read_with_care() {
    let s = site();
    // A stale .part of the right length is checked, not taken.
    ok(&analyze(&s.url, &s.out, &s.downloads, &["--models", "a"]));
    let dir = downloaded(&s.downloads).join("a");
    let size = std::fs::metadata(dir.join("grams.parquet")).unwrap().len();
    std::fs::remove_file(dir.join("grams.parquet")).unwrap();
    std::fs::write(dir.join("grams.parquet.part"), vec![0u8; size as usize]).unwrap();
    ok(&analyze(&s.url, &s.out, &s.downloads, &["--models", "a"]));
    let log = s.server.log("access.log");
    assert_eq!(gets(&log, "a/grams.parquet"), 2, "fetched again: {log}");
    assert!(!dir.join("grams.parquet.part").exists());

    // UA_DOWNLOAD_DIR set but empty counts as unset: the default under HOME, not the
    // current folder.
    let home = s.tmp.path().join("home");
    let cwd = s.tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let o = Command::new(e2e::binary("analyze"))
        .args([
            "--cache",
            &s.url,
            "--models",
            "a",
            "--bootstrap",
            "100",
            "--out",
        ])
        .arg(s.tmp.path().join("o-env"))
        .env("UA_DOWNLOAD_DIR", "")
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .current_dir(&cwd)
        .output()
        .unwrap();
    ok(&o);
    assert!(downloaded(&home.join(".cache/ua-scaling/downloads"))
        .join("a/grams.parquet")
        .is_file());
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);

    // A stall limit that is no number of seconds.
    let err = failed(&analyze_env(
        &s.url,
        &s.out,
        &s.downloads,
        &["--models", "a"],
        &[("UA_STALL_SECONDS", "soon")],
    ));
    assert!(
        err.contains("UA_STALL_SECONDS=soon: not a number of seconds above 0"),
        "{err}"
    );
}

/// The Python reader and analyze share one download folder: what one fetched, the
/// other reads without a request.
#[test]
#[ignore = "needs nginx"]
fn analyze_and_the_python_reader_never_fetch_a_file_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 32);
    let server = Server::start(&www, &tmp.path().join("nginx"), 0);
    let url = server.url("caches");
    let downloads = tmp.path().join("downloads");
    let reader = |model: &str| {
        let o = Command::new("python3")
            .args([
                "-c",
                "import sys; from uatools.reader import load_cache; \
                 c = load_cache(sys.argv[1], cache_dir=sys.argv[2]); print(c.layer(3, 'mean').shape)",
                &format!("{url}/{model}"),
                downloads.to_str().unwrap(),
            ])
            .env("PYTHONPATH", e2e::repo_root().join("python"))
            .output()
            .expect("python3 runs (scripts/test puts the project's .venv first on PATH)");
        assert!(
            o.status.success(),
            "the reader failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&analyze(
        &url,
        &tmp.path().join("o1"),
        &downloads,
        &["--models", "a,b"],
    ));
    reader("a"); // statements already here: fetches the embeddings alone
    let log = server.log("access.log");
    assert_eq!(
        (gets(&log, "a/statements"), gets(&log, "a/embeddings")),
        (1, 1),
        "{log}"
    );
    ok(&analyze(
        &url,
        &tmp.path().join("o2"),
        &downloads,
        &["--models", "a", "--from-embeddings"],
    ));
    reader("b"); // fetches b's embeddings, then analyze has them too
    ok(&analyze(
        &url,
        &tmp.path().join("o3"),
        &downloads,
        &["--models", "a,b", "--from-embeddings"],
    ));
    let log = server.log("access.log");
    for file in ["statements", "embeddings", "grams"] {
        for m in ["a", "b"] {
            assert_eq!(
                gets(&log, &format!("/{m}/{file}.parquet")),
                1,
                "{m}/{file} fetched once: {log}"
            );
        }
    }
}

/// A root whose card lists its model folders needs no --models; --models filters.
#[test]
#[ignore = "needs nginx"]
fn the_root_card_lists_the_models_when_none_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let www = served(tmp.path(), 32);
    let root = www.join("caches");
    let index = run_cmd(
        &e2e::binary("analyze"),
        &["index", "--cache", root.to_str().unwrap()],
    );
    assert!(
        index.status.success(),
        "{}",
        String::from_utf8_lossy(&index.stderr)
    );
    assert!(
        String::from_utf8_lossy(&index.stdout).contains("README.md: lists 2 model folders"),
        "{}",
        String::from_utf8_lossy(&index.stdout)
    );
    let card = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert_eq!(
        schemas::listed_models(&card).unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    let server = Server::start(&www, &tmp.path().join("nginx"), 0);
    let url = server.url("caches/");
    let downloads = tmp.path().join("downloads");
    let all = tmp.path().join("all");
    ok(&analyze(&url, &all, &downloads, &[]));
    let named = tmp.path().join("named");
    ok(&analyze(&url, &named, &downloads, &["--models", "a,b"]));
    assert!(
        std::fs::read(all.join("report.md")).unwrap()
            == std::fs::read(named.join("report.md")).unwrap(),
        "the card's models are the named ones"
    );
    let one = tmp.path().join("one");
    ok(&analyze(&url, &one, &downloads, &["--models", "b"]));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        results["models"].as_object().map(|m| m.len()),
        Some(1),
        "--models filters"
    );

    std::fs::remove_file(root.join("README.md")).unwrap();
    let err = failed(&analyze(&url, &tmp.path().join("none"), &downloads, &[]));
    assert!(
        err.contains("the root has no card listing its model folders") && err.contains("--models"),
        "{err}"
    );
}
