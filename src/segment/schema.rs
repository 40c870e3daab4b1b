//! The Arrow schemas of sealed segments, one per signal, with column names from ARCHITECTURE.md
//! "Formats". Times are UTC nanoseconds (null when unknown), ids lower-case hex, attributes
//! `Map<Utf8, Utf8>` (non-string values in their text form, see `Value::to_text`), and a
//! span's `events` and `links` JSON text.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::event::Signal;

/// `Timestamp(ns, "UTC")`.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` as arrow's `MapBuilder` produces it.
pub fn string_map() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

/// The schema of `logs` segments.
pub fn logs() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("time", timestamp(), true),
            Field::new("observed_time", timestamp(), true),
            Field::new("severity_text", DataType::Utf8, false),
            Field::new("severity_number", DataType::Int32, false),
            Field::new("body", DataType::Utf8, false),
            Field::new("attributes", string_map(), false),
            Field::new("resource", string_map(), false),
            Field::new("service", DataType::Utf8, false),
            Field::new("trace_id", DataType::Utf8, true),
            Field::new("span_id", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, false),
            Field::new("redactions", DataType::UInt32, false),
        ]))
    })
    .clone()
}

/// The schema of `spans` segments.
pub fn spans() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("parent_span_id", DataType::Utf8, true),
            Field::new("trace_state", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Int32, false),
            Field::new("start_time", timestamp(), true),
            Field::new("end_time", timestamp(), true),
            Field::new("status_code", DataType::Int32, false),
            Field::new("status_message", DataType::Utf8, false),
            Field::new("attributes", string_map(), false),
            Field::new("events", DataType::Utf8, false),
            Field::new("links", DataType::Utf8, false),
            Field::new("resource", string_map(), false),
            Field::new("service", DataType::Utf8, false),
            Field::new("scope_name", DataType::Utf8, false),
            Field::new("redactions", DataType::UInt32, false),
        ]))
    })
    .clone()
}

/// The schema of a signal.
pub fn of(signal: Signal) -> SchemaRef {
    match signal {
        Signal::Logs => logs(),
        Signal::Spans => spans(),
    }
}

/// The column a signal's events are ordered and pruned by in time.
pub fn time_column(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "time",
        Signal::Spans => "start_time",
    }
}
