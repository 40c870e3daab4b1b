//! Retention (issue 18): `sealtrail segments PATH --older-than AGE [--delete]` and the sealed
//! sink's `retention`, on a directory of several hundred segments. Both judge a segment by the
//! time in its path and name alone, so the old segments here are named files that are never
//! opened (their contents are not Parquet, which proves it), beside real sealed segments.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

/// Writes `per_day` segment-named files for each of the last `days` days (day 0 = now) and
/// returns them with their first-event time.
fn plant(root: &Path, days: i64, per_day: i64) -> Vec<(PathBuf, i64)> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for d in 0..days {
        for i in 0..per_day {
            // An hour into the day's span, so no segment sits at the cut-off.
            let first = now - d * DAY_MS - 3_600_000 - i * 1000;
            let t = chrono::DateTime::from_timestamp_millis(first).unwrap();
            let dir = root.join("logs").join(t.format("%Y/%m/%d").to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(format!("{first}-{:016x}.parquet", (d * 1000 + i) as u64));
            std::fs::write(&p, b"not a parquet file: never opened").unwrap();
            out.push((p, first));
        }
    }
    out
}

fn segments(root: &Path) -> Vec<PathBuf> {
    sealtrail::segment::find_segments(root).unwrap()
}

#[test]
fn segments_older_than_dry_run_then_delete_on_400_segments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A real, young sealed segment from the agent.
    let cfg = common::write(
        dir.path(),
        "a.toml",
        &format!(
            "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n[transforms.r]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.s]\ntype = \"sealed\"\ninputs = [\"r\"]\n",
            data.display()
        ),
    );
    let out =
        common::run_with_input(dir.path(), &["run", "--config", cfg.to_str().unwrap()], b"young line\n");
    assert!(out.status.success());
    let real = segments(&data);
    assert_eq!(real.len(), 1);

    let planted = plant(&data, 40, 10);
    let now = chrono::Utc::now().timestamp_millis();
    let old: Vec<&PathBuf> = planted.iter().filter(|(_, t)| *t < now - 30 * DAY_MS).map(|(p, _)| p).collect();
    assert_eq!(old.len(), 100);
    assert_eq!(segments(&data).len(), 401);

    let root = data.to_str().unwrap();
    let dry = common::cmd(dir.path()).args(["segments", root, "--older-than", "30d"]).output().unwrap();
    let text = String::from_utf8(dry.stdout).unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let bytes = 100 * "not a parquet file: never opened".len();
    assert!(
        text.ends_with(&format!(
            "100 segments ({bytes} bytes) older than 30d; dry run: add --delete to remove them\n"
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 101);
    assert_eq!(segments(&data).len(), 401, "a dry run removes nothing");

    let del =
        common::cmd(dir.path()).args(["segments", root, "--older-than", "30d", "--delete"]).output().unwrap();
    let text = String::from_utf8(del.stdout).unwrap();
    assert!(del.status.success());
    assert!(text.ends_with(&format!("deleted 100 segments ({bytes} bytes) older than 30d\n")), "{text}");
    let left = segments(&data);
    assert_eq!(left.len(), 301);
    assert!(old.iter().all(|p| !p.exists() && !p.parent().unwrap().exists()));
    assert!(left.contains(&real[0]));
    // The real segment still reads.
    let q = common::cmd(dir.path()).arg("query").arg(&real[0]).output().unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(String::from_utf8_lossy(&q.stdout).contains("young line"));

    let bad = common::cmd(dir.path()).args(["segments", root, "--older-than", "soon"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"soon\" is not a duration"));
}

#[test]
fn the_sealed_sink_removes_segments_past_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let planted = plant(&data, 40, 10);
    let now = chrono::Utc::now().timestamp_millis();
    // The sink keeps `retention + max_age` (30 days and 5 minutes).
    let old: Vec<PathBuf> =
        planted.iter().filter(|(_, t)| *t < now - 30 * DAY_MS - 300_000).map(|(p, _)| p.clone()).collect();
    assert_eq!(old.len(), 100);
    let cfg = common::write(
        dir.path(),
        "a.toml",
        &format!(
            "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n[transforms.r]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.s]\ntype = \"sealed\"\ninputs = [\"r\"]\nretention = \"30d\"\n",
            data.display()
        ),
    );
    let mut child = common::cmd(dir.path())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"kept\n").unwrap();
    // The first pass runs at start.
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.iter().any(|p| p.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(old.iter().all(|p| !p.exists()), "old segments are removed");
    // 300 planted young ones and the one just sealed.
    assert_eq!(segments(&data).len(), 301);

    let bad = common::write(
        dir.path(),
        "b.toml",
        "[sources.in]\ntype = \"stdin\"\n[transforms.r]\ntype = \"redact\"\ninputs = [\"in\"]\n\
         [sinks.s]\ntype = \"sealed\"\ninputs = [\"r\"]\nretention = \"10s\"\n",
    );
    let out = common::cmd(dir.path()).args(["validate", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`retention` must be at least 1m"));
}
