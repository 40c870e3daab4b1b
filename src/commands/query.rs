//! `sealtrail query PATH...`: decrypts sealed segments and streams the events that match the
//! filters, as an aligned table, JSON lines, CSV, or a plain Parquet copy.
//!
//! Pruning happens before data pages are decrypted: segments by the signal in their path and
//! the time range of their footer statistics, row groups and pages by statistics and the page
//! index, rows by the filter's predicate over the columns it looks at (see
//! [`crate::segment::reader`] and [`crate::filter`]). A segment that fails (wrong or missing key,
//! tampering, truncation) is reported with its key id and the query goes on; the exit code is
//! then 3. Every query appends a record to the keyring's audit log, fsynced, before the
//! first decrypted byte is output; a query whose record cannot be written decrypts nothing.
//!
//! Output is neutralised for where it goes: the table escapes control characters (C0, C1)
//! and bidirectional overrides so log data cannot drive or disguise the terminal; CSV cells
//! also escape controls, and a cell that a spreadsheet would run as a formula (starting with
//! `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'` (OWASP "CSV injection").
//! Decrypted exports (`--output`) are created 0600.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::commands::remote::{REMOTE_THREADS, Remote, find_all};
use crate::event::json::rfc3339;
use crate::event::{Event, Signal, severity};
use crate::exit_codes::{self, config_error};
use crate::filter::{Filter, FilterArgs, SpanStatus};
use crate::keys::{KeyChain, Keyring, KmsOptions, LocalProvider, audit};
use crate::segment::columns::events_from_batch;
use crate::segment::reader::SegmentRetriever;
use crate::segment::signal_of_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Data directories, segment files or `s3://bucket/prefix` locations.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Keyring directory (default: `SEALTRAIL_KEYS`, else `$XDG_DATA_HOME/sealtrail/keys`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    /// Events at or after this time: RFC 3339, or relative (`15m`, `2h`, `7d` ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Events at or before this time: RFC 3339, or relative.
    #[arg(long)]
    pub until: Option<String>,
    /// `--grep`, `--level`, `--service`, `--signal`, `--trace-id`: the filters shared with
    /// `sealtrail tail` and the `filter` transform.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format (default: `table` on a terminal, `jsonl` otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to this file instead of standard output (required for `parquet`).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Stop after this many events (the first ones in output order).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print pruning and byte counts to standard error at the end.
    #[arg(long)]
    pub stats: bool,
    /// Segments that cannot be read (a missing key, a failed integrity check) are named and
    /// counted but do not make the exit code 3.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Segments whose key was destroyed (`keys destroy`, crypto-shredding) make the exit code
    /// 3. Without it they are named and counted, and the exit code stays 0.
    #[arg(long)]
    pub strict: bool,
    /// Encode `jsonl` and `csv` with the reference encoders (a `serde_json::Value` per event,
    /// a `String` per CSV cell) that the direct writers replaced: same bytes, slower. For
    /// benchmarks (BENCHMARKS.md "Query output") and checks, not for use.
    #[arg(long, hide = true)]
    pub reference_encoder: bool,
}

/// Parses an RFC 3339 time or a relative one (`15m` = 15 minutes before `now`), in nanos.
pub fn parse_time(s: &str, now_nanos: i64) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    if s == "now" {
        return Some(now_nanos);
    }
    let d = crate::units::parse_duration(s)?;
    Some(now_nanos - i64::try_from(d.as_nanos()).ok()?)
}

fn build_filter(a: &QueryArgs) -> anyhow::Result<Filter> {
    let now = crate::event::now_nanos();
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        v.as_deref()
            .map(|s| {
                parse_time(s, now).ok_or_else(|| {
                    config_error(anyhow::anyhow!("--{flag} `{s}`: expected RFC 3339 (2026-11-27T18:00:00Z) or a duration like 15m, 2h, 7d"))
                })
            })
            .transpose()
    };
    let filter = a.filter.spec().build().map_err(|e| config_error(anyhow::anyhow!("{}", e.for_flags())))?;
    Ok(filter.with_time_range(time("since", &a.since)?, time("until", &a.until)?))
}

/// Creates (or truncates) a decrypted export readable by this user only (0600), also when the
/// file existed before with a wider mode.
pub(crate) fn create_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", path.display()))?;
    Ok(f)
}

/// The filters of a query as the audit log records them.
fn audit_filters(args: &QueryArgs, want: Option<Signal>) -> serde_json::Map<String, serde_json::Value> {
    let mut filters = serde_json::Map::new();
    for (k, v) in [
        ("since", &args.since),
        ("until", &args.until),
        ("grep", &args.filter.grep),
        ("level", &args.filter.level),
        ("trace_id", &args.filter.trace_id),
    ] {
        if let Some(v) = v {
            filters.insert(k.into(), v.clone().into());
        }
    }
    if !args.filter.services.is_empty() {
        filters.insert("service".into(), args.filter.services.clone().into());
    }
    if let Some(s) = want {
        filters.insert("signal".into(), s.as_str().into());
    }
    filters
}

/// Where output goes: a text sink or a Parquet writer per signal.
enum Out {
    Text { w: Box<dyn Write>, format: Format, header: bool },
    Parquet { path: PathBuf, writer: Option<Box<ArrowWriter<std::fs::File>>>, signal: Option<Signal> },
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let filter = build_filter(&args)?;
    let stdout_tty = std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if stdout_tty && args.output.is_none() {
        Format::Table
    } else {
        Format::Jsonl
    });
    let want = filter.signal();

    // Candidate segments, pruned by the signal in their path. Their names hold the first
    // event's time, which bounds nothing (events arrive out of order): time pruning waits for
    // the footer statistics, once a segment is opened.
    // `s3://` arguments are listed day by day within --since/--until (see `remote`).
    let now = crate::event::now_nanos();
    let bound = |v: &Option<String>| v.as_deref().and_then(|s| parse_time(s, now));
    let signals: Vec<&str> = match want {
        Some(s) => vec![s.as_str()],
        None => vec!["logs", "spans"],
    };
    let mut remote = Remote::default();
    let mut files = find_all(&args.paths, &signals, bound(&args.since), bound(&args.until), &mut remote)?;
    let total_files = files.len();
    let total_bytes: u64 = files.iter().map(|f| remote.size(f)).sum();
    files.retain(|f| match (want, signal_of_path(f)) {
        (Some(w), Some(s)) => w == s,
        _ => true,
    });
    let pruned_by_signal = total_files - files.len();

    let keys_dir = crate::commands::keys::keys_dir(args.keys.clone());
    // Segments under a destroyed key are shredded by intent: named, counted, never opened.
    let destroyed = crate::keys::destroy::Destroyed::load(&keys_dir)?;
    let mut shredded = 0usize;
    // The audit record goes first: segments and key ids from the plaintext key metadata, no
    // key needed. No record, no decryption.
    let mut key_ids: Vec<String> = Vec::new();
    let mut readable = Vec::with_capacity(files.len());
    for f in files {
        if let Ok(km) = remote.key_metadata(&f) {
            if destroyed.covers(&km.master_key_id) {
                eprintln!("sealtrail: {}: shredded (key {} was destroyed)", f.display(), km.master_key_id);
                shredded += 1;
                continue;
            }
            if !key_ids.contains(&km.master_key_id) {
                key_ids.push(km.master_key_id);
            }
        }
        readable.push(f);
    }
    let files = readable;
    let output = match &args.output {
        Some(p) => format!("{} ({format:?})", p.display()),
        None => format!("stdout ({format:?})"),
    };
    let record = audit::Record {
        uid: audit::current_uid(),
        segments: files.iter().map(|f| f.display().to_string()).collect(),
        key_ids,
        filters: audit_filters(&args, want),
        output,
    };
    audit::append(&keys_dir, &record)
        .context("refusing to decrypt: the query cannot be recorded in the audit log")?;

    let mut out = match format {
        Format::Parquet => {
            let Some(path) = args.output.clone() else {
                return Err(config_error(anyhow::anyhow!(
                    "--format parquet writes a plain, unencrypted copy and needs an explicit --output FILE"
                )));
            };
            let signals: std::collections::BTreeSet<_> =
                files.iter().filter_map(|f| signal_of_path(f)).collect();
            if want.is_none() && signals.len() > 1 {
                return Err(config_error(anyhow::anyhow!(
                    "--format parquet holds one signal: add --signal logs or --signal spans"
                )));
            }
            Out::Parquet { path, writer: None, signal: None }
        }
        _ => {
            let w: Box<dyn Write> = match &args.output {
                Some(p) => Box::new(std::io::BufWriter::new(create_private(p)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            Out::Text { w, format, header: false }
        }
    };

    // Local keys from the keyring; `kms:` keys from AWS KMS (endpoint from
    // AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL), each Decrypt recorded in the same audit log.
    let local = LocalProvider::new(Arc::new(Keyring::open(&keys_dir)));
    let provider = Arc::new(KeyChain::new(local, KmsOptions { endpoint: None, audit_dir: keys_dir.clone() }));
    let retriever = Arc::new(SegmentRetriever::new(provider));
    let progress = (std::io::stderr().is_terminal() && files.len() > 1).then(|| {
        let pb = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} segments {msg}") {
            pb.set_style(style);
        }
        pb
    });

    let mut tally = Tally::default();
    match &mut out {
        Out::Text { w, format, header } => {
            // A table on a terminal is read as it comes: every chunk goes to the screen at once.
            let flush_each = *format == Format::Table && stdout_tty && args.output.is_none();
            let text = TextOut {
                w,
                format: *format,
                header,
                flush_each,
                limit: args.limit,
                reference: args.reference_encoder,
            };
            read_parallel(&files, &remote, &filter, &retriever, &progress, text, &mut tally)?;
        }
        Out::Parquet { .. } => read_sequential(
            &files, &remote, &filter, &retriever, &progress, &mut out, args.limit, &mut tally,
        )?,
    }
    let Tally { failed, events, read_bytes, pruned_by_time } = tally;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    match out {
        Out::Text { mut w, .. } => w.flush()?,
        Out::Parquet { writer, path, .. } => {
            if let Some(w) = writer {
                w.close().with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }

    if args.stats {
        let pct = if total_bytes > 0 { 100.0 * read_bytes as f64 / total_bytes as f64 } else { 0.0 };
        eprintln!(
            "sealtrail: {events} events from {} segments ({pruned_by_signal} pruned by signal, {pruned_by_time} pruned by time, {failed} failed); read and decrypted {read_bytes} of {total_bytes} bytes ({pct:.2}%)",
            total_files
        );
    }
    if shredded > 0 {
        eprintln!("sealtrail: {shredded} segment(s) shredded: their key was destroyed");
    }
    if failed > 0 {
        eprintln!("sealtrail: {failed} segment(s) could not be read");
        if !args.skip_unreadable {
            return Ok(ExitCode::from(exit_codes::INTEGRITY));
        }
    }
    if shredded > 0 && args.strict {
        return Ok(ExitCode::from(exit_codes::INTEGRITY));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(progress: &Option<indicatif::ProgressBar>, e: &dyn std::fmt::Display) {
    let msg = format!("sealtrail: {e}");
    match progress {
        Some(pb) => pb.println(msg),
        None => eprintln!("{msg}"),
    }
}

/// What a query read, for `--stats` and the exit code.
#[derive(Default)]
struct Tally {
    failed: usize,
    events: u64,
    read_bytes: u64,
    pruned_by_time: usize,
}

/// Decoded rows per batch: the unit of decoding, encoding and hand-over between threads.
const BATCH_ROWS: usize = 8192;

/// Rows per batch of a table read on a terminal: a screenful comes out as soon as the first
/// pages are decoded (issue 19: first rows in under 100 ms), and a person reads slower than
/// any batch size keeps up with.
const SCREEN_BATCH_ROWS: usize = 256;

/// Encoded batches a segment's reader may hold ready before the output takes them. With one
/// being encoded, a query holds at most `threads × (READY_BATCHES + 1)` encoded batches.
const READY_BATCHES: usize = 2;

/// A text output and where it stands.
struct TextOut<'a> {
    w: &'a mut Box<dyn Write>,
    format: Format,
    header: &'a mut bool,
    flush_each: bool,
    limit: Option<u64>,
    /// Encode with the reference encoders (`--reference-encoder`).
    reference: bool,
}

/// What a segment's reader thread hands to the output, in order.
enum Piece {
    /// Encoded lines: `ends[i]` is where line `i` ends in `bytes`.
    Lines { bytes: Vec<u8>, ends: Vec<usize> },
    /// The segment is done; its bytes read, and whether its time range pruned it whole.
    Done { read_bytes: u64, pruned: bool },
    /// The segment could not be read (key, footer, tampered page): reported, the query goes on.
    Failed { error: anyhow::Error, read_bytes: u64 },
    /// Anything else ends the query.
    Fatal(anyhow::Error),
}

/// Reads, decodes and encodes segments on every core, one thread per segment at a time, and
/// writes their lines in the order of `files` (each segment's own order kept): the same
/// output as reading them one by one. Each segment has its own bounded channel, so a thread
/// that runs ahead waits once [`READY_BATCHES`] of its batches are ready.
#[allow(clippy::too_many_arguments)]
fn read_parallel(
    files: &[PathBuf],
    remote: &Remote,
    filter: &Filter,
    retriever: &Arc<SegmentRetriever>,
    progress: &Option<indicatif::ProgressBar>,
    mut text: TextOut<'_>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // Remote segments wait on ranged GETs, not the CPU: more of them in flight.
    let threads = if remote.is_empty() { cores } else { cores.max(REMOTE_THREADS) };
    let threads = threads.min(files.len()).max(1);
    let mut senders = Vec::with_capacity(files.len());
    let mut receivers = Vec::with_capacity(files.len());
    for _ in files {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(READY_BATCHES);
        senders.push(std::sync::Mutex::new(Some(tx)));
        receivers.push(rx);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (format, reference) = (text.format, text.reference);
    let batch_rows = if text.flush_each { SCREEN_BATCH_ROWS } else { BATCH_ROWS };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..threads {
            scope.spawn(|| {
                // Segments are taken in order, so the one the output waits for is always
                // being read: a thread blocked on a later segment's full channel cannot stall it.
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(slot) = senders.get(i) else { return };
                    let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() else { continue };
                    let how = Encoding { format, reference, batch_rows };
                    read_segment(&files[i], remote, filter, retriever, how, &tx);
                }
            });
        }
        let result = write_pieces(&receivers, progress, &mut text, tally);
        // On an early end (limit reached, write failed) the readers see their channels closed.
        drop(receivers);
        result
    })
}

/// Takes each segment's pieces in order and writes them.
fn write_pieces(
    receivers: &[std::sync::mpsc::Receiver<Piece>],
    progress: &Option<indicatif::ProgressBar>,
    text: &mut TextOut<'_>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    for rx in receivers {
        if let Some(pb) = progress {
            pb.inc(1);
        }
        // A closed channel without `Done` means the reader thread ended early (it panicked).
        let mut ended = false;
        while let Ok(piece) = rx.recv() {
            match piece {
                Piece::Lines { bytes, ends } => {
                    let room = text.limit.map_or(u64::MAX, |l| l - tally.events);
                    let n = (ends.len() as u64).min(room) as usize;
                    if n == 0 {
                        continue;
                    }
                    if !*text.header {
                        write_header(text.w, text.format)?;
                        *text.header = true;
                    }
                    text.w.write_all(&bytes[..ends[n - 1]])?;
                    tally.events += n as u64;
                    if text.flush_each {
                        text.w.flush()?;
                    }
                    if text.limit.is_some_and(|l| tally.events >= l) {
                        return Ok(());
                    }
                }
                Piece::Done { read_bytes, pruned } => {
                    tally.read_bytes += read_bytes;
                    tally.pruned_by_time += usize::from(pruned);
                    ended = true;
                }
                Piece::Failed { error, read_bytes } => {
                    report(progress, &error);
                    tally.read_bytes += read_bytes;
                    tally.failed += 1;
                    ended = true;
                }
                Piece::Fatal(e) => return Err(e),
            }
        }
        if !ended {
            anyhow::bail!("internal error: a segment reader thread ended early");
        }
    }
    Ok(())
}

/// How a segment's reader encodes its lines.
#[derive(Clone, Copy)]
struct Encoding {
    format: Format,
    /// `--reference-encoder`.
    reference: bool,
    /// Rows decoded and encoded per piece.
    batch_rows: usize,
}

/// Reads one segment and sends its encoded lines, then how it ended. Returns early when the
/// output no longer listens.
fn read_segment(
    f: &std::path::Path,
    remote: &Remote,
    filter: &Filter,
    retriever: &Arc<SegmentRetriever>,
    how: Encoding,
    tx: &std::sync::mpsc::SyncSender<Piece>,
) {
    let Encoding { format, reference, batch_rows } = how;
    let seg = match remote.open(f, retriever.clone()) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Piece::Failed { error: e.into(), read_bytes: 0 });
            return;
        }
    };
    if !seg.may_match(filter) {
        let _ = tx.send(Piece::Done { read_bytes: seg.bytes_read(), pruned: true });
        return;
    }
    let mut events = Vec::new();
    let result = (|| -> anyhow::Result<bool> {
        for batch in seg.read(filter, batch_rows)? {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            events.clear();
            events_from_batch(seg.signal, &batch, &mut events)?;
            let mut bytes = Vec::with_capacity(256 * events.len());
            let mut ends = Vec::with_capacity(events.len());
            for e in &events {
                if reference {
                    encode_line_reference(&mut bytes, format, e);
                } else {
                    encode_line(&mut bytes, format, e);
                }
                ends.push(bytes.len());
            }
            if tx.send(Piece::Lines { bytes, ends }).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    })();
    let read_bytes = seg.bytes_read();
    let _ = tx.send(match result {
        Ok(_) => Piece::Done { read_bytes, pruned: false },
        Err(e) if e.downcast_ref::<crate::segment::reader::ReadError>().is_some() => {
            Piece::Failed { error: e, read_bytes }
        }
        Err(e) => Piece::Fatal(e),
    });
}

/// The Parquet export: one writer, segments in order on this thread.
#[allow(clippy::too_many_arguments)]
fn read_sequential(
    files: &[PathBuf],
    remote: &Remote,
    filter: &Filter,
    retriever: &Arc<SegmentRetriever>,
    progress: &Option<indicatif::ProgressBar>,
    out: &mut Out,
    limit: Option<u64>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    for f in files {
        if let Some(pb) = progress {
            pb.inc(1);
        }
        let seg = match remote.open(f, retriever.clone()) {
            Ok(s) => s,
            Err(e) => {
                report(progress, &e);
                tally.failed += 1;
                continue;
            }
        };
        if !seg.may_match(filter) {
            tally.pruned_by_time += 1;
            tally.read_bytes += seg.bytes_read();
            continue;
        }
        let result = (|| -> anyhow::Result<()> {
            for batch in seg.read(filter, BATCH_ROWS)? {
                let mut batch = batch?;
                let room = limit.map_or(u64::MAX, |l| l - tally.events);
                if (batch.num_rows() as u64) > room {
                    batch = batch.slice(0, room as usize);
                }
                if batch.num_rows() == 0 {
                    continue;
                }
                tally.events += batch.num_rows() as u64;
                write_parquet(out, seg.signal, &batch)?;
            }
            Ok(())
        })();
        tally.read_bytes += seg.bytes_read();
        if let Err(e) = result {
            if e.downcast_ref::<crate::segment::reader::ReadError>().is_some() {
                report(progress, &e);
                tally.failed += 1;
            } else {
                return Err(e);
            }
        }
        if limit.is_some_and(|l| tally.events >= l) {
            break;
        }
    }
    Ok(())
}

fn write_parquet(out: &mut Out, signal: Signal, batch: &RecordBatch) -> anyhow::Result<()> {
    if let Out::Parquet { path, writer, signal: have } = out {
        if have.is_some_and(|s| s != signal) {
            anyhow::bail!("--format parquet holds one signal: add --signal logs or --signal spans");
        }
        if writer.is_none() {
            let f = create_private(path)?;
            let props = crate::segment::writer::writer_properties(&Default::default(), None)?;
            *writer = Some(Box::new(ArrowWriter::try_new(f, batch.schema(), Some(props))?));
            *have = Some(signal);
        }
        if let Some(w) = writer.as_mut() {
            w.write(batch)?;
        }
    }
    Ok(())
}

fn write_header(w: &mut dyn Write, format: Format) -> std::io::Result<()> {
    match format {
        Format::Csv => writeln!(w, "signal,time,level,service,trace_id,span_id,text"),
        Format::Table => writeln!(w, "{:<30} {:<5} {:<20} TEXT", "TIME", "LEVEL", "SERVICE"),
        Format::Jsonl | Format::Parquet => Ok(()),
    }
}

/// Appends one event's line (newline included) in a text format.
fn encode_line(out: &mut Vec<u8>, format: Format, e: &Event) {
    match format {
        Format::Jsonl | Format::Parquet => crate::event::json::write_event(out, e),
        Format::Csv => csv_line(out, e),
        Format::Table => {
            let r = row(e);
            // Always escaped: a table is for people, and a file of it is read in a
            // terminal later.
            let (text, service) = (sanitize(&r.text), sanitize(&r.service));
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:<30} {:<5} {:<20} {text}", r.time, r.level, service);
        }
    }
    out.push(b'\n');
}

/// [`encode_line`] by the reference encoders: a `serde_json::Value` per event, a `String` per
/// CSV cell (what `query` did before issue 19; kept for `--reference-encoder` and the
/// property tests that hold the direct writers to the same bytes).
fn encode_line_reference(out: &mut Vec<u8>, format: Format, e: &Event) {
    match format {
        Format::Jsonl | Format::Parquet => {
            // Serializing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &e.to_json());
            out.push(b'\n');
        }
        Format::Csv => {
            out.extend_from_slice(csv_line_reference(e).as_bytes());
            out.push(b'\n');
        }
        Format::Table => encode_line(out, format, e),
    }
}

/// The CSV line as it was built before issue 19: a `String` per cell, joined.
fn csv_line_reference(e: &Event) -> String {
    let r = row(e);
    let (trace, span) = match e {
        Event::Log(l) => {
            (l.trace_id.map(hex::encode).unwrap_or_default(), l.span_id.map(hex::encode).unwrap_or_default())
        }
        Event::Span(s) => (hex::encode(s.trace_id), hex::encode(s.span_id)),
    };
    let cells = [e.signal().as_str(), &r.time, r.level, &r.service, &trace, &span, &r.text];
    cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
}

/// One CSV line (no newline): the cells of [`csv_cell`], written without a `String` per cell.
fn csv_line(out: &mut Vec<u8>, e: &Event) {
    out.extend_from_slice(e.signal().as_str().as_bytes());
    out.push(b',');
    let cell = |out: &mut Vec<u8>, s: &str, last: bool| {
        write_csv_cell(out, s);
        if !last {
            out.push(b',');
        }
    };
    let mut scratch = Vec::new();
    let mut time = |nanos: i64| {
        scratch.clear();
        crate::event::json::write_rfc3339(&mut scratch, nanos);
        // RFC 3339 is ASCII.
        String::from_utf8_lossy(&scratch).into_owned()
    };
    match e {
        Event::Log(l) => {
            cell(out, &time(if l.time != 0 { l.time } else { l.observed_time }), false);
            cell(out, severity::level_name(l.severity_number), false);
            cell(out, &l.service, false);
            cell(out, &l.trace_id.map(hex::encode).unwrap_or_default(), false);
            cell(out, &l.span_id.map(hex::encode).unwrap_or_default(), false);
            cell(out, &l.body, true);
        }
        Event::Span(s) => {
            cell(out, &time(s.start_time), false);
            cell(out, if SpanStatus::of(s) == SpanStatus::Error { "ERROR" } else { "" }, false);
            cell(out, &s.service, false);
            cell(out, &hex::encode(s.trace_id), false);
            cell(out, &hex::encode(s.span_id), false);
            cell(out, &span_text(s), true);
        }
    }
}

/// Appends `csv_cell(s)`: the same bytes, with a fast path for plain printable ASCII.
pub(crate) fn write_csv_cell(out: &mut Vec<u8>, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b',' && b != b'"') {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let escaped = sanitize(s);
    // Controls are escaped by now: only a comma or a quote needs quoting.
    let quote = escaped.contains([',', '"']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for c in escaped.chars() {
        if c == '"' {
            out.extend_from_slice(b"\"\"");
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    if quote {
        out.push(b'"');
    }
}

fn span_text(s: &crate::event::Span) -> String {
    format!("span {} {:.1}ms", s.name, s.end_time.saturating_sub(s.start_time) as f64 / 1e6)
}

struct Row {
    time: String,
    level: &'static str,
    service: String,
    text: String,
}

fn row(e: &Event) -> Row {
    match e {
        Event::Log(l) => Row {
            time: rfc3339(if l.time != 0 { l.time } else { l.observed_time }),
            level: severity::level_name(l.severity_number),
            service: l.service.clone(),
            text: l.body.clone(),
        },
        Event::Span(s) => Row {
            time: rfc3339(s.start_time),
            level: if SpanStatus::of(s) == SpanStatus::Error { "ERROR" } else { "" },
            service: s.service.clone(),
            text: span_text(s),
        },
    }
}

/// Whether `c` is a bidirectional embedding, override or isolate (U+202A–U+202E,
/// U+2066–U+2069), which can make text display in another order than it is stored.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control characters (C0, DEL, C1) and bidirectional overrides so that log data
/// cannot drive the terminal or disguise itself.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One CSV cell (the reference for [`write_csv_cell`]): control characters and bidi overrides escaped, a leading `'` on what a
/// spreadsheet would run as a formula, quoted when needed (RFC 4180).
fn csv_cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let mut s = sanitize(s);
    if formula {
        s.insert(0, '\'');
    }
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 10_000_000_000_000;
        assert_eq!(parse_time("15m", now), Some(now - 900_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Some(1_000_000_000));
        assert_eq!(parse_time("yesterday", now), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(sanitize("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(csv_cell("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    proptest::proptest! {
        /// Issue 19: the direct CSV writer is the per-cell reference, byte for byte.
        #[test]
        fn issue_19_direct_csv_equals_the_reference(
            text in "(.|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}=+@,\"'\\u{202e}-])*",
            service in ".{0,8}",
            time in proptest::prelude::any::<i64>(),
            sev in 0i32..30,
            ids in proptest::prelude::any::<Option<([u8; 16], [u8; 8])>>(),
        ) {
            let mut out = Vec::new();
            write_csv_cell(&mut out, &text);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), csv_cell(&text));
            let log = Event::Log(crate::event::LogRecord {
                time, severity_number: sev, service: service.clone(), body: text.clone(),
                trace_id: ids.map(|i| i.0), span_id: ids.map(|i| i.1), ..Default::default()
            });
            let span = Event::Span(crate::event::Span {
                start_time: time, end_time: time / 2, status_code: sev % 3, name: text, service,
                ..Default::default()
            });
            for e in [log, span] {
                let mut out = Vec::new();
                csv_line(&mut out, &e);
                proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), csv_line_reference(&e));
            }
        }
    }

    /// Issue 13: CSV cells cannot start a spreadsheet formula or carry escape sequences; the
    /// table escapes C1 controls and bidi overrides.
    #[test]
    fn issue_13_csv_and_table_are_neutralised() {
        assert_eq!(csv_cell("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        for f in ["+1", "-1+2", "@SUM(A1)"] {
            assert_eq!(csv_cell(f), format!("'{f}"));
        }
        assert_eq!(csv_cell("\tx"), "'\\tx");
        assert_eq!(csv_cell("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(sanitize("pay\u{202E}gnp.exe"), "pay\\u{202e}gnp.exe");
        assert_eq!(sanitize("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(sanitize("c1\u{9b}2J"), "c1\\u{9b}2J");
        assert_eq!(sanitize("plain café"), "plain café");
    }
}
