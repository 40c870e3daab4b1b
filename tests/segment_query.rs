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

/// SplitMix64: random-looking trace ids, the same in every run.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 20,000 spans of 5,000 traces with random ids, four spans of a trace together, sealed in
/// row groups of 1,000 rows (20 groups), with or without the trace-id index.
fn seal_random_traces(env: &Env, trace_index: bool) -> Vec<[u8; 16]> {
    let provider = LocalProvider::new(Arc::new(Keyring::open(&env.keys))).creating("default");
    let options = WriteOptions { row_group_rows: 1000, trace_index, ..WriteOptions::default() };
    let mut w = SegmentWriter::create(&env.data, Signal::Spans, T0, &provider, "default", &options).unwrap();
    let mut rng = 19;
    let mut ids = Vec::new();
    for batch in 0..20 {
        let mut cols = Columns::new(Signal::Spans, 1000);
        for t in 0..250 {
            let id: [u8; 16] =
                (u128::from(splitmix(&mut rng)) << 64 | u128::from(splitmix(&mut rng))).to_be_bytes();
            ids.push(id);
            for s in 0..4u8 {
                let n = (batch * 1000 + t * 4) as i64 + i64::from(s);
                cols.append(&Event::Span(Span {
                    trace_id: id,
                    span_id: [s + 1; 8],
                    name: format!("GET /orders/{n}"),
                    start_time: T0 + n * 1_000_000,
                    end_time: T0 + n * 1_000_000 + 500_000,
                    service: "api".into(),
                    ..Default::default()
                }));
            }
        }
        w.write(&cols.finish()).unwrap();
    }
    w.seal().unwrap();
    ids
}

/// Issue 19: random trace ids defeat min/max statistics, so before the encrypted trace-id
/// index a `--trace-id` query decrypted the `trace_id` column of every row group; with it,
/// only the group that holds the trace (and rarely a false positive) is read. A segment
/// without the index (written before it) still answers the same query, reading every group.
#[test]
fn issue_19_trace_id_index_reads_only_the_row_groups_of_the_trace() {
    use sealtrail::filter::FilterSpec;
    use sealtrail::segment::reader::{Segment, SegmentRetriever};

    for trace_index in [true, false] {
        let env = Env::new();
        let ids = seal_random_traces(&env, trace_index);
        let seg_path = env.segments().pop().unwrap();
        let provider = LocalProvider::new(Arc::new(Keyring::open(&env.keys)));
        let r = Arc::new(SegmentRetriever::new(Arc::new(provider)));
        let seg = Segment::open(&seg_path, r).unwrap();
        assert_eq!(seg.summary().row_groups, 20);
        assert_eq!(seg.has_trace_index(), trace_index);
        // One trace per row group, checked: the group that holds it is always kept.
        let mut kept_total = 0;
        for g in 0..20 {
            let want = hex::encode(ids[g * 250 + 17]);
            let f = FilterSpec { trace_id: Some(want.clone()), ..Default::default() }.build().unwrap();
            let kept = seg.row_groups_to_read(&f);
            assert!(kept.contains(&g), "group {g} holds trace {want} but was pruned: {kept:?}");
            kept_total += kept.len();
        }
        if trace_index {
            // 20 true groups and about 1% of the other 380 (4 with these ids).
            assert!(kept_total <= 30, "{kept_total} groups kept for 20 lookups: the index prunes little");
        } else {
            assert_eq!(kept_total, 400, "without the index, statistics cannot prune random ids");
        }
        // A trace that is not there, inside every group's min/max: no group at all with the index.
        let f = FilterSpec { trace_id: Some("7f".repeat(16)), ..Default::default() }.build().unwrap();
        assert_eq!(seg.row_groups_to_read(&f).is_empty(), trace_index);

        // The real command answers the same with and without the index.
        let want = hex::encode(ids[4321]);
        let out = env.cli(&["query", env.data.to_str().unwrap(), "--format", "jsonl", "--trace-id", &want]);
        let rows = jsonl(&out);
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(rows.iter().all(|r| r["trace_id"] == want.as_str()));
    }
}

/// Issue 19: the trace-id index lives inside the encrypted footer: nothing of it (not even its
/// key name) is readable in the file without the key.
#[test]
fn issue_19_trace_id_index_is_not_in_plaintext() {
    let env = Env::new();
    seal_random_traces(&env, true);
    let bytes = std::fs::read(env.segments().pop().unwrap()).unwrap();
    let key = sealtrail::segment::trace_index::KEY.as_bytes();
    assert!(!bytes.windows(key.len()).any(|w| w == key), "the index key name is in plaintext");
}

/// Issue 19: the direct JSON and CSV writers print what the reference encoders print, byte
/// for byte, through real segments and the real command (awkward strings, nested values,
/// huge numbers, empty maps, span events and links), on every core (several segments).
#[test]
fn issue_19_direct_writers_print_the_reference_bytes() {
    let env = Env::new();
    let awkward = [
        "quote \" and \\\\ back",
        "ctl \u{1}\u{1b}[2J\u{7f}\u{9b}",
        "=SUM(A1)",
        "漢字 😀 café",
        "",
        "a,b\r\nc",
    ];
    let mut logs = Vec::new();
    for (i, text) in awkward.iter().enumerate() {
        let t = T0 + i as i64 * 1_000_123;
        logs.push(Event::Log(LogRecord {
            time: if i == 2 { 0 } else { t },
            observed_time: t,
            severity_number: (i * 5) as i32,
            severity_text: if i == 1 { "Weird\"Level".into() } else { String::new() },
            body: text.to_string(),
            attributes: vec![
                KeyValue::new("z", Value::Int(i64::MAX)),
                KeyValue::new("a", Value::Double(1e21)),
                KeyValue::new("m", Value::Map(vec![])),
                KeyValue::new(*text, Value::Array(vec![Value::Bool(true), Value::Str(text.to_string())])),
            ],
            service: text.to_string(),
            trace_id: (i % 2 == 0).then_some([i as u8; 16]),
            span_id: (i % 2 == 0).then_some([0xab; 8]),
            source: "app".into(),
            redactions: i as u32,
            ..Default::default()
        }));
    }
    seal(&env, Signal::Logs, &logs);
    seal(&env, Signal::Logs, &logs[2..]);
    let spans: Vec<Event> = awkward
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Event::Span(Span {
                trace_id: [i as u8; 16],
                span_id: [7; 8],
                parent_span_id: (i > 0).then_some([1; 8]),
                trace_state: text.to_string(),
                name: text.to_string(),
                kind: i as i32,
                start_time: T0 + i as i64,
                end_time: T0 + i as i64 * 3_000_000,
                status_code: (i % 3) as i32,
                status_message: text.to_string(),
                attributes: vec![KeyValue::new("k", Value::Bytes(vec![0, 255]))],
                events: vec![SpanEvent { time: T0, name: text.to_string(), attributes: vec![] }],
                links: vec![SpanLink {
                    trace_id: [9; 16],
                    span_id: [8; 8],
                    trace_state: String::new(),
                    attributes: vec![KeyValue::new("l", Value::Empty)],
                }],
                service: "svc".into(),
                scope_name: text.to_string(),
                redactions: 1,
                ..Default::default()
            })
        })
        .collect();
    seal(&env, Signal::Spans, &spans);
    let data = env.data.to_str().unwrap();
    for format in ["jsonl", "csv"] {
        let direct = env.cli(&["query", data, "--format", format]);
        let reference = env.cli(&["query", data, "--format", format, "--reference-encoder"]);
        assert!(direct.status.success() && reference.status.success(), "{}", stderr(&direct));
        assert_eq!(stdout(&direct), stdout(&reference), "{format}");
        let lines = stdout(&direct).lines().count();
        assert!(lines >= 16, "{format}: {lines} lines");
    }
}
