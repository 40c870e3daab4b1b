//! The Lambda extension with its embedded default configuration (lambda_telemetry → redact →
//! sealed), driven by the in-repo emulator through Init, invokes whose function logs carry
//! secrets (string and JSON records) and SHUTDOWN; then `sealtrail query` must show every
//! function log line, redacted, with its request id, and no segment byte may hold a secret.
//! The second test checks the `flush = "end"` policy: the sealed sink honours
//! the seal markers of the `lambda_telemetry` source and seals a segment per invoke.

mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::process::Stdio;
use std::time::{Duration, Instant};

use emulator::{Behaviour, Emulator, records};
use serde_json::Value;

const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const URL_SECRET: &str = "hunter2";
const TRACE: &str = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1";

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { files_under(&p, out) } else { out.push(p) }
    }
}

#[test]
fn embedded_default_seals_redacted_function_logs_with_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    let emu = Emulator::start(Behaviour::default());
    let mut child = common::cmd(dir.path())
        .env_remove("SEALTRAIL_CONFIG")
        .env("SEALTRAIL_DATA_DIR", &data)
        .env("SEALTRAIL_KEYS", &keys)
        .env("SEALTRAIL_OTLP_GRPC_ADDRESS", "127.0.0.1:0")
        .env("SEALTRAIL_OTLP_HTTP_ADDRESS", "127.0.0.1:0")
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealtrail");

    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed");
    let mut expected = Vec::new();
    for (n, rid) in ["req-1", "req-2", "req-3"].iter().enumerate() {
        let text = format!("invoke {n} paid with card {CARD} from {IBAN}");
        let json_msg = format!("invoke {n} calls https://user:{URL_SECRET}@api.example.com/x");
        expected.push((format!("invoke {n} paid with card"), rid.to_string()));
        expected.push((format!("invoke {n} calls https://"), rid.to_string()));
        emu.invoke(rid, Some(TRACE));
        assert!(emu.wait_idle(Duration::from_secs(20)));
        let batch = Value::Array(vec![
            records::platform_start(rid, Some(TRACE)),
            records::function_text(&text),
            records::function_json(rid, "INFO", &json_msg),
            records::runtime_done(rid),
            records::report(rid),
        ]);
        assert_eq!(emu.deliver(&batch), 200);
    }
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = common::stderr(&out);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    for secret in [CARD, IBAN, URL_SECRET] {
        assert!(!stderr.contains(secret), "{stderr}");
    }

    // No plaintext secret in any file the agent wrote.
    let mut files = Vec::new();
    files_under(&data, &mut files);
    assert!(!files.is_empty(), "no segment was sealed");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for secret in [CARD, IBAN, URL_SECRET, "paid with card"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds {secret:?}",
                f.display()
            );
        }
    }

    let q = common::cmd(dir.path())
        .args(["query", data.to_str().unwrap(), "--keys", keys.to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(0), "query stderr: {}", common::stderr(&q));
    let rows: Vec<Value> = common::stdout(&q).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (prefix, rid) in &expected {
        let r = rows
            .iter()
            .find(|r| r["body"].as_str().is_some_and(|b| b.starts_with(prefix.as_str())))
            .unwrap_or_else(|| panic!("{prefix:?} not in the query output: {rows:?}"));
        let body = r["body"].as_str().unwrap();
        for secret in [CARD, IBAN, URL_SECRET] {
            assert!(!body.contains(secret), "unredacted: {body}");
        }
        assert!(r["redactions"].as_u64().unwrap_or(0) >= 1, "{r}");
        assert_eq!(r["attributes"]["faas.invocation_id"], rid.as_str(), "{r}");
        assert_eq!(r["service"], "checkout");
        assert_eq!(r["trace_id"], "5f35ae120c0fec141ab77a00bc047aa2");
    }
    assert_eq!(rows.iter().filter(|r| r["body"] == "platform.report").count(), 3);
}

fn sealed_segments(data: &std::path::Path) -> usize {
    let mut files = Vec::new();
    files_under(data, &mut files);
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".inflight"))
        .count()
}

#[test]
fn end_of_invoke_policy_seals_a_segment_per_invoke_before_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = common::write(
        dir.path(),
        "lambda.toml",
        &format!(
            "[sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\nflush = \"end\"\n[transforms.redact]\ntype = \"redact\"\ninputs = [\"lambda\"]\n[sinks.sealed]\ntype = \"sealed\"\ninputs = [\"redact\"]\npath = \"{}\"\n",
            data.display()
        ),
    );
    let emu = Emulator::start(Behaviour::default());
    let mut child = common::cmd(dir.path())
        .arg("lambda")
        .env("SEALTRAIL_CONFIG", &cfg)
        .env("SEALTRAIL_KEYS", dir.path().join("keys"))
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealtrail");
    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed");
    for (n, rid) in ["req-1", "req-2"].iter().enumerate() {
        emu.invoke(rid, None);
        assert!(emu.wait_idle(Duration::from_secs(20)));
        let batch = Value::Array(vec![
            records::platform_start(rid, None),
            records::function_text(&format!("invoke {n} card {CARD}")),
            records::report(rid),
        ]);
        assert_eq!(emu.deliver(&batch), 200);
        // Sealed at the end of the invoke, not at SHUTDOWN.
        assert!(
            common::eventually(Duration::from_secs(10), || sealed_segments(&data) == n + 1),
            "after invoke {n}: {} segments",
            sealed_segments(&data)
        );
    }
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {}", common::stderr(&out));
    assert_eq!(sealed_segments(&data), 2);
}
