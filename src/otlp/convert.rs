//! The mapping between OTLP messages and the event model, in both directions.
//!
//! Every OTLP field has a place in an [`Event`], so that a span or log record that goes in
//! through the `otlp` source comes out of the `otlp` sink (or a sealed segment) with the same
//! content. Fields the event model has no column for travel as attributes under the reserved
//! prefix `sealtrail.otlp.` (see [`keys`]): they are written only when they differ from their
//! default, and [`traces_from_events`] / [`logs_from_events`] take them out again. They are
//! attributes rather than new event fields so that they reach every sink (sealed segments store
//! attributes) without a schema change.
//!
//! Attributes that arrive with a reserved key (`sealtrail.otlp.*`, `sealtrail.continued`,
//! `sealtrail.invalid_utf8`: [`crate::event::attr::is_reserved`]) are removed on the way in and
//! counted ([`Rejected::stripped`]): a client must not be able to set the agent's internal
//! markers (`sealtrail.continued` would splice its text into another
//! record's redaction stream; `sealtrail.otlp.*` would forge OTLP fields in the forward).
//!
//! Items whose ids have the wrong length cannot be represented (the model holds fixed-size
//! ids) and would be meaningless downstream: they are rejected one by one and counted, which
//! the source reports to the client as a partial success.

use super::proto::{common, logs, resource, trace};
use super::{ExportLogsServiceRequest, ExportTraceServiceRequest};
use crate::event::{Event, KeyValue, LogRecord, SourceId, Span, SpanEvent, SpanLink, Value, find_attr};

/// The attribute keys that carry OTLP fields the event model has no column for.
pub mod keys {
    /// On a resource: the `schema_url` of its `ResourceSpans`/`ResourceLogs`.
    pub const RESOURCE_SCHEMA_URL: &str = "sealtrail.otlp.resource.schema_url";
    /// On a resource: its `dropped_attributes_count`.
    pub const RESOURCE_DROPPED_ATTRIBUTES: &str = "sealtrail.otlp.resource.dropped_attributes_count";
    /// On a log record: the instrumentation scope name (spans have `scope_name`).
    pub const SCOPE_NAME: &str = "sealtrail.otlp.scope.name";
    pub const SCOPE_VERSION: &str = "sealtrail.otlp.scope.version";
    /// The scope's attributes, as one map value.
    pub const SCOPE_ATTRIBUTES: &str = "sealtrail.otlp.scope.attributes";
    pub const SCOPE_DROPPED_ATTRIBUTES: &str = "sealtrail.otlp.scope.dropped_attributes_count";
    /// The `schema_url` of the `ScopeSpans`/`ScopeLogs`.
    pub const SCOPE_SCHEMA_URL: &str = "sealtrail.otlp.scope.schema_url";
    /// W3C trace flags of a span, link or log record.
    pub const FLAGS: &str = "sealtrail.otlp.flags";
    pub const DROPPED_ATTRIBUTES: &str = "sealtrail.otlp.dropped_attributes_count";
    pub const DROPPED_EVENTS: &str = "sealtrail.otlp.dropped_events_count";
    pub const DROPPED_LINKS: &str = "sealtrail.otlp.dropped_links_count";
    /// A log body that is not a string, with its type (the `body` field holds its text form).
    pub const BODY: &str = crate::event::attr::OTLP_BODY;
    /// The `event_name` of a log record.
    pub const EVENT_NAME: &str = "sealtrail.otlp.event_name";

    /// The prefix of every key above.
    pub const PREFIX: &str = crate::event::attr::OTLP_PREFIX;
}

/// What a conversion rejected: the count and the first reason (for the partial-success
/// message, which names the item so a client can find it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub count: u64,
    pub first: Option<String>,
    /// Attributes removed because their key is reserved for the agent
    /// ([`crate::event::attr::is_reserved`]); the items themselves are kept.
    pub stripped: u64,
}

impl Rejected {
    fn add(&mut self, why: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(why());
        }
    }

    /// The message for a partial-success response.
    pub fn message(&self) -> String {
        match &self.first {
            Some(f) if self.count > 1 => format!("{} items rejected; first: {f}", self.count),
            Some(f) => format!("1 item rejected: {f}"),
            None => String::new(),
        }
    }
}

/// Counts the spans of a request (for the per-request limit, before any conversion).
pub fn count_spans(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

/// Counts the log records of a request.
pub fn count_logs(req: &ExportLogsServiceRequest) -> usize {
    req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
}

// ---------------------------------------------------------------------------------------------
// OTLP → events

/// Converts the spans of a request into events appended to `out`; spans with ids of the wrong
/// length are left out and counted in the result.
pub fn spans_to_events(req: ExportTraceServiceRequest, source: &SourceId, out: &mut Vec<Event>) -> Rejected {
    let _ = source; // spans have no `source` column; the parameter keeps both signals alike
    let mut rejected = Rejected::default();
    let mut st = 0;
    for (ri, rs) in req.resource_spans.into_iter().enumerate() {
        let resource = resource_attrs(rs.resource, rs.schema_url, &mut st);
        let service = service_of(&resource);
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let (scope_name, scope_attrs) = scope_attrs(ss.scope, ss.schema_url, false, &mut st);
            for (i, s) in ss.spans.into_iter().enumerate() {
                let at = || format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{i}]");
                match span_from(s, &resource, &service, &scope_name, &scope_attrs, &mut st) {
                    Ok(span) => out.push(Event::Span(span)),
                    Err(why) => rejected.add(|| format!("{}: {why}", at())),
                }
            }
        }
    }
    rejected.stripped = st;
    rejected
}

/// Converts the log records of a request into events appended to `out`. `observed_time` is
/// used for records that carry none (the agent observed them now).
pub fn logs_to_events(
    req: ExportLogsServiceRequest,
    source: &SourceId,
    observed_time: i64,
    out: &mut Vec<Event>,
) -> Rejected {
    let mut rejected = Rejected::default();
    let mut st = 0;
    for (ri, rl) in req.resource_logs.into_iter().enumerate() {
        let resource = resource_attrs(rl.resource, rl.schema_url, &mut st);
        let service = service_of(&resource);
        for (si, sl) in rl.scope_logs.into_iter().enumerate() {
            let (_, scope_attrs) = scope_attrs(sl.scope, sl.schema_url, true, &mut st);
            for (i, l) in sl.log_records.into_iter().enumerate() {
                let at = || format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{i}]");
                match log_from(l, &resource, &service, &scope_attrs, source, observed_time, &mut st) {
                    Ok(rec) => out.push(Event::Log(rec)),
                    Err(why) => rejected.add(|| format!("{}: {why}", at())),
                }
            }
        }
    }
    rejected.stripped = st;
    rejected
}

fn resource_attrs(r: Option<resource::Resource>, schema_url: String, stripped: &mut u64) -> Vec<KeyValue> {
    let mut attrs = Vec::new();
    if let Some(r) = r {
        attrs = network_attrs(r.attributes, stripped);
        push_count(&mut attrs, keys::RESOURCE_DROPPED_ATTRIBUTES, r.dropped_attributes_count);
    }
    push_str(&mut attrs, keys::RESOURCE_SCHEMA_URL, schema_url);
    attrs
}

/// The scope's name and the reserved attributes that carry the rest of it. For logs (which
/// have no scope column) the name goes into the attributes too.
fn scope_attrs(
    scope: Option<common::InstrumentationScope>,
    schema_url: String,
    name_as_attr: bool,
    stripped: &mut u64,
) -> (String, Vec<KeyValue>) {
    let mut attrs = Vec::new();
    let mut name = String::new();
    if let Some(s) = scope {
        name = s.name;
        if name_as_attr {
            push_str(&mut attrs, keys::SCOPE_NAME, name.clone());
        }
        push_str(&mut attrs, keys::SCOPE_VERSION, s.version);
        if !s.attributes.is_empty() {
            let scope_attrs = network_attrs(s.attributes, stripped);
            if !scope_attrs.is_empty() {
                attrs.push(KeyValue::new(keys::SCOPE_ATTRIBUTES, Value::Map(scope_attrs)));
            }
        }
        push_count(&mut attrs, keys::SCOPE_DROPPED_ATTRIBUTES, s.dropped_attributes_count);
    }
    push_str(&mut attrs, keys::SCOPE_SCHEMA_URL, schema_url);
    (name, attrs)
}

/// `service.name`, else `faas.name`, else empty.
fn service_of(resource: &[KeyValue]) -> String {
    for key in ["service.name", "faas.name"] {
        if let Some(Value::Str(s)) = find_attr(resource, key) {
            return s.clone();
        }
    }
    String::new()
}

fn span_from(
    s: trace::Span,
    resource: &[KeyValue],
    service: &str,
    scope_name: &str,
    scope_attrs: &[KeyValue],
    stripped: &mut u64,
) -> Result<Span, String> {
    let trace_id = id16(&s.trace_id, "traceId")?;
    let span_id = id8(&s.span_id, "spanId")?;
    let parent_span_id = opt_id8(&s.parent_span_id, "parentSpanId")?;
    let mut links = Vec::with_capacity(s.links.len());
    for (i, l) in s.links.into_iter().enumerate() {
        let mut attributes = network_attrs(l.attributes, stripped);
        push_count(&mut attributes, keys::FLAGS, l.flags);
        push_count(&mut attributes, keys::DROPPED_ATTRIBUTES, l.dropped_attributes_count);
        links.push(SpanLink {
            trace_id: id16(&l.trace_id, &format!("links[{i}].traceId"))?,
            span_id: id8(&l.span_id, &format!("links[{i}].spanId"))?,
            trace_state: l.trace_state,
            attributes,
        });
    }
    let mut attributes = network_attrs(s.attributes, stripped);
    attributes.extend_from_slice(scope_attrs);
    push_count(&mut attributes, keys::FLAGS, s.flags);
    push_count(&mut attributes, keys::DROPPED_ATTRIBUTES, s.dropped_attributes_count);
    push_count(&mut attributes, keys::DROPPED_EVENTS, s.dropped_events_count);
    push_count(&mut attributes, keys::DROPPED_LINKS, s.dropped_links_count);
    let events = s
        .events
        .into_iter()
        .map(|e| {
            let mut attributes = network_attrs(e.attributes, stripped);
            push_count(&mut attributes, keys::DROPPED_ATTRIBUTES, e.dropped_attributes_count);
            SpanEvent { time: nanos_in(e.time_unix_nano), name: e.name, attributes }
        })
        .collect();
    let (status_code, status_message) = s.status.map(|st| (st.code, st.message)).unwrap_or_default();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: s.trace_state,
        name: s.name,
        kind: s.kind,
        start_time: nanos_in(s.start_time_unix_nano),
        end_time: nanos_in(s.end_time_unix_nano),
        status_code,
        status_message,
        attributes,
        events,
        links,
        resource: resource.to_vec(),
        service: service.to_owned(),
        scope_name: scope_name.to_owned(),
        redactions: 0,
    })
}

fn log_from(
    l: logs::LogRecord,
    resource: &[KeyValue],
    service: &str,
    scope_attrs: &[KeyValue],
    source: &SourceId,
    observed_now: i64,
    stripped: &mut u64,
) -> Result<LogRecord, String> {
    let trace_id = if l.trace_id.is_empty() { None } else { Some(id16(&l.trace_id, "traceId")?) };
    let span_id = if l.span_id.is_empty() { None } else { Some(id8(&l.span_id, "spanId")?) };
    let mut attributes = network_attrs(l.attributes, stripped);
    attributes.extend_from_slice(scope_attrs);
    push_count(&mut attributes, keys::FLAGS, l.flags);
    push_count(&mut attributes, keys::DROPPED_ATTRIBUTES, l.dropped_attributes_count);
    push_str(&mut attributes, keys::EVENT_NAME, l.event_name);
    let body = match value_from(l.body) {
        Value::Str(s) => s,
        Value::Empty => String::new(),
        other => {
            let text = other.to_text();
            attributes.push(KeyValue::new(keys::BODY, other));
            text
        }
    };
    let observed = nanos_in(l.observed_time_unix_nano);
    Ok(LogRecord {
        time: nanos_in(l.time_unix_nano),
        observed_time: if observed == 0 { observed_now } else { observed },
        severity_text: l.severity_text,
        severity_number: l.severity_number,
        body,
        attributes,
        resource: resource.to_vec(),
        service: service.to_owned(),
        trace_id,
        span_id,
        source: source.clone(),
        redactions: 0,
    })
}

fn id16(b: &[u8], field: &str) -> Result<[u8; 16], String> {
    let id: [u8; 16] = b.try_into().map_err(|_| wrong_len(field, 16, b.len()))?;
    if id == [0; 16] {
        return Err(format!("{field} is all zeros (invalid)"));
    }
    Ok(id)
}

fn id8(b: &[u8], field: &str) -> Result<[u8; 8], String> {
    let id: [u8; 8] = b.try_into().map_err(|_| wrong_len(field, 8, b.len()))?;
    if id == [0; 8] {
        return Err(format!("{field} is all zeros (invalid)"));
    }
    Ok(id)
}

fn opt_id8(b: &[u8], field: &str) -> Result<Option<[u8; 8]>, String> {
    if b.is_empty() { Ok(None) } else { id8(b, field).map(Some) }
}

fn wrong_len(field: &str, want: usize, got: usize) -> String {
    format!("{field} must be {want} bytes ({} hex digits), got {got} bytes", want * 2)
}

/// OTLP times are unsigned; the model's are signed (0 = unknown). Past 2262 they saturate.
fn nanos_in(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn nanos_out(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

fn push_count(attrs: &mut Vec<KeyValue>, key: &str, n: u32) {
    if n != 0 {
        attrs.push(KeyValue::new(key, Value::Int(i64::from(n))));
    }
}

fn push_str(attrs: &mut Vec<KeyValue>, key: &str, s: String) {
    if !s.is_empty() {
        attrs.push(KeyValue::new(key, Value::Str(s)));
    }
}

/// Converts a list of attributes that came from a client, without the reserved keys (counted
/// in `stripped`), before the converter adds its own.
fn network_attrs(kvs: Vec<common::KeyValue>, stripped: &mut u64) -> Vec<KeyValue> {
    let mut attrs = attrs_from(kvs);
    *stripped += crate::event::attr::strip_reserved(&mut attrs);
    attrs
}

/// Converts OTLP attributes.
pub fn attrs_from(kvs: Vec<common::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter().map(|kv| KeyValue { key: kv.key, value: value_from(kv.value) }).collect()
}

/// Converts an OTLP value (arrays and maps recursively; prost's and the JSON decoder's depth
/// limits bound the recursion).
pub fn value_from(v: Option<common::AnyValue>) -> Value {
    use common::any_value::Value as V;
    match v.and_then(|v| v.value) {
        None => Value::Empty,
        Some(V::StringValue(s)) => Value::Str(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::Int(i),
        Some(V::DoubleValue(d)) => Value::Double(d),
        Some(V::BytesValue(b)) => Value::Bytes(b),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(|v| value_from(Some(v))).collect()),
        Some(V::KvlistValue(m)) => Value::Map(attrs_from(m.values)),
        // A string-table index only means something inside a profiles message (which this
        // agent does not accept); without the table there is no value to keep.
        Some(V::StringValueStrindex(_)) => Value::Empty,
    }
}

// ---------------------------------------------------------------------------------------------
// events → OTLP

/// Builds one trace export request from the spans among `events` (log records are skipped),
/// grouping spans that share a resource and a scope.
pub fn traces_from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> ExportTraceServiceRequest {
    let mut out: Vec<trace::ResourceSpans> = Vec::new();
    let mut groups: Vec<Group<'a>> = Vec::new();
    for e in events {
        let Event::Span(s) = e else { continue };
        let (scope_key, span_attrs) = ScopeKey::split(&s.attributes, Some(&s.scope_name));
        let ri = match groups.iter().position(|(r, _)| *r == &s.resource[..]) {
            Some(i) => i,
            None => {
                let (resource, schema_url) = resource_to(&s.resource);
                out.push(trace::ResourceSpans {
                    resource: Some(resource),
                    scope_spans: Vec::new(),
                    schema_url,
                });
                groups.push((&s.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[ri].1;
        let si = match scopes.iter().find(|(k, _)| *k == scope_key) {
            Some((_, i)) => *i,
            None => {
                let rs = &mut out[ri];
                let (scope, schema_url) = scope_key.to_proto();
                rs.scope_spans.push(trace::ScopeSpans { scope, spans: Vec::new(), schema_url });
                scopes.push((scope_key, rs.scope_spans.len() - 1));
                rs.scope_spans.len() - 1
            }
        };
        out[ri].scope_spans[si].spans.push(span_to(s, span_attrs));
    }
    ExportTraceServiceRequest { resource_spans: out }
}

/// Builds one logs export request from the log records among `events` (spans are skipped).
pub fn logs_from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> ExportLogsServiceRequest {
    let mut out: Vec<logs::ResourceLogs> = Vec::new();
    let mut groups: Vec<Group<'a>> = Vec::new();
    for e in events {
        let Event::Log(l) = e else { continue };
        let (scope_key, rec_attrs) = ScopeKey::split(&l.attributes, None);
        let ri = match groups.iter().position(|(r, _)| *r == &l.resource[..]) {
            Some(i) => i,
            None => {
                let (resource, schema_url) = resource_to(&l.resource);
                out.push(logs::ResourceLogs { resource: Some(resource), scope_logs: Vec::new(), schema_url });
                groups.push((&l.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[ri].1;
        let si = match scopes.iter().find(|(k, _)| *k == scope_key) {
            Some((_, i)) => *i,
            None => {
                let rl = &mut out[ri];
                let (scope, schema_url) = scope_key.to_proto();
                rl.scope_logs.push(logs::ScopeLogs { scope, log_records: Vec::new(), schema_url });
                scopes.push((scope_key, rl.scope_logs.len() - 1));
                rl.scope_logs.len() - 1
            }
        };
        out[ri].scope_logs[si].log_records.push(log_to(l, rec_attrs));
    }
    ExportLogsServiceRequest { resource_logs: out }
}

/// A resource already in the request being built, and its scopes with their index.
type Group<'a> = (&'a [KeyValue], Vec<(ScopeKey<'a>, usize)>);

/// The scope of an event, gathered from its reserved attributes (borrowed: grouping compares
/// these without copying).
#[derive(Debug, Default, PartialEq)]
struct ScopeKey<'a> {
    name: &'a str,
    version: &'a str,
    attributes: Option<&'a [KeyValue]>,
    dropped: i64,
    schema_url: &'a str,
}

impl<'a> ScopeKey<'a> {
    /// Splits attributes into the scope they describe and the event's own attributes (which
    /// still include the event-level reserved keys such as flags).
    fn split(attrs: &'a [KeyValue], name: Option<&'a str>) -> (ScopeKey<'a>, Vec<&'a KeyValue>) {
        let mut k = ScopeKey { name: name.unwrap_or(""), ..ScopeKey::default() };
        let mut rest = Vec::with_capacity(attrs.len());
        for kv in attrs {
            match (kv.key.as_str(), &kv.value) {
                (keys::SCOPE_NAME, Value::Str(s)) if name.is_none() => k.name = s,
                (keys::SCOPE_VERSION, Value::Str(s)) => k.version = s,
                (keys::SCOPE_ATTRIBUTES, Value::Map(m)) => k.attributes = Some(m),
                (keys::SCOPE_DROPPED_ATTRIBUTES, Value::Int(n)) => k.dropped = *n,
                (keys::SCOPE_SCHEMA_URL, Value::Str(s)) => k.schema_url = s,
                _ => rest.push(kv),
            }
        }
        (k, rest)
    }

    fn to_proto(&self) -> (Option<common::InstrumentationScope>, String) {
        let empty =
            self.name.is_empty() && self.version.is_empty() && self.attributes.is_none() && self.dropped == 0;
        let scope = (!empty).then(|| common::InstrumentationScope {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            attributes: self.attributes.map(attrs_to).unwrap_or_default(),
            dropped_attributes_count: count_out(self.dropped),
        });
        (scope, self.schema_url.to_owned())
    }
}

fn resource_to(attrs: &[KeyValue]) -> (resource::Resource, String) {
    let mut r = resource::Resource::default();
    let mut schema_url = String::new();
    for kv in attrs {
        match (kv.key.as_str(), &kv.value) {
            (keys::RESOURCE_SCHEMA_URL, Value::Str(s)) => schema_url = s.clone(),
            (keys::RESOURCE_DROPPED_ATTRIBUTES, Value::Int(n)) => r.dropped_attributes_count = count_out(*n),
            _ => r.attributes.push(kv_to(kv)),
        }
    }
    (r, schema_url)
}

fn span_to(s: &Span, attrs: Vec<&KeyValue>) -> trace::Span {
    let mut out = trace::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: s.kind,
        start_time_unix_nano: nanos_out(s.start_time),
        end_time_unix_nano: nanos_out(s.end_time),
        status: (s.status_code != 0 || !s.status_message.is_empty())
            .then(|| trace::Status { message: s.status_message.clone(), code: s.status_code }),
        ..Default::default()
    };
    for kv in attrs {
        match (kv.key.as_str(), &kv.value) {
            (keys::FLAGS, Value::Int(n)) => out.flags = count_out(*n),
            (keys::DROPPED_ATTRIBUTES, Value::Int(n)) => out.dropped_attributes_count = count_out(*n),
            (keys::DROPPED_EVENTS, Value::Int(n)) => out.dropped_events_count = count_out(*n),
            (keys::DROPPED_LINKS, Value::Int(n)) => out.dropped_links_count = count_out(*n),
            _ => out.attributes.push(kv_to(kv)),
        }
    }
    out.events = s
        .events
        .iter()
        .map(|e| {
            let mut ev = trace::span::Event {
                time_unix_nano: nanos_out(e.time),
                name: e.name.clone(),
                ..Default::default()
            };
            for kv in &e.attributes {
                match (kv.key.as_str(), &kv.value) {
                    (keys::DROPPED_ATTRIBUTES, Value::Int(n)) => ev.dropped_attributes_count = count_out(*n),
                    _ => ev.attributes.push(kv_to(kv)),
                }
            }
            ev
        })
        .collect();
    out.links = s
        .links
        .iter()
        .map(|l| {
            let mut link = trace::span::Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                ..Default::default()
            };
            for kv in &l.attributes {
                match (kv.key.as_str(), &kv.value) {
                    (keys::FLAGS, Value::Int(n)) => link.flags = count_out(*n),
                    (keys::DROPPED_ATTRIBUTES, Value::Int(n)) => {
                        link.dropped_attributes_count = count_out(*n)
                    }
                    _ => link.attributes.push(kv_to(kv)),
                }
            }
            link
        })
        .collect();
    out
}

fn log_to(l: &LogRecord, attrs: Vec<&KeyValue>) -> logs::LogRecord {
    let mut out = logs::LogRecord {
        time_unix_nano: nanos_out(l.time),
        observed_time_unix_nano: nanos_out(l.observed_time),
        severity_number: l.severity_number,
        severity_text: l.severity_text.clone(),
        trace_id: l.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: l.span_id.map(|t| t.to_vec()).unwrap_or_default(),
        ..Default::default()
    };
    let mut body = None;
    for kv in attrs {
        match (kv.key.as_str(), &kv.value) {
            (keys::FLAGS, Value::Int(n)) => out.flags = count_out(*n),
            (keys::DROPPED_ATTRIBUTES, Value::Int(n)) => out.dropped_attributes_count = count_out(*n),
            (keys::EVENT_NAME, Value::Str(s)) => out.event_name = s.clone(),
            (keys::BODY, v) => body = Some(value_to(v)),
            _ => out.attributes.push(kv_to(kv)),
        }
    }
    out.body = body.or_else(|| {
        (!l.body.is_empty())
            .then(|| common::AnyValue { value: Some(common::any_value::Value::StringValue(l.body.clone())) })
    });
    out
}

fn count_out(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn kv_to(kv: &KeyValue) -> common::KeyValue {
    common::KeyValue { key: kv.key.clone(), value: Some(value_to(&kv.value)), key_strindex: 0 }
}

fn attrs_to(attrs: &[KeyValue]) -> Vec<common::KeyValue> {
    attrs.iter().map(kv_to).collect()
}

/// Converts a value to OTLP.
pub fn value_to(v: &Value) -> common::AnyValue {
    use common::any_value::Value as V;
    let value = match v {
        Value::Empty => None,
        Value::Str(s) => Some(V::StringValue(s.clone())),
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Int(i) => Some(V::IntValue(*i)),
        Value::Double(d) => Some(V::DoubleValue(*d)),
        Value::Bytes(b) => Some(V::BytesValue(b.clone())),
        Value::Array(a) => {
            Some(V::ArrayValue(common::ArrayValue { values: a.iter().map(value_to).collect() }))
        }
        Value::Map(m) => Some(V::KvlistValue(common::KeyValueList { values: attrs_to(m) })),
    };
    common::AnyValue { value }
}

#[cfg(test)]
mod tests;
