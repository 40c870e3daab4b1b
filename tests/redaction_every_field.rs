//! Issue 11, "one visitor over every text field of an event": random log records and spans
//! with a card number (plain and grouped) and a URL password in every string they have (map
//! keys, nested arrays and maps, span events, links, scope, service, severity text, trace
//! states, status messages, bodies and the typed copy of a non-string body), and card digits in
//! integer, double and bytes values, go through the `redact` transform and then through the
//! real encoder of every output: a sealed segment (written with the segment writer, read back
//! with the reader), the console sink (text and JSON), the tail stream, and the OTLP forward
//! (events → OTLP protobuf). Neither secret may survive in any of them.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use proptest::prelude::*;
use prost::Message as _;
use sealtrail::component::{Transform, TransformContext};
use sealtrail::event::{Event, KeyValue, LogRecord, Signal, Span, SpanEvent, SpanLink, Value, attr};
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::metrics::ComponentMetrics;
use sealtrail::otlp::convert;
use sealtrail::segment::columns::Columns;
use sealtrail::segment::reader::{Filter, Segment, SegmentRetriever};
use sealtrail::segment::writer::{SegmentWriter, WriteOptions};
use sealtrail::sinks::console::{Encoding, encode};
use sealtrail::transforms::redact::{RedactConfig, RedactTransform};

const CARD: &str = "4111111111111111";
/// What must not appear in any output.
const NEEDLES: [&str; 4] = [CARD, "4111 1111 1111 1111", "4111-1111-1111-1111", "hunter2secret"];

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(CARD.to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("4111-1111-1111-1111".to_owned()),
        Just("https://u:hunter2secret@h/".to_owned()),
    ]
}

/// Some words, a secret, some words.
fn text() -> impl Strategy<Value = String> {
    ("[a-z]{1,8}( [a-z]{1,8}){0,2}", secret(), "[a-z]{1,8}( [a-z]{1,8}){0,2}")
        .prop_map(|(a, s, b)| format!("{a} {s} {b}"))
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::Str),
        1 => Just(Value::Int(4111111111111111)),
        1 => Just(Value::Double(4111111111111111.0)),
        // Its hex form is the card number.
        1 => Just(Value::Bytes(hex::decode(CARD).unwrap())),
        1 => Just(Value::Bool(true)),
        1 => Just(Value::Empty),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|kvs| {
                Value::Map(kvs.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
            }),
        ]
    })
}

fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((text(), value()), 1..4)
        .prop_map(|kvs| kvs.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
}

const T0: i64 = 1_795_000_000_000_000_000;

fn log() -> impl Strategy<Value = Event> {
    (text(), text(), text(), attrs(), attrs(), prop::option::of(value())).prop_map(
        |(body, severity_text, service, mut attributes, mut resource, typed)| {
            resource.push(KeyValue::new("service.name", service.clone()));
            // A non-string OTLP body: its text in `body`, the typed copy as an attribute (as
            // the OTLP conversion writes it).
            let body = match typed {
                Some(v) if !matches!(v, Value::Str(_) | Value::Empty) => {
                    let text = v.to_text();
                    attributes.push(KeyValue::new(attr::OTLP_BODY, v));
                    text
                }
                _ => body,
            };
            Event::Log(LogRecord {
                time: T0,
                observed_time: T0,
                severity_text,
                severity_number: 17,
                body,
                attributes,
                resource,
                service,
                trace_id: Some([1; 16]),
                span_id: Some([2; 8]),
                source: "otlp".into(),
                redactions: 0,
            })
        },
    )
}

fn span() -> impl Strategy<Value = Event> {
    (
        (text(), text(), text(), text(), text()),
        attrs(),
        attrs(),
        prop::collection::vec((text(), attrs()), 0..3),
        prop::collection::vec((text(), attrs()), 0..3),
    )
        .prop_map(
            |(
                (name, trace_state, status_message, service, scope_name),
                attributes,
                mut resource,
                events,
                links,
            )| {
                resource.push(KeyValue::new("service.name", service.clone()));
                Event::Span(Span {
                    trace_id: [3; 16],
                    span_id: [4; 8],
                    parent_span_id: Some([5; 8]),
                    trace_state,
                    name,
                    kind: 2,
                    start_time: T0,
                    end_time: T0 + 1_000,
                    status_code: 2,
                    status_message,
                    attributes,
                    events: events
                        .into_iter()
                        .map(|(name, attributes)| SpanEvent { time: T0 + 10, name, attributes })
                        .collect(),
                    links: links
                        .into_iter()
                        .map(|(trace_state, attributes)| SpanLink {
                            trace_id: [6; 16],
                            span_id: [7; 8],
                            trace_state,
                            attributes,
                        })
                        .collect(),
                    resource,
                    service,
                    scope_name,
                    redactions: 0,
                })
            },
        )
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(prop_oneof![log(), span()], 1..5)
}

/// Every string of every column of a record batch, one per line.
fn batch_text(b: &RecordBatch, out: &mut String) {
    for col in b.columns() {
        match col.data_type() {
            DataType::Utf8 => strings(col.as_string::<i32>(), out),
            DataType::Map(..) => {
                let m = col.as_map();
                strings(m.keys().as_string::<i32>(), out);
                strings(m.values().as_string::<i32>(), out);
            }
            _ => out.push_str(&format!("{col:?}\n")),
        }
    }
}

fn strings(a: &arrow_array::StringArray, out: &mut String) {
    for i in 0..a.len() {
        if a.is_valid(i) {
            out.push_str(a.value(i));
            out.push('\n');
        }
    }
}

/// Writes the events of `signal` into a sealed segment and reads every column back.
fn sealed_text(root: &Path, keys: &Arc<Keyring>, events: &[Event], signal: Signal, out: &mut String) {
    let of_signal: Vec<&Event> = events.iter().filter(|e| e.signal() == signal).collect();
    if of_signal.is_empty() {
        return;
    }
    let provider = LocalProvider::new(keys.clone()).creating("default");
    let mut w =
        SegmentWriter::create(root, signal, T0, &provider, "default", &WriteOptions::default()).unwrap();
    let mut cols = Columns::new(signal, of_signal.len());
    for e in &of_signal {
        cols.append(e);
    }
    w.write(&cols.finish()).unwrap();
    let sealed = w.seal().unwrap();
    let retriever = Arc::new(SegmentRetriever::new(Arc::new(LocalProvider::new(keys.clone()))));
    let seg = Segment::open(&sealed.path, retriever).unwrap();
    let mut rows = 0;
    for b in seg.read(&Filter::default(), 1024).unwrap() {
        let b = b.unwrap();
        rows += b.num_rows();
        batch_text(&b, out);
    }
    assert_eq!(rows, of_signal.len());
}

/// The OTLP forward: the export requests the `otlp` sink sends, as protobuf bytes, and their
/// content decoded again (numbers and bytes as text, as JSON renders them).
fn otlp_text(events: &[Event], out: &mut String) {
    let traces = convert::traces_from_events(events);
    let logs = convert::logs_from_events(events);
    let (tb, lb) = (traces.encode_to_vec(), logs.encode_to_vec());
    out.push_str(&String::from_utf8_lossy(&tb));
    out.push_str(&String::from_utf8_lossy(&lb));
    let mut back = Vec::new();
    convert::spans_to_events(
        sealtrail::otlp::ExportTraceServiceRequest::decode(&tb[..]).unwrap(),
        &"x".into(),
        &mut back,
    );
    convert::logs_to_events(
        sealtrail::otlp::ExportLogsServiceRequest::decode(&lb[..]).unwrap(),
        &"x".into(),
        1,
        &mut back,
    );
    for e in &back {
        out.push_str(&e.to_json().to_string());
    }
}

fn leaked(what: &str, text: &str) -> Option<String> {
    NEEDLES.iter().find(|n| text.contains(*n)).map(|n| format!("{what} holds {n:?}:\n{text}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_survives_in_any_output(input in events()) {
        // The input does carry the secrets (so that this test can fail).
        let raw: String = input.iter().map(|e| e.to_json().to_string()).collect();
        prop_assert!(NEEDLES.iter().any(|n| raw.contains(n)));

        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Keyring::open(dir.path().join("keys")));
        let redactor = RedactConfig::default().redactor(&dir.path().join("keys")).unwrap();
        let mut t = RedactTransform::new(Arc::new(redactor));
        let cx = TransformContext { id: "scrub".into(), metrics: Arc::new(ComponentMetrics::new("transform.scrub")) };
        let out = t.transform(Arc::new(input), &cx).unwrap();
        prop_assert!(t.flush(&cx).is_none());

        let mut console = Vec::new();
        let mut tail = Vec::new();
        for e in out.iter() {
            encode(e, Encoding::Text, &mut console);
            encode(e, Encoding::Json, &mut console);
            sealtrail::sinks::tail::hub::encode_line(e, &mut tail);
        }
        let mut sealed = String::new();
        sealed_text(&dir.path().join("data"), &keys, &out, Signal::Logs, &mut sealed);
        sealed_text(&dir.path().join("data"), &keys, &out, Signal::Spans, &mut sealed);
        let mut otlp = String::new();
        otlp_text(&out, &mut otlp);

        for (what, text) in [
            ("console", String::from_utf8_lossy(&console).into_owned()),
            ("tail", String::from_utf8_lossy(&tail).into_owned()),
            ("sealed segment", sealed),
            ("otlp forward", otlp),
        ] {
            if let Some(why) = leaked(what, &text) {
                prop_assert!(false, "{}", why);
            }
        }
    }
}
