//! One filter meaning (issue 11): a single table of cases, run against every surface that
//! selects events: the `filter` transform's TOML, the tail sink's URL query string, the
//! `sealtrail tail` flags (turned into that query string), and `sealtrail query`'s flags over
//! real sealed segments (which also checks that the reader's pruning agrees with
//! `Filter::matches`).

mod sealed_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Parser;
use sealed_common::*;
use sealtrail::event::{Event, KeyValue, LogRecord, Signal, Span, SpanEvent, Value};
use sealtrail::filter::{FilterArgs, FilterSpec};
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::segment::columns::Columns;
use sealtrail::segment::writer::{SegmentWriter, WriteOptions};
use sealtrail::transforms::filter::FilterConfig;

const T0: i64 = 1_795_000_000_000_000_000;
const TRACE: &str = "01010101010101010101010101010101";

/// The events every case runs over; each is named by its body (logs) or span name.
fn events() -> Vec<Event> {
    let log =
        |body: &str, sev: i32, text: &str, service: &str, attrs: Vec<KeyValue>, trace: Option<[u8; 16]>| {
            Event::Log(LogRecord {
                time: T0,
                observed_time: T0,
                severity_number: sev,
                severity_text: text.into(),
                body: body.into(),
                service: service.into(),
                attributes: attrs,
                trace_id: trace,
                source: "app".into(),
                ..Default::default()
            })
        };
    let span = |name: &str, status: i32, msg: &str, service: &str, trace: u8| Span {
        trace_id: [trace; 16],
        span_id: [9; 8],
        name: name.into(),
        start_time: T0,
        end_time: T0 + 1_000_000,
        status_code: status,
        status_message: msg.into(),
        service: service.into(),
        ..Default::default()
    };
    vec![
        log(
            "payment timeout",
            17,
            "ERROR",
            "payments-eu",
            vec![KeyValue::new("user", "alice")],
            Some([1; 16]),
        ),
        // No level at all: counts as info.
        log("all good", 0, "", "checkout", vec![KeyValue::new("code", Value::Int(42))], None),
        // No severity number, but a text that names a level.
        log("disk full", 0, "Warning", "payments-us", vec![], None),
        log("debug noise", 5, "DEBUG", "checkout", vec![], None),
        Event::Span(Span {
            events: vec![SpanEvent {
                time: T0 + 10,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.message", "read timeout")],
            }],
            ..span("POST /pay", 2, "card declined", "payments-eu", 1)
        }),
        Event::Span(span("GET /health", 1, "", "checkout", 2)),
        Event::Span(Span {
            attributes: vec![KeyValue::new("http.route", "/x/timeout")],
            ..span("GET /x", 0, "", "payments-eu", 3)
        }),
    ]
}

fn name(e: &Event) -> String {
    match e {
        Event::Log(l) => l.body.clone(),
        Event::Span(s) => s.name.clone(),
    }
}

const ALL: &[&str] =
    &["payment timeout", "all good", "disk full", "debug noise", "POST /pay", "GET /health", "GET /x"];

/// Conditions (name, value; `service` may repeat) and the events they keep.
#[allow(clippy::type_complexity)]
fn cases() -> Vec<(Vec<(&'static str, &'static str)>, Vec<&'static str>)> {
    vec![
        (vec![], ALL.to_vec()),
        (vec![("level", "debug")], ALL.to_vec()),
        (
            vec![("level", "info")],
            vec!["payment timeout", "all good", "disk full", "POST /pay", "GET /health", "GET /x"],
        ),
        (vec![("level", "warn")], vec!["payment timeout", "disk full", "POST /pay"]),
        (vec![("level", "ERROR")], vec!["payment timeout", "POST /pay"]),
        (vec![("level", "fatal")], vec![]),
        (vec![("service", "payments-*")], vec!["payment timeout", "disk full", "POST /pay", "GET /x"]),
        (vec![("service", "checkout")], vec!["all good", "debug noise", "GET /health"]),
        (vec![("service", "check")], vec![]),
        (
            vec![("service", "payments-us"), ("service", "checkout")],
            vec!["all good", "disk full", "debug noise", "GET /health"],
        ),
        (vec![("signal", "logs")], vec!["payment timeout", "all good", "disk full", "debug noise"]),
        (vec![("signal", "log")], vec!["payment timeout", "all good", "disk full", "debug noise"]),
        (vec![("signal", "spans")], vec!["POST /pay", "GET /health", "GET /x"]),
        (vec![("signal", "span")], vec!["POST /pay", "GET /health", "GET /x"]),
        // The body, an attribute value, a span event's attribute value.
        (vec![("grep", "timeout")], vec!["payment timeout", "POST /pay", "GET /x"]),
        // A non-string attribute value, in its text form.
        (vec![("grep", "^42$")], vec!["all good"]),
        // An attribute key.
        (vec![("grep", "^user$")], vec!["payment timeout"]),
        // A status message, a span event name.
        (vec![("grep", "declined")], vec!["POST /pay"]),
        (vec![("grep", "^exception$")], vec!["POST /pay"]),
        // Not the service, not the severity text.
        (vec![("grep", "checkout|Warning")], vec![]),
        (vec![("trace_id", TRACE)], vec!["payment timeout", "POST /pay"]),
        (vec![("level", "warn"), ("service", "payments-*"), ("signal", "spans")], vec!["POST /pay"]),
        (vec![("grep", "good"), ("level", "info")], vec!["all good"]),
    ]
}

fn kept(f: &sealtrail::filter::Filter) -> Vec<String> {
    events().iter().filter(|e| f.matches(e)).map(name).collect()
}

fn want(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[test]
fn toml_surface() {
    for (conds, w) in cases() {
        let services: Vec<_> =
            conds.iter().filter(|(k, _)| *k == "service").map(|(_, v)| format!("{v:?}")).collect();
        let mut text: String =
            conds.iter().filter(|(k, _)| *k != "service").map(|(k, v)| format!("{k} = {v:?}\n")).collect();
        if !services.is_empty() {
            text.push_str(&format!("service = [{}]\n", services.join(", ")));
        }
        let cfg: FilterConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(kept(&cfg.spec().build().unwrap()), want(&w), "TOML:\n{text}");
    }
    // The older names still work.
    let cfg: FilterConfig = toml::from_str("pattern = \"timeout\"\nservices = [\"payments-eu\"]").unwrap();
    assert_eq!(kept(&cfg.spec().build().unwrap()), want(&["payment timeout", "POST /pay", "GET /x"]));
    let cfg: FilterConfig = toml::from_str("service = \"checkout\"").unwrap();
    assert_eq!(cfg.spec().services, ["checkout"]);
}

#[test]
fn query_string_surface() {
    for (conds, w) in cases() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &conds {
            q.append_pair(k, v);
        }
        let q = q.finish();
        let f = sealtrail::sinks::tail::filter::from_query(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(kept(&f), want(&w), "query string {q}");
    }
}

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    filter: FilterArgs,
}

fn flags(conds: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["sealtrail".to_owned()];
    for (k, v) in conds {
        args.push(format!("--{}", k.replace('_', "-")));
        args.push(v.to_string());
    }
    args
}

#[test]
fn tail_flags_surface() {
    for (conds, w) in cases() {
        let args = flags(&conds);
        let parsed = Flags::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        // `sealtrail tail` sends its flags as the query string the tail sink parses.
        let q = parsed.filter.spec().to_query();
        assert_eq!(FilterSpec::from_query(&q).unwrap(), parsed.filter.spec(), "{q}");
        let f = sealtrail::sinks::tail::filter::from_query(&q).unwrap();
        assert_eq!(kept(&f), want(&w), "flags {args:?}");
    }
}

/// Seals the events (one segment per signal) for `sealtrail query`.
fn seal_all(env: &Env) {
    let provider = LocalProvider::new(Arc::new(Keyring::open(&env.keys))).creating("default");
    for signal in [Signal::Logs, Signal::Spans] {
        let mut w =
            SegmentWriter::create(&env.data, signal, T0, &provider, "default", &WriteOptions::default())
                .unwrap();
        let mut cols = Columns::new(signal, 8);
        for e in events().iter().filter(|e| e.signal() == signal) {
            cols.append(e);
        }
        w.write(&cols.finish()).unwrap();
        w.seal().unwrap();
    }
}

#[test]
fn query_flags_over_sealed_segments() {
    let env = Env::new();
    seal_all(&env);
    let data = env.data.to_str().unwrap();
    for (conds, w) in cases() {
        let mut args = vec!["query".to_owned(), data.to_owned(), "--format".into(), "jsonl".into()];
        args.extend(flags(&conds).into_iter().skip(1));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.cli(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let got: BTreeSet<String> = stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let key = if v["signal"] == "logs" { "body" } else { "name" };
                v[key].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(got, want(&w).into_iter().collect::<BTreeSet<_>>(), "{args:?}");
    }
}

#[test]
fn every_surface_refuses_the_same_bad_values() {
    let env = Env::new();
    for (k, v) in
        [("level", "loud"), ("signal", "metrics"), ("trace_id", "xyz"), ("grep", "("), ("service", "[")]
    {
        let toml_err =
            toml::from_str::<FilterConfig>(&format!("{k} = {v:?}")).unwrap().spec().build().unwrap_err();
        let q = format!("{k}={}", form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>());
        let q_err = sealtrail::sinks::tail::filter::from_query(&q).unwrap_err();
        assert_eq!(toml_err, q_err);
        assert!(q_err.to_string().starts_with(&format!("`{k}`")), "{q_err}");
        let flag = format!("--{}", k.replace('_', "-"));
        let out = env.cli(&["query", env.data.to_str().unwrap(), &flag, v]);
        assert_eq!(out.status.code(), Some(2), "{flag} {v}");
        assert!(stderr(&out).contains(&flag), "{}", stderr(&out));
    }
}
