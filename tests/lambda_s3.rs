//! Issue 14 in Lambda: the extension on its embedded default configuration with
//! `SEALTRAIL_KMS_KEY` and `SEALTRAIL_S3_URL` set, driven by the in-repo emulator, with KMS
//! and S3 from the moto server. SHUTDOWN comes with 500 ms left: the extension exits before
//! the deadline, and every function log line is either in S3 or still in the data directory
//! (counted), from where the next environment's start uploads it.

mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::aws::{Moto, aws_env};
use common::{free_port, python};
use emulator::{Behaviour, Emulator, records};
use serde_json::Value;

const CARD: &str = "4111 1111 1111 1111";

fn tool(script: &str, port: u16, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(script);
    let out = Command::new(python()).arg(path).args(args).envs(aws_env(port)).output().unwrap();
    assert!(out.status.success(), "{script} {args:?}: {}", common::stderr(&out));
    out
}

/// The extension as the layer runs it: no config file, the embedded Lambda default.
fn extension(dir: &Path, emu: &Emulator, port: u16) -> Child {
    common::cmd(dir)
        .env_remove("SEALTRAIL_CONFIG")
        .env("SEALTRAIL_DATA_DIR", dir.join("tmp"))
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .env("SEALTRAIL_KMS_KEY", "kms:alias/seal")
        .env("SEALTRAIL_S3_URL", "s3://logs-bucket/fn/")
        .env("SEALTRAIL_OTLP_GRPC_ADDRESS", "127.0.0.1:0")
        .env("SEALTRAIL_OTLP_HTTP_ADDRESS", "127.0.0.1:0")
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .envs(aws_env(port))
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealtrail")
}

/// Waits for the extension's exit, at most until `deadline` (then kills it: a failure).
fn exit_by(mut child: Child, deadline: Instant) -> (Option<i32>, String) {
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = child.wait_with_output().unwrap();
    (code, common::stderr(&out))
}

fn local_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    common::files(&dir.join("tmp"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// The function log lines in the sealed segments under `target` (local or `s3://`).
fn bodies(dir: &Path, port: u16, target: &str) -> Vec<String> {
    let q = common::cmd(dir)
        .args(["query", target, "--keys", dir.join("keys").to_str().unwrap(), "--format", "jsonl"])
        .envs(aws_env(port))
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(0), "query {target}: {}", common::stderr(&q));
    let mut out: Vec<String> = common::stdout(&q)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|r| r["body"].as_str().filter(|b| b.starts_with("order ")).map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn shutdown_with_500_ms_left_seals_uploads_or_keeps_every_line_for_the_next_start() {
    let port = free_port();
    let _moto = Moto::start(port);
    tool("kms_tool.py", port, &["create", "seal"]);
    tool("s3_tool.py", port, &["mkbucket", "logs-bucket"]);
    let dir = tempfile::tempdir().unwrap();

    let emu = Emulator::start(Behaviour::default());
    let child = extension(dir.path(), &emu, port);
    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed");
    let mut expected = Vec::new();
    for rid in ["req-1", "req-2"] {
        emu.invoke(rid, None);
        assert!(emu.wait_idle(Duration::from_secs(20)));
        let mut batch = vec![records::platform_start(rid, None)];
        for n in 0..50 {
            batch.push(records::function_text(&format!("order {rid}-{n:02} paid with {CARD}")));
            expected.push(format!("order {rid}-{n:02} paid with ****"));
        }
        batch.extend([records::runtime_done(rid), records::report(rid)]);
        assert_eq!(emu.deliver(&Value::Array(batch)), 200);
    }
    expected.sort();
    // The data key is fetched with the segment's first event (its KMS call is audited), so
    // SHUTDOWN, which in Lambda comes long after the last invoke, finds it already there.
    let audit = dir.path().join("keys/audit.jsonl");
    assert!(
        common::eventually(Duration::from_secs(20), || std::fs::read_to_string(&audit)
            .is_ok_and(|l| l.contains("kms:GenerateDataKey"))),
        "no data key was fetched before SHUTDOWN"
    );
    let deadline = emu.shutdown("spindown", Duration::from_millis(500));
    let (code, stderr) = exit_by(child, deadline);
    assert_eq!(code, Some(0), "no clean exit before the SHUTDOWN deadline: {stderr}");
    assert!(!stderr.contains(CARD), "{stderr}");

    // Every line is in S3 or still local: nothing lost, nothing twice.
    let in_s3 = bodies(dir.path(), port, "s3://logs-bucket/fn");
    let left = local_segments(dir.path());
    let local = if left.is_empty() {
        Vec::new()
    } else {
        bodies(dir.path(), port, dir.path().join("tmp").to_str().unwrap())
    };
    let mut all: Vec<String> = in_s3.iter().chain(&local).cloned().collect();
    all.sort();
    assert_eq!(all, expected, "S3: {} lines, local: {} lines; {stderr}", in_s3.len(), local.len());
    if !left.is_empty() {
        assert!(stderr.contains("sealed segments not uploaded in time stay on disk"), "{stderr}");
    }

    // The next environment (same /tmp) uploads what was left at its start, before SHUTDOWN.
    let emu = Emulator::start(Behaviour::default());
    let child = extension(dir.path(), &emu, port);
    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed again");
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let (code, stderr) = exit_by(child, deadline);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(local_segments(dir.path()).is_empty(), "{stderr}");
    assert_eq!(bodies(dir.path(), port, "s3://logs-bucket/fn"), expected);
}
