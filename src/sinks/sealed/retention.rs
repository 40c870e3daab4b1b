//! Retention of sealed segments: which segments are older than a limit, decided by the time
//! in their path and name alone (`<signal>/<yyyy>/<mm>/<dd>/<first-event-ms>-<16 hex>.parquet`),
//! never by opening them, so it works without keys and costs one directory walk.
//!
//! A segment's age is the age of its first event. A segment holds events from its first
//! event to at most the sink's `max_age` later, so events younger than the limit by up to
//! `max_age` go with it; the sink therefore adds its `max_age` to the limit (see
//! [`sweep`]). A file whose name is not a segment id, or whose directory does not match the
//! date of its name, is never removed: it is not one the agent wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::segment::manifest::{self, Manifest};
use crate::segment::{SegmentId, find_segments};

/// One segment past the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub path: PathBuf,
    /// Its first event's time, Unix milliseconds (from its name).
    pub first_ms: i64,
    pub bytes: u64,
}

/// Segments under `root` whose first event is older than `older_than` at `now_ms`, oldest
/// first. Files under `.inflight/` are never listed.
pub fn expired(root: &Path, older_than: Duration, now_ms: i64) -> std::io::Result<Vec<Expired>> {
    let cutoff = now_ms.saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    for path in find_segments(root)? {
        if path.components().any(|c| c.as_os_str() == ".inflight") {
            continue;
        }
        let Some(id) = SegmentId::of_path(&path) else { continue };
        if id.first_ms >= cutoff || !dated_like(&path, id.first_ms) {
            continue;
        }
        let bytes = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        out.push(Expired { path, first_ms: id.first_ms, bytes });
    }
    out.sort_by(|a, b| a.first_ms.cmp(&b.first_ms).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// `true` when the segment's directory is `<yyyy>/<mm>/<dd>` of its first event (UTC).
fn dated_like(path: &Path, first_ms: i64) -> bool {
    let Some(t) = chrono::DateTime::from_timestamp_millis(first_ms) else { return false };
    let want = t.format("%Y/%m/%d").to_string();
    path.parent().is_some_and(|dir| dir.ends_with(&want))
}

/// What a deletion did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub segments: usize,
    pub bytes: u64,
}

/// Removes the `expired` segments, then the day, month and year directories they leave
/// empty. A segment that is already gone counts as removed; any other error stops and is
/// returned with the path. With a `manifest`, the removals are recorded there first (a
/// crash before the files go is finished by the sink's next start).
pub fn remove(root: &Path, expired: &[Expired], manifest: Option<&Manifest>) -> anyhow::Result<Removed> {
    let mut done = Removed::default();
    if let Some(m) = manifest {
        let mut entries = Vec::with_capacity(expired.len());
        for e in expired {
            match manifest::describe(m.root(), &e.path, &e.path, manifest::Op::Remove, None) {
                Ok(entry) => entries.push(entry),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => anyhow::bail!("cannot read {}: {err}", e.path.display()),
            }
        }
        if !entries.is_empty() {
            m.record(&entries)?;
        }
    }
    for e in expired {
        match std::fs::remove_file(&e.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => anyhow::bail!("cannot remove {}: {err}", e.path.display()),
        }
        done.segments += 1;
        done.bytes += e.bytes;
        remove_empty_parents(root, &e.path);
    }
    Ok(done)
}

/// Removes the day, month and year directories above the segment at `path` that are left
/// empty, deepest first, never the signal directory or `root`. `remove_dir` only removes an
/// empty directory, and the writer makes its day directory again if it went just before a
/// seal (see `segment::writer`).
pub fn remove_empty_parents(root: &Path, path: &Path) {
    let mut d = path.parent();
    for _ in 0..3 {
        let Some(dir) = d else { break };
        if dir == root || std::fs::remove_dir(dir).is_err() {
            break;
        }
        d = dir.parent();
    }
}

/// The sink's periodic pass: removes segments older than `retention + max_age`, so no event
/// younger than `retention` is removed (see the module documentation).
pub fn sweep(
    root: &Path,
    retention: Duration,
    max_age: Duration,
    manifest: Option<&Manifest>,
) -> anyhow::Result<Removed> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let list = expired(root, retention.saturating_add(max_age), now_ms)
        .map_err(|e| anyhow::anyhow!("retention: cannot list {}: {e}", root.display()))?;
    remove(root, &list, manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn segment(root: &Path, first_ms: i64) -> PathBuf {
        let id = SegmentId { first_ms, random: first_ms as u64 };
        let dir = id.dir(root, crate::event::Signal::Logs);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{id}.parquet"));
        std::fs::write(&p, b"not opened").unwrap();
        p
    }

    #[test]
    fn keeps_young_segments_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let now = 1_800_000_000_000;
        let old = segment(root, now - 31 * DAY_MS);
        let young = segment(root, now - 29 * DAY_MS);
        // Right name, wrong directory: not the agent's.
        let stray = root.join("logs/x");
        std::fs::create_dir_all(&stray).unwrap();
        let stray = stray.join(old.file_name().unwrap());
        std::fs::write(&stray, b"x").unwrap();
        let inflight = root.join(".inflight");
        std::fs::create_dir_all(&inflight).unwrap();
        std::fs::write(inflight.join(old.file_name().unwrap()), b"x").unwrap();

        let list = expired(root, Duration::from_secs(30 * 86_400), now).unwrap();
        assert_eq!(list.iter().map(|e| e.path.clone()).collect::<Vec<_>>(), vec![old.clone()]);
        assert_eq!(remove(root, &list, None).unwrap(), Removed { segments: 1, bytes: 10 });
        assert!(!old.exists() && young.exists() && stray.exists());
        // The emptied day, month and year directories went; the signal directory stays.
        assert!(!old.parent().unwrap().exists());
        assert!(root.join("logs").exists());
    }
}
