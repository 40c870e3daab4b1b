//! The JSON form of events: used by the console sink, the tail stream and `query --format
//! jsonl`. Keys are the field names of ARCHITECTURE.md "Formats"; times are RFC 3339 in UTC with
//! nanoseconds (null when unknown); ids are lower-case hex.

use serde_json::{Map, Value as J, json};

use super::{Event, LogRecord, Span, attrs_to_json, severity};

/// Formats UTC nanoseconds since the epoch as RFC 3339 (`2026-11-27T18:13:22.123456789Z`).
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, sub) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => nanos.to_string(),
    }
}

fn time(nanos: i64) -> J {
    if nanos == 0 { J::Null } else { J::String(rfc3339(nanos)) }
}

fn opt_hex(b: Option<&[u8]>) -> J {
    b.map(|b| J::String(hex::encode(b))).unwrap_or(J::Null)
}

impl Event {
    /// The event as a JSON object, with a `signal` key (`logs` or `spans`).
    pub fn to_json(&self) -> J {
        match self {
            Event::Log(l) => log_json(l),
            Event::Span(s) => span_json(s),
        }
    }
}

fn log_json(l: &LogRecord) -> J {
    let mut m = Map::new();
    m.insert("signal".into(), "logs".into());
    m.insert("time".into(), time(l.time));
    m.insert("observed_time".into(), time(l.observed_time));
    let sev =
        if l.severity_text.is_empty() { severity::level_name(l.severity_number) } else { &l.severity_text };
    m.insert("severity_text".into(), sev.into());
    m.insert("severity_number".into(), l.severity_number.into());
    m.insert("body".into(), l.body.clone().into());
    m.insert("attributes".into(), attrs_to_json(&l.attributes));
    m.insert("resource".into(), attrs_to_json(&l.resource));
    m.insert("service".into(), l.service.clone().into());
    m.insert("trace_id".into(), opt_hex(l.trace_id.as_ref().map(|t| &t[..])));
    m.insert("span_id".into(), opt_hex(l.span_id.as_ref().map(|t| &t[..])));
    m.insert("source".into(), l.source.to_string().into());
    m.insert("redactions".into(), l.redactions.into());
    J::Object(m)
}

fn span_json(s: &Span) -> J {
    json!({
        "signal": "spans",
        "trace_id": hex::encode(s.trace_id),
        "span_id": hex::encode(s.span_id),
        "parent_span_id": opt_hex(s.parent_span_id.as_ref().map(|t| &t[..])),
        "trace_state": s.trace_state,
        "name": s.name,
        "kind": s.kind,
        "start_time": time(s.start_time),
        "end_time": time(s.end_time),
        "status_code": s.status_code,
        "status_message": s.status_message,
        "attributes": attrs_to_json(&s.attributes),
        "events": s.events.iter().map(|e| json!({
            "time": time(e.time), "name": e.name, "attributes": attrs_to_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": s.links.iter().map(|l| json!({
            "trace_id": hex::encode(l.trace_id), "span_id": hex::encode(l.span_id),
            "trace_state": l.trace_state, "attributes": attrs_to_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "resource": attrs_to_json(&s.resource),
        "service": s.service,
        "scope_name": s.scope_name,
        "redactions": s.redactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500_000_000_123_456_789), "2017-07-14T02:40:00.123456789Z");
    }
}
