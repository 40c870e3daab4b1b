//! The query audit log: one JSON line per `sealtrail query` in `<keyring>/audit.jsonl`, chained
//! by SHA-256 so that editing, reordering or deleting a record (other than the newest ones
//! together with nothing after them) is detected by [`verify`].
//!
//! Each record carries `seq`, `prev` (the hash of the previous record, 64 zeros for the first)
//! and `hash` = SHA-256 of the record's JSON without `hash`, keys in sorted order.

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The file name of the audit log inside the keyring directory.
pub const FILE: &str = "audit.jsonl";

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit operation hit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit log {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("audit log {path} line {line}: {reason}", path = .path.display())]
    Broken { path: PathBuf, line: usize, reason: String },
}

/// One query as recorded: who, when, which segments and keys, which filters.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub user: String,
    pub segments: Vec<String>,
    pub key_ids: Vec<String>,
    /// Filters as given (`since`, `grep`, …).
    pub filters: Map<String, Value>,
}

fn hash_of(obj: &Map<String, Value>) -> String {
    // serde_json's Map is a BTreeMap here (no preserve_order): keys serialize sorted.
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Appends a record to `<dir>/audit.jsonl` (created 0600), chained to the last one.
pub fn append(dir: &Path, record: &Record) -> Result<(), AuditError> {
    let path = dir.join(FILE);
    let io = |source| AuditError::Io { path: path.clone(), source };
    let (seq, prev) = match last(&path)? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
    let mut obj = Map::new();
    obj.insert("seq".into(), seq.into());
    obj.insert("time".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
    obj.insert("user".into(), record.user.clone().into());
    obj.insert("segments".into(), record.segments.clone().into());
    obj.insert("keys".into(), record.key_ids.clone().into());
    obj.insert("filters".into(), Value::Object(record.filters.clone()));
    obj.insert("prev".into(), prev.into());
    let h = hash_of(&obj);
    obj.insert("hash".into(), h.into());
    let mut line = serde_json::to_vec(&obj).unwrap_or_default();
    line.push(b'\n');
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    let mut f = fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&path).map_err(io)?;
    f.write_all(&line).and_then(|_| f.sync_data()).map_err(io)
}

/// The sequence number and hash of the last record, if any.
fn last(path: &Path) -> Result<Option<(u64, String)>, AuditError> {
    match verify(path) {
        Ok(v) => Ok(v.last),
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The result of a successful [`verify`].
#[derive(Debug, Default)]
pub struct Verified {
    pub records: u64,
    /// `(seq, hash)` of the newest record.
    pub last: Option<(u64, String)>,
}

/// Checks every record's hash and its link to the previous one.
///
/// # Errors
/// [`AuditError::Broken`] naming the first line that does not verify.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let f = fs::File::open(path).map_err(|source| AuditError::Io { path: path.to_owned(), source })?;
    let mut prev = GENESIS.to_owned();
    let mut out = Verified::default();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let broken =
            |reason: &str| AuditError::Broken { path: path.to_owned(), line: n, reason: reason.to_owned() };
        let line = line.map_err(|source| AuditError::Io { path: path.to_owned(), source })?;
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&line) else {
            return Err(broken("not a JSON object"));
        };
        let Some(Value::String(hash)) = obj.remove("hash") else { return Err(broken("no `hash`")) };
        if obj.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(broken(
                "`prev` does not match the previous record: a record was removed, reordered or changed",
            ));
        }
        let seq = obj.get("seq").and_then(Value::as_u64).ok_or_else(|| broken("no `seq`"))?;
        if seq != out.records + 1 {
            return Err(broken(&format!("sequence number {seq}, expected {}", out.records + 1)));
        }
        if hash_of(&obj) != hash {
            return Err(broken("the record was changed after it was written (hash mismatch)"));
        }
        out.records += 1;
        out.last = Some((seq, hash.clone()));
        prev = hash;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_edits_and_deletions() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let r =
                Record { user: format!("u{i}"), segments: vec!["a.parquet".into()], ..Default::default() };
            append(d.path(), &r).unwrap();
        }
        let path = d.path().join(FILE);
        assert_eq!(verify(&path).unwrap().records, 3);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        fs::write(&path, text.replace("\"u1\"", "\"mallory\"")).unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("hash mismatch"), "{e}");

        fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("prev"), "{e}");
    }
}
