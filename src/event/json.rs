//! The JSON form of events: used by the console sink, the tail stream and `query --format
//! jsonl`. Keys are the field names of ARCHITECTURE.md "Formats"; times are RFC 3339 in UTC with
//! nanoseconds (null when unknown); ids are lower-case hex.
//!
//! Two encoders produce the same bytes: [`Event::to_json`] builds a `serde_json::Value` tree
//! (the reference: simple, and what tests compare against), and [`write_event`] writes the
//! compact JSON text straight into a buffer, with no tree and no allocation per field (about
//! ten times faster: it is what `query --format jsonl`, the console sink and the tail stream
//! use). A property test holds them byte for byte equal. The reference's object keys come out
//! sorted (serde_json's map is a `BTreeMap` here), and an attribute list that repeats a key
//! keeps its last value; the direct writer reproduces both.

use serde_json::{Map, Value as J, json};

use super::{Event, KeyValue, LogRecord, Span, SpanEvent, SpanLink, Value, attrs_to_json, severity};

/// Formats UTC nanoseconds since the epoch as RFC 3339 (`2026-11-27T18:13:22.123456789Z`).
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, sub) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => nanos.to_string(),
    }
}

/// Appends `nanos` as RFC 3339, exactly as [`rfc3339`] formats it, without allocating. (An
/// `i64` of nanoseconds spans the years 1677–2262; a year outside 0–9999 would go through
/// [`rfc3339`].)
pub fn write_rfc3339(out: &mut Vec<u8>, nanos: i64) {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(rfc3339(nanos).as_bytes());
        return;
    }
    let mut b = [0u8; 30];
    let two = |b: &mut [u8], at: usize, v: u32| {
        b[at] = b'0' + (v / 10) as u8;
        b[at + 1] = b'0' + (v % 10) as u8;
    };
    let y = y as u32;
    two(&mut b, 0, y / 100);
    two(&mut b, 2, y % 100);
    b[4] = b'-';
    two(&mut b, 5, m);
    b[7] = b'-';
    two(&mut b, 8, d);
    b[10] = b'T';
    two(&mut b, 11, sod / 3600);
    b[13] = b':';
    two(&mut b, 14, sod / 60 % 60);
    b[16] = b':';
    two(&mut b, 17, sod % 60);
    let mut n = 19;
    // chrono's `SecondsFormat::AutoSi`: no fraction, or 3, 6 or 9 digits, the fewest exact.
    let digits = match sub {
        0 => 0,
        _ if sub % 1_000_000 == 0 => 3,
        _ if sub % 1_000 == 0 => 6,
        _ => 9,
    };
    if digits > 0 {
        b[n] = b'.';
        let mut v = sub / 10u32.pow(9 - digits);
        for i in (0..digits as usize).rev() {
            b[n + 1 + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        n += 1 + digits as usize;
    }
    b[n] = b'Z';
    out.extend_from_slice(&b[..n + 1]);
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends one event as a line's worth of compact JSON (no newline): the same bytes as
/// `serde_json::to_writer(out, &e.to_json())`.
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    match e {
        Event::Log(l) => write_log(out, l),
        Event::Span(s) => write_span(out, s),
    }
}

/// A JSON string, escaped by serde_json itself (so the escaping is the reference's).
fn str_(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn int(out: &mut Vec<u8>, v: impl itoa_like::Int) {
    v.write(out);
}

/// Integer formatting without going through `fmt` (serde_json's own integer form).
mod itoa_like {
    pub trait Int {
        fn write(self, out: &mut Vec<u8>);
    }
    macro_rules! int {
        ($($t:ty),*) => {$(
            impl Int for $t {
                fn write(self, out: &mut Vec<u8>) {
                    // Serializing an integer into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, &self);
                }
            }
        )*};
    }
    int!(i32, u32, i64);
}

fn key(out: &mut Vec<u8>, first: bool, k: &str) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn time_json(out: &mut Vec<u8>, nanos: i64) {
    if nanos == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        write_rfc3339(out, nanos);
        out.push(b'"');
    }
}

fn hex_json(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &x in b {
        out.push(HEX[(x >> 4) as usize]);
        out.push(HEX[(x & 15) as usize]);
    }
    out.push(b'"');
}

fn opt_hex_json(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => hex_json(out, b),
        None => out.extend_from_slice(b"null"),
    }
}

/// An attribute list as a JSON object: keys in byte order, a repeated key with its last value
/// (what collecting into the reference's `BTreeMap` does).
fn attrs_json(out: &mut Vec<u8>, attrs: &[KeyValue]) {
    let sorted_unique = attrs.windows(2).all(|w| w[0].key < w[1].key);
    out.push(b'{');
    if sorted_unique {
        for (i, kv) in attrs.iter().enumerate() {
            attr(out, i == 0, kv);
        }
    } else {
        let mut order: Vec<&KeyValue> = attrs.iter().collect();
        // Stable: among equal keys the last one stays last, and is the one written.
        order.sort_by(|a, b| a.key.cmp(&b.key));
        let mut first = true;
        for (i, kv) in order.iter().enumerate() {
            if order.get(i + 1).is_some_and(|next| next.key == kv.key) {
                continue;
            }
            attr(out, first, kv);
            first = false;
        }
    }
    out.push(b'}');
}

fn attr(out: &mut Vec<u8>, first: bool, kv: &KeyValue) {
    if !first {
        out.push(b',');
    }
    str_(out, &kv.key);
    out.push(b':');
    value_json(out, &kv.value);
}

fn value_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Empty => out.extend_from_slice(b"null"),
        Value::Str(s) => str_(out, s),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => int(out, *i),
        // serde_json writes a non-finite double as `null`, as `Number::from_f64` maps it.
        Value::Double(d) => {
            let _ = serde_json::to_writer(&mut *out, d);
        }
        Value::Bytes(b) => hex_json(out, b),
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value_json(out, v);
            }
            out.push(b']');
        }
        Value::Map(m) => attrs_json(out, m),
    }
}

// Keys in byte order: the order in which the reference (a `BTreeMap`) writes them.
fn write_log(out: &mut Vec<u8>, l: &LogRecord) {
    out.push(b'{');
    key(out, true, "attributes");
    attrs_json(out, &l.attributes);
    key(out, false, "body");
    str_(out, &l.body);
    key(out, false, "observed_time");
    time_json(out, l.observed_time);
    key(out, false, "redactions");
    int(out, l.redactions);
    key(out, false, "resource");
    attrs_json(out, &l.resource);
    key(out, false, "service");
    str_(out, &l.service);
    key(out, false, "severity_number");
    int(out, l.severity_number);
    key(out, false, "severity_text");
    let sev =
        if l.severity_text.is_empty() { severity::level_name(l.severity_number) } else { &l.severity_text };
    str_(out, sev);
    key(out, false, "signal");
    out.extend_from_slice(b"\"logs\"");
    key(out, false, "source");
    str_(out, &l.source);
    key(out, false, "span_id");
    opt_hex_json(out, l.span_id.as_ref().map(|t| &t[..]));
    key(out, false, "time");
    time_json(out, l.time);
    key(out, false, "trace_id");
    opt_hex_json(out, l.trace_id.as_ref().map(|t| &t[..]));
    out.push(b'}');
}

fn write_span(out: &mut Vec<u8>, s: &Span) {
    out.push(b'{');
    key(out, true, "attributes");
    attrs_json(out, &s.attributes);
    key(out, false, "end_time");
    time_json(out, s.end_time);
    key(out, false, "events");
    out.push(b'[');
    for (i, e) in s.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span_event(out, e);
    }
    out.push(b']');
    key(out, false, "kind");
    int(out, s.kind);
    key(out, false, "links");
    out.push(b'[');
    for (i, l) in s.links.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span_link(out, l);
    }
    out.push(b']');
    key(out, false, "name");
    str_(out, &s.name);
    key(out, false, "parent_span_id");
    opt_hex_json(out, s.parent_span_id.as_ref().map(|t| &t[..]));
    key(out, false, "redactions");
    int(out, s.redactions);
    key(out, false, "resource");
    attrs_json(out, &s.resource);
    key(out, false, "scope_name");
    str_(out, &s.scope_name);
    key(out, false, "service");
    str_(out, &s.service);
    key(out, false, "signal");
    out.extend_from_slice(b"\"spans\"");
    key(out, false, "span_id");
    hex_json(out, &s.span_id);
    key(out, false, "start_time");
    time_json(out, s.start_time);
    key(out, false, "status_code");
    int(out, s.status_code);
    key(out, false, "status_message");
    str_(out, &s.status_message);
    key(out, false, "trace_id");
    hex_json(out, &s.trace_id);
    key(out, false, "trace_state");
    str_(out, &s.trace_state);
    out.push(b'}');
}

fn span_event(out: &mut Vec<u8>, e: &SpanEvent) {
    out.push(b'{');
    key(out, true, "attributes");
    attrs_json(out, &e.attributes);
    key(out, false, "name");
    str_(out, &e.name);
    key(out, false, "time");
    time_json(out, e.time);
    out.push(b'}');
}

fn span_link(out: &mut Vec<u8>, l: &SpanLink) {
    out.push(b'{');
    key(out, true, "attributes");
    attrs_json(out, &l.attributes);
    key(out, false, "span_id");
    hex_json(out, &l.span_id);
    key(out, false, "trace_id");
    hex_json(out, &l.trace_id);
    key(out, false, "trace_state");
    str_(out, &l.trace_state);
    out.push(b'}');
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

    fn direct(e: &Event) -> String {
        let mut out = Vec::new();
        write_event(&mut out, e);
        String::from_utf8(out).unwrap()
    }

    fn reference(e: &Event) -> String {
        serde_json::to_string(&e.to_json()).unwrap()
    }

    #[test]
    fn direct_time_matches_chrono_at_the_edges() {
        for n in [
            1,
            -1,
            999_999_999,
            1_000_000,
            1_000,
            i64::MIN,
            i64::MAX,
            -86_400_000_000_000,       // 1969-12-31
            4_102_444_800_000_000_000, // 2100-01-01
            951_782_400_000_000_000,   // 2000-02-29
        ] {
            let mut out = Vec::new();
            write_rfc3339(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339(n), "{n}");
        }
    }

    #[test]
    fn repeated_and_unsorted_keys_keep_the_last_value_in_key_order() {
        let e = Event::Log(LogRecord {
            attributes: vec![
                KeyValue::new("b", "1"),
                KeyValue::new("a", "2"),
                KeyValue::new("b", "3"),
                KeyValue::new("Z", Value::Double(f64::NAN)),
            ],
            ..LogRecord::default()
        });
        assert_eq!(direct(&e), reference(&e));
        assert!(direct(&e).starts_with(r#"{"attributes":{"Z":null,"a":"2","b":"3"}"#));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            // Unicode, C0/C1 controls, quotes, backslashes, bidi overrides, DEL.
            prop_oneof![".{0,12}", "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\"\\\\a-c\\u{202e}é漢😀]{0,12}",]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Empty),
                text().prop_map(Value::Str),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::Int),
                any::<f64>().prop_map(Value::Double),
                prop_oneof![Just(f64::INFINITY), Just(-0.0), Just(1e21), Just(0.1)].prop_map(Value::Double),
                proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Bytes),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec(("[a-c]{0,2}", inner), 0..4).prop_map(|kv| Value::Map(
                        kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()
                    )),
                ]
            })
        }

        fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
            proptest::collection::vec((prop_oneof!["[a-d]{0,2}", text()], value()), 0..5)
                .prop_map(|kv| kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
        }

        fn nanos() -> impl Strategy<Value = i64> {
            prop_oneof![
                Just(0i64),
                any::<i64>(),
                (0i64..4_102_444_800).prop_map(|s| s * 1_000_000_000),
                (0i64..4_102_444_800_000).prop_map(|ms| ms * 1_000_000),
                (0i64..4_102_444_800_000_000).prop_map(|us| us * 1_000),
                0i64..4_102_444_800_000_000_000,
            ]
        }

        fn log() -> impl Strategy<Value = Event> {
            (
                (nanos(), nanos(), text(), any::<i32>(), text(), attrs(), attrs()),
                (text(), any::<Option<[u8; 16]>>(), any::<Option<[u8; 8]>>(), text(), any::<u32>()),
            )
                .prop_map(
                    |((time, observed_time, st, sn, body, attributes, resource), (service, t, s, src, r))| {
                        Event::Log(LogRecord {
                            time,
                            observed_time,
                            severity_text: st,
                            severity_number: sn % 30,
                            body,
                            attributes,
                            resource,
                            service,
                            trace_id: t,
                            span_id: s,
                            source: src.into(),
                            redactions: r,
                        })
                    },
                )
        }

        fn span() -> impl Strategy<Value = Event> {
            let ev = (nanos(), text(), attrs()).prop_map(|(time, name, attributes)| SpanEvent {
                time,
                name,
                attributes,
            });
            let link = (any::<[u8; 16]>(), any::<[u8; 8]>(), text(), attrs()).prop_map(
                |(trace_id, span_id, trace_state, attributes)| SpanLink {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                },
            );
            (
                (
                    any::<[u8; 16]>(),
                    any::<[u8; 8]>(),
                    any::<Option<[u8; 8]>>(),
                    text(),
                    text(),
                    any::<i32>(),
                    nanos(),
                    nanos(),
                ),
                (
                    any::<i32>(),
                    text(),
                    attrs(),
                    proptest::collection::vec(ev, 0..3),
                    proptest::collection::vec(link, 0..3),
                ),
                (attrs(), text(), text(), any::<u32>()),
            )
                .prop_map(
                    |(
                        (trace_id, span_id, parent_span_id, trace_state, name, kind, start_time, end_time),
                        (status_code, status_message, attributes, events, links),
                        (resource, service, scope_name, redactions),
                    )| {
                        Event::Span(Span {
                            trace_id,
                            span_id,
                            parent_span_id,
                            trace_state,
                            name,
                            kind,
                            start_time,
                            end_time,
                            status_code,
                            status_message,
                            attributes,
                            events,
                            links,
                            resource,
                            service,
                            scope_name,
                            redactions,
                        })
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Issue 19: the direct writer is the reference encoder, byte for byte.
            #[test]
            fn issue_19_direct_json_equals_the_reference(e in prop_oneof![log(), span()]) {
                prop_assert_eq!(direct(&e), reference(&e));
            }

            #[test]
            fn direct_time_equals_chrono(n in nanos()) {
                let mut out = Vec::new();
                write_rfc3339(&mut out, n);
                prop_assert_eq!(String::from_utf8(out).unwrap(), rfc3339(n));
            }
        }
    }
}
