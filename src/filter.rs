//! One filter meaning for every place that selects events: the `filter` transform (TOML),
//! the `tail` sink (URL query string), `sealtrail tail` and `sealtrail query` (command-line
//! flags), and the pruning of sealed segments.
//!
//! Each surface only gathers raw text into a [`FilterSpec`] ([`FilterSpec::from_query`],
//! [`FilterArgs`], the transform's serde config); [`FilterSpec::build`] parses every value in
//! one place into a [`Filter`], whose [`Filter::matches`] is the one predicate. The segment
//! reader derives its pruning (signal, time range, service, trace id, level) from the same
//! [`Filter`], so a query never disagrees with a live tail of the same events.
//!
//! Semantics (all conditions given must hold):
//! - `signal`: `logs` or `spans` (`log`, `span` and `traces` are accepted as aliases).
//! - `service`: one or more globs (`payments-*`; a name without wildcards is exact); an event
//!   passes when any of them matches its whole service name.
//! - `level`: a minimum level (`trace` … `fatal`). A log record's level is its severity
//!   number; when that is 0 (unspecified), its severity text read as a level name; when that
//!   is no level name either, `info`. A span is `error` when its status is `error`, `info`
//!   otherwise. So `level = info` keeps lines without a level, `warn` and above drop them.
//! - `grep`: a regular expression, tried on each text of the event separately: a log
//!   record's body; a span's name, status message, and its span events' names; and every
//!   attribute key and value (of the record or span, and of span events; values in their text
//!   form, nested arrays and maps as JSON). Resource attributes and ids are not searched.
//! - `trace_id`: 32 hex digits; a log record without a trace id does not pass.
//! - `since`/`until` (`query` only): the event's time (a log record's time, else its
//!   observed time; a span's start time) within the range, inclusive; an event without a
//!   time does not pass.
//!
//! This module depends on [`crate::event`] and the text-matching crates only.

use regex::{Regex, RegexBuilder};

use crate::event::{Event, KeyValue, Signal, Span, Value, severity};

/// The largest compiled `grep` program accepted, in bytes: a pattern can come from the
/// network (the tail query string), and the `regex` crate's linear-time matching bounds the
/// time per byte but not the size of the program.
pub const GREP_SIZE_LIMIT: usize = 1 << 20;

/// The status of a span, by name (the OpenTelemetry codes 0, 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    /// The status of an OpenTelemetry status code (unknown codes are `unset`).
    pub fn from_code(code: i32) -> SpanStatus {
        match code {
            1 => SpanStatus::Ok,
            2 => SpanStatus::Error,
            _ => SpanStatus::Unset,
        }
    }

    /// The OpenTelemetry status code.
    pub fn code(self) -> i32 {
        match self {
            SpanStatus::Unset => 0,
            SpanStatus::Ok => 1,
            SpanStatus::Error => 2,
        }
    }

    /// `unset`, `ok` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error => "error",
        }
    }

    pub fn of(span: &Span) -> SpanStatus {
        SpanStatus::from_code(span.status_code)
    }
}

/// The severity number a `level` filter compares (see the module documentation).
pub fn level_of(e: &Event) -> i32 {
    match e {
        Event::Log(l) if l.severity_number > 0 => l.severity_number,
        Event::Log(l) => severity::parse_level(&l.severity_text).unwrap_or(severity::INFO),
        Event::Span(s) if SpanStatus::of(s) == SpanStatus::Error => severity::ERROR,
        Event::Span(_) => severity::INFO,
    }
}

/// The time a time range compares: a log record's time, else its observed time; a span's
/// start time. 0 when unknown.
pub fn time_of(e: &Event) -> i64 {
    match e {
        Event::Log(l) if l.time != 0 => l.time,
        Event::Log(l) => l.observed_time,
        Event::Span(s) => s.start_time,
    }
}

/// Parses a signal name: `logs`/`log` or `spans`/`span`/`traces` (any letter case).
pub fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim();
    if ["logs", "log"].iter().any(|n| s.eq_ignore_ascii_case(n)) {
        Some(Signal::Logs)
    } else if ["spans", "span", "traces"].iter().any(|n| s.eq_ignore_ascii_case(n)) {
        Some(Signal::Spans)
    } else {
        None
    }
}

/// Which condition a [`FilterError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Grep,
    Level,
    Service,
    Signal,
    TraceId,
}

impl Field {
    /// The name in TOML and in query strings (`grep`, `level`, `service`, `signal`,
    /// `trace_id`); flags are the same with `--` and `-` for `_`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Grep => "grep",
            Field::Level => "level",
            Field::Service => "service",
            Field::Signal => "signal",
            Field::TraceId => "trace_id",
        }
    }

    /// The command-line flag (`--trace-id`).
    pub fn flag(self) -> String {
        format!("--{}", self.name().replace('_', "-"))
    }
}

/// A filter that cannot be built; the message names the condition and quotes (a clipped
/// copy of) the bad value, never more than 64 characters of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown filter `{0}` (expected grep, level, service, signal or trace_id)")]
    Unknown(String),
    #[error("filter `{}` is given more than once", .0.name())]
    Repeated(Field),
    #[error("`{}`: {message}", .field.name())]
    Value { field: Field, message: String },
}

impl FilterError {
    fn value(field: Field, message: impl Into<String>) -> FilterError {
        FilterError::Value { field, message: message.into() }
    }

    /// The message with the condition named as a command-line flag.
    pub fn for_flags(&self) -> String {
        match self {
            FilterError::Value { field, message } => format!("{}: {message}", field.flag()),
            FilterError::Repeated(f) => format!("{} is given more than once", f.flag()),
            other => other.to_string(),
        }
    }
}

/// The conditions as text, as a surface received them; [`FilterSpec::build`] parses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub grep: Option<String>,
    pub level: Option<String>,
    /// Globs; any may match.
    pub services: Vec<String>,
    pub signal: Option<String>,
    pub trace_id: Option<String>,
}

impl FilterSpec {
    /// Reads a URL query string (`grep=timeout&level=warn&service=a&service=b`,
    /// percent-encoded). `service` may repeat; an unknown or other repeated parameter is an
    /// error (the query string comes from the network: strict).
    pub fn from_query(query: &str) -> Result<FilterSpec, FilterError> {
        let mut f = FilterSpec::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*key {
                "grep" => (&mut f.grep, Field::Grep),
                "level" => (&mut f.level, Field::Level),
                "signal" => (&mut f.signal, Field::Signal),
                "trace_id" => (&mut f.trace_id, Field::TraceId),
                "service" => {
                    f.services.push(value.into_owned());
                    continue;
                }
                other => return Err(FilterError::Unknown(clip(other))),
            };
            if slot.0.is_some() {
                return Err(FilterError::Repeated(slot.1));
            }
            *slot.0 = Some(value.into_owned());
        }
        Ok(f)
    }

    /// The conditions as a URL query string, the inverse of [`FilterSpec::from_query`].
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("grep", &self.grep), ("level", &self.level)] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        for s in &self.services {
            q.append_pair("service", s);
        }
        for (k, v) in [("signal", &self.signal), ("trace_id", &self.trace_id)] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }

    /// Parses every value.
    ///
    /// # Errors
    /// A [`FilterError`] naming the first bad condition.
    pub fn build(&self) -> Result<Filter, FilterError> {
        let grep =
            match &self.grep {
                Some(g) => Some(RegexBuilder::new(g).size_limit(GREP_SIZE_LIMIT).build().map_err(|e| {
                    FilterError::value(Field::Grep, format!("invalid regular expression: {e}"))
                })?),
                None => None,
            };
        let min_level = match &self.level {
            Some(l) => Some(severity::parse_level(l).ok_or_else(|| {
                FilterError::value(
                    Field::Level,
                    format!(
                        "unknown level `{}` (expected trace, debug, info, warn, error or fatal)",
                        clip(l)
                    ),
                )
            })?),
            None => None,
        };
        let services = self
            .services
            .iter()
            .map(|s| {
                glob::Pattern::new(s).map_err(|e| {
                    FilterError::value(Field::Service, format!("invalid glob `{}`: {e}", clip(s)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let signal = match &self.signal {
            Some(s) => Some(parse_signal(s).ok_or_else(|| {
                FilterError::value(
                    Field::Signal,
                    format!("unknown signal `{}` (expected logs or spans)", clip(s)),
                )
            })?),
            None => None,
        };
        let trace_id = match &self.trace_id {
            Some(t) => {
                let mut id = [0u8; 16];
                hex::decode_to_slice(t.trim(), &mut id)
                    .map_err(|_| FilterError::value(Field::TraceId, "expected 32 hexadecimal digits"))?;
                Some(id)
            }
            None => None,
        };
        Ok(Filter { grep, min_level, services, signal, trace_id, since: None, until: None })
    }
}

/// The filter flags shared by `sealtrail query` and `sealtrail tail`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only events where this regular expression matches the log body, the span name, status
    /// message or span event names, or any attribute key or value.
    #[arg(long)]
    pub grep: Option<String>,
    /// Only events at this level or above (trace, debug, info, warn, error, fatal). Logs
    /// without a level count as info; spans as error when their status is error, else info.
    #[arg(long)]
    pub level: Option<String>,
    /// Only events of this service (a glob: `payments-*`); repeat for any of several.
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// Only this signal: logs or spans.
    #[arg(long)]
    pub signal: Option<String>,
    /// Only events of this trace (32 hex digits).
    #[arg(long)]
    pub trace_id: Option<String>,
}

impl FilterArgs {
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            grep: self.grep.clone(),
            level: self.level.clone(),
            services: self.services.clone(),
            signal: self.signal.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// A parsed filter: the one predicate over events.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    grep: Option<Regex>,
    min_level: Option<i32>,
    services: Vec<glob::Pattern>,
    signal: Option<Signal>,
    trace_id: Option<[u8; 16]>,
    since: Option<i64>,
    until: Option<i64>,
}

impl Filter {
    /// Parses a URL query string: [`FilterSpec::from_query`], then [`FilterSpec::build`].
    pub fn from_query(query: &str) -> Result<Filter, FilterError> {
        FilterSpec::from_query(query)?.build()
    }

    /// Also requires the event's time (UTC nanoseconds) within `since..=until`.
    pub fn with_time_range(mut self, since: Option<i64>, until: Option<i64>) -> Filter {
        self.since = since;
        self.until = until;
        self
    }

    /// `true` when the event passes every condition.
    pub fn matches(&self, e: &Event) -> bool {
        self.signal.is_none_or(|s| e.signal() == s)
            && self.time_matches(e)
            && (self.services.is_empty() || self.services.iter().any(|p| p.matches(e.service())))
            && self.min_level.is_none_or(|min| level_of(e) >= min)
            && self.trace_id.is_none_or(|id| match e {
                Event::Log(l) => l.trace_id == Some(id),
                Event::Span(s) => s.trace_id == id,
            })
            && self.grep.as_ref().is_none_or(|re| grep_matches(re, e))
    }

    fn time_matches(&self, e: &Event) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let t = time_of(e);
        t != 0 && self.time_overlaps(Some(t), Some(t))
    }

    /// Whether times from `min` to `max` (inclusive; `None`: unknown) may hold an event
    /// in the time range.
    pub fn time_overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        let after_since = match (self.since, max) {
            (Some(s), Some(max)) => max >= s,
            _ => true,
        };
        let before_until = match (self.until, min) {
            (Some(u), Some(min)) => min <= u,
            _ => true,
        };
        after_since && before_until
    }

    /// `true` when the filter lets every event through.
    pub fn is_pass_all(&self) -> bool {
        self.grep.is_none()
            && self.min_level.is_none()
            && self.services.is_empty()
            && self.signal.is_none()
            && self.trace_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub fn signal(&self) -> Option<Signal> {
        self.signal
    }

    /// The minimum severity number.
    pub fn min_level(&self) -> Option<i32> {
        self.min_level
    }

    pub fn trace_id(&self) -> Option<[u8; 16]> {
        self.trace_id
    }

    pub fn has_services(&self) -> bool {
        !self.services.is_empty()
    }

    pub fn has_grep(&self) -> bool {
        self.grep.is_some()
    }

    pub fn has_time_range(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

fn attrs_match(re: &Regex, attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| {
        re.is_match(&kv.key)
            || match &kv.value {
                Value::Str(s) => re.is_match(s),
                v => re.is_match(&v.to_text()),
            }
    })
}

fn grep_matches(re: &Regex, e: &Event) -> bool {
    match e {
        Event::Log(l) => re.is_match(&l.body) || attrs_match(re, &l.attributes),
        Event::Span(s) => {
            re.is_match(&s.name)
                || re.is_match(&s.status_message)
                || attrs_match(re, &s.attributes)
                || s.events.iter().any(|ev| re.is_match(&ev.name) || attrs_match(re, &ev.attributes))
        }
    }
}

/// A value quoted back in an error, cut short so that a long value cannot inflate responses.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
