//! Writing one sealed segment.
//!
//! A [`SegmentWriter`] opens `<root>/.inflight/<id>.parquet`, writes encrypted Parquet into it
//! and, on [`SegmentWriter::seal`], closes the Parquet footer, fsyncs the file, renames it to
//! `<root>/<signal>/<yyyy>/<mm>/<dd>/<id>.parquet` and fsyncs that directory: a segment that
//! exists under its final name is complete. A writer dropped without `seal` leaves its file in
//! `.inflight/`, where [`recover_inflight`] finds it on the next start.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::{BROKEN, INFLIGHT, SegmentId, schema};
use crate::event::Signal;
use crate::keys::{KeyError, KeyProvider};

/// How segments are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// zstd level (1–22).
    pub zstd_level: i32,
    /// Flush a row group once this many encoded bytes are buffered (bounds memory).
    pub row_group_bytes: usize,
    /// Maximum rows per row group.
    pub row_group_rows: usize,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions { zstd_level: 1, row_group_bytes: 8 << 20, row_group_rows: 128 * 1024 }
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
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
    opened: Instant,
    options: WriteOptions,
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
        .set_created_by(format!("sealtrail {}", env!("CARGO_PKG_VERSION")));
    // String statistics are only kept where the reader prunes with them (trace ids): the
    // parquet crate's min/max over every string value cost a third of the encoding time in
    // `benches/sealed.rs`. Free text gets no dictionary either, and ids are random.
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
    for col in ["body", "events", "links", "trace_id", "span_id", "parent_span_id"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), false);
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
        Ok(SegmentWriter {
            dest_dir: id.dir(root, signal),
            id,
            signal,
            key_id: km.master_key_id,
            inflight,
            writer,
            rows: 0,
            opened: Instant::now(),
            options: options.clone(),
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

    /// Bytes written so far plus the encoded size of the row group in progress.
    pub fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// When this segment was opened.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Appends a record batch; flushes the row group once it holds `row_group_bytes`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let pq = |source| WriteError::Parquet { path: self.inflight.clone(), source };
        self.writer.write(batch).map_err(pq)?;
        self.rows += batch.num_rows() as u64;
        if self.writer.in_progress_size() >= self.options.row_group_bytes {
            self.writer
                .flush()
                .map_err(|source| WriteError::Parquet { path: self.inflight.clone(), source })?;
        }
        Ok(())
    }

    /// Finishes the file, fsyncs it and renames it into place.
    pub fn seal(self) -> Result<Sealed, WriteError> {
        let inflight = self.inflight.clone();
        let pq = |source| WriteError::Parquet { path: inflight.clone(), source };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Io { path, source }
        };
        let buf = self.writer.into_inner().map_err(pq)?;
        let file = buf
            .into_inner()
            .map_err(|e| WriteError::Io { path: inflight.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&inflight))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        fs::create_dir_all(&self.dest_dir).map_err(io(&self.dest_dir))?;
        let dest = self.dest_dir.join(format!("{}.parquet", self.id));
        fs::rename(&inflight, &dest).map_err(io(&dest))?;
        File::open(&self.dest_dir).and_then(|d| d.sync_all()).map_err(io(&self.dest_dir))?;
        Ok(Sealed { path: dest, rows: self.rows, bytes, key_id: self.key_id })
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
