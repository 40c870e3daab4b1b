//! End to end with the real OpenTelemetry Python SDK: its gRPC and HTTP/protobuf exporters
//! send spans and logs carrying a card number and URL credentials to the `otlp` source, the
//! `redact` transform scrubs them, the `sealed` sink writes encrypted segments, and
//! `sealtrail query` reads them back: every span with its ids and parent link, every log
//! record with its trace context, and no secret anywhere, neither in the query output nor in
//! the segment files.
//!
//! Needs the `redact` transform, the `sealed` sink and the `query` command (built in parallel
//! to the OTLP work): run after they are merged.

mod otlp_support;

use std::process::Command;
use std::time::Duration;

use otlp_support::*;

const SECRETS: &[&str] = &["4111 1111 1111 1111", "4111111111111111", "hunter2", "abc123secret"];

fn query(dir: &std::path::Path, signal: &str) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["query", dir.join("data").to_str().unwrap(), "--signal", signal, "--format", "jsonl"])
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s:?} in query output: {text}");
    }
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn python_sdk_spans_and_logs_come_back_from_sealed_segments_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[sources.otel]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"otel\"]\n\
         [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
        dir.path().join("data").display()
    );
    let agent = Agent::start(dir.path(), "sealed", &config);
    let grpc = run_python("otlp_export.py", &["grpc", &format!("http://{}", agent.grpc.unwrap())]);
    let http = run_python("otlp_export.py", &["http", &format!("http://{}", agent.http.unwrap())]);
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");
    for s in SECRETS {
        assert!(!log.contains(s), "secret {s:?} in the agent's log");
    }

    let spans = query(dir.path(), "spans");
    let logs = query(dir.path(), "logs");
    for sent in [&grpc, &http] {
        for w in sent["spans"].as_array().unwrap() {
            let got = spans
                .iter()
                .find(|s| s["span_id"] == w["span_id"])
                .unwrap_or_else(|| panic!("span {} not in the sealed segments", w["span_id"]));
            assert_eq!(got["trace_id"], w["trace_id"]);
            // A root span has no parent: null (or an empty string, depending on the column).
            let parent = got["parent_span_id"].as_str().filter(|p| !p.is_empty());
            assert_eq!(parent, w["parent_span_id"].as_str(), "{got}");
            assert!(got["redactions"].as_u64().unwrap() > 0, "{got}");
        }
        for w in sent["logs"].as_array().unwrap() {
            let got = logs.iter().find(|l| l["span_id"] == w["span_id"]).expect("log record in the segments");
            assert_eq!(got["trace_id"], w["trace_id"]);
            assert!(got["body"].as_str().unwrap().starts_with("charge failed for card"));
        }
    }
    assert_eq!(spans.len(), 18);
    assert_eq!(logs.len(), 12);
    // The URL stays readable apart from its credentials.
    assert!(spans.iter().any(|s| s["name"].as_str().unwrap().contains("db.example.com/orders")));

    // And no plaintext in any file under the data directory.
    for entry in walk(&dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        for s in SECRETS.iter().chain(["charge failed", "checkout card"].iter()) {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s:?} in plain text in {}",
                entry.display()
            );
        }
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
