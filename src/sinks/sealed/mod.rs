//! The `sealed` sink: writes events into encrypted Parquet segments (see [`crate::segment`]).
//!
//! Column building runs on a blocking thread fed through a small bounded channel, and
//! encoding, compression and encryption on the segment writer's two encoder threads, so the
//! tokio workers keep redacting while the previous batches are compressed (they overlap on
//! two cores) and backpressure reaches the sources. Events are routed to
//! one open segment per signal and key: the key comes from the first `[[keys.rules]]` glob
//! matching the event's service, else `[keys] default`, so events of different keys never
//! share a segment. Segments rotate by rows, bytes and age; on start, files a crash left in
//! `.inflight/` are reported and moved to `.inflight/broken/`.
//!
//! Key rotation reaches a running sink without a restart: each new segment wraps its data
//! key under the key's current version, and the keyring re-reads a key file whose inode, size
//! or modification time changed (`sealtrail keys rotate` replaces the file). SIGHUP makes the
//! keyring forget every cached key, so the next segment reads the files again whatever their
//! stamps say.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;

mod kms;
pub mod retention;
pub mod upload;
pub mod wal;

use crate::component::{Ack, Received, SinkContext, SinkInput};
use crate::component::{BoxFuture, BuildContext, Sink, SinkConfig, SinkKind, parse_sink};
use crate::event::{Batch, Event, Signal};
use crate::keys::{KeyChain, Keyring, KmsOptions, LocalProvider, check_ref, is_kms_ref};
use crate::metrics::ComponentMetrics;
use crate::segment::columns::Columns;
use crate::segment::writer::{SegmentWriter, WriteOptions, recover_inflight};

use self::wal::{ReplayStats, Wal, WalOptions};

pub const KIND: SinkKind = SinkKind {
    name: "sealed",
    description: "encrypted Parquet segments (sealed, queryable with `sealtrail query`)",
    parse: parse_sink::<SealedConfig>,
};

/// Configuration for the `sealed` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedConfig {
    /// Root directory of the segments. Default: the global `data_dir`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Seal a segment once it holds this many events. Default 1,000,000.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Seal a segment once it reaches this many bytes on disk (compressed). Default 128 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Seal a segment this long after its first event: `30s`, `5m`, `1h` or seconds. Default
    /// `5m`.
    #[serde(default = "default_max_age")]
    pub max_age: crate::units::Duration,
    /// zstd compression level, 1 (fastest) to 22. Default 1.
    #[serde(default = "default_level")]
    pub compression_level: i32,
    /// End a Parquet row group once this many bytes of Arrow data went into it; bounds
    /// memory (one row group is encoded while the next is built). Default 4 MiB.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// Write every batch to the encrypted write-ahead log under `<path>/.wal/` (fsynced)
    /// before building segments from it, and replay the log on start: a crash loses nothing
    /// that reached the log. Default false.
    #[serde(default)]
    pub wal: bool,
    /// Bound of the log in bytes: past it the sink seals its open segments (which releases
    /// the log) before taking more. Default 256 MiB.
    #[serde(default = "default_wal_max_bytes")]
    pub wal_max_bytes: u64,
    /// Size in bytes at which the log starts a new file; a file is deleted once every
    /// segment holding its events is sealed. Default 16 MiB.
    #[serde(default = "default_wal_file_bytes")]
    pub wal_file_bytes: u64,
    /// Remove sealed segments older than this (`30d`), judged by the time in their path and
    /// name (see [`retention`]). Default: keep everything.
    #[serde(default)]
    pub retention: Option<crate::units::Duration>,
    /// Upload sealed segments to `s3://bucket/prefix`, verified, then delete them locally
    /// (see [`upload`]). `path` stays the local spool. Default (or empty): keep them local.
    #[serde(default)]
    pub upload: Option<String>,
    /// SSE-KMS key (id, ARN or `alias/…`) for the uploaded objects. Default: the bucket's
    /// default encryption (also when empty).
    #[serde(default)]
    pub upload_sse_kms_key: Option<String>,
    /// Bound in bytes of sealed segments waiting for upload; past it the sink applies
    /// backpressure. Default 1 GiB.
    #[serde(default = "default_upload_spool_bytes")]
    pub upload_spool_bytes: u64,
    /// How long the end of a run keeps uploading (outside Lambda, where the SHUTDOWN
    /// deadline decides). Default `30s`.
    #[serde(default = "default_upload_drain_timeout")]
    pub upload_drain_timeout: crate::units::Duration,
}

fn default_upload_spool_bytes() -> u64 {
    1 << 30
}
fn default_upload_drain_timeout() -> crate::units::Duration {
    crate::units::Duration::from_secs(30)
}

fn default_wal_max_bytes() -> u64 {
    256 << 20
}
fn default_wal_file_bytes() -> u64 {
    16 << 20
}

fn default_max_rows() -> u64 {
    1_000_000
}
fn default_max_bytes() -> u64 {
    128 << 20
}
fn default_max_age() -> crate::units::Duration {
    crate::units::Duration::from_secs(300)
}
fn default_level() -> i32 {
    1
}
fn default_row_group_bytes() -> usize {
    4 << 20
}

/// Rows per Arrow record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;

/// The most batches one log fsync covers (group commit): those waiting in the channel.
const GROUP_COMMIT_BATCHES: usize = 16;

/// The first wait before the sink retries after a write error (log on), doubled up to
/// [`RECOVERY_MAX_DELAY`].
const RECOVERY_FIRST_DELAY: Duration = Duration::from_millis(100);
const RECOVERY_MAX_DELAY: Duration = Duration::from_secs(5);

impl SinkConfig for SealedConfig {
    /// With the log on, a batch is acknowledged once it is in the fsynced log.
    fn durable(&self) -> bool {
        self.wal
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>> {
        anyhow::ensure!(self.max_rows > 0, "`max_rows` must be at least 1");
        anyhow::ensure!(self.max_bytes >= 64 * 1024, "`max_bytes` must be at least 65536");
        anyhow::ensure!(
            (1..=22).contains(&self.compression_level),
            "`compression_level` must be between 1 and 22, found {}",
            self.compression_level
        );
        anyhow::ensure!(self.row_group_bytes >= 64 * 1024, "`row_group_bytes` must be at least 65536");
        let max_age = self.max_age.get();
        anyhow::ensure!(!max_age.is_zero(), "`max_age` must be more than 0");
        anyhow::ensure!(self.wal_file_bytes >= 4096, "`wal_file_bytes` must be at least 4096");
        anyhow::ensure!(
            self.wal_max_bytes >= 2 * self.wal_file_bytes,
            "`wal_max_bytes` ({}) must be at least twice `wal_file_bytes` ({})",
            self.wal_max_bytes,
            self.wal_file_bytes
        );
        let keys = &cx.globals.keys;
        check_ref(&keys.default)?;
        let mut rules = Vec::new();
        // A rule's key must exist now (only the default key is created on first use): found
        // at the first matching event, a missing key would stop the sink with data in hand.
        // Reading a key has no side effects, so `validate` checks the same keyring as `run`.
        let keyring = Keyring::open(cx.globals.keys_dir());
        for r in &keys.rules {
            check_ref(&r.key)?;
            // A KMS key is not looked up here: no AWS call before the first seal.
            if r.key != keys.default && !is_kms_ref(&r.key) {
                keyring
                    .get(&r.key)
                    .map_err(|e| anyhow::anyhow!("keys.rules (match = `{}`): {e}", r.pattern))?;
            }
            let p = glob::Pattern::new(&r.pattern)
                .map_err(|e| anyhow::anyhow!("invalid glob `{}` in keys.rules: {e}", r.pattern))?;
            rules.push((p, r.key.clone()));
        }
        // An empty `upload` (`"${SEALTRAIL_S3_URL:-}"` unset) keeps segments local.
        let upload = match self.upload.as_deref() {
            None | Some("") => None,
            Some(url) => {
                let url = crate::s3::S3Url::parse(url).map_err(|e| anyhow::anyhow!("`upload`: {e}"))?;
                anyhow::ensure!(
                    self.upload_spool_bytes >= self.max_bytes,
                    "`upload_spool_bytes` ({}) must be at least `max_bytes` ({})",
                    self.upload_spool_bytes,
                    self.max_bytes
                );
                let sse = match self.upload_sse_kms_key.as_deref() {
                    None | Some("") => crate::s3::Sse::BucketDefault,
                    Some(k) => crate::s3::Sse::Kms(k.to_owned()),
                };
                Some(upload::UploadOptions {
                    url,
                    sse,
                    spool_bytes: self.upload_spool_bytes,
                    drain_timeout: self.upload_drain_timeout.get(),
                })
            }
        };
        anyhow::ensure!(
            upload.is_some() || self.upload_sse_kms_key.as_deref().is_none_or(str::is_empty),
            "`upload_sse_kms_key` needs `upload`"
        );
        let root = self.path.clone().unwrap_or_else(|| cx.globals.data_dir.clone());
        check_writable(&root)?;
        Ok(Box::new(SealedSink {
            upload,
            lambda: cx.lambda.cloned(),
            root,
            keys_dir: cx.globals.keys_dir(),
            kms_endpoint: keys.kms_endpoint.clone(),
            default_key: keys.default.clone(),
            rules,
            options: WriteOptions {
                zstd_level: self.compression_level,
                row_group_bytes: self.row_group_bytes,
                ..WriteOptions::default()
            },
            max_rows: self.max_rows,
            max_bytes: self.max_bytes,
            max_age,
            wal: self
                .wal
                .then_some(WalOptions { max_bytes: self.wal_max_bytes, file_bytes: self.wal_file_bytes }),
            retention: match self.retention.map(|r| r.get()) {
                Some(r) if r < Duration::from_secs(60) => anyhow::bail!("`retention` must be at least 1m"),
                r => r,
            },
        }))
    }
}

/// Fails unless the sink's directory can be written: it exists and is a writable directory,
/// or its nearest existing ancestor is (the sink creates the rest). Checked at build, so an
/// unwritable, read-only or misplaced data directory is a start-up error before any source
/// accepts data, not a failure at the first seal. Only `access(2)` is called: no side
/// effects, so `validate` checks it too.
fn check_writable(root: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = root;
    let existing = loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => break dir,
            Ok(_) => anyhow::bail!("data directory {}: {} is not a directory", root.display(), dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => break std::path::Path::new("."),
            },
            Err(e) => anyhow::bail!("data directory {}: {e}", root.display()),
        }
    };
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| anyhow::anyhow!("data directory {}: the path contains a NUL byte", root.display()))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        if existing == root {
            anyhow::bail!("data directory {} is not writable: {e}", root.display());
        }
        anyhow::bail!(
            "data directory {} cannot be created: {} is not writable: {e}",
            root.display(),
            existing.display()
        );
    }
    Ok(())
}

/// The running sink (see the module docs).
pub struct SealedSink {
    pub root: PathBuf,
    pub keys_dir: PathBuf,
    /// `[keys] kms_endpoint`: where `kms:` keys are reached.
    pub kms_endpoint: Option<String>,
    pub default_key: String,
    /// `[[keys.rules]]`, compiled, first match wins.
    pub rules: Vec<(glob::Pattern, String)>,
    pub options: WriteOptions,
    pub max_rows: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    /// The write-ahead log's limits, when it is on (see [`wal`]).
    pub wal: Option<WalOptions>,
    /// Remove segments older than this (plus `max_age`), every [`RETENTION_INTERVAL`].
    pub retention: Option<Duration>,
    /// The S3 destination, when set (see [`upload`]).
    pub upload: Option<upload::UploadOptions>,
    /// The Lambda session: its SHUTDOWN deadline bounds the last uploads.
    pub lambda: Option<Arc<crate::component::lambda::Handle>>,
}

/// How often the sink looks for segments past its `retention` (also once at start).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

enum Msg {
    /// A batch, with its acknowledgement share when its source asked for one: resolved once
    /// the batch is in the fsynced log (see `component::ack`).
    Batch(Batch, Option<Ack>),
    Tick,
    /// Seal every open segment now (the Lambda flush policies `end` and `periodic`).
    SealAll,
}

impl Sink for SealedSink {
    fn run(self: Box<Self>, mut input: SinkInput, cx: SinkContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            // With the log on, partial segments hold only events that the log replays below
            // (when a log was left), so they are removed after the replay instead.
            let logged = self.wal.is_some() && !wal::list(&self.root.join(wal::WAL_DIR))?.is_empty();
            let keyring = Arc::new(Keyring::open(&self.keys_dir));
            let local = LocalProvider::new(keyring.clone()).creating(&self.default_key);
            // Fail before accepting data if a local key cannot be used (KMS keys are first
            // used at the first seal: no AWS call at start). This creates the keyring and its
            // default key, so the manifest below finds the keyring on a first start.
            for k in std::iter::once(&self.default_key).chain(self.rules.iter().map(|(_, k)| k)) {
                if !is_kms_ref(k) {
                    local.key_for_encryption(k)?;
                }
            }
            let manifest = crate::segment::manifest::start_for_sink(&self.root, &self.keys_dir, logged);
            let moved = match recover_inflight(&self.root) {
                Ok(moved) => {
                    if !logged {
                        for p in &moved {
                            tracing::warn!(file = %p.display(), "an unsealed segment left by a crash was moved aside (its events are not in any sealed segment)");
                        }
                    }
                    cx.metrics.add("inflight_recovered", moved.len() as u64);
                    moved
                }
                Err(e) => anyhow::bail!("checking {}/.inflight: {e}", self.root.display()),
            };
            let kms = KmsOptions { endpoint: self.kms_endpoint.clone(), audit_dir: self.keys_dir.clone() };
            let provider = KeyChain::new(local, kms);
            let retention = self.retention.map(|keep| {
                let (root, max_age, metrics) = (self.root.clone(), self.max_age, cx.metrics.clone());
                let manifest = manifest.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(RETENTION_INTERVAL);
                    loop {
                        every.tick().await;
                        let (root, manifest) = (root.clone(), manifest.clone());
                        match tokio::task::spawn_blocking(move || {
                            retention::sweep(&root, keep, max_age, manifest.as_deref())
                        })
                        .await
                        {
                            Ok(Ok(r)) if r.segments > 0 => {
                                metrics.add("retention.removed_segments", r.segments as u64);
                                tracing::info!(
                                    segments = r.segments,
                                    bytes = r.bytes,
                                    "retention: removed old segments"
                                );
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                metrics.error("retention");
                                tracing::warn!("{e:#}");
                            }
                            Err(e) => tracing::warn!("retention task: {e}"),
                        }
                    }
                })
            });
            let durable = self.wal.is_some();
            let tick = (self.max_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            // With the log on, a few more batches may wait so that one fsync covers them all.
            let (tx, rx) = mpsc::channel::<Msg>(if self.wal.is_some() { GROUP_COMMIT_BATCHES } else { 2 });
            let metrics = cx.metrics.clone();
            let partials = if logged { moved } else { Vec::new() };
            let uploader = self
                .upload
                .clone()
                .map(|o| upload::Uploader::start(self.root.clone(), o, cx.metrics.clone()));
            let spool = uploader.as_ref().map(upload::Uploader::spool);
            let (drain_timeout, lambda) =
                (self.upload.as_ref().map(|u| u.drain_timeout), self.lambda.clone());
            // At SHUTDOWN, SIGTERM or SIGINT a full spool stops holding the writer: sealing
            // comes first. (The end of input cannot do it: while the writer waits, this task
            // waits to hand it a batch and never sees the input end.)
            let releaser = spool.clone().map(|spool| {
                let l = lambda.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) =
                        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                    else {
                        return;
                    };
                    let shutdown = async {
                        match &l {
                            Some(l) => l.shutdown_requested().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown => {}
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    spool.release();
                })
            });
            let worker = tokio::task::spawn_blocking(move || {
                let mut w = Writer::new(*self, provider, metrics);
                w.spool = spool;
                w.manifest = manifest;
                w.start_wal(&partials)?;
                w.run(rx)
            });
            // SIGHUP: re-read the keys (the topology reloads the configuration on the same signal).
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; keys are still re-read when their files change"))
                .ok();
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // Seal markers come from the `lambda_telemetry` source's flush policy, in order
            // behind the records they cover, so those records are in the segments sealed.
            loop {
                let msg = tokio::select! {
                    r = input.recv_acked() => match r {
                        // Without the log the sink promises nothing across a crash: the
                        // share is resolved on receipt.
                        Some((Received::Batch(b), ack)) if !durable => {
                            if let Some(a) = ack {
                                a.resolve();
                            }
                            Msg::Batch(b, None)
                        }
                        Some((Received::Batch(b), ack)) => Msg::Batch(b, ack),
                        Some((_, _)) => Msg::SealAll,
                        None => break,
                    },
                    _ = interval.tick() => Msg::Tick,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        keyring.reload();
                        tracing::info!("SIGHUP: keys will be read again for the next segment");
                        continue;
                    }
                };
                if tx.send(msg).await.is_err() {
                    break; // the writer failed; its error comes from the join below
                }
            }
            drop(tx);
            if let Some(r) = retention {
                r.abort();
            }
            let r = worker.await.map_err(|e| anyhow::anyhow!("segment writer thread: {e}"));
            if let Some(t) = releaser {
                t.abort();
            }
            if let Some(u) = uploader {
                // In Lambda the SHUTDOWN deadline (less `UPLOAD_STOP_MARGIN`) bounds the last uploads.
                let deadline = match lambda.as_ref().and_then(|l| l.shutdown_info()) {
                    Some(s) => s.deadline.checked_sub(crate::component::lambda::UPLOAD_STOP_MARGIN),
                    None => None,
                }
                .unwrap_or_else(|| Instant::now() + drain_timeout.unwrap_or_default());
                u.finish(deadline).await;
            }
            let r = r?;
            if r.is_err() {
                cx.metrics.error("write");
            }
            r
        })
    }
}

/// One open segment (or the rows waiting for it) of a signal and key.
struct Open {
    signal: Signal,
    key: usize,
    columns: Columns,
    writer: Option<SegmentWriter>,
    /// Rows appended since the segment began (buffered + written).
    rows: u64,
    first_nanos: i64,
    since: Option<Instant>,
    /// The oldest log generation holding rows of this segment (log on, rows > 0).
    wal_gen: Option<u64>,
}

/// The blocking side: owns the builders and the Parquet writers.
struct Writer {
    sink: SealedSink,
    provider: KeyChain,
    metrics: Arc<ComponentMetrics>,
    /// Key names: 0 is the default, then one per rule.
    keys: Vec<String>,
    /// Service name → key index, so globs run once per distinct service.
    route: HashMap<String, usize>,
    /// Indexed by `signal * keys.len() + key`.
    open: Vec<Option<Open>>,
    /// The write-ahead log, when on and started.
    wal: Option<Wal>,
    /// The log generation of the batch being pushed.
    batch_gen: Option<u64>,
    /// The S3 upload spool, when uploading: told of every seal, bounds what waits.
    spool: Option<Arc<upload::Spool>>,
    /// Where every seal is recorded (`segment::manifest`), when it could be opened.
    manifest: Option<Arc<crate::segment::manifest::Manifest>>,
}

fn event_nanos(e: &Event) -> i64 {
    match e {
        Event::Log(l) if l.time != 0 => l.time,
        Event::Log(l) => l.observed_time,
        Event::Span(s) => s.start_time,
    }
}

impl Writer {
    fn new(sink: SealedSink, provider: KeyChain, metrics: Arc<ComponentMetrics>) -> Writer {
        let mut keys = vec![sink.default_key.clone()];
        keys.extend(sink.rules.iter().map(|(_, k)| k.clone()));
        let open = (0..keys.len() * 2).map(|_| None).collect();
        Writer {
            sink,
            provider,
            metrics,
            keys,
            route: HashMap::new(),
            open,
            wal: None,
            batch_gen: None,
            spool: None,
            manifest: None,
        }
    }

    fn key_of(&mut self, service: &str) -> usize {
        // Without rules every event takes the default key: no lookup per event.
        if self.sink.rules.is_empty() {
            return 0;
        }
        if let Some(&k) = self.route.get(service) {
            return k;
        }
        let k = self.sink.rules.iter().position(|(p, _)| p.matches(service)).map(|i| i + 1).unwrap_or(0);
        self.route.insert(service.to_owned(), k);
        k
    }

    /// With the log on: replays what a previous run left in it into segments, seals them,
    /// deletes the replayed files and the `partials` (segments a crash left unfinished, whose
    /// events the log held), then opens a new log generation. Runs before the first batch.
    fn start_wal(&mut self, partials: &[PathBuf]) -> anyhow::Result<()> {
        let Some(options) = self.sink.wal else { return Ok(()) };
        let dir = self.sink.root.join(wal::WAL_DIR);
        let files = wal::list(&dir)?;
        let mut stats = ReplayStats::default();
        let started = Instant::now();
        let provider = self.provider.clone();
        for (_, path) in &files {
            wal::replay_file(path, &provider, &mut stats, |events| self.push(&Arc::new(events)))?;
        }
        for i in 0..self.open.len() {
            self.seal(i)?;
        }
        for (_, path) in &files {
            std::fs::remove_file(path)
                .map_err(|e| anyhow::anyhow!("removing replayed log {}: {e}", path.display()))?;
        }
        for p in partials {
            std::fs::remove_file(p)
                .map_err(|e| anyhow::anyhow!("removing partial segment {}: {e}", p.display()))?;
        }
        if !files.is_empty() {
            tracing::info!(
                files = stats.files,
                records = stats.records,
                events = stats.events,
                bytes = stats.bytes,
                torn = stats.torn,
                partial_segments_removed = partials.len(),
                seconds = started.elapsed().as_secs_f64(),
                "write-ahead log replayed into sealed segments"
            );
        }
        if stats.torn > 0 {
            tracing::warn!(
                torn = stats.torn,
                "write-ahead log records cut short by a crash were skipped (never acknowledged)"
            );
        }
        self.metrics.add("wal_replayed_events", stats.events);
        self.metrics.add("wal_replayed_bytes", stats.bytes);
        self.metrics.add("wal_torn_records", stats.torn);
        let provider = Box::new(self.provider.clone());
        self.wal = Some(Wal::create(&self.sink.root, provider, &self.sink.default_key, options)?);
        Ok(())
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> anyhow::Result<()> {
        let mut pending = None;
        while let Some(msg) = pending.take().or_else(|| rx.blocking_recv()) {
            if let (Msg::Batch(..), Some(spool)) = (&msg, &self.spool) {
                spool.wait_for_room(&self.metrics);
            }
            match msg {
                Msg::Batch(b, ack) if self.wal.is_some() => {
                    // Group commit: the batches already waiting share one fsync.
                    let mut group = vec![b];
                    let mut acks: Vec<Ack> = ack.into_iter().collect();
                    while group.len() < GROUP_COMMIT_BATCHES {
                        match rx.try_recv() {
                            Ok(Msg::Batch(b, ack)) => {
                                group.push(b);
                                acks.extend(ack);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    // With the log on, an error never stops the sink: it recovers from the
                    // log and retries the group (see `recover`).
                    let mut acks = Some(acks);
                    let gens = loop {
                        match self.log_group(&group, &mut acks) {
                            Ok(gens) => break gens,
                            Err(e) => self.recover(e)?,
                        }
                    };
                    // Once logged, a recovery replays the group: it is not pushed again.
                    if let Err(e) = self.build_group(&group, gens) {
                        self.recover(e)?;
                    }
                }
                Msg::Batch(b, _) => self.push(&b)?,
                Msg::Tick => {
                    if let Err(e) = self.rotate_aged() {
                        self.recover_or_fail(e)?;
                    }
                }
                Msg::SealAll => {
                    if let Err(e) = self.seal_all() {
                        self.recover_or_fail(e)?;
                    }
                }
            }
        }
        // At the end of input an error is not retried: the log stays on disk and the next
        // start replays it.
        if let Err(e) = self.seal_all() {
            if self.sink.wal.is_some() {
                return Err(e.context(
                    "sealing at shutdown failed; the write-ahead log is kept and the next start replays it",
                ));
            }
            return Err(e);
        }
        if let Some(wal) = self.wal.take() {
            // Everything is sealed: no generation is needed any more.
            wal.remove_all()?;
        }
        Ok(())
    }

    /// Seals every open segment.
    fn seal_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.open.len() {
            self.seal(i)?;
        }
        Ok(())
    }

    /// Without the log, an error stops the sink (as before); with it, see [`Writer::recover`].
    fn recover_or_fail(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        if self.sink.wal.is_none() {
            return Err(e);
        }
        self.recover(e)
    }

    /// With the log on, a write error (a full disk, a vanished directory, a key that cannot
    /// be read) does not stop the sink, and so never the pipeline or a process the agent
    /// wraps: the sink drops its open segments (their events are in the log), waits, then
    /// replays the whole log into sealed segments and opens a new log, as a fresh start
    /// would, retrying with a growing delay until that works. Meanwhile its input queue
    /// fills, so sources feel backpressure (OTLP answers "retry later", files and stdin
    /// wait). Events of open segments that had been sealed in the moments before the error
    /// may be sealed twice (counted in `wal_replayed_events`), never lost.
    fn recover(&mut self, mut e: anyhow::Error) -> anyhow::Result<()> {
        let mut delay = RECOVERY_FIRST_DELAY;
        loop {
            self.metrics.error("write");
            self.metrics.add("recoveries", 1);
            tracing::error!(
                retry_in_ms = delay.as_millis() as u64,
                "sealed sink: {e:#}; input waits (nothing acknowledged is lost), the log will be replayed and writing resumed"
            );
            self.abandon_open();
            std::thread::sleep(delay);
            delay = (delay * 2).min(RECOVERY_MAX_DELAY);
            match self.start_wal(&[]) {
                Ok(()) => {
                    tracing::info!("sealed sink recovered: the log was replayed and writing resumed");
                    return Ok(());
                }
                Err(next) => e = next,
            }
        }
    }

    /// Forgets every open segment and the open log (their events are in the log files on
    /// disk), and deletes the partial segment files.
    fn abandon_open(&mut self) {
        self.wal = None;
        self.batch_gen = None;
        for o in self.open.iter_mut() {
            *o = None;
        }
        // Every file directly in `.inflight/` is one of this sink's open segments: the start
        // moved or removed what a previous run left there.
        let dir = self.sink.root.join(crate::segment::INFLIGHT);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for entry in rd.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    if let Err(err) = std::fs::remove_file(entry.path()) {
                        tracing::warn!(file = %entry.path().display(), "cannot remove a partial segment: {err}");
                    }
                }
            }
        }
    }

    /// Appends the batches to the log and makes them durable with one fsync; returns the
    /// generation each went to. The acknowledgement shares of the group are resolved right
    /// after the fsync: from
    /// then on a crash loses nothing of those batches (the next start replays them). On an
    /// error before the fsync, the shares stay in `acks` for the retry.
    fn log_group(&mut self, group: &[Batch], acks: &mut Option<Vec<Ack>>) -> anyhow::Result<Vec<u64>> {
        let Some(wal) = self.wal.as_mut() else { anyhow::bail!("the write-ahead log is not open") };
        let mut gens = Vec::with_capacity(group.len());
        for b in group {
            gens.push(wal.append(b)?);
        }
        wal.commit()?;
        self.metrics.add("wal_fsyncs", 1);
        let acks = acks.take().unwrap_or_default();
        if !acks.is_empty() {
            self.metrics.add("acknowledged_batches", acks.len() as u64);
        }
        for a in acks {
            a.resolve();
        }
        Ok(gens)
    }

    /// Builds segments from a logged group (`gens`: the generation of each batch); seals
    /// everything when the log is over its bound.
    fn build_group(&mut self, group: &[Batch], gens: Vec<u64>) -> anyhow::Result<()> {
        for (b, g) in group.iter().zip(gens) {
            self.batch_gen = Some(g);
            self.push(b)?;
        }
        self.batch_gen = None;
        if self.wal.as_ref().is_some_and(|w| w.total_bytes() > w.options().max_bytes) {
            self.metrics.add("wal_full_seals", 1);
            for i in 0..self.open.len() {
                self.seal(i)?;
            }
        }
        Ok(())
    }

    /// Deletes the log generations whose events are all sealed. When no open segment holds
    /// logged rows, the current generation is closed too, so a crash after a seal never
    /// replays (duplicates) sealed events.
    fn release_wal(&mut self) -> anyhow::Result<()> {
        let oldest = self.open.iter().flatten().filter(|o| o.rows > 0).filter_map(|o| o.wal_gen).min();
        let Some(wal) = self.wal.as_mut() else { return Ok(()) };
        match oldest {
            Some(g) => wal.release_before(g)?,
            None => {
                if !wal.current_is_empty() {
                    wal.rotate()?;
                }
                wal.release_before(wal.generation())?;
            }
        }
        Ok(())
    }

    fn push(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let nkeys = self.keys.len();
        for e in batch.iter() {
            let key = self.key_of(e.service());
            let slot = match e.signal() {
                Signal::Logs => key,
                Signal::Spans => nkeys + key,
            };
            let open = self.open[slot].get_or_insert_with(|| Open {
                signal: e.signal(),
                key,
                columns: Columns::new(e.signal(), BATCH_ROWS),
                writer: None,
                rows: 0,
                first_nanos: 0,
                since: None,
                wal_gen: None,
            });
            if open.rows == 0 {
                open.first_nanos = event_nanos(e);
                if open.first_nanos == 0 {
                    open.first_nanos = crate::event::now_nanos();
                }
                open.since = Some(Instant::now());
                open.wal_gen = self.batch_gen;
            }
            let first = open.rows == 0 && open.writer.is_none();
            open.columns.append(e);
            open.rows += 1;
            // A KMS data key is a network round trip: get it with the segment's first event,
            // not when the segment seals, which in Lambda is at SHUTDOWN with little time left.
            if first && is_kms_ref(&self.keys[open.key]) {
                self.open_writer(slot)?;
            }
            let Some(open) = self.open[slot].as_mut() else { continue };
            let full = open.columns.rows() >= BATCH_ROWS || open.columns.bytes() >= 4 << 20;
            let rotate = open.rows >= self.sink.max_rows;
            if full || rotate {
                self.write_buffered(slot)?;
            }
            if rotate || self.size_of(slot) >= self.sink.max_bytes {
                self.seal(slot)?;
            }
        }
        Ok(())
    }

    fn size_of(&self, slot: usize) -> u64 {
        self.open[slot].as_ref().and_then(|o| o.writer.as_ref()).map(|w| w.size()).unwrap_or(0)
    }

    /// Creates the segment file of `slot` (and its data key) unless it exists.
    fn open_writer(&mut self, slot: usize) -> anyhow::Result<()> {
        let Some(open) = self.open[slot].as_mut() else { return Ok(()) };
        if open.writer.is_none() {
            let key = &self.keys[open.key];
            let (sink, provider) = (&self.sink, &self.provider);
            open.writer = Some(kms::retry_kms(key, &self.metrics, || {
                SegmentWriter::create(&sink.root, open.signal, open.first_nanos, provider, key, &sink.options)
            })?);
        }
        Ok(())
    }

    /// Writes the rows buffered in the builders of `slot` into its segment (opening it).
    fn write_buffered(&mut self, slot: usize) -> anyhow::Result<()> {
        let Some(open) = self.open[slot].as_mut() else { return Ok(()) };
        if open.columns.rows() == 0 {
            return Ok(());
        }
        self.open_writer(slot)?;
        let Some(open) = self.open[slot].as_mut() else { return Ok(()) };
        let batch = open.columns.finish();
        if let Some(w) = open.writer.as_mut() {
            w.write(&batch)?;
        }
        Ok(())
    }

    fn seal(&mut self, slot: usize) -> anyhow::Result<()> {
        self.write_buffered(slot)?;
        let Some(open) = self.open[slot].as_mut() else { return Ok(()) };
        let had_rows = open.rows > 0;
        open.rows = 0;
        open.since = None;
        open.wal_gen = None;
        if let Some(w) = open.writer.take() {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::Span as _;
            let mut span = crate::telemetry::span("sealtrail.segment.seal");
            span.set_attribute(KeyValue::new(
                "sealtrail.signal",
                format!("{:?}", open.signal).to_lowercase(),
            ));
            let s = w.seal_into(self.manifest.as_deref());
            if let Ok(s) = &s {
                span.set_attribute(KeyValue::new("sealtrail.rows", s.rows as i64));
                span.set_attribute(KeyValue::new("sealtrail.bytes", s.bytes as i64));
                span.set_attribute(KeyValue::new("sealtrail.key_id", s.key_id.clone()));
            }
            crate::telemetry::end_with(span, &s);
            let s = s?;
            self.metrics.add(crate::metrics::names::SEGMENTS_SEALED, 1);
            self.metrics.add_out(s.rows as usize, s.bytes as usize);
            tracing::info!(segment = %s.path.display(), rows = s.rows, bytes = s.bytes, key = %s.key_id, "segment sealed");
            if let Some(spool) = &self.spool {
                spool.sealed(s.bytes);
            }
        }
        if had_rows {
            self.release_wal()?;
        }
        Ok(())
    }

    fn rotate_aged(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.open.len() {
            let aged = self.open[slot]
                .as_ref()
                .and_then(|o| o.since)
                .is_some_and(|t| t.elapsed() >= self.sink.max_age);
            if aged {
                self.seal(slot)?;
            }
        }
        Ok(())
    }
}
