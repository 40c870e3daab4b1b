//! Interop with the official OpenTelemetry Python SDK: its OTLP/gRPC exporter and,
//! separately, its OTLP/HTTP (protobuf) exporter send spans and logs to the real binary; every
//! span arrives with its trace id, span id and parent link, every log record with its trace
//! context. The same through an `otlp` sink hop to a second agent.
//!
//! Secrets are checked in `tests/otlp_sealed.rs`, which needs the `redact` transform and the
//! `sealed` sink; here the console sink prints what arrived, unredacted (test only).

mod otlp_support;

use std::time::Duration;

use otlp_support::*;

fn check_arrivals(sent: &serde_json::Value, events: &[serde_json::Value], service: &str) {
    let spans: Vec<_> = events.iter().filter(|e| e["signal"] == "spans").collect();
    let logs: Vec<_> = events.iter().filter(|e| e["signal"] == "logs").collect();
    let want = sent["spans"].as_array().unwrap();
    assert_eq!(spans.len(), want.len());
    for w in want {
        let got = spans
            .iter()
            .find(|s| s["span_id"] == w["span_id"])
            .unwrap_or_else(|| panic!("span {} missing", w["span_id"]));
        assert_eq!(got["trace_id"], w["trace_id"]);
        assert_eq!(got["parent_span_id"], w["parent_span_id"]);
        assert_eq!(got["name"], w["name"]);
        assert_eq!(got["service"], service);
        assert_eq!(got["scope_name"], "interop.test");
    }
    let root = spans.iter().find(|s| s["parent_span_id"].is_null()).unwrap();
    assert_eq!(root["kind"], 2);
    assert_eq!(root["events"][0]["name"], "charged");
    assert_eq!(root["attributes"]["amounts"], serde_json::json!([1.5, 2.25]));
    let child = spans.iter().find(|s| !s["parent_span_id"].is_null()).unwrap();
    assert_eq!(child["status_code"], 2);
    let want_logs = sent["logs"].as_array().unwrap();
    assert_eq!(logs.len(), want_logs.len());
    for w in want_logs {
        let got = logs.iter().find(|l| l["span_id"] == w["span_id"]).expect("log record with its span id");
        assert_eq!(got["trace_id"], w["trace_id"]);
        assert_eq!(got["severity_text"], "WARN");
        assert!(got["body"].as_str().unwrap().starts_with("charge failed for card"));
    }
}

fn interop(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config(""));
    let endpoint = match protocol {
        "grpc" => format!("http://{}", agent.grpc.unwrap()),
        _ => format!("http://{}", agent.http.unwrap()),
    };
    let sent = run_python("otlp_export.py", &[protocol, &endpoint]);
    assert_eq!(sent["failures"], 0);
    let n = sent["spans"].as_array().unwrap().len() + sent["logs"].as_array().unwrap().len();
    assert_eq!(n, 15);
    let events = agent.events(n, Duration::from_secs(30));
    check_arrivals(&sent, &events, &format!("payments-{protocol}"));
    let (status, rest, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(rest.is_empty());
}

#[test]
fn python_sdk_grpc_exporter() {
    interop("grpc");
}

#[test]
fn python_sdk_http_protobuf_exporter() {
    interop("http");
}

#[test]
fn python_sdk_through_an_otlp_sink_hop() {
    let dir = tempfile::tempdir().unwrap();
    let downstream = Agent::start(dir.path(), "down", &console_config(""));
    let relay = Agent::start(
        dir.path(),
        "relay",
        &format!(
            "[sources.in]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
             [sinks.up]\ntype = \"otlp\"\ninputs = [\"in\"]\nallow_unredacted = true\nendpoint = \"http://{}\"\n",
            downstream.grpc.unwrap()
        ),
    );
    let sent = run_python("otlp_export.py", &["http", &format!("http://{}", relay.http.unwrap())]);
    let events = downstream.events(15, Duration::from_secs(30));
    check_arrivals(&sent, &events, "payments-http");
    let (status, _, log) = relay.stop();
    assert!(status.success());
    assert_eq!(counter(&log, "sink.up", "events_out"), 15, "{log}");
    assert!(downstream.stop().0.success());
}

#[test]
fn sidecar_wraps_an_instrumented_function_and_exits_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = format!("{}/tests/interop/otlp_export.py", env!("CARGO_MANIFEST_DIR"));
    let config = format!(
        "[sources.function]\ntype = \"exec\"\ncommand = [{:?}, {script:?}, \"http\", \"http://127.0.0.1:{port}\"]\n\
         service = \"payments\"\n\
         [sources.otel]\ntype = \"otlp\"\ngrpc_address = \"\"\nhttp_address = \"127.0.0.1:{port}\"\n\
         [sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"function\", \"otel\"]\nallow_unredacted = true\n",
        python().display().to_string()
    );
    let p = dir.path().join("sidecar.toml");
    std::fs::write(&p, config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config", p.to_str().unwrap()])
        .env("SEALTRAIL_KEYS", dir.path().join("keys"))
        .env("SEALTRAIL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The child's stdout (what it sent, as JSON) is one log record of the exec source.
    let printed = events.iter().find(|e| e["source"] == "function").expect("the child's stdout");
    let sent: serde_json::Value = serde_json::from_str(printed["body"].as_str().unwrap()).unwrap();
    let otel: Vec<_> = events.iter().filter(|e| e["source"] != "function").cloned().collect();
    check_arrivals(&sent, &otel, "payments-http");
}
