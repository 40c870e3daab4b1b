//! `[telemetry]` in Lambda extension mode: the real binary against the in-repo emulator of
//! the Extensions and Telemetry APIs, exporting its own spans and counters to the test-side
//! OTLP/HTTP collector of `tests/telemetry.rs` (`common/otlp_collector.rs`).
//!
//! With `export_interval = "1h"` no periodic metric export happens during a test, so the
//! counters seen before SHUTDOWN can only come from the per-invoke flush; the final values
//! come from the flush after the segments are sealed. A collector that never answers must
//! not make the extension miss its SHUTDOWN deadline (the test kills it at the deadline,
//! as the platform does, like `tests/lambda.rs`).

#[path = "common/otlp_collector.rs"]
mod collector;
mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use collector::{Collector, Received, hex, metric_value, str_attr};
use emulator::{Behaviour, Emulator, records};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

const CARD: &str = "4111 1111 1111 1111";
const CANARY_WORD: &str = "canary-5d01aa";
const INIT: Duration = Duration::from_secs(20);

/// lambda_telemetry → redact → sealed, with `[telemetry]` pointed at `endpoint`.
fn config(dir: &Path, endpoint: &str, extra: &str) -> std::path::PathBuf {
    common::write(
        dir,
        "lambda.toml",
        &format!(
            "[telemetry]\nenabled = true\nendpoint = \"{endpoint}\"\nexport_interval = \"1h\"\n\
             service_name = \"sealtrail-lambda-test\"\n{extra}\n\
             [sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"lambda\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
            dir.join("data").display()
        ),
    )
}

fn start(emu: &Emulator, dir: &Path, cfg: &Path) -> Child {
    common::cmd(dir)
        .arg("lambda")
        .env("SEALTRAIL_CONFIG", cfg)
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("start sealtrail")
}

/// Waits for the exit until `deadline`, then SIGKILLs as the platform does. `None`: killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One invoke as the platform runs it: INVOKE, then its telemetry (start, `lines` function
/// records, runtimeDone, report) once the extension is back in `next`. Returns the records.
/// An X-Ray header as Lambda passes it with INVOKE: the invoke span joins this trace.
const TRACE: &str = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1";

fn invoke(emu: &Emulator, rid: &str, lines: usize, limit: Duration) -> usize {
    emu.invoke(rid, (rid == "req-2").then_some(TRACE));
    assert!(emu.wait_idle(limit), "the extension was not back in `next` within {limit:?} of {rid}");
    let mut batch = vec![records::platform_start(rid, None)];
    for i in 0..lines {
        batch.push(records::function_text(&format!("{rid} line {i} {CANARY_WORD} paid with {CARD}")));
    }
    batch.push(records::runtime_done(rid));
    batch.push(records::report(rid));
    assert_eq!(emu.deliver(&Value::Array(batch)), 200);
    lines + 3
}

/// `(span name, faas.invocation_id)` of every exported span.
fn spans(traces: &[Received]) -> Vec<(String, Option<String>)> {
    spans_with_ids(traces).into_iter().map(|(n, id, _, _)| (n, id)).collect()
}

/// `(span name, faas.invocation_id, trace id, parent span id)` in hex.
fn spans_with_ids(traces: &[Received]) -> Vec<(String, Option<String>, String, String)> {
    let mut out = Vec::new();
    for r in traces {
        let req = ExportTraceServiceRequest::decode(&r.body[..]).unwrap();
        for rs in &req.resource_spans {
            let res = &rs.resource.as_ref().unwrap().attributes;
            assert_eq!(str_attr(res, "service.name"), Some("sealtrail-lambda-test"));
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                out.push((
                    s.name.clone(),
                    str_attr(&s.attributes, "faas.invocation_id").map(str::to_owned),
                    hex(&s.trace_id),
                    hex(&s.parent_span_id),
                ));
            }
        }
    }
    out
}

fn metrics(c: &Collector) -> Vec<ExportMetricsServiceRequest> {
    c.received("/v1/metrics")
        .iter()
        .map(|r| ExportMetricsServiceRequest::decode(&r.body[..]).unwrap())
        .collect()
}

fn assert_no_event_content(bodies: &[Received]) {
    let digits = CARD.replace(' ', "");
    for r in bodies {
        for needle in [CANARY_WORD, CARD, digits.as_str(), "line 0"] {
            assert!(
                !r.body.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} in a telemetry export to {}",
                r.path
            );
        }
    }
}

#[test]
fn invokes_are_flushed_as_they_end_and_the_rest_at_shutdown_with_the_pipelines_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(false);
    let cfg = config(dir.path(), &format!("http://{}", collector.addr), "");
    let emu = Emulator::start(Behaviour::default());
    let mut child = start(&emu, dir.path(), &cfg);
    emu.wait_subscribed(INIT).expect("subscribed");

    let mut total = 0;
    let rids = ["req-1", "req-2", "req-3"];
    for (n, rid) in rids.iter().enumerate() {
        total += invoke(&emu, rid, 10 * (n + 1), INIT);
        // Before any SHUTDOWN and with no periodic export due: the invoke's own flush sent
        // its span and the counters (the invoke counter is already n + 1).
        let seen = common::eventually(Duration::from_secs(10), || {
            spans(&collector.received("/v1/traces")).iter().any(|(_, id)| id.as_deref() == Some(rid))
                && metric_value(
                    &metrics(&collector),
                    "sealtrail.component.counter",
                    &[("component_id", "lambda"), ("counter", "invokes")],
                ) == Some(n as i64 + 1)
        });
        assert!(seen, "no flush at the end of {rid}");
    }

    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let status = wait_until(&mut child, deadline);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "killed at the deadline or failed: {log}");
    assert!(!log.contains("abandoned"), "{log}");
    assert!(!log.contains(CANARY_WORD) && !log.contains(CARD), "{log}");

    let traces = collector.received("/v1/traces");
    let all_metrics = collector.received("/v1/metrics");
    assert_no_event_content(&traces);
    assert_no_event_content(&all_metrics);

    let names = spans(&traces);
    for rid in rids {
        let n =
            names.iter().filter(|(name, id)| name == "sealtrail.lambda.invoke" && id.as_deref() == Some(rid));
        assert_eq!(n.count(), 1, "{rid}: {names:?}");
    }
    // The invoke that came with an X-Ray header is a child of the function's span.
    for (name, id, trace, parent) in spans_with_ids(&traces) {
        if name == "sealtrail.lambda.invoke" {
            let joined = trace == "5f35ae120c0fec141ab77a00bc047aa2" && parent == "2be948a625588e32";
            assert_eq!(joined, id.as_deref() == Some("req-2"), "{id:?}: trace {trace}, parent {parent}");
        }
    }
    for want in [
        "sealtrail.pipeline.start",
        "sealtrail.lambda.shutdown",
        "sealtrail.pipeline.shutdown",
        "sealtrail.segment.seal",
    ] {
        assert!(names.iter().any(|(n, _)| n == want), "{want} not exported: {names:?}");
    }

    // The final counters: exactly what went through.
    let reqs = metrics(&collector);
    let v = |metric: &str, want: &[(&str, &str)]| metric_value(&reqs, metric, want);
    let source = [("component_kind", "source"), ("component_id", "lambda")];
    let scrub = [("component_kind", "transform"), ("component_id", "scrub")];
    let vault = [("component_kind", "sink"), ("component_id", "vault")];
    assert_eq!(v("sealtrail.component.events_out", &source), Some(total as i64));
    assert_eq!(v("sealtrail.component.redactions", &[scrub[0], scrub[1], ("detector", "card")]), Some(60));
    assert_eq!(v("sealtrail.component.events_out", &vault), Some(total as i64));
    assert!(v("sealtrail.component.segments_sealed", &vault).unwrap_or(0) >= 1);
    assert_eq!(
        v(
            "sealtrail.component.counter",
            &[("component_kind", "agent"), ("component_id", "lambda"), ("counter", "invokes")]
        ),
        Some(3)
    );
    assert!(emu.init_errors().is_empty() && emu.exit_errors().is_empty());
}

#[test]
fn a_collector_that_never_answers_does_not_hold_up_invokes_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(true);
    // An export timeout far beyond both the 100 ms per-invoke flush limit and the 500 ms
    // SHUTDOWN budget below: only those limits can keep the extension on time.
    let cfg = config(dir.path(), &format!("http://{}", collector.addr), "timeout = \"20s\"");
    let emu = Emulator::start(Behaviour::default());
    let mut child = start(&emu, dir.path(), &cfg);
    emu.wait_subscribed(INIT).expect("subscribed");
    let mut total = 0;
    for rid in ["r-1", "r-2", "r-3"] {
        // Back in `next` within a bound far below the export timeout (a contract check with
        // a generous bound, not a timing: the flush gives up after 100 ms).
        total += invoke(&emu, rid, 20, Duration::from_secs(5));
    }
    let deadline = emu.shutdown("timeout", Duration::from_millis(500));
    let status = wait_until(&mut child, deadline);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "killed at the deadline or failed: {log}");
    assert!(collector.connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // Every record was sealed, and the telemetry was given up with one warning.
    let sealed = log
        .lines()
        .find(|l| l.contains("sink.vault"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("events_out=")))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(sealed, Some(total), "{log}");
    assert_eq!(log.lines().filter(|l| l.contains("abandoned")).count(), 1, "{log}");
    assert!(!log.contains(CANARY_WORD) && !log.contains(CARD), "{log}");
}
