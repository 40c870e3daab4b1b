//! Column builders that turn events into Arrow record batches, and back.
//!
//! One builder per column, appended to event by event: strings go straight into the
//! builders' value buffers (ids hex-encoded through a stack buffer, attribute values written
//! with `fmt::Write`), so the hot path allocates nothing per row. `finish` moves the buffers
//! out and leaves the builders empty and ready for the next batch.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, MapBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType, UInt32Type};
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch, StringArray};

use super::schema;
use crate::event::{Event, KeyValue, LogRecord, Signal, Span, Value};

type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

fn map_builder(rows: usize) -> StringMapBuilder {
    MapBuilder::with_capacity(None, StringBuilder::new(), StringBuilder::new(), rows)
}

fn ts_builder(cap: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(cap).with_timezone("UTC")
}

fn append_time(b: &mut TimestampNanosecondBuilder, nanos: i64) {
    if nanos == 0 { b.append_null() } else { b.append_value(nanos) }
}

fn append_hex(b: &mut StringBuilder, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    let out = &mut buf[..bytes.len() * 2];
    // The buffer is exactly twice the input length, the one error case of encode_to_slice.
    if hex::encode_to_slice(bytes, out).is_ok() {
        b.append_value(std::str::from_utf8(out).unwrap_or_default());
    } else {
        b.append_null();
    }
}

fn append_opt_hex(b: &mut StringBuilder, bytes: Option<&[u8]>) {
    match bytes {
        Some(x) => append_hex(b, x),
        None => b.append_null(),
    }
}

/// Writes a value's text form (`Value::to_text`) into the builder's current value.
fn write_value(b: &mut StringBuilder, v: &Value) {
    // Writing into a StringBuilder never fails.
    let _ = match v {
        Value::Str(s) => b.write_str(s),
        Value::Empty => Ok(()),
        Value::Bool(x) => write!(b, "{x}"),
        Value::Int(x) => write!(b, "{x}"),
        Value::Double(x) => write!(b, "{x}"),
        Value::Bytes(x) => {
            for chunk in x.chunks(32) {
                let mut buf = [0u8; 64];
                let out = &mut buf[..chunk.len() * 2];
                if hex::encode_to_slice(chunk, out).is_ok() {
                    let _ = b.write_str(std::str::from_utf8(out).unwrap_or_default());
                }
            }
            Ok(())
        }
        Value::Array(_) | Value::Map(_) => {
            let _ = serde_json::to_writer(FmtWriter(b), &v.to_json());
            Ok(())
        }
    };
    b.append_value("");
}

/// Adapts a `fmt::Write` string builder to `io::Write` for serde_json (which writes UTF-8).
struct FmtWriter<'a>(&'a mut StringBuilder);

impl std::io::Write for FmtWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s =
            std::str::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.write_str(s).map_err(|_| std::io::Error::other("string builder"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn append_map(b: &mut StringMapBuilder, attrs: &[KeyValue]) {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        write_value(b.values(), &kv.value);
    }
    // Appending an entry list whose keys are all non-null cannot fail.
    let _ = b.append(true);
}

/// Builders for the `logs` schema.
pub struct LogColumns {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_text: StringBuilder,
    severity_number: Int32Builder,
    body: StringBuilder,
    attributes: StringMapBuilder,
    resource: StringMapBuilder,
    service: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    source: StringBuilder,
    redactions: UInt32Builder,
    rows: usize,
    bytes: usize,
}

impl LogColumns {
    /// Builders sized for `rows` records of about `bytes` bytes of body in total.
    pub fn with_capacity(rows: usize, bytes: usize) -> LogColumns {
        LogColumns {
            time: ts_builder(rows),
            observed_time: ts_builder(rows),
            severity_text: StringBuilder::with_capacity(rows, rows * 5),
            severity_number: Int32Builder::with_capacity(rows),
            body: StringBuilder::with_capacity(rows, bytes),
            attributes: map_builder(rows),
            resource: map_builder(rows),
            service: StringBuilder::with_capacity(rows, rows * 8),
            trace_id: StringBuilder::with_capacity(rows, 0),
            span_id: StringBuilder::with_capacity(rows, 0),
            source: StringBuilder::with_capacity(rows, rows * 8),
            redactions: UInt32Builder::with_capacity(rows),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn append(&mut self, l: &LogRecord) {
        // A record without a producer time is placed at its observed time (queries and
        // pruning need one time column; `observed_time` keeps the arrival time).
        append_time(&mut self.time, if l.time != 0 { l.time } else { l.observed_time });
        append_time(&mut self.observed_time, l.observed_time);
        self.severity_text.append_value(&l.severity_text);
        self.severity_number.append_value(l.severity_number);
        self.body.append_value(&l.body);
        append_map(&mut self.attributes, &l.attributes);
        append_map(&mut self.resource, &l.resource);
        self.service.append_value(&l.service);
        append_opt_hex(&mut self.trace_id, l.trace_id.as_ref().map(|x| &x[..]));
        append_opt_hex(&mut self.span_id, l.span_id.as_ref().map(|x| &x[..]));
        self.source.append_value(&*l.source);
        self.redactions.append_value(l.redactions);
        self.rows += 1;
        self.bytes += 64 + l.body.len() + l.service.len() + l.severity_text.len();
    }

    /// Moves the rows appended so far into a record batch; the builders start over, sized
    /// for a batch like this one.
    pub fn finish(&mut self) -> RecordBatch {
        // Arrow's `finish` leaves a builder with empty buffers that would grow again by
        // doubling (a realloc and copy per step, a third of the column building time):
        // fresh builders sized like the batch just built avoid that.
        let (rows, body) = (self.rows.max(1024), self.body.values_slice().len().max(64 * 1024));
        let mut old = std::mem::replace(self, LogColumns::with_capacity(rows, body + body / 8));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(old.time.finish()),
            Arc::new(old.observed_time.finish()),
            Arc::new(old.severity_text.finish()),
            Arc::new(old.severity_number.finish()),
            Arc::new(old.body.finish()),
            Arc::new(old.attributes.finish()),
            Arc::new(old.resource.finish()),
            Arc::new(old.service.finish()),
            Arc::new(old.trace_id.finish()),
            Arc::new(old.span_id.finish()),
            Arc::new(old.source.finish()),
            Arc::new(old.redactions.finish()),
        ];
        // The columns are built to the schema; a mismatch is a bug caught by the unit tests.
        RecordBatch::try_new(schema::logs(), cols).expect("log columns match the logs schema")
    }
}

/// Builders for the `spans` schema.
pub struct SpanColumns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: Int32Builder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    status_code: Int32Builder,
    status_message: StringBuilder,
    attributes: StringMapBuilder,
    events: StringBuilder,
    links: StringBuilder,
    resource: StringMapBuilder,
    service: StringBuilder,
    scope_name: StringBuilder,
    redactions: UInt32Builder,
    rows: usize,
    bytes: usize,
}

impl SpanColumns {
    pub fn with_capacity(rows: usize) -> SpanColumns {
        SpanColumns {
            trace_id: StringBuilder::with_capacity(rows, rows * 32),
            span_id: StringBuilder::with_capacity(rows, rows * 16),
            parent_span_id: StringBuilder::with_capacity(rows, rows * 16),
            trace_state: StringBuilder::new(),
            name: StringBuilder::with_capacity(rows, rows * 16),
            kind: Int32Builder::with_capacity(rows),
            start_time: ts_builder(rows),
            end_time: ts_builder(rows),
            status_code: Int32Builder::with_capacity(rows),
            status_message: StringBuilder::new(),
            attributes: map_builder(rows),
            events: StringBuilder::new(),
            links: StringBuilder::new(),
            resource: map_builder(rows),
            service: StringBuilder::with_capacity(rows, rows * 8),
            scope_name: StringBuilder::new(),
            redactions: UInt32Builder::with_capacity(rows),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn append(&mut self, s: &Span) {
        append_hex(&mut self.trace_id, &s.trace_id);
        append_hex(&mut self.span_id, &s.span_id);
        append_opt_hex(&mut self.parent_span_id, s.parent_span_id.as_ref().map(|x| &x[..]));
        self.trace_state.append_value(&s.trace_state);
        self.name.append_value(&s.name);
        self.kind.append_value(s.kind);
        append_time(&mut self.start_time, s.start_time);
        append_time(&mut self.end_time, s.end_time);
        self.status_code.append_value(s.status_code);
        self.status_message.append_value(&s.status_message);
        append_map(&mut self.attributes, &s.attributes);
        // Span events and links are rare and nested: stored as JSON text (see `nested`).
        nested::write_events(&mut self.events, &s.events);
        nested::write_links(&mut self.links, &s.links);
        append_map(&mut self.resource, &s.resource);
        self.service.append_value(&s.service);
        self.scope_name.append_value(&s.scope_name);
        self.redactions.append_value(s.redactions);
        self.rows += 1;
        self.bytes += 160 + s.name.len() + s.service.len();
    }

    /// Moves the rows appended so far into a record batch; the builders start over, sized
    /// for a batch like this one (see [`LogColumns::finish`]).
    pub fn finish(&mut self) -> RecordBatch {
        let mut old = std::mem::replace(self, SpanColumns::with_capacity(self.rows.max(1024)));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(old.trace_id.finish()),
            Arc::new(old.span_id.finish()),
            Arc::new(old.parent_span_id.finish()),
            Arc::new(old.trace_state.finish()),
            Arc::new(old.name.finish()),
            Arc::new(old.kind.finish()),
            Arc::new(old.start_time.finish()),
            Arc::new(old.end_time.finish()),
            Arc::new(old.status_code.finish()),
            Arc::new(old.status_message.finish()),
            Arc::new(old.attributes.finish()),
            Arc::new(old.events.finish()),
            Arc::new(old.links.finish()),
            Arc::new(old.resource.finish()),
            Arc::new(old.service.finish()),
            Arc::new(old.scope_name.finish()),
            Arc::new(old.redactions.finish()),
        ];
        RecordBatch::try_new(schema::spans(), cols).expect("span columns match the spans schema")
    }
}

/// Builders for one signal.
#[allow(clippy::large_enum_variant)] // one per open segment, never moved in a hot loop
pub enum Columns {
    Logs(LogColumns),
    Spans(SpanColumns),
}

impl Columns {
    pub fn new(signal: Signal, rows: usize) -> Columns {
        match signal {
            Signal::Logs => Columns::Logs(LogColumns::with_capacity(rows, rows * 128)),
            Signal::Spans => Columns::Spans(SpanColumns::with_capacity(rows)),
        }
    }

    /// Appends an event of this builder's signal (others are ignored: the caller routes).
    pub fn append(&mut self, e: &Event) {
        match (self, e) {
            (Columns::Logs(b), Event::Log(l)) => b.append(l),
            (Columns::Spans(b), Event::Span(s)) => b.append(s),
            _ => {}
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Columns::Logs(b) => b.rows,
            Columns::Spans(b) => b.rows,
        }
    }

    /// An estimate of the bytes buffered in the builders.
    pub fn bytes(&self) -> usize {
        match self {
            Columns::Logs(b) => b.bytes,
            Columns::Spans(b) => b.bytes,
        }
    }

    pub fn finish(&mut self) -> RecordBatch {
        match self {
            Columns::Logs(b) => b.finish(),
            Columns::Spans(b) => b.finish(),
        }
    }
}

/// Why a record batch could not be turned back into events.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    #[error("column `{0}` is missing or has an unexpected type")]
    Missing(String),
    #[error("column `{column}`, row {row}: {reason}")]
    Invalid { column: &'static str, row: usize, reason: String },
}

/// How a decoder treats a column that is not in the batch.
#[derive(Clone, Copy)]
enum Missing {
    /// An error: a whole segment batch has every column.
    Error,
    /// The field's default: a batch of a few projected columns (the reader's row filter).
    Default,
}

/// The column `name` as `T`: `None` when it is absent and `missing` allows that; an error
/// when it is absent otherwise, or of another type.
fn get<'a, T: 'a>(
    b: &'a RecordBatch,
    name: &str,
    missing: Missing,
    cast: impl FnOnce(&'a ArrayRef) -> Option<&'a T>,
) -> Result<Option<&'a T>, ColumnError> {
    match (b.column_by_name(name), missing) {
        (None, Missing::Default) => Ok(None),
        (None, Missing::Error) => Err(ColumnError::Missing(name.to_owned())),
        (Some(c), _) => cast(c).map(Some).ok_or_else(|| ColumnError::Missing(name.to_owned())),
    }
}

type Times = arrow_array::PrimitiveArray<TimestampNanosecondType>;
type Ints = arrow_array::PrimitiveArray<Int32Type>;
type U32s = arrow_array::PrimitiveArray<UInt32Type>;

fn strings<'a>(b: &'a RecordBatch, name: &str, m: Missing) -> Result<Option<&'a StringArray>, ColumnError> {
    get(b, name, m, |c| c.as_string_opt::<i32>())
}

fn times<'a>(b: &'a RecordBatch, name: &str, m: Missing) -> Result<Option<&'a Times>, ColumnError> {
    get(b, name, m, |c| c.as_primitive_opt::<TimestampNanosecondType>())
}

fn ints<'a>(b: &'a RecordBatch, name: &str, m: Missing) -> Result<Option<&'a Ints>, ColumnError> {
    get(b, name, m, |c| c.as_primitive_opt::<Int32Type>())
}

fn u32s<'a>(b: &'a RecordBatch, name: &str, m: Missing) -> Result<Option<&'a U32s>, ColumnError> {
    get(b, name, m, |c| c.as_primitive_opt::<UInt32Type>())
}

fn maps<'a>(b: &'a RecordBatch, name: &str, m: Missing) -> Result<Option<&'a MapArray>, ColumnError> {
    get(b, name, m, |c| c.as_map_opt())
}

fn time_at(a: Option<&Times>, i: usize) -> i64 {
    a.filter(|a| !a.is_null(i)).map(|a| a.value(i)).unwrap_or(0)
}

fn int_at(a: Option<&Ints>, i: usize) -> i32 {
    a.filter(|a| !a.is_null(i)).map(|a| a.value(i)).unwrap_or(0)
}

fn u32_at(a: Option<&U32s>, i: usize) -> u32 {
    a.filter(|a| !a.is_null(i)).map(|a| a.value(i)).unwrap_or(0)
}

fn str_at(a: Option<&StringArray>, i: usize) -> &str {
    a.filter(|a| !a.is_null(i)).map(|a| a.value(i)).unwrap_or("")
}

fn id_at<const N: usize>(a: Option<&StringArray>, i: usize) -> Option<[u8; N]> {
    let a = a.filter(|a| !a.is_null(i))?;
    let mut out = [0u8; N];
    hex::decode_to_slice(a.value(i), &mut out).ok().map(|_| out)
}

fn attrs_at(m: Option<&MapArray>, i: usize) -> Vec<KeyValue> {
    let Some(m) = m.filter(|m| !m.is_null(i)) else { return Vec::new() };
    let entries = m.value(i);
    let (Some(k), Some(v)) =
        (entries.column(0).as_string_opt::<i32>(), entries.column(1).as_string_opt::<i32>())
    else {
        return Vec::new();
    };
    (0..k.len()).map(|j| KeyValue::new(k.value(j), str_at(Some(v), j))).collect()
}

/// Turns a decrypted record batch of `signal` back into events (attribute values come back
/// as their text form). Used by `query` for its text formats.
pub fn events_from_batch(signal: Signal, b: &RecordBatch, out: &mut Vec<Event>) -> Result<(), ColumnError> {
    decode(signal, b, Missing::Error, out)
}

/// Like [`events_from_batch`] for a batch holding only some of the columns (the reader's row
/// filter reads only the columns a filter looks at): absent fields get their defaults.
pub fn events_from_columns(signal: Signal, b: &RecordBatch, out: &mut Vec<Event>) -> Result<(), ColumnError> {
    decode(signal, b, Missing::Default, out)
}

fn decode(signal: Signal, b: &RecordBatch, m: Missing, out: &mut Vec<Event>) -> Result<(), ColumnError> {
    match signal {
        Signal::Logs => {
            let (time, observed) = (times(b, "time", m)?, times(b, "observed_time", m)?);
            let (sev_text, sev_num) = (strings(b, "severity_text", m)?, ints(b, "severity_number", m)?);
            let (body, attrs, res) =
                (strings(b, "body", m)?, maps(b, "attributes", m)?, maps(b, "resource", m)?);
            let (service, trace, span) =
                (strings(b, "service", m)?, strings(b, "trace_id", m)?, strings(b, "span_id", m)?);
            let (source, red) = (strings(b, "source", m)?, u32s(b, "redactions", m)?);
            for i in 0..b.num_rows() {
                out.push(Event::Log(LogRecord {
                    time: time_at(time, i),
                    observed_time: time_at(observed, i),
                    severity_text: str_at(sev_text, i).to_owned(),
                    severity_number: int_at(sev_num, i),
                    body: str_at(body, i).to_owned(),
                    attributes: attrs_at(attrs, i),
                    resource: attrs_at(res, i),
                    service: str_at(service, i).to_owned(),
                    trace_id: id_at(trace, i),
                    span_id: id_at(span, i),
                    source: str_at(source, i).into(),
                    redactions: u32_at(red, i),
                }));
            }
        }
        Signal::Spans => {
            let (trace, span, parent) =
                (strings(b, "trace_id", m)?, strings(b, "span_id", m)?, strings(b, "parent_span_id", m)?);
            let (state, name, kind) =
                (strings(b, "trace_state", m)?, strings(b, "name", m)?, ints(b, "kind", m)?);
            let (start, end) = (times(b, "start_time", m)?, times(b, "end_time", m)?);
            let (code, msg) = (ints(b, "status_code", m)?, strings(b, "status_message", m)?);
            let (attrs, res, service) =
                (maps(b, "attributes", m)?, maps(b, "resource", m)?, strings(b, "service", m)?);
            let (scope, red) = (strings(b, "scope_name", m)?, u32s(b, "redactions", m)?);
            let (events, links) = (strings(b, "events", m)?, strings(b, "links", m)?);
            for i in 0..b.num_rows() {
                out.push(Event::Span(Span {
                    trace_id: id_at(trace, i).unwrap_or_default(),
                    span_id: id_at(span, i).unwrap_or_default(),
                    parent_span_id: id_at(parent, i),
                    trace_state: str_at(state, i).to_owned(),
                    name: str_at(name, i).to_owned(),
                    kind: int_at(kind, i),
                    start_time: time_at(start, i),
                    end_time: time_at(end, i),
                    status_code: int_at(code, i),
                    status_message: str_at(msg, i).to_owned(),
                    attributes: attrs_at(attrs, i),
                    events: nested::read_events(str_at(events, i))
                        .map_err(|reason| ColumnError::Invalid { column: "events", row: i, reason })?,
                    links: nested::read_links(str_at(links, i)).map_err(|reason| ColumnError::Invalid {
                        column: "links",
                        row: i,
                        reason,
                    })?,
                    resource: attrs_at(res, i),
                    service: str_at(service, i).to_owned(),
                    scope_name: str_at(scope, i).to_owned(),
                    redactions: u32_at(red, i),
                }));
            }
        }
    }
    Ok(())
}

/// The JSON text of a span's `events` and `links` columns, and its way back.
///
/// Written: `[{"time":"<RFC 3339>"|null,"name":"…","attributes":{"k":"text",…}}]` and
/// `[{"trace_id":"<hex>","span_id":"<hex>","trace_state":"…","attributes":{…}}]`.
/// Attribute values are in their text form (`Value::to_text`), like the `attributes` map
/// columns, and keys keep their order and repeats, so that a span reads back exactly as the
/// top-level attributes do. Segments written before this held typed JSON values (numbers,
/// booleans, nested arrays and objects): those read back as the same text form.
mod nested {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value as J;

    use super::{FmtWriter, StringBuilder};
    use crate::event::json::rfc3339;
    use crate::event::{KeyValue, SpanEvent, SpanLink, Value};

    /// Attributes written as a JSON object in their order, values as text.
    struct AttrsOut<'a>(&'a [KeyValue]);

    impl Serialize for AttrsOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for kv in self.0 {
                m.serialize_entry(&kv.key, &kv.value.to_text())?;
            }
            m.end()
        }
    }

    #[derive(Serialize)]
    struct EventOut<'a> {
        time: Option<String>,
        name: &'a str,
        attributes: AttrsOut<'a>,
    }

    #[derive(Serialize)]
    struct LinkOut<'a> {
        trace_id: String,
        span_id: String,
        trace_state: &'a str,
        attributes: AttrsOut<'a>,
    }

    fn time_out(nanos: i64) -> Option<String> {
        (nanos != 0).then(|| rfc3339(nanos))
    }

    /// Writes `items` as one JSON array value of the builder (`[]` when empty).
    fn write<T: Serialize>(b: &mut StringBuilder, items: impl Iterator<Item = T>) {
        let items: Vec<T> = items.collect();
        // Serializing strings and maps into a string builder cannot fail.
        let _ = serde_json::to_writer(FmtWriter(b), &items);
        b.append_value("");
    }

    pub(super) fn write_events(b: &mut StringBuilder, events: &[SpanEvent]) {
        write(
            b,
            events.iter().map(|e| EventOut {
                time: time_out(e.time),
                name: &e.name,
                attributes: AttrsOut(&e.attributes),
            }),
        );
    }

    pub(super) fn write_links(b: &mut StringBuilder, links: &[SpanLink]) {
        write(
            b,
            links.iter().map(|l| LinkOut {
                trace_id: hex::encode(l.trace_id),
                span_id: hex::encode(l.span_id),
                trace_state: &l.trace_state,
                attributes: AttrsOut(&l.attributes),
            }),
        );
    }

    /// Attributes read back in their stored order, every value as text.
    #[derive(Default)]
    struct AttrsIn(Vec<KeyValue>);

    impl<'de> Deserialize<'de> for AttrsIn {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AttrsIn, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = AttrsIn;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object of attributes")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AttrsIn, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, J>()? {
                        let text = match v {
                            J::String(s) => s,
                            J::Null => String::new(),
                            other => other.to_string(),
                        };
                        out.push(KeyValue { key: k, value: Value::Str(text) });
                    }
                    Ok(AttrsIn(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[derive(Deserialize)]
    struct EventIn {
        #[serde(default)]
        time: Option<String>,
        #[serde(default)]
        name: String,
        #[serde(default)]
        attributes: AttrsIn,
    }

    #[derive(Deserialize)]
    struct LinkIn {
        trace_id: String,
        span_id: String,
        #[serde(default)]
        trace_state: String,
        #[serde(default)]
        attributes: AttrsIn,
    }

    /// RFC 3339 back to nanoseconds (or the plain number `rfc3339` falls back to).
    fn time_in(t: Option<&str>) -> Result<i64, String> {
        let Some(t) = t else { return Ok(0) };
        if let Ok(n) = t.parse::<i64>() {
            return Ok(n);
        }
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
            .ok_or_else(|| format!("bad time {t:?}"))
    }

    fn id_in<const N: usize>(what: &str, s: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("bad {what} (expected {} hex digits)", N * 2))?;
        Ok(out)
    }

    fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<Vec<T>, String> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    pub(super) fn read_events(text: &str) -> Result<Vec<SpanEvent>, String> {
        parse::<EventIn>(text)?
            .into_iter()
            .map(|e| {
                Ok(SpanEvent { time: time_in(e.time.as_deref())?, name: e.name, attributes: e.attributes.0 })
            })
            .collect()
    }

    pub(super) fn read_links(text: &str) -> Result<Vec<SpanLink>, String> {
        parse::<LinkIn>(text)?
            .into_iter()
            .map(|l| {
                Ok(SpanLink {
                    trace_id: id_in("trace_id", &l.trace_id)?,
                    span_id: id_in("span_id", &l.span_id)?,
                    trace_state: l.trace_state,
                    attributes: l.attributes.0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn logs_round_trip_through_columns() {
        let l = LogRecord {
            time: 1_700_000_000_000_000_001,
            observed_time: 1_700_000_000_000_000_002,
            severity_text: "WARN".into(),
            severity_number: 13,
            body: "hello".into(),
            attributes: vec![KeyValue::new("a", "b"), KeyValue::new("n", 5i64)],
            resource: vec![],
            service: "svc".into(),
            trace_id: Some([0xab; 16]),
            span_id: None,
            source: "app".into(),
            redactions: 2,
        };
        let mut c = Columns::new(Signal::Logs, 4);
        c.append(&Event::Log(l.clone()));
        c.append(&Event::Log(LogRecord { time: 0, ..l.clone() }));
        let b = c.finish();
        assert_eq!(c.rows(), 0);
        let mut out = Vec::new();
        events_from_batch(Signal::Logs, &b, &mut out).unwrap();
        let mut want = l.clone();
        want.attributes[1].value = Value::Str("5".into());
        assert_eq!(out[0], Event::Log(want.clone()));
        assert_eq!(out[1], Event::Log(LogRecord { time: want.observed_time, ..want }));
    }

    #[test]
    fn spans_round_trip_through_columns() {
        let s = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "GET /".into(),
            kind: 2,
            start_time: 10,
            end_time: 20,
            status_code: 2,
            service: "api".into(),
            events: vec![crate::event::SpanEvent { time: 11, name: "retry".into(), attributes: vec![] }],
            links: vec![crate::event::SpanLink { trace_id: [4; 16], span_id: [5; 8], ..Default::default() }],
            ..Default::default()
        };
        let mut c = Columns::new(Signal::Spans, 1);
        c.append(&Event::Span(s.clone()));
        let b = c.finish();
        assert!(str_at(strings(&b, "events", Missing::Error).unwrap(), 0).contains("retry"));
        let mut out = Vec::new();
        events_from_batch(Signal::Spans, &b, &mut out).unwrap();
        // Issue 11, defect 2: events and links came back as empty vectors.
        assert_eq!(out[0], Event::Span(s));
    }

    /// Every value in its stored text form, at every depth: what a segment gives back.
    pub(crate) fn as_stored(e: &Event) -> Event {
        fn text(attrs: &[KeyValue]) -> Vec<KeyValue> {
            attrs.iter().map(|kv| KeyValue::new(kv.key.clone(), kv.value.to_text())).collect()
        }
        match e.clone() {
            Event::Log(mut l) => {
                l.attributes = text(&l.attributes);
                l.resource = text(&l.resource);
                Event::Log(l)
            }
            Event::Span(mut s) => {
                s.attributes = text(&s.attributes);
                s.resource = text(&s.resource);
                for ev in &mut s.events {
                    ev.attributes = text(&ev.attributes);
                }
                for l in &mut s.links {
                    l.attributes = text(&l.attributes);
                }
                Event::Span(s)
            }
        }
    }

    /// Attributes with every kind of value, nested, with a repeated key and odd text.
    pub(crate) fn rich_attrs(tag: &str) -> Vec<KeyValue> {
        vec![
            KeyValue::new(format!("{tag}.str"), "a \"quoted\" \u{1b} line\nwith ünïcode"),
            KeyValue::new(format!("{tag}.int"), -42i64),
            KeyValue::new(format!("{tag}.double"), Value::Double(1.5e20)),
            KeyValue::new(format!("{tag}.bool"), true),
            KeyValue::new(format!("{tag}.bytes"), Value::Bytes(vec![0, 1, 0xfe, 0xff])),
            KeyValue::new(format!("{tag}.empty"), Value::Empty),
            KeyValue::new(
                format!("{tag}.array"),
                Value::Array(vec![
                    Value::Int(1),
                    Value::Str("two".into()),
                    Value::Array(vec![Value::Bool(false)]),
                ]),
            ),
            KeyValue::new(
                format!("{tag}.map"),
                Value::Map(vec![
                    KeyValue::new("inner", Value::Map(vec![KeyValue::new("deep", Value::Double(3.25))])),
                    KeyValue::new("list", Value::Array(vec![Value::Bytes(vec![9])])),
                ]),
            ),
            KeyValue::new(format!("{tag}.str"), "repeated key, kept in order"),
        ]
    }

    /// A log record with every field set to something other than its default.
    pub(crate) fn full_log() -> LogRecord {
        LogRecord {
            time: 1_795_000_000_123_456_789,
            observed_time: 1_795_000_000_223_456_789,
            severity_text: "Warning".into(),
            severity_number: 14,
            body: "disk 91% full on /var".into(),
            attributes: rich_attrs("attr"),
            resource: rich_attrs("res"),
            service: "checkout".into(),
            trace_id: Some(*b"0123456789abcdef"),
            span_id: Some(*b"spanid01"),
            source: "app".into(),
            redactions: 3,
        }
    }

    /// A span with every field set to something other than its default.
    pub(crate) fn full_span() -> Span {
        Span {
            trace_id: [0xa1; 16],
            span_id: [0xb2; 8],
            parent_span_id: Some([0xc3; 8]),
            trace_state: "vendor=1,other=2".into(),
            name: "POST /pay".into(),
            kind: 3,
            start_time: 1_795_000_000_000_000_001,
            end_time: 1_795_000_000_500_000_002,
            status_code: 2,
            status_message: "card declined".into(),
            attributes: rich_attrs("attr"),
            events: vec![
                crate::event::SpanEvent {
                    time: 1_795_000_000_100_000_003,
                    name: "exception".into(),
                    attributes: rich_attrs("ev"),
                },
                crate::event::SpanEvent {
                    time: -1_000_000_001,
                    name: "before 1970".into(),
                    attributes: vec![],
                },
            ],
            links: vec![
                crate::event::SpanLink {
                    trace_id: [0xd4; 16],
                    span_id: [0xe5; 8],
                    trace_state: "k=v".into(),
                    attributes: rich_attrs("link"),
                },
                crate::event::SpanLink { trace_id: [0; 16], span_id: [1; 8], ..Default::default() },
            ],
            resource: rich_attrs("res"),
            service: "payments".into(),
            scope_name: "io.opentelemetry.http".into(),
            redactions: 7,
        }
    }

    #[test]
    fn every_field_round_trips_through_columns() {
        for e in [Event::Log(full_log()), Event::Span(full_span())] {
            let mut c = Columns::new(e.signal(), 2);
            c.append(&e);
            let b = c.finish();
            let mut out = Vec::new();
            events_from_batch(e.signal(), &b, &mut out).unwrap();
            assert_eq!(out, vec![as_stored(&e)]);
        }
    }

    #[test]
    fn events_of_older_segments_read_as_text() {
        // Before values were stored as text, events held typed JSON values.
        let evs = nested::read_events(
            r#"[{"time":"2026-11-27T18:13:22.5Z","name":"x","attributes":{"n":5,"b":true,"z":null,"m":{"a":[1]}}}]"#,
        )
        .unwrap();
        let want: Vec<_> = ["5", "true", "", "{\"a\":[1]}"].iter().map(|v| Value::Str((*v).into())).collect();
        assert_eq!(evs[0].attributes.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(), want);
        assert_eq!(crate::event::json::rfc3339(evs[0].time), "2026-11-27T18:13:22.500Z");
        assert!(nested::read_links(r#"[{"trace_id":"zz","span_id":"00"}]"#).is_err());
        assert_eq!(nested::read_events("[]").unwrap(), vec![]);
    }
}
