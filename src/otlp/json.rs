//! OTLP/JSON decoding: the protobuf JSON mapping as the OTLP specification restricts it
//! (trace and span ids as hex, not base64; enum fields as integers, and here also by name;
//! 64-bit integers as decimal strings or numbers; bytes values as base64; field names in
//! lowerCamelCase or as in the `.proto` file; unknown fields ignored).
//!
//! Written by hand rather than taken from `opentelemetry-proto`'s `with-serde` feature, which
//! rejects enum names (`"SPAN_KIND_SERVER"`) and gives serde's position-less messages: this
//! decoder names the field that was wrong by its path (`resourceSpans[0].scopeSpans[0].
//! spans[3].traceId: …`), which is what the client sees in the 400 response.
//!
//! Ids are decoded to bytes of whatever length the hex has: an id of the wrong length rejects
//! only its span or record (in [`super::convert`]), like the same mistake in protobuf.

use base64::Engine as _;
use serde_json::{Map, Value as J};

use super::proto::{common, logs, resource, trace};
use super::{ExportLogsServiceRequest, ExportTraceServiceRequest};

/// A JSON body that is not a valid OTLP request, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OTLP/JSON at {path}: {message}")]
pub struct JsonError {
    pub path: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, JsonError>;

/// A cursor into the document: the object being read and its path for error messages.
struct Obj<'a> {
    map: &'a Map<String, J>,
    path: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T> {
    Err(JsonError { path: if path.is_empty() { "$".into() } else { path.into() }, message: message.into() })
}

fn obj<'a>(v: &'a J, path: String) -> Result<Obj<'a>> {
    match v {
        J::Object(map) => Ok(Obj { map, path }),
        other => err(&path, format!("expected an object, found {}", kind(other))),
    }
}

fn kind(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    /// A field by its lowerCamelCase name or its `.proto` (snake_case) name; null counts as
    /// absent.
    fn get(&self, camel: &str, snake: &str) -> Option<(&'a J, String)> {
        let (v, name) = match self.map.get(camel) {
            Some(v) => (v, camel),
            None => (self.map.get(snake)?, snake),
        };
        if v.is_null() { None } else { Some((v, format!("{}.{name}", self.path))) }
    }

    fn array(&self, camel: &str, snake: &str) -> Result<Vec<(&'a J, String)>> {
        match self.get(camel, snake) {
            None => Ok(Vec::new()),
            Some((J::Array(a), path)) => {
                Ok(a.iter().enumerate().map(|(i, v)| (v, format!("{path}[{i}]"))).collect())
            }
            Some((other, path)) => err(&path, format!("expected an array, found {}", kind(other))),
        }
    }

    fn objects(&self, camel: &str, snake: &str) -> Result<Vec<Obj<'a>>> {
        self.array(camel, snake)?.into_iter().map(|(v, p)| obj(v, p)).collect()
    }

    fn object(&self, camel: &str, snake: &str) -> Result<Option<Obj<'a>>> {
        self.get(camel, snake).map(|(v, p)| obj(v, p)).transpose()
    }

    fn string(&self, camel: &str, snake: &str) -> Result<String> {
        match self.get(camel, snake) {
            None => Ok(String::new()),
            Some((J::String(s), _)) => Ok(s.clone()),
            Some((other, path)) => err(&path, format!("expected a string, found {}", kind(other))),
        }
    }

    fn u64(&self, camel: &str, snake: &str) -> Result<u64> {
        match self.get(camel, snake) {
            None => Ok(0),
            Some((v, path)) => int(v, &path),
        }
    }

    fn u32(&self, camel: &str, snake: &str) -> Result<u32> {
        match self.get(camel, snake) {
            None => Ok(0),
            Some((v, path)) => int(v, &path),
        }
    }

    fn hex(&self, camel: &str, snake: &str) -> Result<Vec<u8>> {
        match self.get(camel, snake) {
            None => Ok(Vec::new()),
            Some((J::String(s), path)) => {
                hex::decode(s).or_else(|_| err(&path, format!("expected a hex id, found {:?}", short(s))))
            }
            Some((other, path)) => err(&path, format!("expected a hex string, found {}", kind(other))),
        }
    }

    /// An enum field: its number, or its name among `names` (index = number).
    fn enumeration(&self, camel: &str, snake: &str, names: &[(&str, i32)]) -> Result<i32> {
        match self.get(camel, snake) {
            None => Ok(0),
            Some((J::String(s), path)) => match names.iter().find(|(n, _)| n == s) {
                Some((_, v)) => Ok(*v),
                None => s.parse().or_else(|_| err(&path, format!("unknown enum value {:?}", short(s)))),
            },
            Some((v, path)) => int(v, &path),
        }
    }
}

/// Strings quoted in errors are cut short: the error goes back to the client and into the
/// agent's counters, never the whole (possibly sensitive) value.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// An integer given as a JSON number or a decimal string, in range for `T`.
fn int<T: TryFrom<i128>>(v: &J, path: &str) -> Result<T> {
    let n: i128 = match v {
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i128::from(i),
            (_, Some(u)) => i128::from(u),
            _ => return err(path, format!("expected an integer, found {n}")),
        },
        J::String(s) => match s.parse() {
            Ok(n) => n,
            Err(_) => return err(path, format!("expected an integer, found {:?}", short(s))),
        },
        other => return err(path, format!("expected an integer, found {}", kind(other))),
    };
    T::try_from(n).or_else(|_| err(path, format!("integer {n} out of range")))
}

fn double(v: &J, path: &str) -> Result<f64> {
    match v {
        J::Number(n) => n.as_f64().map_or_else(|| err(path, "number out of range"), Ok),
        J::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s.parse().or_else(|_| err(path, format!("expected a number, found {:?}", short(s)))),
        },
        other => err(path, format!("expected a number, found {}", kind(other))),
    }
}

const SPAN_KINDS: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];
const STATUS_CODES: &[(&str, i32)] =
    &[("STATUS_CODE_UNSET", 0), ("STATUS_CODE_OK", 1), ("STATUS_CODE_ERROR", 2)];
const SEVERITIES: &[(&str, i32)] = &[
    ("SEVERITY_NUMBER_UNSPECIFIED", 0),
    ("SEVERITY_NUMBER_TRACE", 1),
    ("SEVERITY_NUMBER_TRACE2", 2),
    ("SEVERITY_NUMBER_TRACE3", 3),
    ("SEVERITY_NUMBER_TRACE4", 4),
    ("SEVERITY_NUMBER_DEBUG", 5),
    ("SEVERITY_NUMBER_DEBUG2", 6),
    ("SEVERITY_NUMBER_DEBUG3", 7),
    ("SEVERITY_NUMBER_DEBUG4", 8),
    ("SEVERITY_NUMBER_INFO", 9),
    ("SEVERITY_NUMBER_INFO2", 10),
    ("SEVERITY_NUMBER_INFO3", 11),
    ("SEVERITY_NUMBER_INFO4", 12),
    ("SEVERITY_NUMBER_WARN", 13),
    ("SEVERITY_NUMBER_WARN2", 14),
    ("SEVERITY_NUMBER_WARN3", 15),
    ("SEVERITY_NUMBER_WARN4", 16),
    ("SEVERITY_NUMBER_ERROR", 17),
    ("SEVERITY_NUMBER_ERROR2", 18),
    ("SEVERITY_NUMBER_ERROR3", 19),
    ("SEVERITY_NUMBER_ERROR4", 20),
    ("SEVERITY_NUMBER_FATAL", 21),
    ("SEVERITY_NUMBER_FATAL2", 22),
    ("SEVERITY_NUMBER_FATAL3", 23),
    ("SEVERITY_NUMBER_FATAL4", 24),
];

/// Decodes an `ExportTraceServiceRequest` from OTLP/JSON bytes.
pub fn decode_traces(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let doc = parse(body)?;
    let root = obj(&doc, "$".to_owned())?;
    let mut req = ExportTraceServiceRequest::default();
    for rs in root.objects("resourceSpans", "resource_spans")? {
        let mut out = trace::ResourceSpans {
            resource: rs.object("resource", "resource")?.map(|r| resource_of(&r)).transpose()?,
            schema_url: rs.string("schemaUrl", "schema_url")?,
            scope_spans: Vec::new(),
        };
        for ss in rs.objects("scopeSpans", "scope_spans")? {
            let mut scope_spans = trace::ScopeSpans {
                scope: ss.object("scope", "scope")?.map(|s| scope_of(&s)).transpose()?,
                schema_url: ss.string("schemaUrl", "schema_url")?,
                spans: Vec::new(),
            };
            for sp in ss.objects("spans", "spans")? {
                scope_spans.spans.push(span_of(&sp)?);
            }
            out.scope_spans.push(scope_spans);
        }
        req.resource_spans.push(out);
    }
    Ok(req)
}

/// Decodes an `ExportLogsServiceRequest` from OTLP/JSON bytes.
pub fn decode_logs(body: &[u8]) -> Result<ExportLogsServiceRequest> {
    let doc = parse(body)?;
    let root = obj(&doc, "$".to_owned())?;
    let mut req = ExportLogsServiceRequest::default();
    for rl in root.objects("resourceLogs", "resource_logs")? {
        let mut out = logs::ResourceLogs {
            resource: rl.object("resource", "resource")?.map(|r| resource_of(&r)).transpose()?,
            schema_url: rl.string("schemaUrl", "schema_url")?,
            scope_logs: Vec::new(),
        };
        for sl in rl.objects("scopeLogs", "scope_logs")? {
            let mut scope_logs = logs::ScopeLogs {
                scope: sl.object("scope", "scope")?.map(|s| scope_of(&s)).transpose()?,
                schema_url: sl.string("schemaUrl", "schema_url")?,
                log_records: Vec::new(),
            };
            for lr in sl.objects("logRecords", "log_records")? {
                scope_logs.log_records.push(log_of(&lr)?);
            }
            out.scope_logs.push(scope_logs);
        }
        req.resource_logs.push(out);
    }
    Ok(req)
}

fn parse(body: &[u8]) -> Result<J> {
    // serde_json refuses nesting deeper than 128 levels, which bounds the recursion below.
    serde_json::from_slice(body).or_else(|e| err("$", format!("not valid JSON ({e})")))
}

fn resource_of(r: &Obj<'_>) -> Result<resource::Resource> {
    Ok(resource::Resource {
        attributes: attributes(r)?,
        dropped_attributes_count: r.u32("droppedAttributesCount", "dropped_attributes_count")?,
        entity_refs: Vec::new(),
    })
}

fn scope_of(s: &Obj<'_>) -> Result<common::InstrumentationScope> {
    Ok(common::InstrumentationScope {
        name: s.string("name", "name")?,
        version: s.string("version", "version")?,
        attributes: attributes(s)?,
        dropped_attributes_count: s.u32("droppedAttributesCount", "dropped_attributes_count")?,
    })
}

fn span_of(s: &Obj<'_>) -> Result<trace::Span> {
    let mut events = Vec::new();
    for e in s.objects("events", "events")? {
        events.push(trace::span::Event {
            time_unix_nano: e.u64("timeUnixNano", "time_unix_nano")?,
            name: e.string("name", "name")?,
            attributes: attributes(&e)?,
            dropped_attributes_count: e.u32("droppedAttributesCount", "dropped_attributes_count")?,
        });
    }
    let mut links = Vec::new();
    for l in s.objects("links", "links")? {
        links.push(trace::span::Link {
            trace_id: l.hex("traceId", "trace_id")?,
            span_id: l.hex("spanId", "span_id")?,
            trace_state: l.string("traceState", "trace_state")?,
            attributes: attributes(&l)?,
            dropped_attributes_count: l.u32("droppedAttributesCount", "dropped_attributes_count")?,
            flags: l.u32("flags", "flags")?,
        });
    }
    let status = match s.object("status", "status")? {
        Some(st) => Some(trace::Status {
            message: st.string("message", "message")?,
            code: st.enumeration("code", "code", STATUS_CODES)?,
        }),
        None => None,
    };
    Ok(trace::Span {
        trace_id: s.hex("traceId", "trace_id")?,
        span_id: s.hex("spanId", "span_id")?,
        trace_state: s.string("traceState", "trace_state")?,
        parent_span_id: s.hex("parentSpanId", "parent_span_id")?,
        flags: s.u32("flags", "flags")?,
        name: s.string("name", "name")?,
        kind: s.enumeration("kind", "kind", SPAN_KINDS)?,
        start_time_unix_nano: s.u64("startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: s.u64("endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(s)?,
        dropped_attributes_count: s.u32("droppedAttributesCount", "dropped_attributes_count")?,
        events,
        dropped_events_count: s.u32("droppedEventsCount", "dropped_events_count")?,
        links,
        dropped_links_count: s.u32("droppedLinksCount", "dropped_links_count")?,
        status,
    })
}

fn log_of(l: &Obj<'_>) -> Result<logs::LogRecord> {
    Ok(logs::LogRecord {
        time_unix_nano: l.u64("timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: l.u64("observedTimeUnixNano", "observed_time_unix_nano")?,
        severity_number: l.enumeration("severityNumber", "severity_number", SEVERITIES)?,
        severity_text: l.string("severityText", "severity_text")?,
        body: l.get("body", "body").map(|(v, p)| any_value(v, &p)).transpose()?,
        attributes: attributes(l)?,
        dropped_attributes_count: l.u32("droppedAttributesCount", "dropped_attributes_count")?,
        flags: l.u32("flags", "flags")?,
        trace_id: l.hex("traceId", "trace_id")?,
        span_id: l.hex("spanId", "span_id")?,
        event_name: l.string("eventName", "event_name")?,
    })
}

fn attributes(o: &Obj<'_>) -> Result<Vec<common::KeyValue>> {
    key_values(o.array("attributes", "attributes")?)
}

fn key_values(items: Vec<(&J, String)>) -> Result<Vec<common::KeyValue>> {
    let mut out = Vec::with_capacity(items.len());
    for (v, path) in items {
        let kv = obj(v, path)?;
        out.push(common::KeyValue {
            key: kv.string("key", "key")?,
            value: kv.get("value", "value").map(|(v, p)| any_value(v, &p)).transpose()?,
            key_strindex: 0,
        });
    }
    Ok(out)
}

fn any_value(v: &J, path: &str) -> Result<common::AnyValue> {
    use common::any_value::Value as V;
    let o = obj(v, path.to_owned())?;
    let value = if let Some((J::String(s), _)) = o.get("stringValue", "string_value") {
        Some(V::StringValue(s.clone()))
    } else if let Some((v, p)) = o.get("stringValue", "string_value") {
        return err(&p, format!("expected a string, found {}", kind(v)));
    } else if let Some((v, p)) = o.get("boolValue", "bool_value") {
        match v {
            J::Bool(b) => Some(V::BoolValue(*b)),
            other => return err(&p, format!("expected a boolean, found {}", kind(other))),
        }
    } else if let Some((v, p)) = o.get("intValue", "int_value") {
        Some(V::IntValue(int(v, &p)?))
    } else if let Some((v, p)) = o.get("doubleValue", "double_value") {
        Some(V::DoubleValue(double(v, &p)?))
    } else if let Some((v, p)) = o.get("bytesValue", "bytes_value") {
        match v {
            J::String(s) => match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => Some(V::BytesValue(b)),
                Err(_) => return err(&p, "expected base64"),
            },
            other => return err(&p, format!("expected a base64 string, found {}", kind(other))),
        }
    } else if let Some(a) = o.object("arrayValue", "array_value")? {
        let mut values = Vec::new();
        for (v, p) in a.array("values", "values")? {
            values.push(any_value(v, &p)?);
        }
        Some(V::ArrayValue(common::ArrayValue { values }))
    } else if let Some(m) = o.object("kvlistValue", "kvlist_value")? {
        Some(V::KvlistValue(common::KeyValueList { values: key_values(m.array("values", "values")?)? }))
    } else {
        None
    };
    Ok(common::AnyValue { value })
}

/// The JSON body of a successful export response (`{}` when everything was accepted).
pub fn response(signal_field: &str, rejected: u64, message: &str) -> Vec<u8> {
    let body = if rejected == 0 && message.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "partialSuccess": { signal_field: rejected.to_string(), "errorMessage": message } })
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::convert;

    #[test]
    fn decodes_the_spec_example_with_names_strings_and_numbers() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
          "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
            "name":"I'm a server span","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
            "kind":"SPAN_KIND_SERVER","status":{"code":2,"message":"x"},"flags":769,
            "attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},
              {"key":"i","value":{"intValue":"-9007199254740993"}},{"key":"d","value":{"doubleValue":"NaN"}},
              {"key":"b","value":{"bytesValue":"AAH/"}},{"key":"arr","value":{"arrayValue":{"values":[{"boolValue":true},{"kvlistValue":{"values":[{"key":"k","value":{"intValue":3}}]}}]}}},
              {"key":"unset"}],
            "events":[{"time_unix_nano":"5","name":"e"}],"links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","flags":1}],
            "someFutureField":{"ignored":true}}]}]}]}"#;
        let req = decode_traces(body).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id, hex::decode("5b8efff798038103d269b633813fc60c").unwrap());
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.events[0].time_unix_nano, 5);
        assert_eq!(span.links[0].flags, 1);
        let mut events = Vec::new();
        let rejected = convert::spans_to_events(req, &"otlp".into(), &mut events);
        assert_eq!(rejected.count, 0);
        let crate::event::Event::Span(s) = &events[0] else { panic!() };
        assert_eq!(s.service, "my.service");
        let attr = |k| crate::event::find_attr(&s.attributes, k).cloned();
        assert_eq!(attr("i"), Some(crate::event::Value::Int(-9_007_199_254_740_993)));
        assert_eq!(attr("b"), Some(crate::event::Value::Bytes(vec![0, 1, 255])));
        assert!(matches!(attr("d"), Some(crate::event::Value::Double(d)) if d.is_nan()));
        assert_eq!(attr("unset"), Some(crate::event::Value::Empty));
    }

    #[test]
    fn decodes_logs_with_severity_names_and_structured_bodies() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1","severityNumber":"SEVERITY_NUMBER_WARN","severityText":"Warning","body":{"stringValue":"hi"},"traceId":"","spanId":""},
            {"severity_number":17,"body":{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"1"}}]}},"eventName":"ev"}]}]}]}"#;
        let req = decode_logs(body).unwrap();
        let recs = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!((recs[0].severity_number, recs[1].severity_number), (13, 17));
        assert!(recs[0].trace_id.is_empty());
        assert_eq!(recs[1].event_name, "ev");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "invalid OTLP/JSON at $: not valid JSON"),
            (b"[]", "invalid OTLP/JSON at $: expected an object, found an array"),
            (br#"{"resourceSpans":{}}"#, "at $.resourceSpans: expected an array, found an object"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
                "at $.resourceSpans[0].scopeSpans[0].spans[0].traceId: expected a hex id, found \"zz\"",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SIDEWAYS"}]}]}]}"#,
                "spans[0].kind: unknown enum value \"SPAN_KIND_SIDEWAYS\"",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#,
                "spans[0].startTimeUnixNano: integer -1 out of range",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"x1"}}]}]}]}]}"#,
                "attributes[0].value.intValue: expected an integer, found \"x1\"",
            ),
        ];
        for (body, want) in cases {
            let got = decode_traces(body).unwrap_err().to_string();
            assert!(got.contains(want), "{got:?} does not contain {want:?}");
        }
    }

    #[test]
    fn partial_success_response() {
        assert_eq!(response("rejectedSpans", 0, ""), b"{}");
        let v: J = serde_json::from_slice(&response("rejectedSpans", 2, "why")).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedSpans"], "2");
    }
}
