//! Segments written by the library's writer and read back by the real `sealtrail query`:
//! every field of a span (events and links included) comes back out (issue 11, defect 2),
//! and time pruning covers every event of a segment, not only the first (issue 13,
//! "`--until` misses late events").

mod sealed_common;

use std::sync::Arc;

use sealed_common::*;
use sealtrail::event::{Event, KeyValue, LogRecord, Signal, Span, SpanEvent, SpanLink, Value};
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::segment::columns::Columns;
use sealtrail::segment::writer::{SegmentWriter, WriteOptions};

const T0: i64 = 1_795_000_000_000_000_000; // 2026-11-18T09:46:40Z
const HOUR: i64 = 3_600_000_000_000;

/// Seals `events` (all of one signal) as one segment named after the first event's time.
fn seal(env: &Env, signal: Signal, events: &[Event]) {
    let provider = LocalProvider::new(Arc::new(Keyring::open(&env.keys))).creating("default");
    let first = match &events[0] {
        Event::Log(l) => l.time,
        Event::Span(s) => s.start_time,
    };
    let mut w =
        SegmentWriter::create(&env.data, signal, first, &provider, "default", &WriteOptions::default())
            .unwrap();
    let mut cols = Columns::new(signal, events.len());
    for e in events {
        cols.append(e);
    }
    w.write(&cols.finish()).unwrap();
    w.seal().unwrap();
}

fn jsonl(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn query_returns_span_events_and_links() {
    let env = Env::new();
    let span = Span {
        trace_id: [0x4b; 16],
        span_id: [0xf9; 8],
        parent_span_id: Some([0x11; 8]),
        trace_state: "congo=t61rcWkgMzE".into(),
        name: "POST /pay".into(),
        kind: 2,
        start_time: T0,
        end_time: T0 + 12_300_000,
        status_code: 2,
        status_message: "declined".into(),
        attributes: vec![KeyValue::new("http.status_code", "402")],
        events: vec![
            SpanEvent {
                time: T0 + 1_000,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.type", "CardError"), KeyValue::new("retries", "2")],
            },
            SpanEvent { time: T0 + 2_000, name: "retry".into(), attributes: vec![] },
        ],
        links: vec![SpanLink {
            trace_id: [0x22; 16],
            span_id: [0x33; 8],
            trace_state: "k=v".into(),
            attributes: vec![KeyValue::new("link.kind", "follows")],
        }],
        resource: vec![KeyValue::new("service.name", "payments")],
        service: "payments".into(),
        scope_name: "http".into(),
        redactions: 1,
    };
    seal(&env, Signal::Spans, &[Event::Span(span.clone())]);
    let out = env.cli(&["query", env.data.to_str().unwrap(), "--format", "jsonl"]);
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 1);
    // Field by field the same JSON as the event that went in.
    assert_eq!(rows[0], Event::Span(span).to_json());
    assert_eq!(rows[0]["events"][0]["attributes"]["exception.type"], "CardError");
    assert_eq!(rows[0]["links"][0]["span_id"], "3333333333333333");
}

fn log(time: i64, body: &str) -> Event {
    Event::Log(LogRecord {
        time,
        observed_time: time,
        body: body.into(),
        attributes: vec![KeyValue::new("n", Value::Int(1))],
        source: "app".into(),
        ..Default::default()
    })
}

#[test]
fn until_finds_events_older_than_the_first_of_their_segment() {
    let env = Env::new();
    // The segment is named after its first event; the second one happened two hours earlier
    // (a late delivery), so the file name alone would hide it from `--until`.
    seal(&env, Signal::Logs, &[log(T0, "on time"), log(T0 - 2 * HOUR, "late")]);
    let data = env.data.to_str().unwrap();
    let until = sealtrail::event::json::rfc3339(T0 - HOUR);
    let out = env.cli(&["query", data, "--until", &until, "--format", "jsonl"]);
    let rows = jsonl(&out);
    let bodies: Vec<_> = rows.iter().map(|r| r["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["late"]);

    // A far-future event in a segment must not hide its other events from `--since` either.
    let env = Env::new();
    seal(&env, Signal::Logs, &[log(T0 + 1000 * HOUR, "future"), log(T0, "now")]);
    let data = env.data.to_str().unwrap();
    let (since, until) =
        (sealtrail::event::json::rfc3339(T0 - HOUR), sealtrail::event::json::rfc3339(T0 + HOUR));
    let out = env.cli(&["query", data, "--since", &since, "--until", &until, "--format", "jsonl"]);
    let bodies: Vec<_> = jsonl(&out).iter().map(|r| r["body"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, ["now"]);

    // A segment entirely outside the range is still skipped, now by its footer statistics.
    let until = sealtrail::event::json::rfc3339(T0 - 3 * HOUR);
    let out = env.cli(&["query", data, "--until", &until, "--format", "jsonl", "--stats"]);
    assert!(jsonl(&out).is_empty());
    assert!(stderr(&out).contains("1 pruned by time"), "{}", stderr(&out));
}
