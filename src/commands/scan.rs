//! `sealtrail scan [PATH…|-]`: findings of the redaction engine, never the values.
//!
//! For each input it counts what each detector finds, per field, with positions: log files
//! and standard input line by line (field `line`, positions are 1-based line numbers), sealed
//! segments (a `.parquet` file, or a directory searched for them) row by row (fields are
//! columns such as `body`, or `attributes[<key>]` for an attribute or map value, with the key
//! itself redacted; positions are 0-based rows of the segment). Output is a table or
//! `--format json`; nothing of a value is ever printed.
//!
//! The same engine and settings as `redact` (`--config`, `--policy`). A PEM private key block
//! split over lines counts once, at its first body line. Lines longer than [`MAX_LINE`] are
//! read in pieces of that size through one redaction stream, so a secret cut by a piece
//! boundary is found once, at the line's number.
//!
//! Segments are decrypted with the keyring as `query` does, and the scan is recorded in the
//! keyring's audit log (fsynced) before the first segment is decrypted.
//!
//! Exit codes: 0 nothing found, 1 something found, 2 usage or configuration error, 3 an input
//! could not be read or decrypted (the others are still scanned and reported).

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::event::visit::{Field, Place, TextVisitor, visit_event};
use crate::exit_codes::{self, config_error};
use crate::filter::Filter;
use crate::keys::{KeyChain, Keyring, KmsOptions, LocalProvider, audit};
use crate::redact::{Counts, Detector, Redactor, credentials};
use crate::segment::columns::events_from_batch;
use crate::segment::reader::{Segment, SegmentRetriever};
use crate::segment::{find_segments, signal_of_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Log files, sealed segments or data directories; `-` (or none) for standard input.
    pub paths: Vec<PathBuf>,
    /// An agent configuration with one `redact` transform, or a file of `redact` fields.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    /// A CloudWatch Logs data protection policy choosing the detectors.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Keyring directory, for sealed segments and `hmac_key` (default: as for `query`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The longest piece of a line scanned at once: memory stays bounded on any input.
pub const MAX_LINE: usize = 1 << 20;

/// Positions kept per finding (input, field, detector); the count goes on past it.
pub const MAX_POSITIONS: usize = 1000;

/// Positions shown per finding in the table.
const TABLE_POSITIONS: usize = 10;

/// The findings of one (input, field, detector).
#[derive(Debug, Default)]
struct Finding {
    count: u64,
    positions: Vec<u64>,
}

/// All findings: input index → (field, detector) → finding.
#[derive(Default)]
struct Findings {
    inputs: Vec<Input>,
    by: BTreeMap<(usize, String, Detector), Finding>,
}

struct Input {
    name: String,
    kind: &'static str,
    error: Option<String>,
}

impl Findings {
    fn add(&mut self, input: usize, field: &str, counts: &Counts, position: u64) {
        for (d, n) in counts.iter() {
            let f = self.by.entry((input, field.to_owned(), d)).or_default();
            f.count += n;
            if f.positions.len() < MAX_POSITIONS && f.positions.last() != Some(&position) {
                f.positions.push(position);
            }
        }
    }

    fn total(&self) -> u64 {
        self.by.values().map(|f| f.count).sum()
    }
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.config {
        Some(p) => crate::commands::redact::load_config(p).map_err(config_error)?,
        None => crate::transforms::redact::RedactConfig::default(),
    };
    if let Some(p) = &args.policy {
        cfg.policy = Some(p.clone());
    }
    let keys_dir = crate::commands::keys::keys_dir(args.keys.clone());
    let r = Arc::new(cfg.redactor(&keys_dir).map_err(config_error)?);
    let paths = if args.paths.is_empty() { vec![PathBuf::from("-")] } else { args.paths.clone() };
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(config_error(anyhow::anyhow!("`-` (standard input) may be given once")));
    }

    // Sort the inputs: text, and segments (found under directories, or `.parquet` files).
    let mut text: Vec<PathBuf> = Vec::new();
    let mut segments: Vec<PathBuf> = Vec::new();
    let mut findings = Findings::default();
    for p in &paths {
        if p.as_os_str() == "-" {
            text.push(p.clone());
        } else if p.is_dir() {
            match find_segments(p) {
                Ok(found) => segments.extend(found),
                Err(e) => findings.inputs.push(Input {
                    name: p.display().to_string(),
                    kind: "directory",
                    error: Some(e.to_string()),
                }),
            }
        } else if p.extension().is_some_and(|e| e == "parquet") {
            segments.push(p.clone());
        } else {
            text.push(p.clone());
        }
    }

    for p in &text {
        let i = findings.inputs.len();
        let (name, kind) =
            if p.as_os_str() == "-" { ("-".to_owned(), "stdin") } else { (p.display().to_string(), "text") };
        findings.inputs.push(Input { name, kind, error: None });
        let result = if p.as_os_str() == "-" {
            scan_text(&r, std::io::stdin().lock(), i, &mut findings)
        } else {
            std::fs::File::open(p).map_err(anyhow::Error::from).and_then(|f| {
                scan_text(&r, std::io::BufReader::with_capacity(64 * 1024, f), i, &mut findings)
            })
        };
        if let Err(e) = result {
            findings.inputs[i].error = Some(format!("{e:#}"));
        }
    }

    if !segments.is_empty() {
        scan_segments(&r, &segments, &keys_dir, &mut findings)?;
    }

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Table => write_table(&findings, &mut out)?,
        Format::Json => write_json(&findings, &mut out)?,
    }
    out.flush()?;
    let failed = findings.inputs.iter().filter(|i| i.error.is_some()).count();
    for i in findings.inputs.iter().filter(|i| i.error.is_some()) {
        eprintln!("sealtrail: {}: {}", i.name, i.error.as_deref().unwrap_or_default());
    }
    Ok(ExitCode::from(if failed > 0 {
        exit_codes::INTEGRITY
    } else if findings.total() > 0 {
        1
    } else {
        exit_codes::OK
    }))
}

/// Scans text line by line, reading pieces of at most [`MAX_LINE`] bytes: a longer line goes
/// through one redaction stream piece by piece, so a finding that straddles two pieces is
/// found, and found once.
fn scan_text(
    r: &Arc<Redactor>,
    mut input: impl BufRead,
    i: usize,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut stream = r.stream();
    // The stream's output is not kept (a scan prints no value); its counts are.
    let mut sink = Vec::new();
    let mut counted = Counts::default();
    let mut line_no: u64 = 1;
    // Inside a PEM private key block begun on an earlier line; whether it was counted.
    let mut pem: Option<(usize, bool)> = None;
    loop {
        buf.clear();
        let n = (&mut input).take(MAX_LINE as u64).read_until(b'\n', &mut buf).context("reading")?;
        if n == 0 {
            // The last line has no line break: what the stream holds of it counts there.
            stream.finish(&mut sink);
            let now = stream.counts();
            let mut c = Counts::default();
            for (k, slot) in c.0.iter_mut().enumerate() {
                *slot = now.0[k] - counted.0[k];
            }
            findings.add(i, "line", &c, line_no);
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        let mut c = Counts::default();
        let mut text: &[u8] = &buf;
        if let Some((seen, counted)) = &mut pem {
            let end = credentials::pem_end(text);
            let body = &text[..end.unwrap_or(text.len())];
            if !body.trim_ascii().is_empty() {
                *seen += body.len();
                if !*counted {
                    c.0[Detector::PrivateKey as usize] += 1;
                    *counted = true;
                }
            }
            match end {
                Some(e) => {
                    text = &text[e..];
                    pem = None;
                }
                None => {
                    text = &[];
                    if *seen > credentials::MAX_PEM {
                        pem = None;
                    }
                }
            }
        }
        stream.push(text, &mut sink);
        if complete {
            stream.finish(&mut sink);
        }
        sink.clear();
        let now = stream.counts();
        for (k, slot) in c.0.iter_mut().enumerate() {
            *slot += now.0[k] - counted.0[k];
        }
        counted = now;
        if pem.is_none() && r.detects(Detector::PrivateKey) && credentials::unterminated_pem(text) {
            pem = Some((0, false));
        }
        findings.add(i, "line", &c, line_no);
        if complete {
            line_no += 1;
        }
    }
    Ok(())
}

/// Counts what the engine finds in every string of an event, per field.
struct Scanner<'a> {
    r: &'a Redactor,
    fields: Vec<(String, Counts)>,
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Body => "body",
        Field::SeverityText => "severity_text",
        Field::Service => "service",
        Field::Name => "name",
        Field::TraceState => "trace_state",
        Field::StatusMessage => "status_message",
        Field::ScopeName => "scope_name",
        Field::EventName => "events.name",
        Field::LinkTraceState => "links.trace_state",
    }
}

impl TextVisitor for Scanner<'_> {
    fn visit(&mut self, place: Place<'_>, text: &mut String) {
        let mut c = Counts::default();
        let _ = self.r.redact_keyed(place.key(), text, &mut c);
        if c.total() == 0 {
            return;
        }
        let name = match place {
            Place::Field(f) => field_name(f).to_owned(),
            Place::Key => "attribute key".to_owned(),
            Place::Value { key } => {
                // The key is shown redacted: a key may itself hold a secret.
                let mut k = Counts::default();
                format!("attributes[{}]", self.r.redact_str(key, &mut k))
            }
        };
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => t.add(&c),
            None => self.fields.push((name, c)),
        }
    }
}

/// Scans sealed segments after recording the scan in the audit log.
fn scan_segments(
    r: &Redactor,
    files: &[PathBuf],
    keys_dir: &Path,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut key_ids: Vec<String> = Vec::new();
    for f in files {
        if let Ok(km) = crate::segment::reader::read_key_metadata(f) {
            if !key_ids.contains(&km.master_key_id) {
                key_ids.push(km.master_key_id);
            }
        }
    }
    let mut filters = serde_json::Map::new();
    filters.insert("command".into(), "scan".into());
    let record = audit::Record {
        uid: audit::current_uid(),
        segments: files.iter().map(|f| f.display().to_string()).collect(),
        key_ids,
        filters,
        output: "stdout (scan findings, no values)".into(),
    };
    audit::append(keys_dir, &record)
        .context("refusing to decrypt: the scan cannot be recorded in the audit log")?;
    let local = LocalProvider::new(Arc::new(Keyring::open(keys_dir)));
    let provider =
        Arc::new(KeyChain::new(local, KmsOptions { endpoint: None, audit_dir: keys_dir.to_owned() }));
    let retriever = Arc::new(SegmentRetriever::new(provider));
    for f in files {
        let i = findings.inputs.len();
        findings.inputs.push(Input { name: f.display().to_string(), kind: "segment", error: None });
        if let Err(e) = scan_segment(r, f, &retriever, i, findings) {
            findings.inputs[i].error = Some(format!("{e:#}"));
        }
    }
    Ok(())
}

fn scan_segment(
    r: &Redactor,
    f: &Path,
    retriever: &Arc<SegmentRetriever>,
    i: usize,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let seg = Segment::open(f, retriever.clone())?;
    let signal = signal_of_path(f).unwrap_or(seg.signal);
    let mut row: u64 = 0;
    let mut events = Vec::new();
    for batch in seg.read(&Filter::default(), 8192)? {
        let batch = batch?;
        events.clear();
        events_from_batch(signal, &batch, &mut events)?;
        for e in &mut events {
            let mut s = Scanner { r, fields: Vec::new() };
            visit_event(e, &mut s);
            for (name, c) in &s.fields {
                findings.add(i, name, c, row);
            }
            row += 1;
        }
    }
    Ok(())
}

fn unit(kind: &str) -> &'static str {
    if kind == "segment" { "rows" } else { "lines" }
}

fn write_table(f: &Findings, out: &mut impl Write) -> anyhow::Result<()> {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for ((i, field, d), x) in &f.by {
        let input = &f.inputs[*i];
        let mut pos: Vec<String> = x.positions.iter().take(TABLE_POSITIONS).map(u64::to_string).collect();
        if x.count as usize > pos.len() && x.positions.len() > TABLE_POSITIONS {
            pos.push("…".into());
        }
        rows.push([
            input.name.clone(),
            field.clone(),
            d.name().to_owned(),
            x.count.to_string(),
            format!("{} {}", unit(input.kind), pos.join(",")),
        ]);
    }
    let header = ["INPUT", "FIELD", "DETECTOR", "COUNT", "POSITIONS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    if !rows.is_empty() {
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end())?;
        }
    }
    let with = f.by.keys().map(|(i, _, _)| *i).collect::<std::collections::BTreeSet<_>>().len();
    writeln!(
        out,
        "{} finding(s) in {} of {} input(s){}",
        f.total(),
        with,
        f.inputs.len(),
        match f.inputs.iter().filter(|i| i.error.is_some()).count() {
            0 => String::new(),
            n => format!("; {n} could not be read"),
        }
    )?;
    Ok(())
}

fn write_json(f: &Findings, out: &mut impl Write) -> anyhow::Result<()> {
    let findings: Vec<serde_json::Value> =
        f.by.iter()
            .map(|((i, field, d), x)| {
                let input = &f.inputs[*i];
                serde_json::json!({
                    "input": input.name,
                    "kind": input.kind,
                    "field": field,
                    "detector": d.name(),
                    "count": x.count,
                    "position_unit": if input.kind == "segment" { "row" } else { "line" },
                    "positions": x.positions,
                    "positions_truncated": x.positions.len() >= MAX_POSITIONS,
                })
            })
            .collect();
    let inputs: Vec<serde_json::Value> = f
        .inputs
        .iter()
        .map(|i| serde_json::json!({"input": i.name, "kind": i.kind, "error": i.error}))
        .collect();
    let doc = serde_json::json!({"total": f.total(), "inputs": inputs, "findings": findings});
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_findings_per_line_never_values() {
        let r = Arc::new(Redactor::with_defaults());
        let input = "ok\npaid 4111111111111111 password=hunter2\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc==\n-----END RSA PRIVATE KEY-----\nfine\n";
        let mut f = Findings::default();
        f.inputs.push(Input { name: "t".into(), kind: "text", error: None });
        scan_text(&r, input.as_bytes(), 0, &mut f).unwrap();
        let got: Vec<(Detector, u64, Vec<u64>)> =
            f.by.iter().map(|((_, _, d), x)| (*d, x.count, x.positions.clone())).collect();
        assert_eq!(
            got,
            [
                (Detector::Card, 1, vec![2]),
                (Detector::PrivateKey, 1, vec![4]),
                (Detector::SecretField, 1, vec![2]),
            ]
        );
        let mut out = Vec::new();
        write_json(&f, &mut out).unwrap();
        let mut table = Vec::new();
        write_table(&f, &mut table).unwrap();
        for o in [&out, &table] {
            let s = String::from_utf8_lossy(o);
            assert!(!s.contains("4111") && !s.contains("hunter2") && !s.contains("MIIE"), "{s}");
        }
        assert!(String::from_utf8_lossy(&table).contains("3 finding(s) in 1 of 1 input(s)"));
    }

    #[test]
    fn long_lines_are_scanned_in_pieces() {
        let r = Arc::new(Redactor::with_defaults());
        let input = format!("{} 4111111111111111\nnext 4111111111111111\n", "x".repeat(MAX_LINE + 10));
        let mut f = Findings::default();
        f.inputs.push(Input { name: "t".into(), kind: "text", error: None });
        scan_text(&r, input.as_bytes(), 0, &mut f).unwrap();
        let x = &f.by[&(0, "line".to_owned(), Detector::Card)];
        assert_eq!((x.count, x.positions.clone()), (2, vec![1, 2]));
    }
}
