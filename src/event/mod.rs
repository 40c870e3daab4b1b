//! The event model: log records and spans, the two signals that flow through a topology.
//!
//! Field names follow ARCHITECTURE.md "Formats": they are the Parquet column names of sealed segments
//! and the keys of `query --format jsonl`. Events move through the topology in [`Batch`]es,
//! shared between consumers through an [`Arc`] so that fan-out never copies events; a
//! component that changes events (the `redact` transform) takes them out of the `Arc`, which
//! copies only when another consumer still holds the same batch.

pub mod json;
mod value;
pub mod visit;

pub use value::{KeyValue, Value, attrs_to_json, find_attr};

use std::sync::Arc;

/// A batch of events as it travels on the channels between components.
///
/// Shared: fan-out to several consumers clones the `Arc`, not the events.
pub type Batch = Arc<Vec<Event>>;

/// The component id that produced an event (cheap to clone: every event of a source shares it).
pub type SourceId = Arc<str>;

/// Attribute keys the line sources set. They follow OpenTelemetry semantic conventions where
/// one exists.
pub mod attr {
    /// `stdout` or `stderr`, for lines captured from a child process.
    pub const IOSTREAM: &str = "log.iostream";
    /// The path of the file a line was read from.
    pub const FILE_PATH: &str = "log.file.path";
    /// `true` on every record of a line that was longer than `max_line_bytes`, except the last.
    pub const CONTINUED: &str = "sealtrail.continued";
    /// Set when a line held invalid UTF-8 that was replaced by U+FFFD.
    pub const INVALID_UTF8: &str = "sealtrail.invalid_utf8";
    /// On a log record from OTLP whose body is not a string: the body with its type (the
    /// `body` field holds its text form).
    pub const OTLP_BODY: &str = "sealtrail.otlp.body";

    /// The prefix of the attribute keys that carry OTLP fields the event model has no column
    /// for (`sealtrail.otlp.flags`, [`OTLP_BODY`], …; see `otlp::convert::keys`).
    pub const OTLP_PREFIX: &str = "sealtrail.otlp.";

    /// The internal markers outside [`OTLP_PREFIX`]. Every key a component acts on must be
    /// here or under that prefix (a test checks the constants of this module).
    pub const MARKERS: [&str; 2] = [CONTINUED, INVALID_UTF8];

    use super::{Event, KeyValue};

    /// Whether `key` is reserved for the agent: an internal marker that components act on
    /// (`sealtrail.continued` joins records into one redaction stream, the `sealtrail.otlp.*`
    /// keys become OTLP fields in the forward), so data from outside must never carry it.
    /// Compared ignoring letter case, so that a look-alike cannot pass for one either.
    /// Other `sealtrail.*` keys (the agent's own telemetry attributes, `sealtrail.rows`, …) are
    /// data: one agent's telemetry spans keep them on the way into another agent.
    pub fn is_reserved(key: &str) -> bool {
        let p = OTLP_PREFIX.len();
        (key.len() >= p && key.as_bytes()[..p].eq_ignore_ascii_case(OTLP_PREFIX.as_bytes()))
            || MARKERS.iter().any(|m| key.eq_ignore_ascii_case(m))
    }

    /// Removes the reserved keys from one attribute list (top level: nested map keys are plain
    /// data that no component interprets); returns how many were removed.
    pub fn strip_reserved(attrs: &mut Vec<KeyValue>) -> u64 {
        let before = attrs.len();
        attrs.retain(|kv| !is_reserved(&kv.key));
        (before - attrs.len()) as u64
    }

    /// Removes the reserved keys from every attribute list of events that came from the
    /// network, before the agent adds its own; returns how many were removed (for the
    /// `stripped.reserved_attributes` counter).
    pub fn strip_reserved_events(events: &mut [Event]) -> u64 {
        let mut n = 0;
        for e in events {
            match e {
                Event::Log(l) => {
                    n += strip_reserved(&mut l.attributes) + strip_reserved(&mut l.resource);
                }
                Event::Span(s) => {
                    n += strip_reserved(&mut s.attributes) + strip_reserved(&mut s.resource);
                    for ev in &mut s.events {
                        n += strip_reserved(&mut ev.attributes);
                    }
                    for l in &mut s.links {
                        n += strip_reserved(&mut l.attributes);
                    }
                }
            }
        }
        n
    }
}

/// One event: a log record or a span.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Log(LogRecord),
    Span(Span),
}

impl Event {
    /// Which signal this event belongs to.
    pub fn signal(&self) -> Signal {
        match self {
            Event::Log(_) => Signal::Logs,
            Event::Span(_) => Signal::Spans,
        }
    }

    /// The service name (from `service.name` or `faas.name`), empty when unknown.
    pub fn service(&self) -> &str {
        match self {
            Event::Log(l) => &l.service,
            Event::Span(s) => &s.service,
        }
    }

    /// An estimate of the event's size in bytes: the sum of its string contents. Used for the
    /// byte counters and for size-based batching; cheap (no allocation, no encoding).
    pub fn size_estimate(&self) -> usize {
        match self {
            Event::Log(l) => {
                48 + l.body.len()
                    + l.severity_text.len()
                    + l.service.len()
                    + value::attrs_size(&l.attributes)
                    + value::attrs_size(&l.resource)
            }
            Event::Span(s) => {
                96 + s.name.len()
                    + s.trace_state.len()
                    + s.status_message.len()
                    + s.service.len()
                    + s.scope_name.len()
                    + value::attrs_size(&s.attributes)
                    + value::attrs_size(&s.resource)
                    + s.events
                        .iter()
                        .map(|e| 8 + e.name.len() + value::attrs_size(&e.attributes))
                        .sum::<usize>()
                    + s.links
                        .iter()
                        .map(|l| 24 + l.trace_state.len() + value::attrs_size(&l.attributes))
                        .sum::<usize>()
            }
        }
    }

    /// The number of redactions applied to this event so far.
    pub fn redactions(&self) -> u32 {
        match self {
            Event::Log(l) => l.redactions,
            Event::Span(s) => s.redactions,
        }
    }
}

/// The two signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Logs,
    Spans,
}

impl Signal {
    /// The lower-case name used in paths, flags and configuration (`logs`, `spans`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Spans => "spans",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of signals: what a component emits or accepts. Checked at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    pub logs: bool,
    pub spans: bool,
}

impl Signals {
    pub const LOGS: Signals = Signals { logs: true, spans: false };
    pub const SPANS: Signals = Signals { logs: false, spans: true };
    pub const ALL: Signals = Signals { logs: true, spans: true };
    pub const NONE: Signals = Signals { logs: false, spans: false };

    pub fn union(self, other: Signals) -> Signals {
        Signals { logs: self.logs || other.logs, spans: self.spans || other.spans }
    }

    pub fn intersects(self, other: Signals) -> bool {
        (self.logs && other.logs) || (self.spans && other.spans)
    }

    pub fn is_empty(self) -> bool {
        !self.logs && !self.spans
    }
}

impl std::fmt::Display for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.logs, self.spans) {
            (true, true) => "logs and spans",
            (true, false) => "logs",
            (false, true) => "spans",
            (false, false) => "nothing",
        })
    }
}

/// A log record. Times are UTC nanoseconds since the Unix epoch; 0 means unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    /// When the event happened, as reported by its producer (0: unknown).
    pub time: i64,
    /// When the agent received it.
    pub observed_time: i64,
    pub severity_text: String,
    /// OpenTelemetry severity number (1–24; 0 unspecified).
    pub severity_number: i32,
    pub body: String,
    pub attributes: Vec<KeyValue>,
    pub resource: Vec<KeyValue>,
    /// From `service.name` or `faas.name`.
    pub service: String,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    /// The id of the source component that produced the record.
    pub source: SourceId,
    /// How many redactions were applied to this record.
    pub redactions: u32,
}

/// A span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: String,
    pub name: String,
    /// OpenTelemetry span kind (0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
    /// 5 consumer).
    pub kind: i32,
    pub start_time: i64,
    pub end_time: i64,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub attributes: Vec<KeyValue>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    pub resource: Vec<KeyValue>,
    pub service: String,
    pub scope_name: String,
    pub redactions: u32,
}

/// An event inside a span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanEvent {
    pub time: i64,
    pub name: String,
    pub attributes: Vec<KeyValue>,
}

/// A link from a span to another span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_state: String,
    pub attributes: Vec<KeyValue>,
}

/// Severity numbers of OpenTelemetry's log data model, and the parsing of level names.
pub mod severity {
    pub const TRACE: i32 = 1;
    pub const DEBUG: i32 = 5;
    pub const INFO: i32 = 9;
    pub const WARN: i32 = 13;
    pub const ERROR: i32 = 17;
    pub const FATAL: i32 = 21;

    /// Parses a level name (`trace`, `debug`, `info`, `warn`/`warning`, `error`,
    /// `fatal`/`critical`; any letter case) into the lowest severity number of that level.
    pub fn parse_level(s: &str) -> Option<i32> {
        let s = s.trim();
        let n = match () {
            _ if s.eq_ignore_ascii_case("trace") => TRACE,
            _ if s.eq_ignore_ascii_case("debug") => DEBUG,
            _ if s.eq_ignore_ascii_case("info") || s.eq_ignore_ascii_case("information") => INFO,
            _ if s.eq_ignore_ascii_case("warn") || s.eq_ignore_ascii_case("warning") => WARN,
            _ if s.eq_ignore_ascii_case("error") || s.eq_ignore_ascii_case("err") => ERROR,
            _ if s.eq_ignore_ascii_case("fatal") || s.eq_ignore_ascii_case("critical") => FATAL,
            _ => return None,
        };
        Some(n)
    }

    /// The canonical name of a severity number's level (`TRACE` … `FATAL`; empty for 0).
    pub fn level_name(n: i32) -> &'static str {
        match n {
            1..=4 => "TRACE",
            5..=8 => "DEBUG",
            9..=12 => "INFO",
            13..=16 => "WARN",
            17..=20 => "ERROR",
            21.. => "FATAL",
            _ => "",
        }
    }
}

/// The current time as UTC nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip() {
        for name in ["trace", "DEBUG", "Info", "warning", "error", "FATAL"] {
            let n = severity::parse_level(name).unwrap();
            assert_eq!(severity::parse_level(severity::level_name(n)), Some(n));
        }
        assert_eq!(severity::parse_level("loud"), None);
    }

    /// Issue 13: the Lambda Telemetry mapping turns a function's JSON log fields into
    /// attributes; this is what removes the reserved ones from every list of an event.
    #[test]
    fn reserved_keys_are_stripped_from_every_attribute_list() {
        let forged = || vec![KeyValue::new(attr::CONTINUED, true), KeyValue::new("keep", "v")];
        let mut events = vec![
            Event::Log(LogRecord { attributes: forged(), resource: forged(), ..LogRecord::default() }),
            Event::Span(Span {
                attributes: forged(),
                resource: forged(),
                events: vec![SpanEvent { attributes: forged(), ..SpanEvent::default() }],
                links: vec![SpanLink { attributes: forged(), ..SpanLink::default() }],
                ..Span::default()
            }),
        ];
        assert_eq!(attr::strip_reserved_events(&mut events), 6);
        assert!(events.iter().all(|e| !e.to_json().to_string().contains("sealtrail.")));
        assert!(attr::is_reserved("SEALTRAIL.Continued") && attr::is_reserved("sealtrail.otlp.x"));
        assert!(!attr::is_reserved("sealtrail.rows") && !attr::is_reserved("x.sealtrail.otlp.y"));
        // Every marker constant is reserved.
        for key in [attr::CONTINUED, attr::INVALID_UTF8, attr::OTLP_BODY] {
            assert!(attr::is_reserved(key), "{key}");
        }
    }

    #[test]
    fn signals_intersect() {
        assert!(Signals::ALL.intersects(Signals::LOGS));
        assert!(!Signals::LOGS.intersects(Signals::SPANS));
        assert_eq!(Signals::LOGS.union(Signals::SPANS), Signals::ALL);
    }
}
