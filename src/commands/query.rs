//! `sealtrail query PATH...`: decrypts sealed segments and streams the events that match the
//! filters, as an aligned table, JSON lines, CSV, or a plain Parquet copy.
//!
//! Pruning happens before data pages are decrypted: segments by the time in their file name,
//! row groups and pages by statistics and the page index, rows by a predicate over the filter
//! columns (see [`crate::segment::reader`]). A segment that fails (wrong or missing key,
//! tampering, truncation) is reported with its key id and the query goes on; the exit code is
//! then 3. Every query appends a record to the keyring's audit log.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::event::json::rfc3339;
use crate::event::{Event, Signal, severity};
use crate::exit_codes::{self, config_error};
use crate::keys::{Keyring, LocalProvider, audit};
use crate::segment::columns::events_from_batch;
use crate::segment::reader::{Filter, Segment, SegmentRetriever};
use crate::segment::{SegmentId, find_segments, signal_of_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignalArg {
    Logs,
    Spans,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Data directories or segment files.
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
    /// A regular expression on the log body (span name and status message for spans).
    #[arg(long)]
    pub grep: Option<String>,
    /// Minimum level of logs (trace, debug, info, warn, error, fatal); `error` keeps only
    /// error spans.
    #[arg(long)]
    pub level: Option<String>,
    /// Service name (a glob: `payments-*`).
    #[arg(long)]
    pub service: Option<String>,
    /// A trace id (32 hex digits).
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Only this signal.
    #[arg(long, value_enum)]
    pub signal: Option<SignalArg>,
    /// Output format (default: `table` on a terminal, `jsonl` otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to this file instead of standard output (required for `parquet`).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Print pruning and byte counts to standard error at the end.
    #[arg(long)]
    pub stats: bool,
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
    let trace_id = match &a.trace_id {
        Some(t) => {
            let t = t.trim().to_ascii_lowercase();
            if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(config_error(anyhow::anyhow!("--trace-id `{t}`: expected 32 hex digits")));
            }
            Some(t)
        }
        None => None,
    };
    Ok(Filter {
        since: time("since", &a.since)?,
        until: time("until", &a.until)?,
        min_level: a
            .level
            .as_deref()
            .map(|l| {
                severity::parse_level(l).ok_or_else(|| {
                    config_error(anyhow::anyhow!(
                        "--level `{l}`: expected trace, debug, info, warn, error or fatal"
                    ))
                })
            })
            .transpose()?,
        service: a
            .service
            .as_deref()
            .map(|s| glob::Pattern::new(s).map_err(|e| config_error(anyhow::anyhow!("--service `{s}`: {e}"))))
            .transpose()?,
        trace_id,
        grep: a
            .grep
            .as_deref()
            .map(|g| regex::Regex::new(g).map_err(|e| config_error(anyhow::anyhow!("--grep: {e}"))))
            .transpose()?,
    })
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

/// Where output goes: a text sink or a Parquet writer per signal.
enum Out {
    Text { w: Box<dyn Write>, format: Format, terminal: bool, header: bool },
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
    let want = args.signal.map(|s| match s {
        SignalArg::Logs => Signal::Logs,
        SignalArg::Spans => Signal::Spans,
    });

    // Candidate segments, pruned by signal and by the first-event time in their name.
    let mut files = Vec::new();
    for p in &args.paths {
        files.extend(find_segments(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
    }
    let total_files = files.len();
    let total_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    files.retain(|f| {
        let sig_ok = match (want, signal_of_path(f)) {
            (Some(w), Some(s)) => w == s,
            _ => true,
        };
        let time_ok = match (filter.until, SegmentId::of_path(f)) {
            (Some(u), Some(id)) => id.first_ms.saturating_mul(1_000_000) <= u,
            _ => true,
        };
        sig_ok && time_ok
    });
    let pruned_by_name = total_files - files.len();

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
            let (w, terminal): (Box<dyn Write>, bool) = match &args.output {
                Some(p) => (
                    Box::new(std::io::BufWriter::new(
                        std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
                    )),
                    false,
                ),
                None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), stdout_tty),
            };
            Out::Text { w, format, terminal, header: false }
        }
    };

    let keys_dir = crate::commands::keys::keys_dir(args.keys.clone());
    let provider = Arc::new(LocalProvider::new(Arc::new(Keyring::open(&keys_dir))));
    let retriever = Arc::new(SegmentRetriever::new(provider));
    let progress = (std::io::stderr().is_terminal() && files.len() > 1).then(|| {
        let pb = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} segments {msg}") {
            pb.set_style(style);
        }
        pb
    });

    let (mut failed, mut events, mut opened, mut read_bytes) = (0usize, 0u64, Vec::new(), 0u64);
    let mut buf = Vec::new();
    for f in &files {
        if let Some(pb) = &progress {
            pb.inc(1);
        }
        let seg = match Segment::open(f, retriever.clone()) {
            Ok(s) => s,
            Err(e) => {
                report(&progress, &e);
                failed += 1;
                continue;
            }
        };
        opened.push(f.display().to_string());
        let result = (|| -> anyhow::Result<()> {
            for batch in seg.read(&filter, 8192)? {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                events += batch.num_rows() as u64;
                write_batch(&mut out, seg.signal, &batch, &mut buf)?;
            }
            Ok(())
        })();
        read_bytes += seg.bytes_read();
        if let Err(e) = result {
            if e.downcast_ref::<crate::segment::reader::ReadError>().is_some() {
                report(&progress, &e);
                failed += 1;
            } else {
                return Err(e);
            }
        }
    }
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

    let mut filters = serde_json::Map::new();
    for (k, v) in [
        ("since", &args.since),
        ("until", &args.until),
        ("grep", &args.grep),
        ("level", &args.level),
        ("service", &args.service),
        ("trace_id", &args.trace_id),
    ] {
        if let Some(v) = v {
            filters.insert(k.into(), v.clone().into());
        }
    }
    if let Some(s) = want {
        filters.insert("signal".into(), s.as_str().into());
    }
    let record =
        audit::Record { user: current_user(), segments: opened, key_ids: retriever.used_key_ids(), filters };
    audit::append(&keys_dir, &record).context("writing the audit log")?;

    if args.stats {
        let pct = if total_bytes > 0 { 100.0 * read_bytes as f64 / total_bytes as f64 } else { 0.0 };
        eprintln!(
            "sealtrail: {events} events from {} segments ({pruned_by_name} pruned by name, {failed} failed); read and decrypted {read_bytes} of {total_bytes} bytes ({pct:.2}%)",
            files.len()
        );
    }
    if failed > 0 {
        eprintln!("sealtrail: {failed} segment(s) could not be read");
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

fn write_batch(
    out: &mut Out,
    signal: Signal,
    batch: &RecordBatch,
    buf: &mut Vec<Event>,
) -> anyhow::Result<()> {
    match out {
        Out::Parquet { path, writer, signal: have } => {
            if have.is_some_and(|s| s != signal) {
                anyhow::bail!("--format parquet holds one signal: add --signal logs or --signal spans");
            }
            if writer.is_none() {
                let f =
                    std::fs::File::create(&*path).with_context(|| format!("creating {}", path.display()))?;
                let props = crate::segment::writer::writer_properties(&Default::default(), None)?;
                *writer = Some(Box::new(ArrowWriter::try_new(f, batch.schema(), Some(props))?));
                *have = Some(signal);
            }
            if let Some(w) = writer.as_mut() {
                w.write(batch)?;
            }
        }
        Out::Text { w, format, terminal, header } => {
            buf.clear();
            events_from_batch(signal, batch, buf)?;
            for e in buf.iter() {
                match format {
                    Format::Jsonl => {
                        serde_json::to_writer(&mut *w, &e.to_json())?;
                        w.write_all(b"\n")?;
                    }
                    Format::Csv => {
                        if !*header {
                            writeln!(w, "signal,time,level,service,trace_id,span_id,text")?;
                            *header = true;
                        }
                        let r = row(e);
                        let cells =
                            [e.signal().as_str(), &r.time, r.level, &r.service, &r.trace, &r.span, &r.text];
                        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                        writeln!(w, "{}", line.join(","))?;
                    }
                    _ => {
                        if !*header {
                            writeln!(w, "{:<30} {:<5} {:<20} TEXT", "TIME", "LEVEL", "SERVICE")?;
                            *header = true;
                        }
                        let r = row(e);
                        let text = if *terminal { sanitize(&r.text) } else { r.text.clone() };
                        let service = if *terminal { sanitize(&r.service) } else { r.service.clone() };
                        writeln!(w, "{:<30} {:<5} {:<20} {text}", r.time, r.level, service)?;
                    }
                }
            }
        }
    }
    Ok(())
}

struct Row {
    time: String,
    level: &'static str,
    service: String,
    trace: String,
    span: String,
    text: String,
}

fn row(e: &Event) -> Row {
    match e {
        Event::Log(l) => Row {
            time: rfc3339(if l.time != 0 { l.time } else { l.observed_time }),
            level: severity::level_name(l.severity_number),
            service: l.service.clone(),
            trace: l.trace_id.map(hex::encode).unwrap_or_default(),
            span: l.span_id.map(hex::encode).unwrap_or_default(),
            text: l.body.clone(),
        },
        Event::Span(s) => Row {
            time: rfc3339(s.start_time),
            level: if s.status_code == 2 { "ERROR" } else { "" },
            service: s.service.clone(),
            trace: hex::encode(s.trace_id),
            span: hex::encode(s.span_id),
            text: format!("span {} {:.1}ms", s.name, (s.end_time - s.start_time) as f64 / 1e6),
        },
    }
}

/// Escapes control characters so that log data cannot drive the terminal.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
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
}
