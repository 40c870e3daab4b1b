//! The mapping of Telemetry API records (`{time, type, record}`) to log records (see the
//! module documentation of the source for the rules).

use super::*;

/// One element of a delivered batch.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    #[serde(default)]
    time: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    record: J,
}

/// What the stream has told so far about the invoke its records belong to.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    pub(super) request_id: Option<String>,
    pub(super) trace: (Option<[u8; 16]>, Option<[u8; 8]>),
}

/// Turns envelopes into log records.
pub(super) struct Mapper {
    pub(super) source: SourceId,
    pub(super) service: String,
    pub(super) resource: Vec<KeyValue>,
}

impl Mapper {
    /// Maps a batch; returns whether it held a `platform.report` (the end of an invoke).
    pub(super) fn map(
        &self,
        batch: Vec<Envelope>,
        st: &mut StreamState,
        invoke: Option<&lambda::Invoke>,
        out: &mut Vec<Event>,
    ) -> bool {
        let observed = now_nanos();
        let mut saw_report = false;
        for env in batch {
            let mut rec = LogRecord {
                time: env.time.as_deref().map(parse_time).unwrap_or(0),
                observed_time: observed,
                service: self.service.clone(),
                resource: self.resource.clone(),
                source: self.source.clone(),
                ..LogRecord::default()
            };
            let mut request_id = None;
            if env.kind == "function" || env.kind == "extension" {
                match env.record {
                    J::String(s) => {
                        let line = s.strip_suffix('\n').unwrap_or(&s);
                        let line = line.strip_suffix('\r').unwrap_or(line);
                        rec.severity_number = text_level(line).unwrap_or(0);
                        rec.body = line.to_owned();
                    }
                    J::Object(mut m) => {
                        if let Some(J::String(l)) = m.remove("level") {
                            rec.severity_number = severity::parse_level(&l).unwrap_or(0);
                            rec.severity_text = l;
                        }
                        if let Some(J::String(t)) = m.remove("timestamp") {
                            let t = parse_time(&t);
                            if t != 0 {
                                rec.time = t;
                            }
                        }
                        if let Some(J::String(r)) = m.remove("requestId") {
                            request_id = Some(r);
                        }
                        rec.body = match m.remove("message") {
                            Some(J::String(s)) => s,
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        for (k, v) in m {
                            rec.attributes.push(KeyValue { key: k, value: json_value(v) });
                        }
                    }
                    J::Null => {}
                    other => rec.body = other.to_string(),
                }
                if request_id.is_none() {
                    request_id = st
                        .request_id
                        .clone()
                        .or_else(|| invoke.map(|i| i.request_id.clone()).filter(|r| !r.is_empty()));
                }
                if st.request_id.is_some() {
                    (rec.trace_id, rec.span_id) = st.trace;
                } else if let Some(t) = invoke.and_then(|i| i.trace.as_deref()) {
                    (rec.trace_id, rec.span_id) = lambda::parse_xray(t);
                }
            } else {
                rec.body = env.kind.clone();
                let mut trace_value = None;
                match env.record {
                    J::Object(m) => {
                        for (k, v) in m {
                            match (k.as_str(), v) {
                                ("requestId", J::String(r)) => request_id = Some(r),
                                ("tracing", J::Object(t)) => {
                                    if let Some(J::String(v)) = t.get("value") {
                                        trace_value = Some(v.clone());
                                    }
                                    flatten("tracing", J::Object(t), &mut rec.attributes);
                                }
                                (_, v) => flatten(&k, v, &mut rec.attributes),
                            }
                        }
                    }
                    // platform.fault (Logs API) carries a string.
                    J::String(s) => rec.body = format!("{}: {s}", env.kind),
                    _ => {}
                }
                let trace = trace_value.as_deref().map(lambda::parse_xray).unwrap_or_default();
                (rec.trace_id, rec.span_id) = trace;
                if rec.severity_number == 0 {
                    rec.severity_number = match crate::event::find_attr(&rec.attributes, "status") {
                        Some(Value::Str(s)) if s != "success" => severity::ERROR,
                        _ => severity::INFO,
                    };
                }
                match env.kind.as_str() {
                    "platform.start" => {
                        st.request_id = request_id.clone();
                        st.trace = trace;
                    }
                    "platform.report" => {
                        saw_report = true;
                        if st.request_id == request_id {
                            st.request_id = None;
                            st.trace = (None, None);
                        }
                    }
                    _ => {}
                }
            }
            rec.attributes.push(KeyValue::new(attr::TYPE, env.kind));
            if let Some(r) = request_id {
                rec.attributes.push(KeyValue::new(attr::REQUEST_ID, r));
            }
            out.push(Event::Log(rec));
        }
        saw_report
    }
}

/// `[INFO]\t…` (the text format of the managed runtimes) → a severity number.
pub(super) fn text_level(line: &str) -> Option<i32> {
    let rest = line.strip_prefix('[')?;
    let end = rest.get(..10.min(rest.len()))?.find(']')?;
    severity::parse_level(&rest[..end])
}

/// RFC 3339 → UTC nanoseconds (0 when it does not parse).
pub(super) fn parse_time(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0)
}

/// Flattens nested objects into dotted keys; arrays and scalars become values.
fn flatten(prefix: &str, v: J, out: &mut Vec<KeyValue>) {
    match v {
        J::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        v => out.push(KeyValue { key: prefix.to_owned(), value: json_value(v) }),
    }
}

/// A JSON value as an attribute value.
fn json_value(v: J) -> Value {
    match v {
        J::Null => Value::Empty,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => {
            n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Double(n.as_f64().unwrap_or(0.0)))
        }
        J::String(s) => Value::Str(s),
        J::Array(a) => Value::Array(a.into_iter().map(json_value).collect()),
        J::Object(m) => {
            Value::Map(m.into_iter().map(|(k, v)| KeyValue { key: k, value: json_value(v) }).collect())
        }
    }
}
