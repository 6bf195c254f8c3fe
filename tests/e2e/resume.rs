//! Crash safety of `extract`, driven by signals alone: a run SIGKILLed at random
//! moments and resumed each time ends with files identical to an uninterrupted
//! run's, and no kill ever leaves a folder whose manifest says complete but which
//! fails validation. Two writers into one cache: the second is refused at once.
//!
//! Uses the deepest fixture (tiny-d) on the seed dataset (460 statements) with
//! batch size 1, so that a run has ~30 chunks and lasts long enough to be killed
//! in every phase (session start, chunks, assembly, manifest, clean-up). Batch
//! size 1 also makes the numbers independent of which statements share a batch,
//! so resumed and uninterrupted runs must agree bit for bit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{assert_ok, binary, demo_dataset, fixture, seed_dataset};
use schemas::{
    read_statements, validate_cache, Manifest, EMBEDDINGS_FILE, GRAMS_FILE, MANIFEST_FILE,
    STATEMENTS_FILE,
};

const NAME: &str = "m";

fn args(out: &Path) -> Vec<String> {
    args_with(out, &seed_dataset())
}

fn args_with(out: &Path, dataset: &Path) -> Vec<String> {
    [
        "--model",
        fixture("tiny-d").to_str().unwrap(),
        "--dataset",
        dataset.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        NAME,
        "--device",
        "cpu",
        "--batch-size",
        "1",
        // every chunk on disk as it finishes: the kills below test resuming from them
        "--save-every",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(out: &Path) -> Child {
    spawn_with(out, &seed_dataset())
}

fn spawn_with(out: &Path, dataset: &Path) -> Child {
    Command::new(binary("extract"))
        .args(args_with(out, dataset))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs to the end; returns the wall time.
fn complete(out: &Path) -> Duration {
    complete_with(out, &seed_dataset())
}

fn complete_with(out: &Path, dataset: &Path) -> Duration {
    let t = Instant::now();
    let a = Command::new(binary("extract"))
        .args(args_with(out, dataset))
        .output()
        .unwrap();
    assert_ok(&a, "extract");
    t.elapsed()
}

fn finished_chunks(cache: &Path) -> usize {
    std::fs::read_dir(cache.join(".partial"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(".statements.parquet")
                })
                .count()
        })
        .unwrap_or(0)
}

/// The invariant that must hold after any kill: no manifest, or one that says
/// incomplete, or a cache that validates.
fn never_complete_and_broken(cache: &Path, when: &str) {
    let path = cache.join(MANIFEST_FILE);
    if !path.is_file() {
        return;
    }
    let m = Manifest::read(&path).unwrap_or_else(|e| panic!("{when}: unreadable manifest: {e}"));
    if m.complete {
        validate_cache(cache).unwrap_or_else(|e| panic!("{when}: manifest says complete but: {e}"));
    }
}

/// A completed cache equals the uninterrupted one: data files byte for byte, the
/// manifest's model, dataset and files, every statement once, nothing left over.
fn assert_same(cache: &Path, reference: &Path) {
    let v = validate_cache(cache).unwrap();
    let rows = read_statements(&v.statements_path()).unwrap();
    let ids: Vec<u32> = rows.iter().map(|r| r.statement_id).collect();
    assert_eq!(
        ids,
        (0..v.manifest.dataset.n_statements).collect::<Vec<_>>(),
        "each statement once, in order"
    );
    for f in [STATEMENTS_FILE, EMBEDDINGS_FILE, GRAMS_FILE] {
        let a = std::fs::read(reference.join(f)).unwrap();
        let b = std::fs::read(cache.join(f)).unwrap();
        assert!(a == b, "{f} differs from the uninterrupted run's");
    }
    let r = Manifest::read(&reference.join(MANIFEST_FILE)).unwrap();
    assert_eq!(v.manifest.model, r.model);
    assert_eq!(v.manifest.dataset, r.dataset);
    assert_eq!(v.manifest.files, r.files);
    let chunked: u32 = v.manifest.run.chunks.iter().map(|c| c.n_statements).sum();
    assert_eq!(
        chunked, v.manifest.dataset.n_statements,
        "chunks cover every statement"
    );
    assert!(!cache.join(".partial").exists(), ".partial left behind");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

/// xorshift64*: a fixed seed, so that a failing sequence of kill times reproduces.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 20 SIGKILLs that land in a running extract, at random moments, each followed by a
/// resume into the same folder. When a run gets to the end before its kill, that
/// folder is compared and the next try starts a fresh one; such a miss does not count
/// as a kill, so a slow or loaded machine only makes the test try more often.
#[test]
fn twenty_random_kills_resume_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let mut wall = complete(&full);
    let reference = full.join(NAME);

    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CAFE);
    eprintln!("kill times from seed {seed} (set KILL_SEED to change), uninterrupted run {wall:?}");
    let mut rng = Rng(seed);
    let total_chunks = Manifest::read(&reference.join(MANIFEST_FILE))
        .unwrap()
        .run
        .chunks
        .len();
    let (mut folder, mut live_kills, mut compared, mut tries) = (0, 0, 0, 0);
    while live_kills < 20 {
        tries += 1;
        assert!(
            tries <= 80,
            "only {live_kills} of {} tries hit a running extract",
            tries - 1
        );
        let out = tmp.path().join(format!("cut-{folder}"));
        let cache = out.join(NAME);
        // Anywhere in what is left of this run (plus a little past its end), so that
        // most kills land in a live process and some in its last steps.
        let left = 1.0 - finished_chunks(&cache) as f64 / total_chunks as f64;
        let delay = wall.mul_f64(rng.next_f64() * (0.1 + 1.0 * left));
        let started = Instant::now();
        let mut child = spawn(&out);
        let alive = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if started.elapsed() >= delay {
                break true;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !alive {
            // The uninterrupted run was timed on a busier machine than this one is
            // now: aim the next kills earlier.
            wall = wall.mul_f64(0.7);
        }
        child.kill().unwrap_or(()); // SIGKILL
        child.wait().unwrap();
        let when = format!("try {tries}, killed after {delay:?}");
        never_complete_and_broken(&cache, &when);
        if alive {
            live_kills += 1;
        }
        if validate_cache(&cache).is_ok() {
            // A kill after the final manifest may leave .partial/ or temp files: the
            // next run finds the cache complete and removes them.
            complete(&out);
            assert_same(&cache, &reference);
            compared += 1;
            folder += 1;
        }
    }
    // the last folder, resumed to the end
    let cache = tmp.path().join(format!("cut-{folder}")).join(NAME);
    complete(cache.parent().unwrap());
    assert_same(&cache, &reference);
    compared += 1;
    eprintln!(
        "{live_kills} of {tries} tries hit a running extract; {compared} folders completed and compared"
    );
}

/// Starts a run into `out` and SIGKILLs it once `n` chunks are on disk; returns
/// its cache folder.
fn killed_after_chunks(out: &Path, n: usize) -> PathBuf {
    let cache = out.join(NAME);
    let mut child = spawn(out);
    let start = Instant::now();
    while finished_chunks(&cache) < n {
        assert!(
            child.try_wait().unwrap().is_none(),
            "extract ended before {n} chunk(s) could be seen"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fewer than {n} chunks after 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    cache
}

/// Kills the run once its first chunk is on disk: the resumed run reports what it
/// reused and ends identical.
#[test]
fn killed_after_a_chunk_resumes_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    complete(&full);
    let cache = killed_after_chunks(&cut, 1);
    assert!(
        validate_cache(&cache).is_err(),
        "an interrupted cache must not validate"
    );
    let m = Manifest::read(&cache.join(MANIFEST_FILE)).unwrap();
    assert!(!m.complete);

    // other inputs into the unfinished folder are refused
    let other = Command::new(binary("extract"))
        .args(args(&cut))
        .args(["--poolings", "mean"])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("poolings differ"));
    // other settings are refused unless forced
    let mut batch2 = args(&cut);
    let at = batch2.iter().position(|a| a == "--batch-size").unwrap();
    batch2[at + 1] = "2".into();
    let other = Command::new(binary("extract"))
        .args(batch2)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("batch size 1 -> 2") && stderr.contains("--force-resume"),
        "{stderr}"
    );

    let resumed = Command::new(binary("extract"))
        .args(args(&cut))
        .output()
        .unwrap();
    assert_ok(&resumed, "resumed run");
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains("resumed from an earlier run"), "{stdout}");
    assert_same(&cache, &full.join(NAME));
}

/// A machine crash can lose a chunk's vectors, which are not synced, while the
/// statements file that marks the chunk done survives: the resumed run finds the
/// damage (size, crc), computes those chunks again and ends identical.
#[test]
fn chunks_whose_vectors_were_lost_are_computed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    complete(&full);
    let cache = killed_after_chunks(&cut, 3);
    let partial = cache.join(".partial");
    let vectors = |i: u32| partial.join(format!("chunk-{i:06}.vectors"));
    // truncated (the tail never reached the disk), zeros of the right size (blocks
    // allocated, data lost), one flipped bit
    let v0 = std::fs::read(vectors(0)).unwrap();
    std::fs::write(vectors(0), &v0[..v0.len() / 2]).unwrap();
    std::fs::write(
        vectors(1),
        vec![0u8; std::fs::metadata(vectors(1)).unwrap().len() as usize],
    )
    .unwrap();
    let mut v2 = std::fs::read(vectors(2)).unwrap();
    let at = v2.len() - 3;
    v2[at] ^= 0x10;
    std::fs::write(vectors(2), &v2).unwrap();

    let resumed = Command::new(binary("extract"))
        .args(args(&cut))
        .output()
        .unwrap();
    assert_ok(&resumed, "resumed run");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(
        stderr.matches("will be computed again").count(),
        3,
        "{stderr}"
    );
    assert!(stderr.contains("fails its crc32 check"), "{stderr}");
    assert_same(&cache, &full.join(NAME));
}

/// `args(out)` with finished chunks held in memory for `seconds` between saves.
fn saving_every(out: &Path, seconds: &str) -> Vec<String> {
    let mut a = args(out);
    let at = a.iter().position(|x| x == "--save-every").unwrap();
    a[at + 1] = seconds.to_string();
    a
}

/// Chunks held in memory (all of them, or some saved and some held) assemble into
/// the same bytes as chunks saved as they finish; a kill while they are held leaves
/// nothing marked done, and the rerun starts over to the same bytes.
#[test]
fn held_chunks_assemble_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    complete(&full);
    for seconds in ["600", "0.05"] {
        let out = tmp.path().join(format!("every-{seconds}"));
        let run = Command::new(binary("extract"))
            .args(saving_every(&out, seconds))
            .output()
            .unwrap();
        assert_ok(&run, "extract");
        assert_same(&out.join(NAME), &full.join(NAME));
    }

    // Killed once the manifest says the run started, before the chunks are saved;
    // sooner after it each time the run got to the end first.
    let out = tmp.path().join("killed");
    let cache = out.join(NAME);
    let landed = [200, 100, 50, 20, 5].into_iter().any(|ms| {
        let _ = std::fs::remove_dir_all(&out);
        let mut child = Command::new(binary("extract"))
            .args(saving_every(&out, "600"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !cache.join(MANIFEST_FILE).is_file() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap_or(());
        child.wait().unwrap();
        Manifest::read(&cache.join(MANIFEST_FILE)).is_ok_and(|m| !m.complete)
    });
    assert!(landed, "every run ended before its kill");
    assert_eq!(finished_chunks(&cache), 0, "held chunks were marked done");
    never_complete_and_broken(&cache, "killed while holding chunks");
    let rerun = Command::new(binary("extract"))
        .args(saving_every(&out, "600"))
        .output()
        .unwrap();
    assert_ok(&rerun, "rerun");
    assert_same(&cache, &full.join(NAME));
}

/// A failure after the forward passes (here the final embeddings file cannot be
/// moved into place: a folder has its name) saves the chunks held in memory, so the
/// rerun computes nothing again and ends identical.
#[test]
fn a_failed_assembly_saves_the_held_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    complete(&full);
    let cache = cut.join(NAME);
    let blocker = cache.join(EMBEDDINGS_FILE);
    std::fs::create_dir_all(&blocker).unwrap();
    let failed = Command::new(binary("extract"))
        .args(saving_every(&cut, "600"))
        .output()
        .unwrap();
    assert!(!failed.status.success(), "the blocked run succeeded");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains(EMBEDDINGS_FILE), "{stderr}");
    assert!(finished_chunks(&cache) > 0, "no chunk saved: {stderr}");
    std::fs::remove_dir(&blocker).unwrap();
    let rerun = Command::new(binary("extract"))
        .args(saving_every(&cut, "600"))
        .output()
        .unwrap();
    assert_ok(&rerun, "rerun");
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        stdout.contains("(0 run now, 460 resumed from an earlier run)"),
        "{stdout}"
    );
    assert_same(&cache, &full.join(NAME));
}

/// Whether the sidecar's temp file (`grams.parquet.<pid>-<n>.tmp`) is in `cache`.
fn writing_sidecar(cache: &Path) -> bool {
    std::fs::read_dir(cache).is_ok_and(|d| {
        d.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(GRAMS_FILE) && name.ends_with(".tmp")
        })
    })
}

/// SIGKILL while the sidecar is being written (its temp file present): the manifest
/// does not say complete, and the resumed run ends with the same bytes. Up to 10
/// tries, since the window lasts milliseconds; at least one must land in it.
#[test]
fn killed_while_writing_the_sidecar_resumes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    complete_with(&full, &demo_dataset());
    let mut landed = 0;
    for attempt in 0..10 {
        let out = tmp.path().join(format!("cut-{attempt}"));
        let cache = out.join(NAME);
        let mut child = spawn_with(&out, &demo_dataset());
        while !writing_sidecar(&cache) && child.try_wait().unwrap().is_none() {}
        let alive = child.try_wait().unwrap().is_none();
        child.kill().unwrap_or(());
        child.wait().unwrap();
        let m = Manifest::read(&cache.join(MANIFEST_FILE)).unwrap();
        never_complete_and_broken(&cache, &format!("attempt {attempt}"));
        if alive && !m.complete {
            landed += 1;
            assert!(
                !m.files.contains_key(GRAMS_FILE),
                "an unfinished sidecar is listed"
            );
        }
        complete_with(&out, &demo_dataset());
        assert_same(&cache, &full.join(NAME));
        if landed >= 2 {
            break;
        }
    }
    assert!(landed >= 1, "no kill landed while the sidecar was written");
}

/// Two writers into one cache, the second started 0.3, 1 and 2 s after the first:
/// the second is refused within 3 s naming the holder, and the first's cache is whole.
#[test]
fn a_second_writer_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = long_dataset(tmp.path());
    for (k, gap) in [300u64, 1000, 2000].into_iter().enumerate() {
        let out = tmp.path().join(format!("two-{k}"));
        let mut first = spawn_with(&out, &dataset);
        std::thread::sleep(Duration::from_millis(gap));
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first writer ended within {gap} ms: the test needs a longer run"
        );
        let t = Instant::now();
        let second = Command::new(binary("extract"))
            .args(args_with(&out, &dataset))
            .output()
            .unwrap();
        let took = t.elapsed();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(
            !second.status.success(),
            "second writer after {gap} ms succeeded"
        );
        assert!(took < Duration::from_secs(3), "refused only after {took:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("another extract") && stderr.contains(&format!("pid {}", first.id())),
            "{stderr}"
        );
        assert!(first.wait().unwrap().success(), "the first writer failed");
        validate_cache(&out.join(NAME)).unwrap();
    }
}

/// The seed dataset with each pair five times (suffixed to stay distinct): a run
/// several seconds long, so the first writer is still at work when the second starts.
fn long_dataset(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(seed_dataset()).unwrap();
    let mut data: serde_json::Value = serde_json::from_str(&text).unwrap();
    for category in data.as_object_mut().unwrap().values_mut() {
        let pairs = category["pairs"].as_array().unwrap().clone();
        let mut longer = Vec::new();
        for k in 0..5 {
            for p in &pairs {
                let side = |i: usize| format!("{} ({k})", p[i].as_str().unwrap());
                longer.push(serde_json::json!([side(0), side(1)]));
            }
        }
        category["pairs"] = serde_json::Value::Array(longer);
    }
    let path = dir.join("long-dataset.json");
    std::fs::write(&path, serde_json::to_string(&data).unwrap()).unwrap();
    path
}
