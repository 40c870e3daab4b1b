//! The agent's own telemetry (`[telemetry]`) through the real binary: its spans and counters
//! reach a test-side OTLP/HTTP collector on a real socket (decoded with `opentelemetry-proto`)
//! and, over gRPC, a second sealtrail whose sealed segments are read back with `sealtrail
//! query`; the counters match what the pipeline processed; no event content, key material or
//! header value appears in what is exported; a collector that never answers does not hold the
//! pipeline up; and with telemetry off nothing connects.

#[path = "common/otlp_collector.rs"]
mod collector;
mod otlp_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use collector::{Collector, Received, attr, hex, metric_value, str_attr};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use otlp_support::{Agent, bin, counter};
use prost::Message;

/// Event contents that must never leave through telemetry: a card number (in both forms) and
/// a plain marker word.
const CANARY_WORD: &str = "canary-b7e1f3";
const CARD: &str = "4111 1111 1111 1111";
const API_KEY: &str = "tk-9c2d4e6f8a";

fn telemetry_section(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "[telemetry]\nenabled = true\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n\
         export_interval = \"200ms\"\nservice_name = \"sealtrail-under-test\"\n{extra}\n"
    )
}

/// stdin → redact → sealed, plus whatever `extra` adds.
fn pipeline(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{extra}\n[sources.app]\ntype = \"stdin\"\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"app\"]\n\
         [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
        dir.join("data").display()
    )
}

/// The input: `n` lines, every third with the card number, all with the canary word.
fn input(n: usize) -> (String, usize) {
    let mut s = String::new();
    let mut cards = 0;
    for i in 0..n {
        if i % 3 == 0 {
            s.push_str(&format!("line {i} {CANARY_WORD} paid with {CARD}\n"));
            cards += 1;
        } else {
            s.push_str(&format!("line {i} {CANARY_WORD} nothing secret\n"));
        }
    }
    (s, cards)
}

/// Runs `sealtrail run` over `stdin` to the end; returns its log (stderr).
fn run_agent(dir: &std::path::Path, config: &str, stdin: &str) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("SEALTRAIL_CONFIG")
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .env("SEALTRAIL_LOG", "info")
        .env("SEALTRAIL_LOG_FORMAT", "json")
        .env("TELEMETRY_API_KEY", API_KEY)
        // Meant for the functions the agent serves: the agent must not follow them.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-function-header=function-only")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

fn assert_no_canary(bodies: &[Received]) {
    let digits = CARD.replace(' ', "");
    for r in bodies {
        for needle in [CANARY_WORD, CARD, digits.as_str(), API_KEY] {
            assert!(
                !r.body.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} in a telemetry export to {}",
                r.path
            );
        }
        assert!(
            !r.headers.iter().any(|(k, _)| k == "x-function-header"),
            "OTEL_EXPORTER_OTLP_HEADERS followed"
        );
    }
}

#[test]
fn spans_and_counters_reach_an_http_collector_with_the_pipelines_numbers_and_no_event_content() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(false);
    let endpoint = format!("http://{}", collector.addr);
    let section =
        telemetry_section(&endpoint, "http/protobuf", "headers = { x-api-key = \"${TELEMETRY_API_KEY}\" }");
    let (text, cards) = input(300);
    let log = run_agent(dir.path(), &pipeline(dir.path(), &section), &text);
    assert!(!log.contains(API_KEY) && !log.contains(CANARY_WORD), "{log}");

    let traces = collector.received("/v1/traces");
    let metrics = collector.received("/v1/metrics");
    assert!(!traces.is_empty() && !metrics.is_empty(), "traces {}, metrics {}", traces.len(), metrics.len());
    assert_no_canary(&traces);
    assert_no_canary(&metrics);
    // Nor the key that sealed the segment, in any form.
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("keys/default.json")).unwrap()).unwrap();
    let material =
        key["versions"][0]["material"].as_str().unwrap().strip_prefix("base64:").unwrap().to_owned();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(&material).unwrap();
    assert_eq!(raw.len(), 32);
    for r in traces.iter().chain(&metrics) {
        for needle in [material.as_bytes(), &raw[..], hex(&raw).as_bytes()] {
            assert!(
                !r.body.windows(needle.len()).any(|w| w == needle),
                "key material in an export to {}",
                r.path
            );
        }
    }
    for r in traces.iter().chain(&metrics) {
        assert!(r.headers.contains(&("x-api-key".into(), API_KEY.into())), "{:?}", r.headers);
        assert_eq!(r.headers.iter().find(|(k, _)| k == "content-type").unwrap().1, "application/x-protobuf");
    }

    // Spans: the agent's own operations, under its service name.
    let mut names = Vec::new();
    for r in &traces {
        let req = ExportTraceServiceRequest::decode(&r.body[..]).unwrap();
        for rs in &req.resource_spans {
            let resource = &rs.resource.as_ref().unwrap().attributes;
            assert_eq!(str_attr(resource, "service.name"), Some("sealtrail-under-test"));
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "sealtrail");
                for s in &ss.spans {
                    names.push(s.name.clone());
                    if s.name == "sealtrail.segment.seal" {
                        assert_eq!(str_attr(&s.attributes, "sealtrail.signal"), Some("logs"));
                        assert_eq!(str_attr(&s.attributes, "sealtrail.key_id"), Some("default#1"));
                        assert!(matches!(
                            attr(&s.attributes, "sealtrail.rows"),
                            Some(any_value::Value::IntValue(300))
                        ));
                    }
                }
            }
        }
    }
    for want in [
        "sealtrail.pipeline.start",
        "sealtrail.pipeline.shutdown",
        "sealtrail.segment.seal",
        "sealtrail.key.wrap_dek",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not exported: {names:?}");
    }

    // Counters: the final export holds exactly what the pipeline did.
    let reqs: Vec<_> =
        metrics.iter().map(|r| ExportMetricsServiceRequest::decode(&r.body[..]).unwrap()).collect();
    let rm = &reqs[0].resource_metrics[0];
    assert_eq!(
        str_attr(&rm.resource.as_ref().unwrap().attributes, "service.name"),
        Some("sealtrail-under-test")
    );
    let v = |metric: &str, want: &[(&str, &str)]| metric_value(&reqs, metric, want);
    let app = [("component_kind", "source"), ("component_id", "app")];
    let scrub = [("component_kind", "transform"), ("component_id", "scrub")];
    let vault = [("component_kind", "sink"), ("component_id", "vault")];
    assert_eq!(v("sealtrail.component.events_out", &app), Some(300));
    assert_eq!(
        v("sealtrail.component.bytes_out", &app),
        Some(counter(&log, "source.app", "bytes_out") as i64)
    );
    assert_eq!(v("sealtrail.component.events_in", &scrub), Some(300));
    let card = [scrub[0], scrub[1], ("detector", "card")];
    assert_eq!(v("sealtrail.component.redactions", &card), Some(cards as i64));
    assert_eq!(v("sealtrail.component.events_out", &vault), Some(300));
    assert_eq!(v("sealtrail.component.segments_sealed", &vault), Some(1));
    // The numbers agree with the agent's own shutdown summary.
    assert_eq!(counter(&log, "transform.scrub", "redactions.card"), cards as u64);
}

#[test]
fn spans_go_over_grpc_to_a_second_agent_and_come_back_from_its_sealed_segments() {
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = format!(
        "[sources.otel]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"\"\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"otel\"]\n\
         [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
        dir_b.path().join("data").display()
    );
    let b = Agent::start(dir_b.path(), "b", &config_b);
    let dir_a = tempfile::tempdir().unwrap();
    let section = telemetry_section(&format!("http://{}", b.grpc.unwrap()), "grpc", "metrics = false");
    let (text, _) = input(50);
    run_agent(dir_a.path(), &pipeline(dir_a.path(), &section), &text);
    let (status, _, log_b) = b.stop();
    assert!(status.success(), "{log_b}");

    let out = Command::new(bin())
        .args([
            "query",
            dir_b.path().join("data").to_str().unwrap(),
            "--signal",
            "spans",
            "--format",
            "jsonl",
        ])
        .env("SEALTRAIL_KEYS", dir_b.path().join("keys"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(CANARY_WORD) && !text.contains(CARD));
    let spans: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in [
        "sealtrail.pipeline.start",
        "sealtrail.pipeline.shutdown",
        "sealtrail.segment.seal",
        "sealtrail.key.wrap_dek",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    assert!(spans.iter().all(|s| s["service"] == "sealtrail-under-test"), "{spans:?}");
    let seal = spans.iter().find(|s| s["name"] == "sealtrail.segment.seal").unwrap();
    assert_eq!(seal["attributes"]["sealtrail.rows"], "50", "{seal}");
}

#[test]
fn a_collector_that_never_answers_does_not_hold_up_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(true);
    let section = telemetry_section(
        &format!("http://{}", collector.addr),
        "http/protobuf",
        "timeout = \"300ms\"\nexport_interval = \"1h\"",
    )
    .replace("export_interval = \"200ms\"\n", "");
    let (text, _) = input(2000);
    let log = run_agent(dir.path(), &pipeline(dir.path(), &section), &text);
    // Every event was sealed although no export ever succeeded…
    assert_eq!(counter(&log, "sink.vault", "events_out"), 2000, "{log}");
    assert!(collector.connections.load(Ordering::SeqCst) >= 1);
    // …and the failures (spans and metrics, at shutdown) gave one warning for the interval.
    let warnings =
        log.lines().filter(|l| l.contains("\"WARN\"") && l.contains("exporting the agent's own")).count();
    assert_eq!(warnings, 1, "{log}");
}

#[test]
fn with_telemetry_off_nothing_connects() {
    let collector = Collector::start(false);
    let endpoint = format!("http://{}", collector.addr);
    let (text, _) = input(100);
    for section in [
        String::new(),
        format!("[telemetry]\nendpoint = \"{endpoint}\"\n"),
        format!("[telemetry]\nenabled = false\nendpoint = \"{endpoint}\"\nprotocol = \"grpc\"\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = run_agent(dir.path(), &pipeline(dir.path(), &section), &text);
        assert_eq!(counter(&log, "sink.vault", "events_out"), 100, "{log}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(collector.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn telemetry_configuration_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[telemetry]\nenabled = true\n", "c.toml:2:1: telemetry: `endpoint` is required"),
        (
            "[telemetry]\nenabled = true\nendpoint = \"ftp://x\"\n",
            "c.toml:3:1: telemetry: `endpoint` = \"ftp://x\" must start with http",
        ),
        ("[telemetry]\nendpont = \"http://x\"\n", "c.toml:2:1: telemetry: unknown field `endpont`"),
        ("[telemetry]\nprotocol = \"http/json\"\n", "c.toml:2:12: telemetry: unknown variant `http/json`"),
        (
            "[telemetry]\nexport_interval = \"often\"\n",
            "c.toml:2:1: telemetry: `export_interval` = \"often\" is not a duration",
        ),
        (
            "[telemetry]\nheaders = { \"a b\" = \"v\" }\n",
            "c.toml:2:1: telemetry: `headers`: \"a b\" is not a valid header name",
        ),
    ];
    for (section, want) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, pipeline(dir.path(), section)).unwrap();
        let out =
            Command::new(bin()).args(["validate", "--config", path.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}
