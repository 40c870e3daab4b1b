//! The `file` source: tails files matching globs, follows appends, rotation (rename + create)
//! and truncation, and remembers its read position across restarts.
//!
//! Files are identified by device and inode, not by name, so a rotated file (`app.log` →
//! `app.log.1`) is read to its end exactly once even when both names match the globs, and the
//! new `app.log` is read from its start. The source polls (every `poll_interval`): polling
//! works the same on every filesystem, including network and overlay mounts where change
//! notifications are unreliable.
//!
//! The checkpoint (`<data_dir>/checkpoints/<source id>.json`) holds, per file, its path, device,
//! inode and the offset just past the last complete line delivered: offsets only, never
//! content. An unfinished last line is not delivered until its newline arrives; on restart it
//! is read again from its start, so nothing is lost or split.
//!
//! With `acknowledgements = true` the checkpoint moves only past lines that every durable
//! sink has in its fsynced log: each poll waits for the batches it sent before it writes the
//! checkpoint. If a batch is not made durable, the checkpoint stays where it was for the
//! rest of the run, so the next start reads those lines again (at least once).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lines::{LineSplitter, RecordBuilder};
use crate::component::{AckStatus, AckWait, SourceContext};
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::event::{KeyValue, Signals, Value, attr};
use crate::units;

pub const KIND: SourceKind = SourceKind {
    name: "file",
    description: "tails files matching globs, following rotation and truncation",
    parse: parse_source::<FileConfig>,
};

/// Configuration for the `file` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Glob patterns of the files to read, e.g. `["/var/log/app/*.log"]`.
    pub include: Vec<String>,
    /// Glob patterns of files to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file found at startup that has no checkpoint: `beginning`
    /// (default) or `end`. Files that appear later are always read from the beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How often to look for new data, new files and rotations (default `"250ms"`).
    #[serde(default)]
    pub poll_interval: Option<units::Duration>,
    /// The older `poll_interval`, in milliseconds.
    #[serde(default, deserialize_with = "units::legacy_millis")]
    pub poll_interval_ms: Option<units::Duration>,
    /// How long a rotated or deleted file is still read after it stops growing (default
    /// `"2s"`): a writer may append a little after the rename.
    #[serde(default)]
    pub rotate_wait: Option<units::Duration>,
    /// The older `rotate_wait`, in milliseconds.
    #[serde(default, deserialize_with = "units::legacy_millis")]
    pub rotate_wait_ms: Option<units::Duration>,
    /// Start even when no file matches yet (default: a run with no matching file is an error).
    #[serde(default)]
    pub wait_for_files: bool,
    /// Lines longer than this many bytes are split into several records marked as continued.
    #[serde(default = "super::lines::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// The service name given to every record.
    #[serde(default)]
    pub service: String,
    /// Advance the checkpoint only past lines that are durable (in a `sealed` sink's fsynced
    /// write-ahead log). Needs a `sealed` sink with `wal = true` downstream. Default false.
    #[serde(default)]
    pub acknowledgements: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

const DEFAULT_POLL_INTERVAL: units::Duration = units::Duration::from_millis(250);
const DEFAULT_ROTATE_WAIT: units::Duration = units::Duration::from_secs(2);

impl SourceConfig for FileConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    fn acknowledgements(&self) -> bool {
        self.acknowledgements
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        anyhow::ensure!(!self.include.is_empty(), "`include` is empty: give at least one glob");
        super::lines::check_max_line_bytes(self.max_line_bytes)?;
        let poll_interval = units::either(
            "poll_interval",
            self.poll_interval,
            "poll_interval_ms",
            self.poll_interval_ms,
            DEFAULT_POLL_INTERVAL,
        )
        .map_err(anyhow::Error::msg)?
        .get();
        anyhow::ensure!(poll_interval >= Duration::from_millis(1), "`poll_interval` must be at least 1ms");
        let rotate_wait = units::either(
            "rotate_wait",
            self.rotate_wait,
            "rotate_wait_ms",
            self.rotate_wait_ms,
            DEFAULT_ROTATE_WAIT,
        )
        .map_err(anyhow::Error::msg)?
        .get();
        let compile = |field: &str, pats: &[String]| -> anyhow::Result<Vec<glob::Pattern>> {
            pats.iter()
                .map(|p| {
                    glob::Pattern::new(p).map_err(|e| anyhow::anyhow!("invalid glob `{p}` in `{field}`: {e}"))
                })
                .collect()
        };
        compile("include", &self.include)?;
        let exclude = compile("exclude", &self.exclude)?;
        Ok(Box::new(FileSource {
            config: self.clone(),
            poll_interval,
            rotate_wait,
            exclude,
            id: cx.id.to_owned(),
            checkpoint_path: cx.globals.data_dir.join("checkpoints").join(format!("{}.json", cx.id)),
        }))
    }
}

/// A file's identity: device and inode.
type FileId = (u64, u64);

/// What the checkpoint file holds for one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct CheckpointEntry {
    path: PathBuf,
    dev: u64,
    ino: u64,
    offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<CheckpointEntry>,
}

struct FileSource {
    config: FileConfig,
    /// `poll_interval` and `rotate_wait` as resolved from the current or the older name.
    poll_interval: Duration,
    rotate_wait: Duration,
    exclude: Vec<glob::Pattern>,
    id: String,
    checkpoint_path: PathBuf,
}

/// A file being read.
struct Tracked {
    path: PathBuf,
    file: File,
    /// Bytes read from the file so far (the read position).
    read: u64,
    splitter: LineSplitter,
    builder: RecordBuilder,
    /// When the file was found no longer under a watched name (rotated or deleted).
    gone_since: Option<Instant>,
}

impl Tracked {
    /// The offset just past the last complete line: what the checkpoint records.
    fn committed(&self) -> u64 {
        self.read - self.splitter.pending() as u64
    }
}

impl Source for FileSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(self.run_loop(cx))
    }
}

const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one file per poll before moving on to the next (fairness between files).
const MAX_READ_PER_POLL: u64 = 4 << 20;

impl FileSource {
    async fn run_loop(self, mut cx: SourceContext) -> anyhow::Result<()> {
        let checkpoints = self.load_checkpoint();
        let mut tracked: BTreeMap<FileId, Tracked> = BTreeMap::new();
        let mut first = true;
        let mut last_saved: Vec<CheckpointEntry> = Vec::new();
        // With acknowledgements: the waits of the batches sent this poll, and whether one
        // failed (then the checkpoint never moves again in this run).
        let mut acks = self.config.acknowledgements.then(Vec::new);
        let mut not_durable = false;
        let mut shutdown = cx.shutdown.clone();
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // 1. Discover files and notice rotation and truncation.
            let found = self.discover(&cx);
            if first && found.is_empty() && !self.config.wait_for_files {
                anyhow::bail!(
                    "no file matches `include` ({}); set `wait_for_files = true` to wait for them",
                    self.config.include.join(", ")
                );
            }
            for (fid, path, size) in &found {
                match tracked.get_mut(fid) {
                    Some(t) => {
                        t.gone_since = None;
                        if *size < t.read {
                            tracing::info!(path = %path.display(), "file truncated; reading from the start");
                            cx.metrics.add("files.truncated", 1);
                            t.read = 0;
                            t.splitter = LineSplitter::new(self.config.max_line_bytes);
                        }
                    }
                    None => {
                        let start = match checkpoints.iter().find(|c| (c.dev, c.ino) == *fid) {
                            Some(c) if c.offset <= *size => c.offset,
                            Some(_) => 0, // Truncated while we were not running.
                            None if first && self.config.read_from == ReadFrom::End => *size,
                            None => 0,
                        };
                        match self.open(path, start) {
                            Ok(file) => {
                                tracing::info!(path = %path.display(), offset = start, "following file");
                                cx.metrics.add("files.opened", 1);
                                let mut builder = RecordBuilder::new(&self.id, &self.config.service);
                                builder.attributes.push(KeyValue::new(
                                    attr::FILE_PATH,
                                    Value::Str(path.display().to_string()),
                                ));
                                tracked.insert(
                                    *fid,
                                    Tracked {
                                        path: path.clone(),
                                        file,
                                        read: start,
                                        splitter: LineSplitter::new(self.config.max_line_bytes),
                                        builder,
                                        gone_since: None,
                                    },
                                );
                            }
                            Err(e) => {
                                cx.metrics.error("open");
                                tracing::warn!(path = %path.display(), "cannot open file: {e}");
                            }
                        }
                    }
                }
            }
            let present: BTreeSet<FileId> = found.iter().map(|(f, _, _)| *f).collect();
            for (fid, t) in tracked.iter_mut() {
                if !present.contains(fid) && t.gone_since.is_none() {
                    t.gone_since = Some(Instant::now());
                }
            }
            first = false;

            // 2. Read new data from every file.
            let mut stop = false;
            for t in tracked.values_mut() {
                match read_new(t, &mut cx, acks.as_mut()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        stop = true;
                        break;
                    }
                    Err(e) => {
                        cx.metrics.error("read");
                        tracing::warn!(path = %t.path.display(), "read failed: {e}");
                    }
                }
            }

            // 3. Close rotated or deleted files that have been quiet long enough.
            let wait = self.rotate_wait;
            let mut closed = Vec::new();
            for (fid, t) in &tracked {
                if t.gone_since.is_some_and(|g| g.elapsed() >= wait) && !has_more(t) {
                    closed.push(*fid);
                }
            }
            for fid in closed {
                if let Some(mut t) = tracked.remove(&fid) {
                    // The file will not grow any more: its unfinished last line is complete.
                    let mut events = Vec::new();
                    t.builder.finish(&mut t.splitter, &mut events);
                    let _ = send(&mut cx, events, acks.as_mut()).await;
                    cx.metrics.add("files.closed", 1);
                    tracing::info!(path = %t.path.display(), "finished rotated or deleted file");
                }
            }

            // 4. Record the positions; with acknowledgements, once what was sent is durable.
            for wait in acks.iter_mut().flat_map(|a| a.drain(..)) {
                if wait.wait().await == AckStatus::Failed && !not_durable {
                    not_durable = true;
                    cx.metrics.error("not_durable");
                    tracing::warn!(
                        "lines sent were not made durable; the checkpoint stays where it was for the rest of this run, so the next start reads them again"
                    );
                }
            }
            let entries: Vec<CheckpointEntry> = tracked
                .iter()
                .map(|(&(dev, ino), t)| CheckpointEntry {
                    path: t.path.clone(),
                    dev,
                    ino,
                    offset: t.committed(),
                })
                .collect();
            if entries != last_saved && !not_durable {
                if let Err(e) = self.save_checkpoint(&entries) {
                    cx.metrics.error("checkpoint");
                    tracing::warn!("cannot write checkpoint {}: {e}", self.checkpoint_path.display());
                }
                last_saved = entries;
            }
            if stop || shutdown.reason().is_some() {
                break;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => {}
            }
        }
        let invalid: u64 = tracked.values().map(|t| t.builder.invalid_utf8).sum();
        cx.metrics.add("invalid_utf8", invalid);
        Ok(())
    }

    /// Every file matching `include` and not `exclude`, with its identity and size.
    fn discover(&self, cx: &SourceContext) -> Vec<(FileId, PathBuf, u64)> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for pat in &self.config.include {
            let Ok(paths) = glob::glob(pat) else { continue };
            for path in paths.flatten() {
                if self.exclude.iter().any(|e| e.matches_path(&path)) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        let fid = (m.dev(), m.ino());
                        if seen.insert(fid) {
                            found.push((fid, path, m.len()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        cx.metrics.error("stat");
                        tracing::debug!(path = %path.display(), "cannot stat: {e}");
                    }
                }
            }
        }
        found
    }

    fn open(&self, path: &Path, offset: u64) -> std::io::Result<File> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(f)
    }

    fn load_checkpoint(&self) -> Vec<CheckpointEntry> {
        match std::fs::read(&self.checkpoint_path) {
            Ok(bytes) => match serde_json::from_slice::<CheckpointFile>(&bytes) {
                Ok(c) => c.files,
                Err(e) => {
                    tracing::warn!(
                        "ignoring unreadable checkpoint {}: {e}; files are read from the start",
                        self.checkpoint_path.display()
                    );
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        }
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    fn save_checkpoint(&self, files: &[CheckpointEntry]) -> std::io::Result<()> {
        use std::io::Write;
        let dir = self.checkpoint_path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.checkpoint_path.with_extension("json.tmp");
        let body = serde_json::to_vec(&CheckpointFile { version: 1, files: files.to_vec() })
            .map_err(std::io::Error::other)?;
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.checkpoint_path)
    }
}

/// Whether the file has grown past what was read.
fn has_more(t: &Tracked) -> bool {
    t.file.metadata().map(|m| m.len() > t.read).unwrap_or(false)
}

/// Sends a batch; with acknowledgements on, keeps the wait for it in `acks`.
async fn send(
    cx: &mut SourceContext,
    events: Vec<crate::event::Event>,
    acks: Option<&mut Vec<AckWait>>,
) -> Result<(), crate::component::Closed> {
    match acks {
        Some(acks) => {
            acks.push(cx.out.send_acked(std::sync::Arc::new(events)).await?);
            Ok(())
        }
        None => cx.out.send_events(events).await,
    }
}

/// Reads what a file has past the read position (up to a per-poll limit) and sends it.
/// `Ok(false)` when every consumer is gone.
async fn read_new(
    t: &mut Tracked,
    cx: &mut SourceContext,
    mut acks: Option<&mut Vec<AckWait>>,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut budget = MAX_READ_PER_POLL;
    // The handle's position can differ from `read` after a truncation was detected.
    t.file.seek(SeekFrom::Start(t.read))?;
    while budget > 0 {
        let n = t.file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        t.read += n as u64;
        budget = budget.saturating_sub(n as u64);
        let mut events = Vec::new();
        t.builder.push(&mut t.splitter, &buf[..n], &mut events);
        if send(cx, events, acks.as_deref_mut()).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}
