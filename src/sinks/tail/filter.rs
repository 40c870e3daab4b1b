//! Server-side filters of a tail stream: what a client asked for in the query string of
//! `GET /v1/tail` (`grep`, `level`, `service`, `signal`, `trace_id`), parsed once per client
//! and applied to every event before it is encoded for that client.
//!
//! All filters given must match (they combine with AND). The query string comes from the
//! network, so parsing is strict: unknown or repeated parameters and bad values are errors
//! that name the parameter, and the `grep` pattern has a compiled-size limit (the `regex`
//! crate already guarantees linear-time matching, so a hostile pattern cannot stall the sink).

use regex::{Regex, RegexBuilder};

use crate::event::{Event, Signal, severity};

/// The largest compiled `grep` program a client may ask for, in bytes.
const GREP_SIZE_LIMIT: usize = 1 << 20;

/// A bad tail query; the message names the parameter and is sent back to the client as the
/// body of a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown query parameter `{0}` (expected grep, level, service, signal or trace_id)")]
    Unknown(String),
    #[error("query parameter `{0}` is given more than once")]
    Repeated(&'static str),
    #[error("`grep`: invalid regular expression: {0}")]
    Grep(String),
    #[error("`level`: unknown level `{0}` (expected trace, debug, info, warn, error or fatal)")]
    Level(String),
    #[error("`signal`: unknown signal `{0}` (expected logs or spans)")]
    Signal(String),
    #[error("`trace_id`: expected 32 hexadecimal digits")]
    TraceId,
}

/// The filters of one client. The default filter lets everything through.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matched against a log record's body, or a span's name and status message.
    grep: Option<Regex>,
    /// Minimum severity number (the lowest number of the named level).
    min_level: Option<i32>,
    /// Exact service name.
    service: Option<String>,
    signal: Option<Signal>,
    trace_id: Option<[u8; 16]>,
}

impl Filter {
    /// Parses a URL query string (`grep=timeout&level=warn`, percent-encoded).
    ///
    /// # Errors
    /// A [`FilterError`] naming the first bad parameter.
    pub fn from_query(query: &str) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "grep" => {
                    once(f.grep.is_some(), "grep")?;
                    let re = RegexBuilder::new(&value)
                        .size_limit(GREP_SIZE_LIMIT)
                        .build()
                        .map_err(|e| FilterError::Grep(e.to_string()))?;
                    f.grep = Some(re);
                }
                "level" => {
                    once(f.min_level.is_some(), "level")?;
                    let n = severity::parse_level(&value).ok_or_else(|| FilterError::Level(clip(&value)))?;
                    f.min_level = Some(n);
                }
                "service" => {
                    once(f.service.is_some(), "service")?;
                    f.service = Some(value.into_owned());
                }
                "signal" => {
                    once(f.signal.is_some(), "signal")?;
                    f.signal = Some(match value.trim() {
                        "logs" | "log" => Signal::Logs,
                        "spans" | "span" | "traces" => Signal::Spans,
                        other => return Err(FilterError::Signal(clip(other))),
                    });
                }
                "trace_id" => {
                    once(f.trace_id.is_some(), "trace_id")?;
                    let mut id = [0u8; 16];
                    hex::decode_to_slice(value.trim(), &mut id).map_err(|_| FilterError::TraceId)?;
                    f.trace_id = Some(id);
                }
                other => return Err(FilterError::Unknown(clip(other))),
            }
        }
        Ok(f)
    }

    /// `true` when the event passes every filter.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(s) = self.signal {
            if e.signal() != s {
                return false;
            }
        }
        if let Some(s) = &self.service {
            if e.service() != s {
                return false;
            }
        }
        if let Some(min) = self.min_level {
            if level_of(e) < min {
                return false;
            }
        }
        if let Some(id) = &self.trace_id {
            let t = match e {
                Event::Log(l) => l.trace_id.as_ref(),
                Event::Span(s) => Some(&s.trace_id),
            };
            if t != Some(id) {
                return false;
            }
        }
        if let Some(re) = &self.grep {
            let hit = match e {
                Event::Log(l) => re.is_match(&l.body),
                Event::Span(s) => re.is_match(&s.name) || re.is_match(&s.status_message),
            };
            if !hit {
                return false;
            }
        }
        true
    }

    /// `true` when the filter lets every event through.
    pub fn is_pass_all(&self) -> bool {
        self.grep.is_none()
            && self.min_level.is_none()
            && self.service.is_none()
            && self.signal.is_none()
            && self.trace_id.is_none()
    }
}

/// The severity number a `level` filter compares: a log record's own (0 when unknown, so a
/// record of unknown severity never passes a `level` filter), and for a span ERROR when its
/// status is error, INFO otherwise.
fn level_of(e: &Event) -> i32 {
    match e {
        Event::Log(l) => l.severity_number,
        Event::Span(s) if s.status_code == 2 => severity::ERROR,
        Event::Span(_) => severity::INFO,
    }
}

fn once(seen: bool, name: &'static str) -> Result<(), FilterError> {
    if seen { Err(FilterError::Repeated(name)) } else { Ok(()) }
}

/// A value quoted back in an error, cut short so that a long query cannot inflate responses.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LogRecord, Span};

    fn log(body: &str, sev: i32, service: &str) -> Event {
        Event::Log(LogRecord {
            body: body.into(),
            severity_number: sev,
            service: service.into(),
            ..LogRecord::default()
        })
    }

    fn span(name: &str, status: i32, trace: u8) -> Event {
        Event::Span(Span { name: name.into(), status_code: status, trace_id: [trace; 16], ..Span::default() })
    }

    #[test]
    fn empty_query_passes_everything() {
        let f = Filter::from_query("").unwrap();
        assert!(f.is_pass_all());
        assert!(f.matches(&log("x", 0, "")));
        assert!(f.matches(&span("x", 0, 1)));
    }

    #[test]
    fn grep_matches_bodies_and_span_names() {
        let f = Filter::from_query("grep=time%5C%2Bout|fail").unwrap();
        assert!(f.matches(&log("request time+out", 9, "a")));
        assert!(f.matches(&span("payment fail", 0, 1)));
        assert!(!f.matches(&log("all good", 9, "a")));
    }

    #[test]
    fn level_is_a_minimum_and_unknown_severity_fails_it() {
        let f = Filter::from_query("level=WARN").unwrap();
        assert!(!f.matches(&log("a", severity::INFO, "")));
        assert!(f.matches(&log("a", severity::WARN, "")));
        assert!(f.matches(&log("a", severity::FATAL, "")));
        assert!(!f.matches(&log("a", 0, "")));
        assert!(!f.matches(&span("ok", 1, 1)));
        assert!(f.matches(&span("bad", 2, 1)));
    }

    #[test]
    fn service_signal_and_trace_id() {
        let f = Filter::from_query("service=checkout&signal=logs").unwrap();
        assert!(f.matches(&log("a", 0, "checkout")));
        assert!(!f.matches(&log("a", 0, "checkout-2")));
        assert!(!f.matches(&span("a", 0, 1)));
        let f = Filter::from_query(&format!("trace_id={}", hex::encode([7u8; 16]))).unwrap();
        assert!(f.matches(&span("a", 0, 7)));
        assert!(!f.matches(&span("a", 0, 8)));
        assert!(!f.matches(&log("no trace", 0, "")));
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let cases = [
            ("token=abc", FilterError::Unknown("token".into())),
            ("level=info&level=warn", FilterError::Repeated("level")),
            ("level=loud", FilterError::Level("loud".into())),
            ("signal=metrics", FilterError::Signal("metrics".into())),
            ("trace_id=xyz", FilterError::TraceId),
        ];
        for (q, want) in cases {
            assert_eq!(Filter::from_query(q).unwrap_err(), want, "{q}");
        }
        let e = Filter::from_query("grep=(unclosed").unwrap_err();
        assert!(matches!(e, FilterError::Grep(_)), "{e}");
        // A pattern whose compiled program exceeds the limit is refused, not compiled.
        let e = Filter::from_query("grep=%5Cw%7B1000%7D%7B1000%7D").unwrap_err();
        assert!(matches!(e, FilterError::Grep(_)), "{e}");
    }
}
