//! Round trips OTLP → events → OTLP over every field, and the rejection of bad ids.

use super::*;
use crate::otlp::proto::common::{AnyValue, ArrayValue, InstrumentationScope, KeyValueList, any_value};

fn s(v: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(v.into())) }
}

fn kv(k: &str, v: AnyValue) -> common::KeyValue {
    common::KeyValue { key: k.into(), value: Some(v), key_strindex: 0 }
}

/// A value of every type, nested: arrays in maps in arrays, bytes, an empty value.
fn every_value() -> AnyValue {
    use any_value::Value as V;
    AnyValue {
        value: Some(V::KvlistValue(KeyValueList {
            values: vec![
                kv("s", s("text")),
                kv("b", AnyValue { value: Some(V::BoolValue(true)) }),
                kv("i", AnyValue { value: Some(V::IntValue(-9_007_199_254_740_993)) }),
                kv("d", AnyValue { value: Some(V::DoubleValue(0.25)) }),
                kv("bytes", AnyValue { value: Some(V::BytesValue(vec![0, 1, 0xff])) }),
                kv("empty", AnyValue { value: None }),
                kv(
                    "arr",
                    AnyValue {
                        value: Some(V::ArrayValue(ArrayValue {
                            values: vec![
                                s("x"),
                                AnyValue {
                                    value: Some(V::KvlistValue(KeyValueList {
                                        values: vec![kv("deep", s("y"))],
                                    })),
                                },
                                AnyValue { value: Some(V::ArrayValue(ArrayValue { values: vec![] })) },
                            ],
                        })),
                    },
                ),
            ],
        })),
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.test".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", s("v"))],
        dropped_attributes_count: 2,
    }
}

fn resource() -> resource::Resource {
    resource::Resource {
        attributes: vec![kv("service.name", s("checkout")), kv("nested", every_value())],
        dropped_attributes_count: 1,
        entity_refs: vec![],
    }
}

pub(crate) fn rich_traces() -> ExportTraceServiceRequest {
    let span = |n: u8, parent: Vec<u8>| trace::Span {
        trace_id: vec![n; 16],
        span_id: vec![n + 1; 8],
        trace_state: "k=v".into(),
        parent_span_id: parent,
        flags: 0x301,
        name: format!("span {n}"),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        attributes: vec![kv("all", every_value()), kv("plain", s("p"))],
        dropped_attributes_count: 3,
        events: vec![trace::span::Event {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "exception".into(),
            attributes: vec![kv("exception.message", s("boom"))],
            dropped_attributes_count: 4,
        }],
        dropped_events_count: 5,
        links: vec![trace::span::Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("link.attr", every_value())],
            dropped_attributes_count: 6,
            flags: 1,
        }],
        dropped_links_count: 7,
        status: Some(trace::Status { message: "bad".into(), code: 2 }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            trace::ResourceSpans {
                resource: Some(resource()),
                scope_spans: vec![
                    trace::ScopeSpans {
                        scope: Some(scope()),
                        spans: vec![span(1, vec![]), span(3, vec![2; 8])],
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                    },
                    trace::ScopeSpans {
                        scope: None,
                        spans: vec![span(5, vec![4; 8])],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.20.0".into(),
            },
            trace::ResourceSpans {
                resource: Some(resource::Resource {
                    attributes: vec![kv("faas.name", s("fn"))],
                    ..Default::default()
                }),
                scope_spans: vec![trace::ScopeSpans {
                    scope: Some(InstrumentationScope { name: "other".into(), ..Default::default() }),
                    spans: vec![trace::Span { status: None, ..span(7, vec![]) }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

pub(crate) fn rich_logs() -> ExportLogsServiceRequest {
    let rec = |body: AnyValue, n: u8| logs::LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000 + u64::from(n),
        observed_time_unix_nano: 1_700_000_001_000_000_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(body),
        attributes: vec![kv("all", every_value())],
        dropped_attributes_count: 2,
        flags: 1,
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        event_name: "payment.failed".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![logs::ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![logs::ScopeLogs {
                scope: Some(scope()),
                log_records: vec![
                    rec(s("a string body"), 1),
                    rec(every_value(), 2),
                    logs::LogRecord { trace_id: vec![], span_id: vec![], ..rec(s("no ids"), 3) },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            }],
            schema_url: "https://x/1".into(),
        }],
    }
}

#[test]
fn spans_round_trip_every_field() {
    let req = rich_traces();
    let mut events = Vec::new();
    let rejected = spans_to_events(req.clone(), &SourceId::from("otlp"), &mut events);
    assert_eq!(rejected, Rejected::default());
    assert_eq!(events.len(), 4);
    let Event::Span(first) = &events[1] else { panic!("not a span") };
    assert_eq!(first.service, "checkout");
    assert_eq!(first.scope_name, "io.test");
    assert_eq!(first.parent_span_id, Some([2; 8]));
    assert_eq!(first.status_code, 2);
    let Event::Span(last) = &events[3] else { panic!("not a span") };
    assert_eq!(last.service, "fn");
    assert_eq!(traces_from_events(&events), req);
}

#[test]
fn logs_round_trip_every_field() {
    let req = rich_logs();
    let mut events = Vec::new();
    let rejected = logs_to_events(req.clone(), &SourceId::from("otlp"), 42, &mut events);
    assert_eq!(rejected.count, 0);
    assert_eq!(events.len(), 3);
    let Event::Log(l) = &events[1] else { panic!("not a log") };
    // A structured body keeps its type in the reserved attribute and is readable as text.
    assert!(l.body.contains("\"deep\":\"y\""), "{}", l.body);
    assert_eq!(l.severity_number, 17);
    assert_eq!(l.service, "checkout");
    let Event::Log(no_ids) = &events[2] else { panic!("not a log") };
    assert_eq!((no_ids.trace_id, no_ids.span_id), (None, None));
    assert_eq!(logs_from_events(&events), req);
}

#[test]
fn missing_observed_time_is_the_arrival_time() {
    let mut req = rich_logs();
    req.resource_logs[0].scope_logs[0].log_records[0].observed_time_unix_nano = 0;
    let mut events = Vec::new();
    logs_to_events(req, &SourceId::from("otlp"), 42, &mut events);
    let Event::Log(l) = &events[0] else { panic!("not a log") };
    assert_eq!(l.observed_time, 42);
}

#[test]
fn ids_of_the_wrong_length_reject_only_their_item() {
    let mut req = rich_traces();
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1; 15];
    req.resource_spans[1].scope_spans[0].spans[0].links[0].span_id = vec![1; 9];
    let mut events = Vec::new();
    let rejected = spans_to_events(req, &SourceId::from("otlp"), &mut events);
    assert_eq!(events.len(), 2);
    assert_eq!(rejected.count, 2);
    assert_eq!(
        rejected.message(),
        "2 items rejected; first: resourceSpans[0].scopeSpans[0].spans[1]: traceId must be 16 bytes (32 hex digits), got 15 bytes"
    );

    let mut req = rich_logs();
    req.resource_logs[0].scope_logs[0].log_records[0].span_id = vec![0; 8];
    let mut events = Vec::new();
    let rejected = logs_to_events(req, &SourceId::from("otlp"), 1, &mut events);
    assert_eq!((events.len(), rejected.count), (2, 1));
    assert!(rejected.message().contains("logRecords[0]: spanId is all zeros"), "{}", rejected.message());
}

#[test]
fn counts_items() {
    assert_eq!(count_spans(&rich_traces()), 4);
    assert_eq!(count_logs(&rich_logs()), 3);
}

/// Issue 13: a client could set the agent's internal markers (`sealtrail.continued`, the
/// `sealtrail.otlp.*` fields) as attributes. Every reserved key is removed from every
/// attribute list of a request, counted, and only the converter's own keys remain.
#[test]
fn reserved_attribute_keys_from_a_client_are_stripped_and_counted() {
    use crate::event::attr;
    let forged = || {
        vec![
            kv(attr::CONTINUED, AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
            kv("sealtrail.otlp.flags", AnyValue { value: Some(any_value::Value::IntValue(1)) }),
            kv("SealTrail.Invalid_UTF8", s("x")),
            kv("kept", s("v")),
        ]
    };
    let mut req = rich_traces();
    let rs = &mut req.resource_spans[0];
    rs.resource.as_mut().unwrap().attributes.extend(forged());
    let sc = &mut rs.scope_spans[0];
    sc.scope.as_mut().unwrap().attributes.extend(forged());
    let span = &mut sc.spans[0];
    span.attributes.extend(forged());
    span.events.push(trace::span::Event { name: "e".into(), attributes: forged(), ..Default::default() });
    span.links.push(trace::span::Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        attributes: forged(),
        ..Default::default()
    });
    let mut events = Vec::new();
    let rejected = spans_to_events(req, &SourceId::from("otlp"), &mut events);
    // Three forged keys in each of five lists (resource, scope, span, event, link).
    assert_eq!(rejected.stripped, 15);
    assert_eq!(rejected.count, 0);
    let Event::Span(s0) = &events[0] else { panic!("not a span") };
    let lists = [
        &s0.resource,
        &s0.attributes,
        &s0.events.last().unwrap().attributes,
        &s0.links.last().unwrap().attributes,
    ];
    for list in lists {
        assert!(list.iter().any(|kv| kv.key == "kept"));
        assert!(
            !list
                .iter()
                .any(|kv| kv.key == attr::CONTINUED || kv.key.eq_ignore_ascii_case("sealtrail.invalid_utf8"))
        );
        // The flags that remain are the span's own, never the forged value 1.
        assert!(!list.iter().any(|kv| kv.key == keys::FLAGS && kv.value == Value::Int(1)), "{list:?}");
    }

    let mut req = rich_logs();
    req.resource_logs[0].scope_logs[0].log_records[0].attributes.extend(forged());
    req.resource_logs[0].scope_logs[0].log_records[0].attributes.push(kv(attr::OTLP_BODY, s("forged body")));
    let mut events = Vec::new();
    let rejected = logs_to_events(req, &SourceId::from("otlp"), 1, &mut events);
    assert_eq!(rejected.stripped, 4);
    let Event::Log(l) = &events[0] else { panic!("not a log") };
    assert!(find_attr(&l.attributes, attr::CONTINUED).is_none());
    assert_ne!(find_attr(&l.attributes, attr::OTLP_BODY), Some(&Value::from("forged body")));
}
