//! `analyze --cache URL` against a real web server, nginx, started on localhost for
//! each test (static files, HTTP Range as nginx serves them): the same numbers as from
//! the local folder with fewer bytes than the embeddings, a connection dropped
//! mid-file and resumed, a tampered file refused, a 404 named.
//!
//! They need nginx, which CI installs (`.ci/run`); `scripts/test` runs them where
//! nginx is installed and says plainly when it did not:
//! `cargo test --release --workspace --test remote -- --ignored`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    run_cmd(&e2e::binary("analyze"), &args)
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
    let gets = |log: &str, f: &str| log.lines().filter(|l| l.contains(f)).count();
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
    let err = failed(&analyze(
        &url,
        &tmp.path().join("o4"),
        &tmp.path().join("d2"),
        &["--models", "a"],
    ));
    assert!(err.contains("sends more than the manifest's"), "{err}");

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
