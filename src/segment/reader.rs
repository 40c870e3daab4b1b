//! Reading sealed segments.
//!
//! Opening a segment reads its plaintext crypto metadata for the key id (no key needed,
//! [`read_key_metadata`]), then decrypts the footer and the page index through a
//! [`SegmentRetriever`] that unwraps the data key once and caches it (the parquet crate asks
//! for it repeatedly). The segment id from the file name is supplied as the AAD prefix, so a
//! renamed or swapped segment fails authentication.
//!
//! A [`Filter`] (the one predicate of [`crate::filter`]) prunes before any data page is
//! decrypted: whole segments by signal and the time range of their footer statistics, row
//! groups by their statistics (time, level, trace id), pages of the time column by the
//! column index, then rows by [`Filter::matches`] over the few columns it looks at, so the
//! remaining columns are decoded (and their pages fetched) only where rows match. A
//! [`CountingFile`] measures the bytes read.
//!
//! Every failure is a [`ReadError`] naming the segment and the key id it needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::ArrowError;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter, RowSelection, RowSelector,
};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, RowGroupMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use zeroize::Zeroizing;

use super::columns::events_from_columns;
use super::trace_index::{self, TraceIndex};
use super::{SegmentId, schema, signal_of_path};
use crate::event::{Signal, severity};
pub use crate::filter::Filter;
use crate::filter::SpanStatus;
use crate::keys::{KeyError, KeyMetadata, KeyProvider};

/// What went wrong with a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadErrorKind {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("not a sealed segment: {0}")]
    NotSegment(String),
    #[error("{0}")]
    Key(KeyError),
    #[error(
        "footer cannot be decrypted or authenticated (wrong key version, tampered, swapped or renamed segment): {0}"
    )]
    Footer(String),
    #[error("data cannot be decrypted or authenticated (tampered or truncated data page): {0}")]
    Data(String),
}

/// A segment that could not be read: names the segment and the key id it needs.
#[derive(Debug, thiserror::Error)]
#[error("segment {path} (key {key}): {kind}", path = .path.display(), key = .key_id.as_deref().unwrap_or("unknown"))]
pub struct ReadError {
    pub path: PathBuf,
    pub key_id: Option<String>,
    pub kind: ReadErrorKind,
}

impl ReadError {
    pub fn kind(&self) -> &ReadErrorKind {
        &self.kind
    }
}

/// Reads the PKMT1 key metadata from a segment's plaintext `FileCryptoMetaData`, without any
/// key. Enough for the key id (`masterKeyID`).
pub fn read_key_metadata(path: &Path) -> Result<KeyMetadata, ReadError> {
    let f = File::open(path).map_err(|e| ReadError {
        path: path.to_owned(),
        key_id: None,
        kind: ReadErrorKind::Io(e),
    })?;
    let len = f
        .metadata()
        .map_err(|e| ReadError { path: path.to_owned(), key_id: None, kind: ReadErrorKind::Io(e) })?
        .len();
    key_metadata_from(path, len, &|buf: &mut [u8], at: u64| f.read_exact_at(buf, at))
}

/// [`read_key_metadata`] of a segment stored elsewhere (`path` names it in errors).
pub fn read_key_metadata_remote(
    path: &Path,
    src: &dyn RangeRead,
    len: u64,
) -> Result<KeyMetadata, ReadError> {
    key_metadata_from(path, len, &|buf: &mut [u8], at: u64| {
        let b = src.read_range(at, buf.len())?;
        buf.copy_from_slice(&b);
        Ok(())
    })
}

type ReadAt<'a> = dyn Fn(&mut [u8], u64) -> std::io::Result<()> + 'a;

fn key_metadata_from(path: &Path, len: u64, f: &ReadAt<'_>) -> Result<KeyMetadata, ReadError> {
    let err = |kind| ReadError { path: path.to_owned(), key_id: None, kind };
    if len < 12 {
        return Err(err(ReadErrorKind::NotSegment(format!("only {len} bytes (truncated?)"))));
    }
    let mut tail = [0u8; 8];
    f(&mut tail, len - 8).map_err(|e| err(ReadErrorKind::Io(e)))?;
    if &tail[4..] != b"PARE" {
        return Err(err(ReadErrorKind::NotSegment(
            "no encrypted-footer magic `PARE` at the end (truncated, or not encrypted)".into(),
        )));
    }
    let footer_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if footer_len + 12 > len {
        return Err(err(ReadErrorKind::NotSegment(format!(
            "footer length {footer_len} exceeds the file size {len}"
        ))));
    }
    // The crypto metadata (algorithm, AAD prefix, key metadata) comes first in the footer.
    let n = footer_len.min(4096) as usize;
    let mut head = vec![0u8; n];
    f(&mut head, len - 8 - footer_len).map_err(|e| err(ReadErrorKind::Io(e)))?;
    let start = memchr::memmem::find(&head, crate::keys::pkmt1_prefix()).ok_or_else(|| {
        err(ReadErrorKind::NotSegment("no PKMT1 key metadata in the crypto metadata".into()))
    })?;
    let mut it = serde_json::Deserializer::from_slice(&head[start..]).into_iter::<serde_json::Value>();
    let json = match it.next() {
        Some(Ok(v)) => v,
        _ => {
            return Err(err(ReadErrorKind::Key(KeyError::BadMetadata(
                "key metadata is not valid JSON".into(),
            ))));
        }
    };
    let bytes = serde_json::to_vec(&json).unwrap_or_default();
    KeyMetadata::parse(&bytes).map_err(|e| err(ReadErrorKind::Key(e)))
}

/// The parquet crate's key retriever over a [`KeyProvider`], caching unwrapped data keys by
/// key metadata (it is called several times per file).
pub struct SegmentRetriever {
    provider: Arc<dyn KeyProvider>,
    cache: Mutex<HashMap<Vec<u8>, Zeroizing<Vec<u8>>>>,
    /// Every key id that unwrapped a data key (for the audit log).
    used: Mutex<Vec<String>>,
}

impl SegmentRetriever {
    pub fn new(provider: Arc<dyn KeyProvider>) -> SegmentRetriever {
        SegmentRetriever { provider, cache: Mutex::new(HashMap::new()), used: Mutex::new(Vec::new()) }
    }

    /// The key ids used so far, deduplicated, in first-use order.
    pub fn used_key_ids(&self) -> Vec<String> {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl SegmentRetriever {
    /// The data key inside `key_metadata`, unwrapped once and then served from the cache.
    pub fn unwrap_cached(&self, key_metadata: &[u8]) -> Result<Vec<u8>, KeyError> {
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(key_metadata) {
            return Ok(k.to_vec());
        }
        let km = KeyMetadata::parse(key_metadata)?;
        let dek = self.provider.unwrap_dek(&km)?;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if !used.contains(&km.master_key_id) {
            used.push(km.master_key_id.clone());
        }
        let v = Zeroizing::new(dek.to_vec());
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key_metadata.to_vec(), v);
        Ok(dek.to_vec())
    }
}

impl KeyRetriever for SegmentRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        self.unwrap_cached(key_metadata).map_err(|e| ParquetError::General(e.to_string()))
    }
}

/// The bytes of a segment stored elsewhere (an S3 object): ranged reads of exactly `len`
/// bytes at `start`.
pub trait RangeRead: Send + Sync {
    fn read_range(&self, start: u64, len: usize) -> std::io::Result<Bytes>;
}

/// A streaming read of a remote segment fetches this much per request.
const REMOTE_BLOCK: u64 = 1 << 20;

#[derive(Clone)]
enum Backing {
    File(Arc<File>),
    Remote(Arc<dyn RangeRead>),
}

/// A file (or remote object) that counts the bytes the Parquet reader takes from it.
#[derive(Clone)]
pub struct CountingFile {
    file: Backing,
    len: u64,
    read: Arc<AtomicU64>,
}

impl CountingFile {
    pub fn open(path: &Path) -> std::io::Result<CountingFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(CountingFile { file: Backing::File(Arc::new(file)), len, read: Arc::new(AtomicU64::new(0)) })
    }

    /// A remote segment of `len` bytes.
    pub fn remote(src: Arc<dyn RangeRead>, len: u64) -> CountingFile {
        CountingFile { file: Backing::Remote(src), len, read: Arc::new(AtomicU64::new(0)) }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Relaxed)
    }
}

impl Length for CountingFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A reader that counts what it returns.
pub struct CountingRead {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

/// Sequential reads of a remote segment, [`REMOTE_BLOCK`] bytes per ranged request.
struct RemoteRead {
    src: Arc<dyn RangeRead>,
    pos: u64,
    end: u64,
    buf: Bytes,
}

impl Read for RemoteRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.end {
                return Ok(0);
            }
            let n = (self.end - self.pos).min(REMOTE_BLOCK);
            self.buf = self.src.read_range(self.pos, n as usize)?;
            self.pos += n;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl ChunkReader for CountingFile {
    type T = CountingRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<CountingRead> {
        let inner: Box<dyn Read + Send> = match &self.file {
            Backing::File(file) => {
                let mut f = file.try_clone()?;
                f.seek(SeekFrom::Start(start))?;
                Box::new(BufReader::new(f))
            }
            Backing::Remote(src) => {
                Box::new(RemoteRead { src: src.clone(), pos: start, end: self.len, buf: Bytes::new() })
            }
        };
        Ok(CountingRead { inner, read: self.read.clone() })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = match &self.file {
            Backing::File(file) => {
                let mut buf = vec![0u8; length];
                file.read_exact_at(&mut buf, start)?;
                buf.into()
            }
            Backing::Remote(src) => src.read_range(start, length)?,
        };
        self.read.fetch_add(length as u64, Relaxed);
        Ok(bytes)
    }
}

/// What one segment's summary holds (from the decrypted footer only).
#[derive(Debug, Clone)]
pub struct Summary {
    pub rows: u64,
    pub row_groups: usize,
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

/// An opened (footer decrypted) segment.
pub struct Segment {
    pub path: PathBuf,
    pub key_id: String,
    pub signal: Signal,
    file: CountingFile,
    meta: ArrowReaderMetadata,
    /// The encrypted footer's trace-id index, when the segment has one that describes its row
    /// groups (segments written before it, or by another writer, have none).
    trace_index: Option<TraceIndex>,
}

fn col_index(rg: &RowGroupMetaData, name: &str) -> Option<usize> {
    rg.columns().iter().position(|c| c.column_path().string() == name)
}

fn i64_range(s: Option<&Statistics>) -> (Option<i64>, Option<i64>) {
    match s {
        Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
        _ => (None, None),
    }
}

impl Segment {
    /// Opens a segment: key id from the plaintext metadata, then the footer and page index
    /// decrypted with the key the provider unwraps.
    pub fn open(path: &Path, retriever: Arc<SegmentRetriever>) -> Result<Segment, ReadError> {
        Segment::open_backed(path, None, retriever)
    }

    /// Opens a segment stored elsewhere (an S3 object of `len` bytes): the footer and page
    /// index, then only the column chunks a read needs, come through ranged reads. `path`
    /// (`s3://bucket/<signal>/yyyy/mm/dd/<id>.parquet`) gives its signal and id.
    pub fn open_remote(
        path: &Path,
        src: Arc<dyn RangeRead>,
        len: u64,
        retriever: Arc<SegmentRetriever>,
    ) -> Result<Segment, ReadError> {
        Segment::open_backed(path, Some(CountingFile::remote(src, len)), retriever)
    }

    fn open_backed(
        path: &Path,
        remote: Option<CountingFile>,
        retriever: Arc<SegmentRetriever>,
    ) -> Result<Segment, ReadError> {
        let km = match &remote {
            Some(CountingFile { file: Backing::Remote(src), len, .. }) => {
                read_key_metadata_remote(path, src.as_ref(), *len)?
            }
            _ => read_key_metadata(path)?,
        };
        let key_id = km.master_key_id.clone();
        let err = |kind| ReadError { path: path.to_owned(), key_id: Some(key_id.clone()), kind };
        // Unwrap first so that a key problem is reported as such, not as a footer failure.
        if let Err(e) = retriever.unwrap_cached(&km.to_bytes()) {
            return Err(err(ReadErrorKind::Key(e)));
        }
        let signal = signal_of_path(path).unwrap_or(Signal::Logs);
        // The AAD prefix is always bound to the name: a segment is authenticated as the segment
        // its name says it is, so a renamed or swapped file fails instead of reading as another.
        let Some(id) = SegmentId::of_path(path) else {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(err(ReadErrorKind::NotSegment(format!(
                "the file name `{name}` is not a segment id (`<first-event-ms>-<16 hex>.parquet`), so the segment cannot be authenticated; give it back its original name"
            ))));
        };
        let dp = FileDecryptionProperties::with_key_retriever(retriever)
            .with_aad_prefix(id.to_string().into_bytes())
            .build()
            .map_err(|e| err(ReadErrorKind::Footer(e.to_string())))?;
        let file = match remote {
            Some(r) => r,
            None => CountingFile::open(path).map_err(|e| err(ReadErrorKind::Io(e)))?,
        };
        let opts = ArrowReaderOptions::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_file_decryption_properties(dp);
        let meta =
            ArrowReaderMetadata::load(&file, opts).map_err(|e| err(ReadErrorKind::Footer(e.to_string())))?;
        let signal = match meta.schema().field_with_name("start_time") {
            Ok(_) => Signal::Spans,
            Err(_) => signal,
        };
        let trace_index = trace_index_of(meta.metadata());
        Ok(Segment { path: path.to_owned(), key_id, signal, file, meta, trace_index })
    }

    /// Rows, row groups and time range, from the footer statistics.
    pub fn summary(&self) -> Summary {
        let md = self.meta.metadata();
        let time = schema::time_column(self.signal);
        let (mut min, mut max) = (None::<i64>, None::<i64>);
        for rg in md.row_groups() {
            if let Some(i) = col_index(rg, time) {
                let (lo, hi) = i64_range(rg.column(i).statistics());
                min = match (min, lo) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                max = match (max, hi) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Summary {
            rows: md.file_metadata().num_rows().max(0) as u64,
            row_groups: md.num_row_groups(),
            min_time: min,
            max_time: max,
        }
    }

    /// Bytes read from the file so far (footer and page index included).
    pub fn bytes_read(&self) -> u64 {
        self.file.bytes_read()
    }

    pub fn file_len(&self) -> u64 {
        self.file.len
    }

    /// Whether this segment may hold events that `f` matches, from its signal and the time
    /// range of its footer statistics (which cover every event of the segment, unlike the
    /// first-event time in its name: issue 13).
    pub fn may_match(&self, f: &Filter) -> bool {
        if f.signal().is_some_and(|s| s != self.signal) {
            return false;
        }
        if !f.has_time_range() {
            return true;
        }
        let s = self.summary();
        if s.rows > 0 && s.min_time.is_none() {
            // No time statistics: no event has a time, and a time range matches none; but
            // a segment without statistics (another writer) is read rather than guessed.
            return true;
        }
        f.time_overlaps(s.min_time, s.max_time)
    }

    /// The row groups a read with `f` decrypts (none when [`Segment::may_match`] is false).
    pub fn row_groups_to_read(&self, f: &Filter) -> Vec<usize> {
        if self.may_match(f) { self.prune_row_groups(f) } else { Vec::new() }
    }

    /// Whether the segment carries a trace-id index that describes its row groups.
    pub fn has_trace_index(&self) -> bool {
        self.trace_index.is_some()
    }

    /// Row groups that may hold matching rows, by their statistics and the trace-id index:
    /// the same conditions as [`Filter::matches`], where these can prove that no row of a
    /// group passes.
    fn prune_row_groups(&self, f: &Filter) -> Vec<usize> {
        let md = self.meta.metadata();
        let time = schema::time_column(self.signal);
        let mut keep = Vec::new();
        for (i, rg) in md.row_groups().iter().enumerate() {
            if let Some(c) = col_index(rg, time) {
                let (lo, hi) = i64_range(rg.column(c).statistics());
                let all_null =
                    rg.column(c).statistics().and_then(|s| s.null_count_opt()) == Some(rg.num_rows() as u64);
                if f.has_time_range() && (all_null || !f.time_overlaps(lo, hi)) {
                    continue;
                }
            }
            if let Some(min) = f.min_level() {
                if !self.level_may_pass(rg, min) {
                    continue;
                }
            }
            if let Some(t) = f.trace_id() {
                let t = hex::encode(t);
                if self.trace_index.as_ref().is_some_and(|idx| !idx.may_contain(i, t.as_bytes())) {
                    continue;
                }
                if let Some(c) = col_index(rg, "trace_id") {
                    if let Some(Statistics::ByteArray(s)) = rg.column(c).statistics() {
                        let all_null = s.null_count_opt().is_some_and(|n| n as i64 == rg.num_rows());
                        let below = s.max_opt().is_some_and(|m| m.data() < t.as_bytes());
                        let above = s.min_opt().is_some_and(|m| m.data() > t.as_bytes());
                        if all_null || below || above {
                            continue;
                        }
                    }
                }
            }
            keep.push(i);
        }
        keep
    }

    /// Whether a row group may hold an event at level `min` or above (see
    /// [`crate::filter::level_of`]).
    fn level_may_pass(&self, rg: &RowGroupMetaData, min: i32) -> bool {
        let int_range = |name: &str| match col_index(rg, name).and_then(|c| rg.column(c).statistics()) {
            Some(Statistics::Int32(s)) => (s.min_opt().copied(), s.max_opt().copied()),
            _ => (None, None),
        };
        match self.signal {
            // A record with severity number 0 takes its level from its text (no statistics)
            // or counts as info: only a group with every number set and all below `min` is out.
            Signal::Logs => match int_range("severity_number") {
                (Some(lo), Some(hi)) => !(lo >= 1 && hi < min),
                _ => true,
            },
            // Spans are `error` (status ERROR) or `info`.
            Signal::Spans => {
                min <= severity::INFO
                    || match int_range("status_code") {
                        (_, Some(hi)) => hi >= SpanStatus::Error.code(),
                        _ => true,
                    }
            }
        }
    }

    /// A row selection over `groups` skipping the pages of the time column that the filter's
    /// time range excludes (from the column index), or `None` when nothing can be skipped.
    fn prune_pages(&self, groups: &[usize], f: &Filter) -> Option<RowSelection> {
        if !f.has_time_range() {
            return None;
        }
        let md = self.meta.metadata();
        let (ci, oi) = (md.column_index()?, md.offset_index()?);
        let time = schema::time_column(self.signal);
        let mut selectors = Vec::new();
        let mut skipped = false;
        for &g in groups {
            let rg = md.row_group(g);
            let rows = rg.num_rows() as usize;
            let c = col_index(rg, time)?;
            let (ColumnIndexMetaData::INT64(idx), Some(offsets)) =
                (&ci[g][c], oi.get(g).and_then(|o| o.get(c)))
            else {
                selectors.push(RowSelector::select(rows));
                continue;
            };
            let locs = offsets.page_locations();
            for (p, loc) in locs.iter().enumerate() {
                let start = loc.first_row_index as usize;
                let end = locs.get(p + 1).map(|l| l.first_row_index as usize).unwrap_or(rows);
                let n = end.saturating_sub(start);
                if f.time_overlaps(idx.min_value(p).copied(), idx.max_value(p).copied()) {
                    selectors.push(RowSelector::select(n));
                } else {
                    selectors.push(RowSelector::skip(n));
                    skipped = true;
                }
            }
        }
        skipped.then(|| RowSelection::from(selectors))
    }

    /// Streams the record batches of the rows that `filter` matches (exactly: the row filter
    /// runs [`Filter::matches`] over the columns it looks at).
    pub fn read(&self, filter: &Filter, batch_size: usize) -> Result<BatchIter, ReadError> {
        let err = |kind| ReadError { path: self.path.clone(), key_id: Some(self.key_id.clone()), kind };
        let groups = self.row_groups_to_read(filter);
        let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.clone(), self.meta.clone())
            .with_batch_size(batch_size)
            .with_row_groups(groups.clone());
        if let Some(sel) = self.prune_pages(&groups, filter) {
            b = b.with_row_selection(sel);
        }
        if !filter.is_pass_all() {
            let names: Vec<&str> = filter_columns(self.signal, filter);
            let mask = ProjectionMask::columns(b.parquet_schema(), names.iter().copied());
            let f = filter.clone();
            let signal = self.signal;
            let pred = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
                let mut events = Vec::with_capacity(batch.num_rows());
                events_from_columns(signal, &batch, &mut events)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(BooleanArray::from(events.iter().map(|e| f.matches(e)).collect::<Vec<bool>>()))
            });
            b = b.with_row_filter(RowFilter::new(vec![Box::new(pred)]));
        }
        let reader = b.build().map_err(|e| err(ReadErrorKind::Data(e.to_string())))?;
        Ok(BatchIter { reader, path: self.path.clone(), key_id: self.key_id.clone() })
    }
}

/// The trace-id index in a segment's footer metadata, if there is one, it parses, and its row
/// groups are the file's (same count, same rows each): an index that does not describe the
/// file is ignored rather than trusted.
fn trace_index_of(md: &parquet::file::metadata::ParquetMetaData) -> Option<TraceIndex> {
    let kv = md.file_metadata().key_value_metadata()?;
    let value = kv.iter().find(|kv| kv.key == trace_index::KEY)?.value.as_deref()?;
    let idx = TraceIndex::parse(value)?;
    let rows = md.row_groups().iter().map(|rg| rg.num_rows().max(0) as u64);
    idx.describes(rows).then_some(idx)
}

/// The columns [`Filter::matches`] looks at for events of `signal`: what the row filter
/// reads and decodes before any other column.
fn filter_columns(signal: Signal, f: &Filter) -> Vec<&'static str> {
    let mut v = Vec::new();
    let logs = signal == Signal::Logs;
    if f.has_time_range() {
        v.push(schema::time_column(signal));
        if logs {
            v.push("observed_time");
        }
    }
    if f.min_level().is_some() {
        v.extend(if logs { &["severity_number", "severity_text"][..] } else { &["status_code"][..] });
    }
    if f.has_services() {
        v.push("service");
    }
    if f.trace_id().is_some() {
        v.push("trace_id");
    }
    if f.has_grep() {
        v.extend(if logs {
            &["body", "attributes"][..]
        } else {
            &["name", "status_message", "attributes", "events"][..]
        });
    }
    v
}

/// Record batches of one segment; errors (a tampered data page) name the segment and key.
pub struct BatchIter {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    key_id: String,
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.reader.next()?.map_err(|e| ReadError {
            path: self.path.clone(),
            key_id: Some(self.key_id.clone()),
            kind: ReadErrorKind::Data(e.to_string()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::keys::{Keyring, LocalProvider};
    use crate::segment::columns::tests::{as_stored, full_log, full_span};
    use crate::segment::columns::{Columns, events_from_batch};
    use crate::segment::writer::{SegmentWriter, WriteOptions};

    /// Every field of fully populated logs and spans, through a real encrypted segment:
    /// writer, footer, page decryption, the row filter and the column decoder.
    #[test]
    fn every_field_round_trips_through_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let provider =
            Arc::new(LocalProvider::new(Arc::new(Keyring::open(dir.path().join("keys")))).creating("k"));
        let retriever = Arc::new(SegmentRetriever::new(provider.clone()));
        for e in [Event::Log(full_log()), Event::Span(full_span())] {
            let signal = e.signal();
            let mut w = SegmentWriter::create(
                &dir.path().join("data"),
                signal,
                crate::filter::time_of(&e),
                provider.as_ref(),
                "k",
                &WriteOptions::default(),
            )
            .unwrap();
            let mut cols = Columns::new(signal, 2);
            cols.append(&e);
            w.write(&cols.finish()).unwrap();
            let sealed = w.seal().unwrap();
            let seg = Segment::open(&sealed.path, retriever.clone()).unwrap();
            assert_eq!(seg.signal, signal);
            // Once without a filter, once through the row filter of a filter that matches.
            let grep = crate::filter::FilterSpec { grep: Some("quoted".into()), ..Default::default() };
            for f in [Filter::default(), grep.build().unwrap()] {
                let mut out = Vec::new();
                for b in seg.read(&f, 16).unwrap() {
                    events_from_batch(signal, &b.unwrap(), &mut out).unwrap();
                }
                assert_eq!(out, vec![as_stored(&e)]);
            }
        }
    }
}
