//! The per-directory manifest: `<root>/.manifest.jsonl`, one line per change to the sealed
//! segments of a data directory, so a segment that was deleted, copied, renamed, truncated or
//! changed is noticed (`sealtrail segments PATH --verify`).
//!
//! A line is `{"seq","time","op","path","bytes","sha256","key","prev","hash"}`: `op` is `add`
//! (sealed by the sink, or adopted when the sink first meets a directory without a manifest),
//! `remove` (retention, or a seal a crash interrupted) or `rewrite` (`keys rewrap`); `path` is
//! relative to the root, `sha256` is of the whole file and `key` is its key id: never customer
//! data. Lines are chained like the query audit log (`keys::audit`, whose code this reuses):
//! `prev` is the previous line's MAC and `hash` an HMAC-SHA256 under a key derived from the
//! keyring's audit key, and `<root>/.manifest.head` holds the count and newest MAC.
//!
//! Crash safety: the sink appends (and fsyncs) the `add` line after the segment is fsynced in
//! `.inflight/` and **before** the rename that seals it; a retention removal is recorded
//! before the file is removed; a re-wrap before its rename. [`start`], when the sink starts
//! and before `.inflight/` is cleared, finishes what such a line announced when the evidence
//! is there (the complete file in `.inflight/` with the recorded hash is renamed into place,
//! or recorded as removed when the write-ahead log replays its events; a removed file still on
//! disk with the recorded hash is removed), and never otherwise, so a crash does not look like
//! tampering and a restart never hides tampering.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::Material;
use crate::keys::audit::{self, Head};

use super::{INFLIGHT, SegmentId, find_segments};

/// The manifest's file name in a segment root.
pub const FILE: &str = ".manifest.jsonl";
/// Its head: `{"records":N,"hash":"<hex>"}`.
pub const HEAD_FILE: &str = ".manifest.head";
/// The label of the manifest key derived from the audit key.
const KEY_LABEL: &str = "sealtrail segment manifest v1";
/// How much of the manifest's end an append reads to find the last line; a line is a few
/// hundred bytes (relative path, two hashes, key id).
const TAIL_BYTES: u64 = 64 << 10;
/// A line longer than this is not a manifest line (bounds a verify's memory).
const MAX_LINE_BYTES: u64 = 64 << 10;

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    Rewrite,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
            Op::Rewrite => "rewrite",
        }
    }
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "add" => Op::Add,
            "remove" => Op::Remove,
            "rewrite" => Op::Rewrite,
            _ => return None,
        })
    }
}

/// One line's content (without the chain fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub op: Op,
    /// Relative to the root, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub key: String,
}

/// SHA-256 and length of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// The segment root of a sealed segment file: `<root>/<signal>/<yyyy>/<mm>/<dd>/<id>.parquet`.
pub fn root_of(segment: &Path) -> Option<&Path> {
    super::signal_of_path(segment)?;
    segment.ancestors().nth(5)
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

/// An entry describing the file at `path` (hashed now) as it is or will be at `at`.
pub fn describe(root: &Path, path: &Path, at: &Path, op: Op, key: Option<String>) -> std::io::Result<Entry> {
    let (bytes, sha256) = hash_file(path)?;
    let key = key.unwrap_or_else(|| {
        super::reader::read_key_metadata(path).map(|k| k.master_key_id).unwrap_or_else(|_| "?".into())
    });
    Ok(Entry { op, path: rel(root, at), bytes, sha256, key })
}

/// The manifest of one segment root, with the key that writes (and checks) its chain.
pub struct Manifest {
    root: PathBuf,
    key: Option<Material>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest").field("root", &self.root).finish_non_exhaustive()
    }
}

fn fail(path: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("manifest {}: {what}", path.display())
}

impl Manifest {
    /// The manifest of `root`, its key derived from the audit key of the keyring `keys`
    /// (created there when `create_key`; without it, a missing audit key leaves the manifest
    /// keyless: it can be checked against the files but its chain cannot be, nor appended to).
    pub fn open(root: &Path, keys: Option<&Path>, create_key: bool) -> anyhow::Result<Manifest> {
        let key = match keys {
            Some(dir) => audit::derived_key(dir, KEY_LABEL, create_key)
                .map_err(|e| anyhow::anyhow!("the manifest key (from the keyring's audit key): {e}"))?,
            None => None,
        };
        Ok(Manifest { root: root.to_owned(), key })
    }

    pub fn path(&self) -> PathBuf {
        self.root.join(FILE)
    }

    pub fn exists(&self) -> bool {
        self.path().is_file()
    }

    /// Whether lines can be appended (and the chain checked): the audit key was there.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends `entries` under the manifest's lock, fsynced, then moves the head (nothing at
    /// all for no entries: the first seal creates the manifest). A broken
    /// manifest never stops an append (the break stays visible to [`Manifest::verify`]).
    ///
    /// # Errors
    /// No key, or the manifest cannot be written.
    pub fn record(&self, entries: &[Entry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.key.as_ref().ok_or_else(|| {
            fail(&self.path(), "the keyring has no audit key, so the manifest cannot be appended to")
        })?;
        let path = self.path();
        let mut f = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail(&path, e))?;
        audit::lock_exclusive(&f).map_err(|e| fail(&path, e))?;
        let (mut seq, mut prev, good_len, len) = last_link(&mut f).map_err(|e| fail(&path, e))?;
        if good_len < len {
            // A torn last line: an append a crash cut short (never fsynced, never acted on).
            f.set_len(good_len).map_err(|e| fail(&path, e))?;
        }
        let mut out = Vec::new();
        for e in entries {
            seq += 1;
            let mut obj = Map::new();
            obj.insert("seq".into(), seq.into());
            obj.insert(
                "time".into(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
            );
            obj.insert("op".into(), e.op.as_str().into());
            obj.insert("path".into(), e.path.clone().into());
            obj.insert("bytes".into(), e.bytes.into());
            obj.insert("sha256".into(), e.sha256.clone().into());
            obj.insert("key".into(), e.key.clone().into());
            obj.insert("prev".into(), prev.clone().into());
            let h = audit::mac_of(key, &obj);
            obj.insert("hash".into(), h.clone().into());
            out.extend(serde_json::to_vec(&obj).map_err(|e| fail(&path, e))?);
            out.push(b'\n');
            prev = h;
        }
        f.write_all(&out).and_then(|_| f.sync_data()).map_err(|e| fail(&path, e))?;
        audit::write_head_file(&self.root.join(HEAD_FILE), &Head { records: seq, hash: prev })
            .map_err(|e| fail(&path, e))?;
        Ok(())
    }

    /// Every complete line that parses, in order, with its 1-based line number.
    fn entries(&self) -> anyhow::Result<Vec<(usize, Entry)>> {
        let path = self.path();
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fail(&path, e)),
        };
        let mut r = BufReader::new(f);
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            let got =
                (&mut r).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).map_err(|e| fail(&path, e))?;
            if got == 0 || line.last() != Some(&b'\n') {
                break;
            }
            n += 1;
            if let Some(e) = parse_entry(&line) {
                out.push((n, e));
            }
        }
        Ok(out)
    }

    /// Checks the manifest against the files under the root and, with a key, its chain and
    /// head (`expect`, given by the operator, else `.manifest.head`). Every file is hashed.
    pub fn verify(&self, expect: Option<&Head>) -> anyhow::Result<Report> {
        let path = self.path();
        let mut report = Report::default();
        if !self.exists() {
            report.problems.push(format!("no manifest: {} does not exist", path.display()));
            return Ok(report);
        }
        // The chain: every line's MAC and link, then the head.
        match &self.key {
            None => report.chain_checked = false,
            Some(key) => {
                report.chain_checked = true;
                let f = File::open(&path).map_err(|e| fail(&path, e))?;
                let mut hashes = Vec::new();
                match audit::verify_reader_with(&path, BufReader::new(f), key, &mut |h| {
                    hashes.push(h.to_owned())
                }) {
                    Ok(v) => {
                        report.torn = v.torn;
                        let head = match expect {
                            Some(h) => Some(h.clone()),
                            None => audit::read_head_file(&self.root.join(HEAD_FILE))
                                .map_err(|e| fail(&path, e))?,
                        };
                        if let Err(e) = audit::check_head(&path, HEAD_FILE, &hashes, head.as_ref()) {
                            report.problems.push(format!("chain: {}", reason_of(&e)));
                        }
                        report.head = v.last.map(|(n, h)| Head { records: n, hash: h });
                    }
                    Err(e) => report.problems.push(format!("chain: {}", reason_of(&e))),
                }
            }
        }
        // The entries: what should be on disk now.
        let mut live: BTreeMap<String, (usize, Entry)> = BTreeMap::new();
        let mut removed: HashMap<String, usize> = HashMap::new();
        for (n, e) in self.entries()? {
            report.entries += 1;
            match e.op {
                Op::Add => {
                    if let Some((first, _)) = live.get(&e.path) {
                        report.problems.push(format!(
                            "duplicated entry: {} added on line {n} and already on line {first}",
                            e.path
                        ));
                    }
                    removed.remove(&e.path);
                    live.insert(e.path.clone(), (n, e));
                }
                Op::Rewrite => {
                    if !live.contains_key(&e.path) {
                        report
                            .problems
                            .push(format!("line {n} rewrites {}, which the manifest does not list", e.path));
                    }
                    live.insert(e.path.clone(), (n, e));
                }
                Op::Remove => {
                    live.remove(&e.path);
                    removed.insert(e.path.clone(), n);
                }
            }
        }
        // The files: each hashed and compared.
        let files = find_segments(&self.root).map_err(|e| fail(&self.root, e))?;
        let by_hash: HashMap<&str, &str> =
            live.values().map(|(_, e)| (e.sha256.as_str(), e.path.as_str())).collect();
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for f in &files {
            let r = rel(&self.root, f);
            report.files += 1;
            if let Some(id) = SegmentId::of_path(f)
                && let Some(other) = ids.insert(id.to_string(), r.clone())
            {
                report.problems.push(format!("duplicated segment id {id}: {other} and {r}"));
            }
            let (bytes, sha) = match hash_file(f) {
                Ok(x) => x,
                Err(e) => {
                    report.problems.push(format!("unreadable: {r}: {e}"));
                    continue;
                }
            };
            match live.get(&r) {
                Some((n, e)) => {
                    seen.insert(r.clone());
                    if e.bytes != bytes {
                        report.problems.push(format!(
                            "size mismatch: {r} is {bytes} bytes, the manifest (line {n}) says {}",
                            e.bytes
                        ));
                    } else if e.sha256 != sha {
                        report
                            .problems
                            .push(format!("hash mismatch: {r} was changed since it was recorded (line {n})"));
                    }
                }
                None => {
                    let mut p = format!("not in the manifest: {r}");
                    if let Some(n) = removed.get(&r) {
                        p.push_str(&format!(" (recorded as removed on line {n})"));
                    }
                    if let Some(orig) = by_hash.get(sha.as_str()) {
                        p.push_str(&format!(" (a copy of {orig})"));
                    }
                    report.problems.push(p);
                }
            }
        }
        for (r, (n, _)) in &live {
            if !seen.contains(r) && !files.iter().any(|f| rel(&self.root, f) == *r) {
                report.problems.push(format!("missing from disk: {r} (recorded on line {n})"));
            }
        }
        report.live = live.len();
        Ok(report)
    }
}

/// What [`Manifest::verify`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines of the manifest that parse.
    pub entries: usize,
    /// Segments the manifest says are on disk.
    pub live: usize,
    /// Segment files found.
    pub files: usize,
    /// Whether the chain was checked (a key was available).
    pub chain_checked: bool,
    /// A torn last line (an interrupted append) was ignored.
    pub torn: bool,
    /// The newest verified line: what to keep elsewhere and give back as `--manifest-head`.
    pub head: Option<Head>,
    pub problems: Vec<String>,
}

fn reason_of(e: &audit::AuditError) -> String {
    match e {
        audit::AuditError::Broken { line, reason, .. } => format!("line {line}: {reason}"),
        audit::AuditError::Head { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn parse_entry(line: &[u8]) -> Option<Entry> {
    let v: Value = serde_json::from_slice(line).ok()?;
    Some(Entry {
        op: Op::parse(v.get("op")?.as_str()?)?,
        path: v.get("path")?.as_str()?.to_owned(),
        bytes: v.get("bytes")?.as_u64()?,
        sha256: v.get("sha256")?.as_str()?.to_owned(),
        key: v.get("key")?.as_str()?.to_owned(),
    })
}

/// The last complete line's `seq` and `hash` (0 and the genesis for an empty or unreadable
/// end: the chain check reports it), the length up to its newline, and the file's length.
fn last_link(f: &mut File) -> std::io::Result<(u64, String, u64, u64)> {
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut buf)?;
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok((0, audit::GENESIS.to_owned(), start, len));
    };
    let begin = buf[..end].iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
    let good_len = start + end as u64 + 1;
    let v: Option<Value> = serde_json::from_slice(&buf[begin..end]).ok();
    let seq = v.as_ref().and_then(|v| v.get("seq")?.as_u64());
    let hash = v.as_ref().and_then(|v| Some(v.get("hash")?.as_str()?.to_owned()));
    Ok(match (seq, hash) {
        (Some(s), Some(h)) => (s, h, good_len, len),
        _ => (0, audit::GENESIS.to_owned(), good_len, len),
    })
}

/// What [`start`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// Segments adopted into a new manifest.
    pub adopted: usize,
    /// Seals a crash interrupted after their line, renamed into place now.
    pub completed: usize,
    /// Seals a crash interrupted whose events the write-ahead log replays: recorded as removed.
    pub abandoned: usize,
    /// Removals a crash interrupted after their line, done now.
    pub removed: usize,
}

/// [`start`] for the sealed sink: what it did is logged, and a manifest that cannot be opened
/// is a warning, not a stopped sink (sealing goes on; `segments --verify` then reports the
/// segments the manifest misses).
pub fn start_for_sink(root: &Path, keys: &Path, logged: bool) -> Option<std::sync::Arc<Manifest>> {
    if !keys.is_dir() {
        // Keys from the environment only (Lambda): the keyring is never created for this.
        tracing::info!(keyring = %keys.display(), "no keyring directory, so no audit key: segments are not recorded in a manifest");
        return None;
    }
    match start(root, keys, logged) {
        Ok((m, s)) => {
            if s != Started::default() {
                tracing::info!(
                    adopted = s.adopted,
                    completed_seals = s.completed,
                    abandoned_seals = s.abandoned,
                    completed_removals = s.removed,
                    "segment manifest: recorded existing segments and finished what a crash interrupted"
                );
            }
            Some(std::sync::Arc::new(m))
        }
        Err(e) => {
            tracing::warn!("{e:#}; segments sealed now are not recorded in a manifest");
            None
        }
    }
}

/// The sealed sink's start, before `.inflight/` is cleared: opens the manifest of `root`
/// (creating the audit key in the keyring directory `keys`, which must exist), adopts every
/// segment already there into a new manifest, and finishes what a crash interrupted (see the module documentation). `logged`:
/// the write-ahead log holds events to replay, so an unfinished seal is abandoned, not finished.
pub fn start(root: &Path, keys: &Path, logged: bool) -> anyhow::Result<(Manifest, Started)> {
    fs::create_dir_all(root).map_err(|e| fail(root, e))?;
    let m = Manifest::open(root, Some(keys), true)?;
    let mut done = Started::default();
    if !m.exists() {
        let mut adopt = Vec::new();
        for f in find_segments(root).map_err(|e| fail(root, e))? {
            adopt.push(describe(root, &f, &f, Op::Add, None).map_err(|e| fail(&f, e))?);
        }
        done.adopted = adopt.len();
        return m.record(&adopt).map(|()| (m, done));
    }
    let mut live: BTreeMap<String, Entry> = BTreeMap::new();
    let mut removed: BTreeMap<String, Entry> = BTreeMap::new();
    for (_, e) in m.entries()? {
        match e.op {
            Op::Remove => {
                live.remove(&e.path);
                removed.insert(e.path.clone(), e);
            }
            _ => {
                removed.remove(&e.path);
                live.insert(e.path.clone(), e);
            }
        }
    }
    let mut abandon = Vec::new();
    for e in live.values().filter(|e| e.op == Op::Add) {
        let dest = root.join(&e.path);
        if dest.exists() {
            continue;
        }
        let Some(name) = dest.file_name() else { continue };
        let inflight = root.join(INFLIGHT).join(name);
        // Only the complete file with the recorded hash is evidence of an interrupted seal.
        if !matches!(hash_file(&inflight), Ok((b, h)) if b == e.bytes && h == e.sha256) {
            continue;
        }
        if logged {
            abandon.push(Entry { op: Op::Remove, ..e.clone() });
            done.abandoned += 1;
        } else {
            let dir = dest.parent().unwrap_or(root);
            fs::create_dir_all(dir).map_err(|x| fail(dir, x))?;
            fs::rename(&inflight, &dest).map_err(|x| fail(&dest, x))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(|x| fail(dir, x))?;
            done.completed += 1;
        }
    }
    for e in removed.values() {
        let p = root.join(&e.path);
        if matches!(hash_file(&p), Ok((b, h)) if b == e.bytes && h == e.sha256) {
            fs::remove_file(&p).map_err(|x| fail(&p, x))?;
            done.removed += 1;
        }
    }
    if !abandon.is_empty() {
        m.record(&abandon)?;
    }
    Ok((m, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(root: &Path, name: &str, body: &[u8]) -> PathBuf {
        let dir = root.join("logs/2026/11/28");
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn adopt_then_tamper() {
        let d = tempfile::tempdir().unwrap();
        let (root, keys) = (d.path().join("data"), d.path().join("keys"));
        let a = seg(&root, "1795000000000-0000000000000001.parquet", b"aaaa");
        seg(&root, "1795000000001-0000000000000002.parquet", b"bbbb");
        fs::create_dir(&keys).unwrap();
        let (m, s) = start(&root, &keys, false).unwrap();
        assert_eq!(s.adopted, 2);
        let r = m.verify(None).unwrap();
        assert!(r.problems.is_empty() && r.chain_checked && r.live == 2, "{r:?}");
        fs::create_dir_all(root.join("logs/2026/11/29")).unwrap();
        fs::copy(&a, root.join("logs/2026/11/29/1795000000000-0000000000000001.parquet")).unwrap();
        fs::write(&a, b"aaab").unwrap();
        let p = m.verify(None).unwrap().problems;
        assert!(p.iter().any(|p| p.starts_with("hash mismatch")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("not in the manifest") && p.contains("a copy of")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("duplicated segment id")), "{p:?}");
    }
}
