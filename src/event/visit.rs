//! One walk over every text of an event: the single list of what the `redact` transform (and
//! anything else that must see every string an output can show) visits.
//!
//! [`visit_event`] hands each string of an event to a [`TextVisitor`] together with where it
//! is ([`Place`]): a field of the event, an attribute or map key, or a value with the key it
//! belongs to. The walk destructures every event type exhaustively (no `..` rest pattern), so
//! adding a field to [`LogRecord`], [`Span`], [`SpanEvent`], [`SpanLink`], [`KeyValue`] or a
//! variant to [`Value`] does not compile until someone decides here whether it is visited.
//!
//! # What is visited, and why the rest is not
//!
//! Visited, because some output (sealed columns, `query`, tail, console, the OTLP forward)
//! renders it as text:
//! - free text: `body`, `severity_text`, `service`, span `name`, `trace_state`,
//!   `status_message`, `scope_name`, span event `name`, link `trace_state`;
//! - every attribute list (`attributes`, `resource`, span event and link attributes): each
//!   key, and each value recursively through arrays and maps (map keys included);
//! - non-string scalars that outputs print as text: `Int` (decimal), `Double` (Rust's
//!   shortest round-trip form, as the segment columns write it) and `Bytes` (lower-case hex).
//!   They are offered as text; when the visitor changes that text the value becomes a
//!   `Value::Str` of the changed text (a number with a card in it cannot stay a number once
//!   masked).
//!
//! Not visited:
//! - `Bool` and `Empty` values: `true`, `false` and nothing cannot hold a secret;
//! - ids (`trace_id`, `span_id`, `parent_span_id`, link ids): fixed-size random binary,
//!   rendered as hex of a fixed length; they identify, they do not carry data, and masking them
//!   would break correlation;
//! - times (`time`, `observed_time`, `start_time`, `end_time`, event `time`): rendered as
//!   RFC 3339 or nanoseconds, they are the event's position in time;
//! - enums and counters (`severity_number`, `kind`, `status_code`, `redactions`): small
//!   integers with a fixed meaning;
//! - `source`: the id of the component that produced the event, written by the operator in
//!   the configuration, never by the data.

use std::fmt::Write as _;

use super::{Event, KeyValue, LogRecord, Span, SpanEvent, SpanLink, Value};

/// A text field of an event (its column name in DESIGN.md "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    Body,
    SeverityText,
    Service,
    Name,
    TraceState,
    StatusMessage,
    ScopeName,
    EventName,
    LinkTraceState,
}

/// Where a visited string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'k> {
    /// A text field of the event.
    Field(Field),
    /// The key of an attribute or of a map entry.
    Key,
    /// A value (a string, or a scalar rendered as text), with the key of its attribute or map
    /// entry; the elements of an array take the array's key.
    Value { key: &'k str },
}

impl<'k> Place<'k> {
    /// The key a string is the value of, for key-aware redaction: the attribute or map key of
    /// a value, and `service.name` for the `service` field (it is derived from that resource
    /// attribute, or from `faas.name`, and must be treated like it). `None` for free text and
    /// for keys themselves.
    pub fn key(&self) -> Option<&'k str> {
        match *self {
            Place::Value { key } => Some(key),
            Place::Field(Field::Service) => Some("service.name"),
            Place::Field(_) | Place::Key => None,
        }
    }
}

/// What [`visit_event`] calls for each string. It may change the string in place.
pub trait TextVisitor {
    fn visit(&mut self, place: Place<'_>, text: &mut String);
}

impl<F: FnMut(Place<'_>, &mut String)> TextVisitor for F {
    fn visit(&mut self, place: Place<'_>, text: &mut String) {
        self(place, text)
    }
}

/// Visits every text of an event (see the module documentation for the list).
pub fn visit_event<V: TextVisitor + ?Sized>(e: &mut Event, v: &mut V) {
    let mut w = Walker { v, scratch: String::new(), original: String::new() };
    match e {
        Event::Log(l) => w.log(l),
        Event::Span(s) => w.span(s),
    }
}

/// The walk, with two buffers reused for scalars rendered as text.
struct Walker<'v, V: TextVisitor + ?Sized> {
    v: &'v mut V,
    scratch: String,
    original: String,
}

impl<V: TextVisitor + ?Sized> Walker<'_, V> {
    fn field(&mut self, f: Field, text: &mut String) {
        self.v.visit(Place::Field(f), text);
    }

    fn log(&mut self, l: &mut LogRecord) {
        let LogRecord {
            time: _,
            observed_time: _,
            severity_text,
            severity_number: _,
            body,
            attributes,
            resource,
            service,
            trace_id: _,
            span_id: _,
            source: _,
            redactions: _,
        } = l;
        self.field(Field::Body, body);
        self.field(Field::SeverityText, severity_text);
        self.field(Field::Service, service);
        self.attrs(attributes);
        self.attrs(resource);
    }

    fn span(&mut self, s: &mut Span) {
        let Span {
            trace_id: _,
            span_id: _,
            parent_span_id: _,
            trace_state,
            name,
            kind: _,
            start_time: _,
            end_time: _,
            status_code: _,
            status_message,
            attributes,
            events,
            links,
            resource,
            service,
            scope_name,
            redactions: _,
        } = s;
        self.field(Field::Name, name);
        self.field(Field::TraceState, trace_state);
        self.field(Field::StatusMessage, status_message);
        self.field(Field::Service, service);
        self.field(Field::ScopeName, scope_name);
        self.attrs(attributes);
        self.attrs(resource);
        for e in events {
            let SpanEvent { time: _, name, attributes } = e;
            self.field(Field::EventName, name);
            self.attrs(attributes);
        }
        for l in links {
            let SpanLink { trace_id: _, span_id: _, trace_state, attributes } = l;
            self.field(Field::LinkTraceState, trace_state);
            self.attrs(attributes);
        }
    }

    fn attrs(&mut self, attrs: &mut [KeyValue]) {
        for kv in attrs {
            let KeyValue { key, value } = kv;
            self.v.visit(Place::Key, key);
            self.value(key, value);
        }
    }

    fn value(&mut self, key: &str, v: &mut Value) {
        match v {
            Value::Str(s) => self.v.visit(Place::Value { key }, s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(key, x)),
            Value::Map(m) => self.attrs(m),
            Value::Int(i) => {
                self.scratch.clear();
                // Writing into a String cannot fail.
                let _ = write!(self.scratch, "{i}");
                self.scalar(key, v);
            }
            Value::Double(d) => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{d}");
                self.scalar(key, v);
            }
            Value::Bytes(b) => {
                self.scratch.clear();
                self.scratch.reserve(b.len() * 2);
                for byte in b.iter() {
                    let _ = write!(self.scratch, "{byte:02x}");
                }
                self.scalar(key, v);
            }
            Value::Empty | Value::Bool(_) => {}
        }
    }

    /// Offers a scalar's text form (in `scratch`) to the visitor; replaces the value with the
    /// changed text if the visitor changed it.
    fn scalar(&mut self, key: &str, v: &mut Value) {
        self.original.clear();
        self.original.push_str(&self.scratch);
        self.v.visit(Place::Value { key }, &mut self.scratch);
        if self.scratch != self.original {
            *v = Value::Str(std::mem::take(&mut self.scratch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every visited string with its place.
    fn visited(e: &mut Event) -> Vec<(String, Option<String>, String)> {
        let mut out = Vec::new();
        visit_event(e, &mut |p: Place<'_>, t: &mut String| {
            out.push((format!("{p:?}"), p.key().map(str::to_owned), t.clone()));
        });
        out
    }

    #[test]
    fn every_text_of_a_span_is_visited_with_its_key() {
        let mut e = Event::Span(Span {
            name: "n".into(),
            trace_state: "ts".into(),
            status_message: "sm".into(),
            service: "svc".into(),
            scope_name: "sc".into(),
            attributes: vec![KeyValue::new(
                "m",
                Value::Map(vec![KeyValue::new(
                    "arr",
                    Value::Array(vec![Value::Int(7), Value::Double(0.5), Value::Bytes(vec![0xab])]),
                )]),
            )],
            events: vec![SpanEvent {
                name: "en".into(),
                attributes: vec![KeyValue::new("ek", true)],
                time: 1,
            }],
            links: vec![SpanLink { trace_state: "lts".into(), ..SpanLink::default() }],
            resource: vec![KeyValue::new("rk", "rv")],
            ..Span::default()
        });
        let texts: Vec<(Option<String>, String)> =
            visited(&mut e).into_iter().map(|(_, k, t)| (k, t)).collect();
        let k = |s: &str| Some(s.to_owned());
        assert_eq!(
            texts,
            vec![
                (None, "n".into()),
                (None, "ts".into()),
                (None, "sm".into()),
                (k("service.name"), "svc".into()),
                (None, "sc".into()),
                (None, "m".into()),
                (None, "arr".into()),
                (k("arr"), "7".into()),
                (k("arr"), "0.5".into()),
                (k("arr"), "ab".into()),
                (None, "rk".into()),
                (k("rk"), "rv".into()),
                (None, "en".into()),
                // `ek` is a Bool: its key is visited, its value cannot hold text.
                (None, "ek".into()),
                (None, "lts".into()),
            ]
        );
    }

    #[test]
    fn a_changed_scalar_becomes_a_string_and_an_unchanged_one_stays() {
        let mut e = Event::Log(LogRecord {
            attributes: vec![
                KeyValue::new("a", Value::Int(1234)),
                KeyValue::new("b", Value::Int(99)),
                KeyValue::new("c", Value::Double(1234.0)),
                KeyValue::new("d", Value::Bytes(vec![0x12, 0x34])),
            ],
            ..LogRecord::default()
        });
        visit_event(&mut e, &mut |_: Place<'_>, t: &mut String| {
            if t.contains("1234") {
                *t = t.replace("1234", "****");
            }
        });
        let Event::Log(l) = e else { unreachable!() };
        let values: Vec<&Value> = l.attributes.iter().map(|kv| &kv.value).collect();
        assert_eq!(
            values,
            vec![&Value::from("****"), &Value::Int(99), &Value::from("****"), &Value::from("****")]
        );
    }
}
