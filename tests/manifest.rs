//! Issue 13, the per-directory segment manifest: segments sealed by a real agent are listed in
//! `<data>/.manifest.jsonl`, and `sealtrail segments DATA --verify` reports a deleted, copied or
//! changed segment and a cut-off manifest (exit 3), while a crash, a retention removal and a
//! re-wrap leave it clean.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &Path, extra: &str) -> PathBuf {
    common::write(
        dir,
        "a.toml",
        &format!(
            "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n[transforms.r]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.s]\ntype = \"sealed\"\ninputs = [\"r\"]\nmax_rows = 2\n{extra}",
            dir.join("data").display()
        ),
    )
}

fn run(dir: &Path, cfg: &Path, input: &[u8]) {
    let out = common::run_with_input(dir, &["run", "--config", cfg.to_str().unwrap()], input);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

fn verify(dir: &Path) -> Output {
    common::cmd(dir).args(["segments", "data", "--verify"]).output().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    // Empty until the agent made the directory.
    sealtrail::segment::find_segments(&dir.join("data")).unwrap_or_default()
}

#[track_caller]
fn assert_clean(dir: &Path) {
    let o = verify(dir);
    let text = common::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", common::stderr(&o));
    assert!(text.contains(": ok"), "{text}");
}

#[track_caller]
fn assert_reports(dir: &Path, what: &[&str]) -> String {
    let o = verify(dir);
    let text = common::stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{text}{}", common::stderr(&o));
    for w in what {
        assert!(text.contains(w), "`{w}` not in:\n{text}");
    }
    text
}

#[test]
fn verify_reports_deleted_copied_changed_segments_and_a_cut_off_manifest() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = config(dir, "");
    run(dir, &cfg, b"one\ntwo\nthree\nfour\nfive\nsix\n");
    let segs = segments(dir);
    assert_eq!(segs.len(), 3);
    assert_clean(dir);
    let o = common::stdout(&verify(dir));
    assert!(o.contains("3 entries, 3 segments listed, 3 on disk"), "{o}");
    // Nothing of the data is in the manifest: paths, sizes, hashes and key ids.
    let manifest = std::fs::read_to_string(dir.join("data/.manifest.jsonl")).unwrap();
    assert!(!manifest.contains("three") && manifest.contains("default#1"), "{manifest}");

    let kept = std::fs::read(&segs[1]).unwrap();
    let rel = |p: &Path| p.strip_prefix(dir.join("data")).unwrap().display().to_string();

    // A copy under another segment name.
    let copy = segs[1].with_file_name("1000000000000-00000000000000ff.parquet");
    std::fs::copy(&segs[1], &copy).unwrap();
    assert_reports(dir, &[&format!("not in the manifest: {} (a copy of {})", rel(&copy), rel(&segs[1]))]);
    std::fs::remove_file(&copy).unwrap();

    // A deleted segment.
    std::fs::remove_file(&segs[1]).unwrap();
    assert_reports(dir, &[&format!("missing from disk: {}", rel(&segs[1]))]);

    // One byte changed (the same size).
    let mut changed = kept.clone();
    changed[100] ^= 1;
    std::fs::write(&segs[1], &changed).unwrap();
    assert_reports(dir, &[&format!("hash mismatch: {}", rel(&segs[1]))]);
    std::fs::write(&segs[1], &kept).unwrap();
    assert_clean(dir);

    // The newest line cut off the manifest: the head still counts it.
    let lines: Vec<&str> = manifest.lines().collect();
    let cut: String = lines[..2].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("data/.manifest.jsonl"), &cut).unwrap();
    assert_reports(dir, &["the head says 3 records but the log has 2", "not in the manifest"]);
    // With the head also rolled back, the head kept elsewhere still tells.
    let head = dir.join("data/.manifest.head");
    let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    std::fs::write(&head, format!("{{\"records\":2,\"hash\":\"{}\"}}", second["hash"].as_str().unwrap()))
        .unwrap();
    let o = common::cmd(dir)
        .args(["segments", "data", "--verify", "--manifest-head"])
        .arg(format!("3:{}", last["hash"].as_str().unwrap()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(common::stdout(&o).contains("the newest records were removed"), "{}", common::stdout(&o));

    // A line rewritten without the key (the size made to match a changed segment).
    let forged =
        manifest.replacen(&format!("\"bytes\":{}", kept.len()), &format!("\"bytes\":{}", kept.len() + 1), 1);
    assert_ne!(forged, manifest);
    std::fs::write(dir.join("data/.manifest.jsonl"), &forged).unwrap();
    std::fs::write(&head, format!("{{\"records\":3,\"hash\":\"{}\"}}", last["hash"].as_str().unwrap()))
        .unwrap();
    assert_reports(dir, &["chain: line", "MAC does not verify"]);
}

/// A seal a crash interrupted between its manifest line and its rename (the complete file
/// still in `.inflight/`) is finished on the next start, not reported as deleted.
#[test]
fn an_interrupted_seal_is_finished_on_start() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = config(dir, "");
    run(dir, &cfg, b"one\ntwo\nthree\nfour\n");
    let segs = segments(dir);
    assert_eq!(segs.len(), 2);
    // The state a kill between the manifest's fsync and the rename leaves.
    let inflight = dir.join("data/.inflight");
    std::fs::create_dir_all(&inflight).unwrap();
    std::fs::rename(&segs[0], inflight.join(segs[0].file_name().unwrap())).unwrap();
    assert_reports(dir, &["missing from disk"]);
    run(dir, &cfg, b"");
    assert!(segs[0].exists());
    assert_clean(dir);

    // The same with the write-ahead log on: the log replays those events, so the seal is
    // recorded as abandoned and the partial file set aside, instead of sealing them twice.
    let cfg = config(dir, "wal = true\n");
    let mut child = common::cmd(dir)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"five\n").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let wal = dir.join("data/.wal");
    assert!(common::eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&wal)
            .map(|r| r.flatten().any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false)))
            .unwrap_or(false)
    }));
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let segs = segments(dir);
    std::fs::rename(&segs[1], inflight.join(segs[1].file_name().unwrap())).unwrap();
    run(dir, &cfg, b"");
    assert_clean(dir);
}

/// kill -9 in the middle of a run that seals every two lines, then a restart: clean.
#[test]
fn kill_9_mid_run_then_restart_verifies_clean() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = config(dir, "");
    let mut child = common::cmd(dir)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0.. {
            if stdin.write_all(format!("line {i}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(dir).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    writer.join().unwrap();
    assert!(segments(dir).len() >= 20);
    run(dir, &cfg, b"after\n");
    assert_clean(dir);
}

/// Retention (the sink's and `segments --older-than --delete`) and `keys rewrap` change the
/// directory on purpose: they record it, so verify stays clean.
#[test]
fn retention_and_rewrap_are_recorded() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // An old segment-named file, adopted into the manifest on the first start.
    let old_ms = chrono::Utc::now().timestamp_millis() - 40 * 86_400_000;
    let t = chrono::DateTime::from_timestamp_millis(old_ms).unwrap();
    let old_dir = dir.join("data/logs").join(t.format("%Y/%m/%d").to_string());
    std::fs::create_dir_all(&old_dir).unwrap();
    let old = old_dir.join(format!("{old_ms}-0000000000000001.parquet"));
    std::fs::write(&old, b"an old segment").unwrap();
    let cfg = config(dir, "retention = \"30d\"\n");
    let mut child = common::cmd(dir)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"one\ntwo\nthree\nfour\n").unwrap();
    assert!(common::eventually(Duration::from_secs(20), || !old.exists()));
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_clean(dir);
    let manifest = std::fs::read_to_string(dir.join("data/.manifest.jsonl")).unwrap();
    assert!(manifest.contains("\"op\":\"remove\""), "{manifest}");

    // keys rewrap rewrites the tails: recorded as rewrites.
    let o = common::cmd(dir).args(["keys", "rotate", "default"]).output().unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = common::cmd(dir).args(["keys", "rewrap", "default", "data"]).output().unwrap();
    assert!(
        common::stdout(&o).contains("re-wrapped 2 segment(s)"),
        "{}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    assert_clean(dir);

    // segments --older-than --delete: everything sealed a moment ago.
    std::thread::sleep(Duration::from_millis(20));
    let o = common::cmd(dir).args(["segments", "data", "--older-than", "10ms", "--delete"]).output().unwrap();
    assert!(
        common::stdout(&o).contains("deleted 2 segments"),
        "{}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    assert!(segments(dir).is_empty());
    assert_clean(dir);
}

/// A manifest that cannot be written never stops sealing: the segments are sealed and
/// `--verify` reports the broken manifest.
#[test]
fn an_unwritable_manifest_never_costs_events() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = config(dir, "");
    run(dir, &cfg, b"one\ntwo\n");
    // Replaced by a directory: every append fails.
    let manifest = dir.join("data/.manifest.jsonl");
    std::fs::remove_file(&manifest).unwrap();
    std::fs::create_dir(&manifest).unwrap();
    run(dir, &cfg, b"three\nfour\n");
    assert_eq!(segments(dir).len(), 2);
    let q = common::cmd(dir).args(["query", "data", "--format", "jsonl"]).output().unwrap();
    assert!(common::stdout(&q).contains("four"), "{}", common::stderr(&q));
    assert_reports(dir, &["no manifest"]);
}
