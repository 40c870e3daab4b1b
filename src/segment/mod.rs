//! Sealed segments: encrypted Parquet files of redacted events (ARCHITECTURE.md "Formats").
//!
//! - [`schema`] holds the Arrow schemas of the two signals, [`columns`] the builders that turn
//!   events into record batches (and back).
//! - [`writer`] writes one segment: Parquet Modular Encryption with an encrypted footer, a fresh
//!   256-bit data key per segment wrapped by a [`crate::keys::KeyProvider`], PKMT1 key
//!   metadata, the segment id as stored AAD prefix, zstd, statistics and the page index, no
//!   bloom filters; written under `.inflight/`, fsynced and renamed into place.
//! - [`reader`] opens a segment with a cached key retriever, prunes row groups and pages by
//!   statistics and the page index, and streams record batches; every failure names the
//!   segment and the key id.
//!
//! - [`trace_index`] is the per-row-group trace-id index kept in the encrypted footer, which
//!   lets a `--trace-id` query skip the row groups that cannot hold the trace.
//! - [`manifest`] records every sealed, removed and re-wrapped segment of a directory in an
//!   HMAC-chained `.manifest.jsonl`, so deleted, copied or changed segments are noticed.
//!
//! Layout: `<root>/<signal>/<yyyy>/<mm>/<dd>/<first-event-unix-ms>-<16 hex>.parquet`.

pub mod columns;
pub mod manifest;
pub mod reader;
pub mod rewrap;
pub mod schema;
pub mod trace_index;
pub mod writer;

use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::event::Signal;

/// The directory under a segment root where segments are written before they are sealed.
pub const INFLIGHT: &str = ".inflight";
/// Where crash leftovers of `.inflight/` are moved on start.
pub const BROKEN: &str = "broken";

/// A segment's identity: the first event's time and 64 random bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentId {
    /// The first event's time, Unix milliseconds.
    pub first_ms: i64,
    pub random: u64,
}

impl SegmentId {
    pub fn new(first_ms: i64) -> SegmentId {
        SegmentId { first_ms, random: rand::rng().next_u64() }
    }

    /// Parses `<ms>-<16 hex>` (a file stem).
    pub fn parse(s: &str) -> Option<SegmentId> {
        let (ms, r) = s.split_once('-')?;
        if r.len() != 16 || !r.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        Some(SegmentId { first_ms: ms.parse().ok()?, random: u64::from_str_radix(r, 16).ok()? })
    }

    /// The id of the segment file at `path`, from its name.
    pub fn of_path(path: &Path) -> Option<SegmentId> {
        SegmentId::parse(path.file_stem()?.to_str()?)
    }

    /// The directory of this segment under `root`: `<signal>/<yyyy>/<mm>/<dd>` (UTC).
    pub fn dir(&self, root: &Path, signal: Signal) -> PathBuf {
        let t = chrono::DateTime::from_timestamp_millis(self.first_ms).unwrap_or_default();
        root.join(signal.as_str()).join(t.format("%Y/%m/%d").to_string())
    }
}

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:016x}", self.first_ms, self.random)
    }
}

/// The signal of a segment from its path (`…/logs/2026/…` or `…/spans/…`).
pub fn signal_of_path(path: &Path) -> Option<Signal> {
    path.ancestors().skip(1).nth(3).and_then(|p| p.file_name()).and_then(|n| match n.to_str()? {
        "logs" => Some(Signal::Logs),
        "spans" => Some(Signal::Spans),
        _ => None,
    })
}

/// Every sealed segment file under `path` (a segment file or a directory), sorted by path.
/// `.inflight/` and `.rewrap-<pid>/` are skipped.
pub fn find_segments(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_owned());
        return Ok(out);
    }
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                // Not `.inflight/`, nor a re-wrap's copies (`segment::rewrap`): no duplicates.
                let name = entry.file_name();
                if name != INFLIGHT && !name.to_string_lossy().starts_with(".rewrap-") {
                    stack.push(p);
                }
            } else if ft.is_file() && p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        let id = SegmentId { first_ms: 1_795_000_000_123, random: 0xabc };
        assert_eq!(id.to_string(), "1795000000123-0000000000000abc");
        assert_eq!(SegmentId::parse(&id.to_string()), Some(id.clone()));
        assert_eq!(SegmentId::parse("x-0000000000000abc"), None);
        let dir = id.dir(Path::new("/d"), Signal::Spans);
        assert_eq!(dir, Path::new("/d/spans/2026/11/18"));
        assert_eq!(signal_of_path(&dir.join(format!("{id}.parquet"))), Some(Signal::Spans));
    }

    #[test]
    fn find_segments_skips_inflight_and_rewrap_copies() {
        let d = tempfile::tempdir().unwrap();
        let day = d.path().join("logs/2026/11/28");
        for sub in [".inflight", ".rewrap-42", ""] {
            std::fs::create_dir_all(day.join(sub)).unwrap();
            std::fs::write(day.join(sub).join("1795000000123-0000000000000abc.parquet"), b"x").unwrap();
        }
        assert_eq!(find_segments(d.path()).unwrap(), [day.join("1795000000123-0000000000000abc.parquet")]);
    }
}
