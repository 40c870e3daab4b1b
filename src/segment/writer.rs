//! Writing one sealed segment.
//!
//! A [`SegmentWriter`] opens `<root>/.inflight/<id>.parquet`, writes encrypted Parquet into it
//! and, on [`SegmentWriter::seal`], closes the Parquet footer, fsyncs the file, renames it to
//! `<root>/<signal>/<yyyy>/<mm>/<dd>/<id>.parquet` and fsyncs that directory: a segment that
//! exists under its final name is complete. A writer dropped without `seal` leaves its file in
//! `.inflight/`, where [`recover_inflight`] finds it on the next start.
//!
//! Row groups are encoded, compressed and encrypted by the segment's `Encoder` while the
//! caller builds the next batch (the parquet crate's `ArrowRowGroupWriterFactory` gives each
//! row group its own column writers, with the right encryption ordinals), and appended to
//! the file in order. The encoder splits a row group's columns over two threads, the
//! free-text column on one and the rest on the other, and works on one row group at a time:
//! two row groups in flight (as an earlier version did) overlapped only at row-group
//! boundaries and doubled the memory held in zstd contexts and compressed pages.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::trace_index::{self, IndexBuilder};
use super::{BROKEN, INFLIGHT, SegmentId, schema};
use crate::event::Signal;
use crate::keys::{KeyError, KeyProvider};

/// How segments are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// zstd level (1–22).
    pub zstd_level: i32,
    /// End a row group once this many bytes of Arrow data went into it (bounds memory).
    pub row_group_bytes: usize,
    /// Maximum rows per row group.
    pub row_group_rows: usize,
    /// Keep the trace-id index in the encrypted footer ([`super::trace_index`]). Off only to
    /// write segments as they were before it (tests of older segments, benchmarks).
    pub trace_index: bool,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions {
            zstd_level: 1,
            row_group_bytes: 4 << 20,
            row_group_rows: 128 * 1024,
            trace_index: true,
        }
    }
}

/// Why writing a segment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("segment {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("segment {path}: {source}", path = .path.display())]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
}

/// What a sealed segment is.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub key_id: String,
}

/// One segment being written.
pub struct SegmentWriter {
    id: SegmentId,
    signal: Signal,
    key_id: String,
    inflight: PathBuf,
    dest_dir: PathBuf,
    file: SerializedFileWriter<BufWriter<File>>,
    factory: ArrowRowGroupWriterFactory,
    /// Encodes (and compresses, and encrypts) the row groups.
    encoder: Encoder,
    /// The raw sizes of the row groups finished by the caller whose column chunks are not
    /// yet in the file, oldest first.
    pending: VecDeque<usize>,
    /// The index of the row group being fed, and whether it has been started.
    next_rg: usize,
    rg_started: bool,
    rg_rows: usize,
    rg_bytes: usize,
    /// Raw bytes handed to encoders whose row groups are not yet in the file.
    in_flight: usize,
    rows: u64,
    opened: Instant,
    options: WriteOptions,
    /// The trace ids of each row group, for the encrypted index in the footer.
    trace_index: IndexBuilder,
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The writer properties of a segment with the given encryption.
pub fn writer_properties(
    options: &WriteOptions,
    encryption: Option<std::sync::Arc<FileEncryptionProperties>>,
) -> Result<WriterProperties, parquet::errors::ParquetError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(options.zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Bloom filters are written unencrypted by the parquet crate: never.
        .set_bloom_filter_enabled(false)
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        // No dictionaries: hashing every value into one cost a tenth of the encoding time
        // (`perf` on the end-to-end run), and zstd squeezes plain runs of repeated values
        // (service, source, severity, times) just as small.
        .set_dictionary_enabled(false)
        .set_created_by(format!("sealtrail {}", env!("CARGO_PKG_VERSION")));
    // String statistics are only kept where the reader prunes with them (trace ids): the
    // parquet crate's min/max over every string value cost a third of the encoding time in
    // `benches/sealed.rs`.
    for col in [
        "body",
        "events",
        "links",
        "severity_text",
        "source",
        "service",
        "name",
        "status_message",
        "trace_state",
        "scope_name",
    ] {
        b = b.set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    if let Some(e) = encryption {
        b = b.with_file_encryption_properties(e);
    }
    Ok(b.build())
}

impl SegmentWriter {
    /// Opens a new segment of `signal` under `root` whose first event is at `first_nanos`,
    /// encrypted under the current version of key `key_name`.
    pub fn create(
        root: &Path,
        signal: Signal,
        first_nanos: i64,
        provider: &dyn KeyProvider,
        key_name: &str,
        options: &WriteOptions,
    ) -> Result<SegmentWriter, WriteError> {
        let id = SegmentId::new(first_nanos.div_euclid(1_000_000));
        let (dek, km) = provider.wrap_new_dek(key_name)?;
        let inflight_dir = root.join(INFLIGHT);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Io { path, source }
        };
        fs::create_dir_all(&inflight_dir).map_err(io(&inflight_dir))?;
        let inflight = inflight_dir.join(format!("{id}.parquet"));
        let pq = |source| WriteError::Parquet { path: inflight.clone(), source };
        let enc = FileEncryptionProperties::builder(dek.to_vec())
            .with_footer_key_metadata(km.to_bytes())
            .with_aad_prefix(id.to_string().into_bytes())
            .with_aad_prefix_storage(true)
            .build()
            .map_err(pq)?;
        let props = writer_properties(options, Some(enc)).map_err(pq)?;
        let file =
            fs::OpenOptions::new().write(true).create_new(true).open(&inflight).map_err(io(&inflight))?;
        let writer =
            ArrowWriter::try_new(BufWriter::with_capacity(256 * 1024, file), schema::of(signal), Some(props))
                .map_err(pq)?;
        let (file, factory) = writer.into_serialized_writer().map_err(pq)?;
        let encoder = Encoder::spawn(signal, schema::of(signal)).map_err(io(&inflight))?;
        Ok(SegmentWriter {
            file,
            factory,
            encoder,
            pending: VecDeque::new(),
            next_rg: 0,
            rg_started: false,
            rg_rows: 0,
            rg_bytes: 0,
            in_flight: 0,
            dest_dir: id.dir(root, signal),
            id,
            signal,
            key_id: km.master_key_id,
            inflight,
            rows: 0,
            opened: Instant::now(),
            options: options.clone(),
            trace_index: IndexBuilder::new(),
        })
    }

    pub fn id(&self) -> &SegmentId {
        &self.id
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far plus an estimate of the row groups still being encoded (a
    /// quarter of their raw size: zstd's usual ratio on log text).
    pub fn size(&self) -> u64 {
        (self.file.bytes_written() + (self.in_flight + self.rg_bytes) / 4) as u64
    }

    /// When this segment was opened.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Appends a record batch. A row group ends after `row_group_rows` rows or
    /// `row_group_bytes` of Arrow data. At most one finished row group waits for the file
    /// while the next one is encoded: this bounds memory.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let pq = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Parquet { path, source }
        };
        // Row groups the encoder has finished go to the file now, freeing their pages.
        while self.append_oldest(false)? {}
        if !self.rg_started {
            let writers = self.factory.create_column_writers(self.next_rg).map_err(pq(&self.inflight))?;
            self.encoder.start(writers).map_err(pq(&self.inflight))?;
            self.rg_started = true;
        }
        self.encoder.batch(batch).map_err(pq(&self.inflight))?;
        self.trace_index.add_batch(batch);
        self.rows += batch.num_rows() as u64;
        self.rg_rows += batch.num_rows();
        self.rg_bytes += batch.get_array_memory_size();
        if self.rg_rows >= self.options.row_group_rows || self.rg_bytes >= self.options.row_group_bytes {
            self.end_row_group()?;
            while self.pending.len() > 1 {
                self.append_oldest(true)?;
            }
        }
        Ok(())
    }

    fn end_row_group(&mut self) -> Result<(), WriteError> {
        if !self.rg_started {
            return Ok(());
        }
        self.encoder
            .finish()
            .map_err(|source| WriteError::Parquet { path: self.inflight.clone(), source })?;
        self.trace_index.end_row_group();
        self.pending.push_back(self.rg_bytes);
        self.in_flight += self.rg_bytes;
        self.next_rg += 1;
        self.rg_started = false;
        self.rg_rows = 0;
        self.rg_bytes = 0;
        Ok(())
    }

    /// Appends the column chunks of the oldest finished row group to the file, waiting for
    /// the encoder when `wait`; returns whether one was appended.
    fn append_oldest(&mut self, wait: bool) -> Result<bool, WriteError> {
        let pq = |source| WriteError::Parquet { path: self.inflight.clone(), source };
        if self.pending.is_empty() {
            return Ok(false);
        }
        let Some(encoded) = self.encoder.result(wait) else { return Ok(false) };
        let raw = self.pending.pop_front().unwrap_or(0);
        let chunks = encoded.map_err(pq)?;
        let mut rg = self.file.next_row_group().map_err(pq)?;
        for c in chunks {
            c.append_to_row_group(&mut rg).map_err(pq)?;
        }
        rg.close().map_err(pq)?;
        self.in_flight = self.in_flight.saturating_sub(raw);
        Ok(true)
    }

    /// Finishes the file, fsyncs it and renames it into place.
    pub fn seal(self) -> Result<Sealed, WriteError> {
        self.seal_into(None)
    }

    /// [`SegmentWriter::seal`], recording the segment in `manifest` (hash, size, key id)
    /// after the fsync and before the rename, so a crash between the two is recognised on
    /// start (`manifest::start`) instead of looking like a deleted segment. A failure to
    /// record is logged, never a failed seal.
    pub fn seal_into(self, manifest: Option<&super::manifest::Manifest>) -> Result<Sealed, WriteError> {
        let inflight = self.inflight.clone();
        let pq = |source| WriteError::Parquet { path: inflight.clone(), source };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Io { path, source }
        };
        let mut this = self;
        this.end_row_group()?;
        while !this.pending.is_empty() {
            this.append_oldest(true)?;
        }
        let keep_index = this.options.trace_index;
        let SegmentWriter { mut file, encoder, dest_dir, id, rows, key_id, trace_index: ids, .. } = this;
        drop(encoder);
        // Inside the encrypted footer: see `trace_index` for why not a Parquet bloom filter.
        if let Some(index) = ids.finish().filter(|_| keep_index) {
            file.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                trace_index::KEY.to_string(),
                index,
            ));
        }
        let buf = file.into_inner().map_err(pq)?;
        let file = buf
            .into_inner()
            .map_err(|e| WriteError::Io { path: inflight.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&inflight))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        fs::create_dir_all(&dest_dir).map_err(io(&dest_dir))?;
        let dest = dest_dir.join(format!("{id}.parquet"));
        if let Some(m) = manifest {
            // The segment is complete: a manifest that cannot be written never costs its
            // events. The segment is sealed anyway and `segments --verify` reports it unlisted.
            let recorded = super::manifest::describe(
                m.root(),
                &inflight,
                &dest,
                super::manifest::Op::Add,
                Some(key_id.clone()),
            )
            .map_err(anyhow::Error::from)
            .and_then(|entry| m.record(&[entry]));
            if let Err(e) = recorded {
                tracing::warn!(segment = %dest.display(), "not recorded in the segment manifest: {e:#}");
            }
        }
        // The sink's retention pass and uploader remove day directories they leave empty; one
        // that went between the `create_dir_all` above and here is made again (bounded).
        let mut tries = 0;
        loop {
            match fs::rename(&inflight, &dest) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 && inflight.exists() => {
                    tries += 1;
                    fs::create_dir_all(&dest_dir).map_err(io(&dest_dir))?;
                }
                r => break r.map_err(io(&dest))?,
            }
        }
        File::open(&dest_dir).and_then(|d| d.sync_all()).map_err(io(&dest_dir))?;
        Ok(Sealed { path: dest, rows, bytes, key_id })
    }
}

enum Job {
    Start(Vec<ArrowColumnWriter>),
    Batch(RecordBatch),
    Finish,
}

type Encoded = Result<Vec<ArrowColumnChunk>, ParquetError>;

/// The columns that take most of the encoding time (zstd over free text): they get an
/// encoder thread of their own, the other columns share a second one.
fn heavy(signal: Signal, field: &str) -> bool {
    match signal {
        Signal::Logs => field == "body",
        Signal::Spans => matches!(field, "attributes" | "name"),
    }
}

/// How many Parquet leaf columns an Arrow field becomes (a map: its keys and its values).
fn leaf_count(t: &arrow_schema::DataType) -> usize {
    use arrow_schema::DataType as D;
    match t {
        D::Struct(fields) => fields.iter().map(|f| leaf_count(f.data_type())).sum(),
        D::Map(f, _) | D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => leaf_count(f.data_type()),
        _ => 1,
    }
}

/// Encodes one row group at a time on two threads ("lanes"), the heavy columns on one and
/// the rest on the other, so that compressing the text overlaps compressing everything
/// else: column writers in, column chunks out, in schema order.
struct Encoder {
    lanes: [Lane; 2],
    /// Per schema field: its lane and its number of leaf columns.
    fields: Vec<(usize, usize)>,
    /// Each lane's result for the oldest unfinished row group, once it came.
    ready: [Option<Encoded>; 2],
}

struct Lane {
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<Encoded>,
    handle: Option<JoinHandle<()>>,
}

impl Lane {
    /// A lane that encodes the fields `mine` (schema indices) of every batch.
    fn spawn(schema: SchemaRef, mine: Vec<usize>) -> std::io::Result<Lane> {
        // Two batches of slack: the builder side runs ahead without holding much memory.
        let (jobs, rx) = mpsc::sync_channel::<Job>(2);
        let (tx, results) = mpsc::channel::<Encoded>();
        let handle = std::thread::Builder::new().name("sealtrail-encode".into()).spawn(move || {
            let mut writers: Vec<ArrowColumnWriter> = Vec::new();
            let mut failed: Option<ParquetError> = None;
            while let Ok(job) = rx.recv() {
                match job {
                    Job::Start(w) => writers = w,
                    Job::Batch(batch) => {
                        if failed.is_some() {
                            continue;
                        }
                        let mut it = writers.iter_mut();
                        let r = (|| -> Result<(), ParquetError> {
                            for &f in &mine {
                                for leaf in compute_leaves(schema.field(f), batch.column(f))? {
                                    let w = it
                                        .next()
                                        .ok_or_else(|| ParquetError::General("column writer count".into()))?;
                                    w.write(&leaf)?;
                                }
                            }
                            Ok(())
                        })();
                        if let Err(e) = r {
                            failed = Some(e);
                        }
                    }
                    Job::Finish => {
                        let r = match failed.take() {
                            Some(e) => Err(e),
                            None => std::mem::take(&mut writers)
                                .into_iter()
                                .map(|w| w.close())
                                .collect::<Result<Vec<_>, _>>(),
                        };
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
        Ok(Lane { jobs: Some(jobs), results, handle: Some(handle) })
    }

    fn send(&self, job: Job) -> Result<(), ParquetError> {
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> ParquetError {
    ParquetError::General("the row group encoder thread stopped".into())
}

impl Encoder {
    fn spawn(signal: Signal, schema: SchemaRef) -> std::io::Result<Encoder> {
        let fields: Vec<(usize, usize)> = schema
            .fields()
            .iter()
            .map(|f| (usize::from(!heavy(signal, f.name())), leaf_count(f.data_type())))
            .collect();
        let mine = |lane| fields.iter().enumerate().filter(|(_, f)| f.0 == lane).map(|(i, _)| i).collect();
        let lanes = [Lane::spawn(schema.clone(), mine(0))?, Lane::spawn(schema, mine(1))?];
        Ok(Encoder { lanes, fields, ready: [None, None] })
    }

    /// Starts a row group: hands each lane the column writers of its fields.
    fn start(&self, writers: Vec<ArrowColumnWriter>) -> Result<(), ParquetError> {
        let mut split: [Vec<ArrowColumnWriter>; 2] = [Vec::new(), Vec::new()];
        let mut it = writers.into_iter();
        for &(lane, leaves) in &self.fields {
            split[lane].extend(it.by_ref().take(leaves));
        }
        let [a, b] = split;
        self.lanes[0].send(Job::Start(a))?;
        self.lanes[1].send(Job::Start(b))
    }

    fn batch(&self, batch: &RecordBatch) -> Result<(), ParquetError> {
        self.lanes[0].send(Job::Batch(batch.clone()))?;
        self.lanes[1].send(Job::Batch(batch.clone()))
    }

    fn finish(&self) -> Result<(), ParquetError> {
        self.lanes[0].send(Job::Finish)?;
        self.lanes[1].send(Job::Finish)
    }

    /// The column chunks of the next finished row group in schema order: waits for them when
    /// `wait`, else `None` while a lane is not done with it.
    fn result(&mut self, wait: bool) -> Option<Encoded> {
        for (lane, slot) in self.lanes.iter().zip(self.ready.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            *slot = if wait {
                Some(lane.results.recv().unwrap_or_else(|_| Err(stopped())))
            } else {
                match lane.results.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => return None,
                    Err(mpsc::TryRecvError::Disconnected) => Some(Err(stopped())),
                }
            };
        }
        let [Some(a), Some(b)] = [self.ready[0].take(), self.ready[1].take()] else {
            return Some(Err(stopped()));
        };
        let mut got = match (a, b) {
            (Ok(a), Ok(b)) => [a.into_iter(), b.into_iter()],
            (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
        };
        let mut out = Vec::new();
        for &(lane, leaves) in &self.fields {
            out.extend(got[lane].by_ref().take(leaves));
        }
        Some(Ok(out))
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Closing the job channel ends the thread.
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Moves every file left in `<root>/.inflight/` by a crash to `<root>/.inflight/broken/` and
/// returns their new paths. They are never deleted: recovering their events is the job of
/// the write-ahead log.
pub fn recover_inflight(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = root.join(INFLIGHT);
    let mut moved = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(moved),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let broken = dir.join(BROKEN);
        fs::create_dir_all(&broken)?;
        let dest = broken.join(entry.file_name());
        fs::rename(entry.path(), &dest)?;
        moved.push(dest);
    }
    Ok(moved)
}
