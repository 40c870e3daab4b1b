//! Crypto-shredding (`sealtrail keys destroy`): the record of destroyed keys and versions,
//! `<keyring>/destroyed.jsonl`, one line per destruction:
//! `{"key":"payments","versions":[1,2],"time":"<RFC 3339>"}`.
//!
//! The record holds names and version numbers only, never material. It is what lets
//! `segments` and `query` say "shredded" (the data is gone for good, by intent) instead of
//! "key not found" (something is misconfigured), and it keeps a destroyed name or version
//! number from being used again: a segment names its key as `name#version`, so a new key
//! under a shredded id would be mistaken for the old one.

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{KeyError, io_err};

/// The file name of the record, in the keyring directory. Not `*.json`: it is not a key.
pub const FILE: &str = "destroyed.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    key: String,
    versions: Vec<u32>,
    /// `true` when the whole key was destroyed (its file removed).
    #[serde(default)]
    whole: bool,
    time: String,
}

/// Every destroyed key version of a keyring.
#[derive(Debug, Default, Clone)]
pub struct Destroyed {
    lines: Vec<Line>,
}

impl Destroyed {
    /// Reads the record; no file means nothing was destroyed. A line that does not parse is
    /// an error naming the file and line (the record must not be silently half-read).
    pub fn load(dir: &Path) -> Result<Destroyed, KeyError> {
        let path = dir.join(FILE);
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Destroyed::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut lines = Vec::new();
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io_err(&path))?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(&line).map_err(|e| KeyError::BadFile {
                path: path.clone(),
                reason: format!("line {}: {e}", n + 1),
            })?;
            lines.push(l);
        }
        Ok(Destroyed { lines })
    }

    /// Whether `name#version` (a segment's `masterKeyID`) was destroyed.
    pub fn covers(&self, key_id: &str) -> bool {
        let Some((name, v)) = key_id.rsplit_once('#') else { return false };
        let Ok(v) = v.parse::<u32>() else { return false };
        self.lines.iter().any(|l| l.key == name && (l.whole || l.versions.contains(&v)))
    }

    /// Whether the whole key `name` was destroyed.
    pub fn whole(&self, name: &str) -> bool {
        self.lines.iter().any(|l| l.key == name && l.whole)
    }

    /// The highest destroyed version of `name` (a rotation must go past it).
    pub fn max_version(&self, name: &str) -> Option<u32> {
        self.lines.iter().filter(|l| l.key == name).flat_map(|l| l.versions.iter().copied()).max()
    }

    /// Appends one destruction to the record (created 0600) and fsyncs it, before any
    /// material is touched: a crash in between leaves the key marked destroyed and the
    /// command can be run again to finish.
    pub(super) fn append(dir: &Path, name: &str, versions: &[u32], whole: bool) -> Result<(), KeyError> {
        let path = dir.join(FILE);
        let line = Line {
            key: name.to_owned(),
            versions: versions.to_vec(),
            whole,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let mut text = serde_json::to_vec(&line)
            .map_err(|e| KeyError::BadFile { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&text).and_then(|_| f.sync_all()).map_err(io_err(&path))
    }
}

/// Overwrites a key file's content in place with zeros, through a descriptor opened before
/// the file was replaced or unlinked, and fsyncs it, so the blocks that held the material
/// are rewritten on file systems that write in place (not on copy-on-write ones, and not in
/// backups or snapshots: README "Crypto-shredding").
pub(super) fn overwrite(f: &mut fs::File, path: &Path) -> Result<(), KeyError> {
    use std::io::Seek;
    let len = f.metadata().map_err(io_err(path))?.len();
    f.rewind().map_err(io_err(path))?;
    let zeros = vec![0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(io_err(path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io_err(path))
}
