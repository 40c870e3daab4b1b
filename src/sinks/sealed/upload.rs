//! The sealed sink's S3 destination (`upload = "s3://bucket/prefix"`).
//!
//! Segments are sealed locally first, exactly as without an upload (under `path`, fsynced and
//! renamed into place), so the local directory is the spool: a segment there is sealed and
//! not yet known to be in S3. The uploader task takes them oldest first, uploads each to
//! `<prefix>/<signal>/yyyy/mm/dd/<id>.parquet` (the same relative path, so an object key
//! holds no customer data), verifies it (`HeadObject`: size and CRC32, see [`crate::s3`]) and
//! only then deletes the local file.
//!
//! - **Crash or outage.** The uploader scans the directory at start and after every failure,
//!   so segments a crash (even `kill -9` between seal and upload) or an outage left behind are
//!   uploaded by the next run. An upload interrupted after S3 stored the object but before
//!   the local delete is uploaded again under the same key: an overwrite with the same
//!   bytes, never a second object.
//! - **Retries.** A failed upload is logged (paths and S3's reason, never event content) and
//!   counted (`upload_retries`), then retried after an exponential backoff (200 ms up to 60 s).
//! - **Bounded spool.** The bytes of sealed, not yet uploaded segments are bounded by
//!   `upload_spool_bytes`: past it the writer stops taking batches (logged once per episode,
//!   counted as `upload_backpressure`), the sink's bounded channel fills and the sources
//!   slow down instead of the disk filling. It resumes as soon as uploads free space.
//! - **Drain.** At the end of a run the uploader keeps going until the spool is empty or
//!   `upload_drain_timeout` has passed (in Lambda: until the SHUTDOWN deadline less a
//!   margin); what is left stays on disk, is logged and counted (`upload_left_local`) and
//!   goes up at the next start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::metrics::ComponentMetrics;
use crate::s3::{S3Options, S3Url, Sse};

/// The first wait after a failed upload.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// With nothing to do, the uploader looks at the directory again after this long anyway
/// (segments put there by another process, e.g. a previous agent's leftovers copied in).
const IDLE_RESCAN: Duration = Duration::from_secs(30);
/// How often a writer blocked by a full spool checks whether it was released.
const SPOOL_POLL: Duration = Duration::from_millis(200);

/// The upload settings of a sealed sink.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub url: S3Url,
    pub sse: Sse,
    /// Bound in bytes of sealed segments waiting for upload.
    pub spool_bytes: u64,
    /// How long the end of a run waits for uploads outside Lambda.
    pub drain_timeout: Duration,
}

/// The bytes waiting for upload, shared by the writer thread (which adds what it seals and
/// waits while over the bound) and the uploader (which sets the total it finds on disk).
#[derive(Debug)]
pub struct Spool {
    max: u64,
    state: Mutex<SpoolState>,
    room: Condvar,
    wake: Notify,
}

#[derive(Debug, Default)]
struct SpoolState {
    pending: u64,
    /// Never block again (the run is ending: the rest stays on disk for the next start).
    released: bool,
}

impl Spool {
    fn new(max: u64) -> Spool {
        Spool { max, state: Mutex::new(SpoolState::default()), room: Condvar::new(), wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A segment of `bytes` was sealed: count it and wake the uploader.
    pub fn sealed(&self, bytes: u64) {
        self.lock().pending += bytes;
        self.wake.notify_one();
    }

    fn set(&self, pending: u64) {
        self.lock().pending = pending;
        self.room.notify_all();
    }

    fn uploaded(&self, bytes: u64) {
        let mut s = self.lock();
        s.pending = s.pending.saturating_sub(bytes);
        self.room.notify_all();
    }

    /// Stops all waiting for room, for good.
    pub fn release(&self) {
        self.lock().released = true;
        self.room.notify_all();
    }

    /// The bytes waiting for upload.
    pub fn pending(&self) -> u64 {
        self.lock().pending
    }

    /// Blocks the calling (writer) thread while the spool is over its bound.
    pub fn wait_for_room(&self, metrics: &ComponentMetrics) {
        let mut s = self.lock();
        if s.pending <= self.max || s.released {
            return;
        }
        metrics.add("upload_backpressure", 1);
        tracing::warn!(
            pending_bytes = s.pending,
            spool_bytes = self.max,
            "S3 upload spool is full: not taking events until uploads catch up (backpressure)"
        );
        let since = Instant::now();
        while s.pending > self.max && !s.released {
            s = self.room.wait_timeout(s, SPOOL_POLL).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        tracing::info!(waited_ms = since.elapsed().as_millis() as u64, "S3 upload spool has room again");
    }
}

/// The running uploader (see the module docs).
pub struct Uploader {
    spool: Arc<Spool>,
    drain: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Uploader {
    /// Starts the uploader task on the current runtime. No AWS call happens until there is
    /// a segment to upload.
    pub fn start(root: PathBuf, options: UploadOptions, metrics: Arc<ComponentMetrics>) -> Uploader {
        let spool = Arc::new(Spool::new(options.spool_bytes));
        let (drain, drain_rx) = watch::channel(None);
        let task = tokio::spawn(run(root, options, metrics, spool.clone(), drain_rx));
        Uploader { spool, drain, task }
    }

    pub fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }

    /// Ends the run: uploads what is left until `deadline`, then returns (leftovers stay on
    /// disk for the next start).
    pub async fn finish(self, deadline: Instant) {
        self.spool.release();
        self.drain.send_replace(Some(deadline));
        self.spool.wake.notify_one();
        if let Err(e) = self.task.await {
            tracing::warn!("S3 uploader task: {e}");
        }
    }
}

/// Sealed segments under `root` with their sizes, oldest first (by name within a day).
fn scan(root: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<(PathBuf, u64)> = crate::segment::find_segments(root)?
        .into_iter()
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.len())))
        .collect();
    // `<signal>/yyyy/mm/dd/<ms>-<id>`: by day then name, across signals.
    files.sort_by_cached_key(|(p, _)| day_and_name(root, p));
    Ok(files)
}

fn day_and_name(root: &Path, p: &Path) -> (String, String) {
    let rel = p.strip_prefix(root).unwrap_or(p);
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let day = parts.iter().skip(1).take(3).cloned().collect::<Vec<_>>().join("/");
    (day, parts.last().cloned().unwrap_or_default())
}

/// The `/`-separated relative path of a segment (its object key under the prefix).
fn relative(root: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.iter().map(|c| c.to_str()).collect();
    Some(parts?.join("/"))
}

async fn run(
    root: PathBuf,
    options: UploadOptions,
    metrics: Arc<ComponentMetrics>,
    spool: Arc<Spool>,
    mut drain: watch::Receiver<Option<Instant>>,
) {
    let client = tokio::sync::OnceCell::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let files = {
            let dir = root.clone();
            match tokio::task::spawn_blocking(move || scan(&dir)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    tracing::warn!(path = %root.display(), error = %e, "cannot list segments to upload");
                    Vec::new()
                }
                Err(e) => {
                    tracing::warn!("S3 upload scan: {e}");
                    Vec::new()
                }
            }
        };
        spool.set(files.iter().map(|(_, n)| n).sum());
        let deadline = *drain.borrow();
        if files.is_empty() {
            if deadline.is_some() {
                return;
            }
            tokio::select! {
                _ = spool.wake.notified() => {}
                _ = drain.changed() => {}
                _ = tokio::time::sleep(IDLE_RESCAN) => {}
            }
            continue;
        }
        let mut failed = false;
        for (path, size) in &files {
            let deadline = *drain.borrow();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let Some(rel) = relative(&root, path) else { continue };
            let key = options.url.key(&rel);
            let c = client.get_or_init(|| crate::s3::client(S3Options::default())).await;
            let started = Instant::now();
            let up = crate::s3::upload_file(c, &options.url.bucket, &key, path, &options.sse);
            let r = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), up).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => up.await,
            };
            match r {
                Ok(u) => {
                    match std::fs::remove_file(path) {
                        Ok(()) => super::retention::remove_empty_parents(&root, path),
                        // Uploaded and verified: a second upload would overwrite the same
                        // object with the same bytes, so this only costs disk.
                        Err(e) => {
                            tracing::warn!(segment = %path.display(), error = %e, "uploaded, but the local copy could not be removed")
                        }
                    }
                    spool.uploaded(*size);
                    metrics.add("uploaded_segments", 1);
                    metrics.add("uploaded_bytes", u.bytes);
                    tracing::info!(
                        segment = %rel,
                        object = %format!("s3://{}/{}", options.url.bucket, u.key),
                        bytes = u.bytes,
                        parts = u.parts,
                        ms = started.elapsed().as_millis() as u64,
                        "segment uploaded and verified; local copy removed"
                    );
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    metrics.add("upload_retries", 1);
                    metrics.error("upload");
                    tracing::warn!(
                        segment = %rel,
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "segment upload failed; it stays on disk and is retried"
                    );
                    failed = true;
                    break;
                }
            }
        }
        let deadline = *drain.borrow();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if failed {
            let wait = match deadline {
                Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                None => backoff,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = drain.changed(), if deadline.is_none() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    let left = scan(&root).unwrap_or_default();
    if !left.is_empty() {
        let bytes: u64 = left.iter().map(|(_, n)| n).sum();
        metrics.add("upload_left_local", left.len() as u64);
        tracing::warn!(
            segments = left.len(),
            bytes,
            path = %root.display(),
            "sealed segments not uploaded in time stay on disk; the next start uploads them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_orders_by_day_then_name_and_skips_inflight() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "spans/2026/11/28/200-aa.parquet",
            "logs/2026/11/28/100-bb.parquet",
            "logs/2026/11/27/900-cc.parquet",
            ".inflight/300-dd.parquet",
        ] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"x").unwrap();
        }
        let got: Vec<String> = scan(root).unwrap().iter().map(|(p, _)| relative(root, p).unwrap()).collect();
        assert_eq!(
            got,
            [
                "logs/2026/11/27/900-cc.parquet",
                "logs/2026/11/28/100-bb.parquet",
                "spans/2026/11/28/200-aa.parquet"
            ]
        );
    }

    #[test]
    fn a_full_spool_blocks_until_uploads_free_room_or_release() {
        let spool = Arc::new(Spool::new(100));
        let metrics = Arc::new(ComponentMetrics::default());
        spool.sealed(150);
        let (s, m) = (spool.clone(), metrics.clone());
        let waiter = std::thread::spawn(move || s.wait_for_room(&m));
        // The waiter cannot finish while the spool is over its bound.
        while metrics.get("upload_backpressure") == 0 {
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished());
        spool.uploaded(100);
        waiter.join().unwrap();
        spool.sealed(500);
        spool.release();
        spool.wait_for_room(&metrics); // released: returns at once
        assert_eq!(spool.pending(), 550);
    }
}
