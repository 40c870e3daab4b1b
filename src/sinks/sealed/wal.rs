//! The sealed sink's encrypted write-ahead log: every batch is in the log and fsynced before
//! the sink builds segments from it, so a crash, an OOM kill or a power cut loses nothing that
//! reached the log; the next start replays the log into segments.
//!
//! Layout: `<path>/.wal/<generation:020>.wal`, one append-only file per generation. A file
//! starts with a header:
//!
//! ```text
//! "STWAL01\n" | u32 LE n | n bytes of PKMT1 key metadata (JSON)
//! ```
//!
//! The key metadata wraps the file's fresh 256-bit log data key under the sink's default key
//! through the same [`KeyProvider`] as the segments, so a log is as readable as a segment and
//! no more. Then records follow, each
//!
//! ```text
//! u32 LE len | u32 LE crc32(body) | body = 12-byte nonce ‖ AES-256-GCM-SIV(dek, nonce, batch, aad)
//! ```
//!
//! where `aad` is the generation and the record number (both u64 LE), so records cannot be
//! moved between files or reordered without the decryption failing. The CRC tells a torn write
//! (the tail of a file the crash cut short: counted and skipped) from a record that was written
//! whole but does not decrypt (wrong key or tampering: an error, the file is kept). No
//! plaintext byte of an event is written: the header holds only the wrapped key, and file
//! names are numbers.
//!
//! The batch encoding ([`encode_batch`]) is a compact little-endian binary form of every event
//! field, so replay gives back exactly the events that were logged.
//!
//! Space: a generation is released (deleted) once every segment holding its events is sealed.
//! The log is bounded by `wal_max_bytes`: past it the sink seals its open segments, which
//! releases every older generation, before taking the next batch (the channel behind it
//! fills, so sources feel backpressure; nothing is dropped).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use rand::RngCore;

use crate::event::{Event, KeyValue, LogRecord, SourceId, Span, SpanEvent, SpanLink, Value};
use crate::keys::{KeyMetadata, KeyProvider};

/// The log directory under the sink's path.
pub const WAL_DIR: &str = ".wal";
/// The first bytes of every log file.
const MAGIC: &[u8; 8] = b"STWAL01\n";
/// The largest record body accepted on replay: a length above it is a torn or corrupt frame,
/// not an allocation request.
pub const MAX_RECORD_BYTES: u32 = 256 << 20;
/// The largest header (key metadata) accepted on replay.
const MAX_HEADER_BYTES: u32 = 64 << 10;

/// Why the log failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("write-ahead log {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("write-ahead log {path}: its data key cannot be unwrapped ({source}); the file is kept", path = .path.display())]
    Key { path: PathBuf, source: crate::keys::KeyError },
    #[error("write-ahead log {path}: {reason}; the file is kept", path = .path.display())]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_owned(), source }
}

/// Limits of the log.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Past this many bytes of log, the sink seals its open segments to release the log.
    pub max_bytes: u64,
    /// Start a new generation file once the current one reaches this many bytes.
    pub file_bytes: u64,
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub files: u64,
    pub records: u64,
    pub events: u64,
    /// Bytes of log read.
    pub bytes: u64,
    /// Records cut short or failing their checksum at the end of a file (skipped).
    pub torn: u64,
}

/// The open log: appends records to the current generation file.
pub struct Wal {
    dir: PathBuf,
    provider: Box<dyn KeyProvider>,
    key: String,
    current: Current,
    /// Every generation on disk (current included) and its size in bytes.
    files: BTreeMap<u64, u64>,
    options: WalOptions,
    fsyncs: u64,
}

struct Current {
    generation: u64,
    path: PathBuf,
    out: BufWriter<File>,
    cipher: Aes256GcmSiv,
    records: u64,
    len: u64,
}

/// The path of generation `g`.
pub fn file_path(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("{g:020}.wal"))
}

/// The generation files in `dir`, oldest first (an absent directory has none).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(g) = name.to_str().and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((g, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn aad(generation: u64, record: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&generation.to_le_bytes());
    a[8..].copy_from_slice(&record.to_le_bytes());
    a
}

impl Wal {
    /// Opens a new generation after the ones already in `<root>/.wal` (those are replayed and
    /// removed by the caller). Creates the directory; fails if it cannot be written.
    pub fn create(
        root: &Path,
        provider: Box<dyn KeyProvider>,
        key: &str,
        options: WalOptions,
    ) -> Result<Wal, WalError> {
        let dir = root.join(WAL_DIR);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let files: BTreeMap<u64, u64> = list(&dir)?
            .into_iter()
            .map(|(g, p)| (g, fs::metadata(p).map(|m| m.len()).unwrap_or(0)))
            .collect();
        let next = files.keys().next_back().map_or(1, |g| g + 1);
        let current = Self::open_generation(&dir, provider.as_ref(), key, next)?;
        let mut wal = Wal { dir, provider, key: key.to_owned(), current, files, options, fsyncs: 0 };
        wal.files.insert(next, wal.current.len);
        Ok(wal)
    }

    fn open_generation(
        dir: &Path,
        provider: &dyn KeyProvider,
        key: &str,
        g: u64,
    ) -> Result<Current, WalError> {
        let path = file_path(dir, g);
        let (dek, km) =
            provider.wrap_new_dek(key).map_err(|source| WalError::Key { path: path.clone(), source })?;
        let cipher = Aes256GcmSiv::new((&*dek).into());
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io(&path))?;
        let mut out = BufWriter::with_capacity(256 << 10, file);
        let meta = km.to_bytes();
        out.write_all(MAGIC).map_err(io(&path))?;
        out.write_all(&(meta.len() as u32).to_le_bytes()).map_err(io(&path))?;
        out.write_all(&meta).map_err(io(&path))?;
        out.flush().map_err(io(&path))?;
        out.get_ref().sync_all().map_err(io(&path))?;
        sync_dir(dir)?;
        let len = (MAGIC.len() + 4 + meta.len()) as u64;
        Ok(Current { generation: g, path, out, cipher, records: 0, len })
    }

    /// The generation that the next record goes to.
    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// Bytes of log on disk (every generation not yet released).
    pub fn total_bytes(&self) -> u64 {
        self.files.values().sum()
    }

    pub fn options(&self) -> WalOptions {
        self.options
    }

    /// fsyncs done so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    /// Appends one batch (buffered: durable only after [`Wal::commit`]). Starts a new
    /// generation first when the current file is full, so the returned generation is the file
    /// the batch went to.
    pub fn append(&mut self, events: &[Event]) -> Result<u64, WalError> {
        if self.current.len >= self.options.file_bytes && self.current.records > 0 {
            self.rotate()?;
        }
        let plain = zeroize::Zeroizing::new(encode_batch(events));
        let c = &mut self.current;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let a = aad(c.generation, c.records);
        let ct = c.cipher.encrypt((&nonce).into(), Payload { msg: &plain, aad: &a }).map_err(|_| {
            WalError::Corrupt { path: c.path.clone(), reason: "encrypting a record failed".into() }
        })?;
        let body_len = 12 + ct.len();
        if body_len > MAX_RECORD_BYTES as usize {
            return Err(WalError::Corrupt {
                path: c.path.clone(),
                reason: format!(
                    "a batch of {body_len} bytes exceeds the record limit of {MAX_RECORD_BYTES} bytes"
                ),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&nonce);
        crc.update(&ct);
        let path = &c.path;
        c.out.write_all(&(body_len as u32).to_le_bytes()).map_err(io(path))?;
        c.out.write_all(&crc.finalize().to_le_bytes()).map_err(io(path))?;
        c.out.write_all(&nonce).map_err(io(path))?;
        c.out.write_all(&ct).map_err(io(path))?;
        c.records += 1;
        c.len += 8 + body_len as u64;
        self.files.insert(c.generation, c.len);
        Ok(c.generation)
    }

    /// Makes every appended record durable: one write and one `fdatasync` for the whole group.
    pub fn commit(&mut self) -> Result<(), WalError> {
        let c = &mut self.current;
        c.out.flush().map_err(io(&c.path))?;
        c.out.get_ref().sync_data().map_err(io(&c.path))?;
        self.fsyncs += 1;
        Ok(())
    }

    /// Closes the current generation (durably) and opens the next.
    pub fn rotate(&mut self) -> Result<(), WalError> {
        self.commit()?;
        let next = self.current.generation + 1;
        self.current = Self::open_generation(&self.dir, self.provider.as_ref(), &self.key, next)?;
        self.files.insert(next, self.current.len);
        Ok(())
    }

    /// Whether the current generation holds no record yet.
    pub fn current_is_empty(&self) -> bool {
        self.current.records == 0
    }

    /// Deletes the whole log (every event in it is sealed): a clean shutdown leaves no log.
    pub fn remove_all(mut self) -> Result<(), WalError> {
        self.current.out.flush().map_err(io(&self.current.path))?;
        let gens: Vec<u64> = self.files.keys().copied().collect();
        for g in gens {
            let p = file_path(&self.dir, g);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        sync_dir(&self.dir)
    }

    /// Deletes every generation older than `keep_from` (never the current one): their events
    /// are all in sealed segments.
    pub fn release_before(&mut self, keep_from: u64) -> Result<(), WalError> {
        let keep_from = keep_from.min(self.current.generation);
        let old: Vec<u64> = self.files.range(..keep_from).map(|(g, _)| *g).collect();
        for g in &old {
            let p = file_path(&self.dir, *g);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
            self.files.remove(g);
        }
        if !old.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Reads one log file and calls `each` with every whole batch in it, in order. A record cut
/// short or failing its checksum at the end of the file is counted in `torn` and ends the file;
/// a bad checksum followed by more data, a bad header or a record that fails to decrypt is an
/// error naming the file (which the caller keeps).
pub fn replay_file(
    path: &Path,
    provider: &dyn KeyProvider,
    stats: &mut ReplayStats,
    mut each: impl FnMut(Vec<Event>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let g = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".wal"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| WalError::Corrupt {
            path: path.to_owned(),
            reason: "not a `<generation>.wal` file".into(),
        })?;
    let data = fs::read(path).map_err(io(path))?;
    stats.files += 1;
    stats.bytes += data.len() as u64;
    let corrupt = |reason: String| WalError::Corrupt { path: path.to_owned(), reason };
    let hdr = MAGIC.len() + 4;
    if data.len() < hdr {
        // A crash between creating the file and syncing its header: nothing was logged in it.
        if MAGIC.starts_with(&data[..data.len().min(MAGIC.len())]) {
            stats.torn += 1;
            return Ok(());
        }
        return Err(corrupt("not a write-ahead log (bad magic)".into()).into());
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a write-ahead log (bad magic)".into()).into());
    }
    let n = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if n > MAX_HEADER_BYTES || data.len() < hdr + n as usize {
        stats.torn += 1;
        return Ok(());
    }
    let km = KeyMetadata::parse(&data[hdr..hdr + n as usize])
        .map_err(|source| WalError::Key { path: path.to_owned(), source })?;
    let dek = provider.unwrap_dek(&km).map_err(|source| WalError::Key { path: path.to_owned(), source })?;
    let cipher = Aes256GcmSiv::new((&*dek).into());
    let mut pos = hdr + n as usize;
    let mut record = 0u64;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 {
            stats.torn += 1;
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if !(12 + 16..=MAX_RECORD_BYTES).contains(&len) || rest.len() < 8 + len as usize {
            // A length beyond the file is the tail of an interrupted write.
            stats.torn += 1;
            break;
        }
        let body = &rest[8..8 + len as usize];
        if crc32fast::hash(body) != crc {
            if pos + 8 + len as usize == data.len() {
                stats.torn += 1;
                break;
            }
            return Err(corrupt(format!("record {record} at byte {pos} fails its checksum")).into());
        }
        let (nonce, ct) = body.split_at(12);
        let plain = zeroize::Zeroizing::new(
            cipher.decrypt(nonce.into(), Payload { msg: ct, aad: &aad(g, record) }).map_err(|_| {
                corrupt(format!("record {record} at byte {pos} does not decrypt (tampered or moved)"))
            })?,
        );
        let events =
            decode_batch(&plain).map_err(|e| corrupt(format!("record {record} at byte {pos}: {e}")))?;
        stats.records += 1;
        stats.events += events.len() as u64;
        each(events)?;
        pos += 8 + len as usize;
        record += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batch encoding: little-endian, length-prefixed; every field of every event.

const TAG_LOG: u8 = 1;
const TAG_SPAN: u8 = 2;

/// Encodes a batch losslessly (see the module docs).
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(events.iter().map(|e| e.size_estimate() + 32).sum()));
    e.u32(events.len() as u32);
    // The source id is shared by most events of a batch: written once per change.
    let mut last_source: Option<&SourceId> = None;
    for ev in events {
        match ev {
            Event::Log(l) => {
                e.u8(TAG_LOG);
                if last_source.is_some_and(|s| Arc::ptr_eq(s, &l.source) || **s == *l.source) {
                    e.u8(0);
                } else {
                    e.u8(1);
                    e.str(&l.source);
                    last_source = Some(&l.source);
                }
                e.i64(l.time);
                e.i64(l.observed_time);
                e.str(&l.severity_text);
                e.i32(l.severity_number);
                e.str(&l.body);
                e.attrs(&l.attributes);
                e.attrs(&l.resource);
                e.str(&l.service);
                e.opt(l.trace_id.as_ref().map(|b| &b[..]));
                e.opt(l.span_id.as_ref().map(|b| &b[..]));
                e.u32(l.redactions);
            }
            Event::Span(s) => {
                e.u8(TAG_SPAN);
                e.0.extend_from_slice(&s.trace_id);
                e.0.extend_from_slice(&s.span_id);
                e.opt(s.parent_span_id.as_ref().map(|b| &b[..]));
                e.str(&s.trace_state);
                e.str(&s.name);
                e.i32(s.kind);
                e.i64(s.start_time);
                e.i64(s.end_time);
                e.i32(s.status_code);
                e.str(&s.status_message);
                e.attrs(&s.attributes);
                e.u32(s.events.len() as u32);
                for se in &s.events {
                    e.i64(se.time);
                    e.str(&se.name);
                    e.attrs(&se.attributes);
                }
                e.u32(s.links.len() as u32);
                for l in &s.links {
                    e.0.extend_from_slice(&l.trace_id);
                    e.0.extend_from_slice(&l.span_id);
                    e.str(&l.trace_state);
                    e.attrs(&l.attributes);
                }
                e.attrs(&s.resource);
                e.str(&s.service);
                e.str(&s.scope_name);
                e.u32(s.redactions);
            }
        }
    }
    e.0
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.0.extend_from_slice(b);
            }
        }
    }
    fn attrs(&mut self, a: &[KeyValue]) {
        self.u32(a.len() as u32);
        for kv in a {
            self.str(&kv.key);
            self.value(&kv.value);
        }
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Empty => self.u8(0),
            Value::Str(s) => {
                self.u8(1);
                self.str(s);
            }
            Value::Bool(b) => {
                self.u8(2);
                self.u8(*b as u8);
            }
            Value::Int(i) => {
                self.u8(3);
                self.i64(*i);
            }
            Value::Double(d) => {
                self.u8(4);
                self.0.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Value::Bytes(b) => {
                self.u8(5);
                self.bytes(b);
            }
            Value::Array(a) => {
                self.u8(6);
                self.u32(a.len() as u32);
                for x in a {
                    self.value(x);
                }
            }
            Value::Map(m) => {
                self.u8(7);
                self.attrs(m);
            }
        }
    }
}

/// Nesting limit of attribute values on decode (the encoder writes what it was given; a
/// record that nests deeper than this is refused instead of exhausting the stack).
const MAX_DEPTH: u32 = 128;

/// Decodes [`encode_batch`]'s output. Every length is checked against the bytes left, so a
/// damaged record is an error, never a panic or a huge allocation.
pub fn decode_batch(b: &[u8]) -> Result<Vec<Event>, String> {
    let mut d = Dec { b, pos: 0 };
    let n = d.u32()? as usize;
    // Each event takes at least 20 bytes: cap the allocation by what the record can hold.
    let mut out = Vec::with_capacity(n.min(b.len() / 20));
    let mut source: SourceId = Arc::from("");
    for _ in 0..n {
        match d.u8()? {
            TAG_LOG => {
                if d.u8()? == 1 {
                    source = Arc::from(d.str()?);
                }
                out.push(Event::Log(LogRecord {
                    source: source.clone(),
                    time: d.i64()?,
                    observed_time: d.i64()?,
                    severity_text: d.str()?,
                    severity_number: d.i32()?,
                    body: d.str()?,
                    attributes: d.attrs(0)?,
                    resource: d.attrs(0)?,
                    service: d.str()?,
                    trace_id: d.opt::<16>()?,
                    span_id: d.opt::<8>()?,
                    redactions: d.u32()?,
                }));
            }
            TAG_SPAN => {
                let trace_id = d.arr::<16>()?;
                let span_id = d.arr::<8>()?;
                let parent_span_id = d.opt::<8>()?;
                let trace_state = d.str()?;
                let name = d.str()?;
                let kind = d.i32()?;
                let start_time = d.i64()?;
                let end_time = d.i64()?;
                let status_code = d.i32()?;
                let status_message = d.str()?;
                let attributes = d.attrs(0)?;
                let ne = d.count(12)?;
                let mut events = Vec::with_capacity(ne);
                for _ in 0..ne {
                    events.push(SpanEvent { time: d.i64()?, name: d.str()?, attributes: d.attrs(0)? });
                }
                let nl = d.count(32)?;
                let mut links = Vec::with_capacity(nl);
                for _ in 0..nl {
                    links.push(SpanLink {
                        trace_id: d.arr::<16>()?,
                        span_id: d.arr::<8>()?,
                        trace_state: d.str()?,
                        attributes: d.attrs(0)?,
                    });
                }
                out.push(Event::Span(Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state,
                    name,
                    kind,
                    start_time,
                    end_time,
                    status_code,
                    status_message,
                    attributes,
                    events,
                    links,
                    resource: d.attrs(0)?,
                    service: d.str()?,
                    scope_name: d.str()?,
                    redactions: d.u32()?,
                }));
            }
            t => return Err(format!("unknown event tag {t} at byte {}", d.pos - 1)),
        }
    }
    if d.pos != b.len() {
        return Err(format!("{} bytes after the last event", b.len() - d.pos));
    }
    Ok(out)
}

struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Dec<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!("truncated at byte {} (needs {n} more bytes)", self.pos));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    /// A count of items that take at least `min` bytes each, checked against the bytes left.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() - self.pos {
            return Err(format!("count {n} at byte {} exceeds the record", self.pos - 4));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        let at = self.pos;
        String::from_utf8(self.bytes()?).map_err(|_| format!("invalid UTF-8 in the string at byte {at}"))
    }
    fn opt<const N: usize>(&mut self) -> Result<Option<[u8; N]>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.arr()?)),
            t => Err(format!("bad option tag {t} at byte {}", self.pos - 1)),
        }
    }
    fn attrs(&mut self, depth: u32) -> Result<Vec<KeyValue>, String> {
        let n = self.count(5)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.str()?;
            out.push(KeyValue { key, value: self.value(depth)? });
        }
        Ok(out)
    }
    fn value(&mut self, depth: u32) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("attribute values nested deeper than {MAX_DEPTH}"));
        }
        Ok(match self.u8()? {
            0 => Value::Empty,
            1 => Value::Str(self.str()?),
            2 => Value::Bool(self.u8()? != 0),
            3 => Value::Int(self.i64()?),
            4 => Value::Double(f64::from_bits(u64::from_le_bytes(self.arr()?))),
            5 => Value::Bytes(self.bytes()?),
            6 => {
                let n = self.count(1)?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            7 => Value::Map(self.attrs(depth + 1)?),
            t => return Err(format!("bad value tag {t} at byte {}", self.pos - 1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Keyring, LocalProvider};
    use std::collections::HashMap;

    fn events() -> Vec<Event> {
        let nested = Value::Map(vec![
            KeyValue::new("arr", Value::Array(vec![Value::Int(-3), Value::Double(1.5), Value::Empty])),
            KeyValue::new("b", Value::Bytes(vec![0, 255])),
            KeyValue::new("t", true),
        ]);
        vec![
            Event::Log(LogRecord {
                time: 1,
                observed_time: 2,
                severity_text: "WARN".into(),
                severity_number: 13,
                body: "héllo".into(),
                attributes: vec![KeyValue::new("k", nested.clone())],
                resource: vec![KeyValue::new("service.name", "svc")],
                service: "svc".into(),
                trace_id: Some([7; 16]),
                span_id: Some([8; 8]),
                source: Arc::from("app"),
                redactions: 4,
            }),
            Event::Log(LogRecord { source: Arc::from("app"), ..LogRecord::default() }),
            Event::Log(LogRecord { source: Arc::from("other"), body: "x".into(), ..LogRecord::default() }),
            Event::Span(Span {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_span_id: Some([3; 8]),
                trace_state: "a=b".into(),
                name: "GET /".into(),
                kind: 2,
                start_time: -5,
                end_time: i64::MAX,
                status_code: 2,
                status_message: "boom".into(),
                attributes: vec![KeyValue::new("n", nested)],
                events: vec![SpanEvent {
                    time: 9,
                    name: "ev".into(),
                    attributes: vec![KeyValue::new("x", 1i64)],
                }],
                links: vec![SpanLink {
                    trace_id: [4; 16],
                    span_id: [5; 8],
                    trace_state: "c".into(),
                    attributes: vec![],
                }],
                resource: vec![],
                service: "s".into(),
                scope_name: "scope".into(),
                redactions: 1,
            }),
        ]
    }

    #[test]
    fn encoding_round_trips_every_field() {
        let ev = events();
        let b = encode_batch(&ev);
        assert_eq!(decode_batch(&b).unwrap(), ev);
        // Any truncation is an error, never a panic.
        for cut in 0..b.len() {
            assert!(decode_batch(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn provider(dir: &Path) -> LocalProvider {
        LocalProvider::new(Arc::new(Keyring::with_env(dir, HashMap::new()))).creating("default")
    }

    fn replay_all(root: &Path, p: &LocalProvider) -> anyhow::Result<(Vec<Event>, ReplayStats)> {
        let mut stats = ReplayStats::default();
        let mut out = Vec::new();
        for (_, path) in list(&root.join(WAL_DIR))? {
            replay_file(&path, p, &mut stats, |b| {
                out.extend(b);
                Ok(())
            })?;
        }
        Ok((out, stats))
    }

    #[test]
    fn append_replay_torn_tail_and_release() {
        let keys = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let p = provider(keys.path());
        let opts = WalOptions { max_bytes: 1 << 20, file_bytes: 300 };
        let mut w = Wal::create(root.path(), Box::new(p.clone()), "default", opts).unwrap();
        let g1 = w.append(&events()).unwrap();
        let g2 = w.append(&events()).unwrap();
        w.commit().unwrap();
        assert!(g2 > g1, "the file limit starts a new generation");
        let (got, stats) = replay_all(root.path(), &p).unwrap();
        assert_eq!(got.len(), 8);
        assert_eq!(&got[..4], &events()[..]);
        assert_eq!(stats.torn, 0);
        // No plaintext on disk.
        for (_, path) in list(&root.path().join(WAL_DIR)).unwrap() {
            let raw = fs::read(path).unwrap();
            assert!(!raw.windows(5).any(|w| w == b"GET /" || w == b"scope"));
        }
        // Tear the last record at every byte: the first batch survives, the tear is counted.
        let last = file_path(&root.path().join(WAL_DIR), g2);
        let full = fs::read(&last).unwrap();
        let hdr_end = 12 + u32::from_le_bytes(full[8..12].try_into().unwrap()) as usize;
        for cut in hdr_end + 1..full.len() {
            fs::write(&last, &full[..cut]).unwrap();
            let (got, stats) = replay_all(root.path(), &p).unwrap();
            assert_eq!(got.len(), 4, "cut at {cut}");
            assert_eq!(stats.torn, 1, "cut at {cut}");
        }
        fs::write(&last, &full).unwrap();
        // A flipped bit in a whole record that is not the last: an error naming the file.
        let first = file_path(&root.path().join(WAL_DIR), g1);
        let mut raw = fs::read(&first).unwrap();
        let n = raw.len();
        raw.extend_from_slice(&[0u8; 40]); // pretend more data follows
        raw[n - 3] ^= 1;
        fs::write(&first, &raw).unwrap();
        let e = replay_all(root.path(), &p).unwrap_err().to_string();
        assert!(e.contains(&first.display().to_string()) && e.contains("checksum"), "{e}");
        // Release: only the current generation stays.
        w.release_before(u64::MAX).unwrap();
        assert_eq!(list(&root.path().join(WAL_DIR)).unwrap().len(), 1);
        assert_eq!(w.total_bytes(), fs::metadata(file_path(&root.path().join(WAL_DIR), g2)).unwrap().len());
    }

    #[test]
    fn a_missing_key_is_a_clear_error_and_the_file_stays() {
        let keys = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let p = provider(keys.path());
        let opts = WalOptions { max_bytes: 1 << 20, file_bytes: 1 << 20 };
        let mut w = Wal::create(root.path(), Box::new(p.clone()), "default", opts).unwrap();
        w.append(&events()).unwrap();
        w.commit().unwrap();
        drop(w);
        let other = tempfile::tempdir().unwrap();
        let e = replay_all(root.path(), &provider(other.path())).unwrap_err().to_string();
        assert!(e.contains("write-ahead log") && e.contains("`default`") && e.contains("kept"), "{e}");
        assert_eq!(list(&root.path().join(WAL_DIR)).unwrap().len(), 1);
    }
}
