//! Issue 15: the sealed sink's encrypted write-ahead log against real crashes. The agent runs
//! as a child process (stdin → redact → sealed with `wal = true`), is killed with SIGKILL, and
//! a second run replays the log into segments; the test reads the log itself through the
//! library (the same key provider) to know what had reached it before the kill.

mod common;

use common::files;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealtrail::event::Event;
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::sinks::sealed::wal::{self as sealed_wal, ReplayStats};

const CANARY: &str = "CANARY-wal-7f3a9c";
const CARD: &str = "4111 1111 1111 1111";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealtrail")
}

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    keys: PathBuf,
    config: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let data = root.join("data");
    let keys = root.join("keys");
    let config = root.join("wal.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\nwal = true\nmax_age = \"1h\"\n",
            data.display()
        ),
    )
    .unwrap();
    Dirs { _tmp: tmp, root, data, keys, config }
}

fn agent(d: &Dirs, stdin: Stdio) -> Child {
    Command::new(bin())
        .args(["run", "--config", d.config.to_str().unwrap(), "--keys", d.keys.to_str().unwrap()])
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn line(i: usize) -> String {
    format!("line {i} {CANARY} paid with {CARD}\n")
}

/// The line numbers of events whose body is one of ours.
fn numbers<'a>(bodies: impl Iterator<Item = &'a str>) -> Vec<usize> {
    bodies.filter_map(|b| b.strip_prefix("line ")?.split(' ').next()?.parse().ok()).collect()
}

/// What the log holds now, read as the agent's next start would read it.
fn logged(d: &Dirs) -> (Vec<usize>, ReplayStats) {
    let p = LocalProvider::new(Arc::new(Keyring::with_env(&d.keys, HashMap::new())));
    let mut stats = ReplayStats::default();
    let mut events: Vec<Event> = Vec::new();
    for (_, path) in sealed_wal::list(&d.data.join(sealed_wal::WAL_DIR)).unwrap() {
        // A key file not written yet (the agent creates the default key on start).
        if sealed_wal::replay_file(&path, &p, &mut stats, |b| {
            events.extend(b);
            Ok(())
        })
        .is_err()
        {
            continue;
        }
    }
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) => Some(l.body.as_str()),
            Event::Span(_) => None,
        })
        .collect();
    (numbers(bodies.into_iter()), stats)
}

/// Every line number in the sealed segments (through `sealtrail query`).
fn sealed(d: &Dirs) -> Vec<usize> {
    if !d.data.exists() {
        return Vec::new();
    }
    let out = Command::new(bin())
        .args(["query", d.data.to_str().unwrap(), "--keys", d.keys.to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let bodies: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    numbers(bodies.iter().map(String::as_str))
}

/// No plaintext canary or card number anywhere under the data directory (log files, segments,
/// partial segments, temp files).
fn assert_no_plaintext(d: &Dirs) {
    common::assert_no_plaintext(&d.data, &[CANARY.as_bytes(), CARD.as_bytes(), b"4111111111111111"]);
}

/// Restarts the agent on an empty stdin: it replays the log, seals and exits.
fn recover(d: &Dirs) -> String {
    let out = agent(d, Stdio::null()).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "recovery run failed: {err}");
    err
}

fn kill9(mut child: Child) {
    // SAFETY-free: SIGKILL through the std API (Child::kill sends SIGKILL on Unix).
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_9_with_an_open_segment_loses_nothing_that_reached_the_log() {
    let d = dirs();
    let mut child = agent(&d, Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    // Enough lines for row groups to be written into a partial segment under `.inflight/`.
    let n = 20_000;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&line(i));
    }
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, _) = logged(&d);
        if got.len() == n {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {n} lines reached the log", got.len());
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(child);
    drop(stdin);
    assert!(sealed(&d).is_empty(), "nothing was sealed before the kill (max_age 1h)");
    let partial = files(&d.data.join(".inflight"));
    assert_no_plaintext(&d);
    let err = recover(&d);
    assert!(err.contains("write-ahead log replayed"), "{err}");
    let got: BTreeSet<usize> = sealed(&d).into_iter().collect();
    assert_eq!(got, (0..n).collect::<BTreeSet<_>>());
    // The log and the partial segments are gone; nothing moved aside.
    assert!(sealed_wal::list(&d.data.join(sealed_wal::WAL_DIR)).unwrap().is_empty());
    for p in &partial {
        assert!(!p.exists(), "partial segment {} kept after its events were replayed", p.display());
    }
    assert!(files(&d.data.join(".inflight")).is_empty(), "{:?}", files(&d.data.join(".inflight")));
    assert_no_plaintext(&d);
    // Nothing replays twice.
    recover(&d);
    assert_eq!(sealed(&d).len(), n);
    let _ = &d.root;
}

/// 20 SIGKILLs at random moments while lines stream in: after each recovery every line that
/// was in the log at the kill is sealed, and the sealed lines have no gap.
#[test]
fn kill_9_at_20_random_points() {
    use rand::Rng;
    let mut rng = rand::rng();
    for round in 0..20 {
        let d = dirs();
        let mut child = agent(&d, Stdio::piped());
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let mut i = 0;
            // Stops when the pipe breaks (the agent was killed).
            loop {
                let mut chunk = String::new();
                for _ in 0..50 {
                    chunk.push_str(&line(i));
                    i += 1;
                }
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(50..600)));
        kill9(child);
        writer.join().unwrap();
        let (in_log, stats) = logged(&d);
        recover(&d);
        let got: BTreeSet<usize> = sealed(&d).into_iter().collect();
        for i in &in_log {
            assert!(got.contains(i), "round {round}: line {i} was in the log but is not sealed");
        }
        if let Some(max) = got.iter().max() {
            assert_eq!(got.len(), max + 1, "round {round}: a gap in the sealed lines");
        }
        assert!(stats.torn <= stats.files, "round {round}: at most one torn tail per file");
        assert_no_plaintext(&d);
    }
}
