//! Issue 15 in Lambda extension mode: with `acknowledgements = true` the Telemetry listener
//! answers 200 only once the records are in the sealed sink's fsynced write-ahead log, so a
//! sandbox killed right after (SHUTDOWN with too little time to seal, then SIGKILL) loses
//! nothing: the log stays in the data directory (`/tmp` on Lambda) and the next start replays
//! it into sealed segments. Driven by the in-repo Extensions/Telemetry API emulator.

mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::process::{Child, Stdio};
use std::time::Duration;

use emulator::{Behaviour, Emulator, records};
use serde_json::Value;

const CANARY: &str = "CANARY-lambda-ack-0b7e";

fn start(dir: &std::path::Path, cfg: &std::path::Path, emu: &Emulator) -> Child {
    common::cmd(dir)
        .arg("lambda")
        .env("SEALTRAIL_CONFIG", cfg)
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealtrail")
}

#[test]
fn shutdown_without_time_to_seal_then_sigkill_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = common::write(
        dir.path(),
        "lambda.toml",
        &format!(
            "[sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\nacknowledgements = true\n\
             [transforms.redact]\ntype = \"redact\"\ninputs = [\"lambda\"]\n\
             [sinks.sealed]\ntype = \"sealed\"\ninputs = [\"redact\"]\npath = \"{}\"\nwal = true\nmax_age = \"1h\"\n",
            data.display()
        ),
    );
    let emu = Emulator::start(Behaviour::default());
    let mut child = start(dir.path(), &cfg, &emu);
    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed");
    let mut sent = Vec::new();
    for (n, rid) in ["req-1", "req-2", "req-3"].iter().enumerate() {
        emu.invoke(rid, None);
        assert!(emu.wait_idle(Duration::from_secs(20)));
        let lines: Vec<String> = (0..50).map(|i| format!("invoke {n} line {i} {CANARY}")).collect();
        let mut batch = vec![records::platform_start(rid, None)];
        batch.extend(lines.iter().map(|l| records::function_text(l)));
        batch.push(records::report(rid));
        // 200 means durable: the records are in the fsynced log.
        assert_eq!(emu.deliver(&Value::Array(batch)), 200);
        sent.extend(lines);
    }
    // SHUTDOWN with no time left, and the sandbox is gone before anything is sealed.
    emu.shutdown("timeout", Duration::from_millis(0));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = common::stderr(&out);
    assert!(!stderr.contains(CANARY), "{stderr}");
    for f in walk(&data) {
        let raw = std::fs::read(&f).unwrap();
        assert!(!raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "plaintext in {}", f.display());
    }

    // The next start (a new sandbox on the same /tmp) replays the log before taking input.
    let emu = Emulator::start(Behaviour::default());
    let child = start(dir.path(), &cfg, &emu);
    emu.wait_subscribed(Duration::from_secs(20)).expect("subscribed again");
    emu.shutdown("spindown", Duration::from_millis(2000));
    let out = common::wait_output(child, Duration::from_secs(30));
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("write-ahead log replayed"), "{stderr}");

    let q = common::cmd(dir.path())
        .args(["query", data.to_str().unwrap(), "--keys", dir.path().join("keys").to_str().unwrap()])
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(0), "{}", common::stderr(&q));
    let bodies: Vec<String> = common::stdout(&q)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["body"].as_str().map(str::to_owned))
        .collect();
    for line in &sent {
        assert!(bodies.contains(line), "{line:?} acknowledged but not sealed");
    }
    assert!(walk(&data.join(".wal")).is_empty(), "the replayed log is gone");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
