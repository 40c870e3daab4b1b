//! Issue 15 with issue 14: the write-ahead log's data key is wrapped by the same provider as
//! the segments, so with a KMS default key (`kms:alias/…`) the log header holds a KMS
//! ciphertext and replay after SIGKILL unwraps it through KMS. Runs the real binary against
//! the moto server (as tests/kms.rs does).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealtrail::event::Event;
use sealtrail::keys::{KeyChain, Keyring, KmsOptions, LocalProvider};
use sealtrail::sinks::sealed::wal::{self as sealed_wal, ReplayStats};

use common::aws::*;
use common::bin;
use common::python;

const CANARY: &str = "CANARY-walkms-3c8d11";

fn agent(config: &Path, keys: &Path, port: u16, stdin: Stdio) -> Child {
    Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap(), "--keys", keys.to_str().unwrap()])
        .envs(aws_env(port))
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The line numbers the log holds now, read through KMS as the next start would.
fn logged(data: &Path, keys: &Path, port: u16) -> BTreeSet<usize> {
    let local = LocalProvider::new(Arc::new(Keyring::open(keys)));
    let chain = KeyChain::new(
        local,
        KmsOptions { endpoint: Some(format!("http://127.0.0.1:{port}")), audit_dir: keys.to_owned() },
    );
    let mut stats = ReplayStats::default();
    let mut out = BTreeSet::new();
    for (_, path) in sealed_wal::list(&data.join(sealed_wal::WAL_DIR)).unwrap() {
        let _ = sealed_wal::replay_file(&path, &chain, &mut stats, |events| {
            for e in events {
                if let Event::Log(l) = e {
                    if let Some(n) =
                        l.body.strip_prefix("line ").and_then(|b| b.split(' ').next()?.parse().ok())
                    {
                        out.insert(n);
                    }
                }
            }
            Ok(())
        });
    }
    out
}

#[test]
fn the_log_key_is_wrapped_by_kms_and_replay_after_sigkill_unwraps_it() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The library's KMS client (used below to read the log) takes credentials and region
    // from the environment. SAFETY: set before this test starts any thread of its own, and
    // this binary has a single test.
    for (k, v) in aws_env(port) {
        unsafe { std::env::set_var(k, v) };
    }
    let _moto = Moto::start(port);
    let tmp = tempfile::tempdir().unwrap();
    let (data, keys) = (tmp.path().join("data"), tmp.path().join("keys"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kms_tool.py");
    let out =
        Command::new(python()).arg(script).args(["create", "walkey"]).envs(aws_env(port)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let arn =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["arn"].as_str().unwrap().to_owned();
    let config = tmp.path().join("walkms.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[keys]\ndefault = \"kms:alias/walkey\"\n[sources.in]\ntype = \"stdin\"\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\nwal = true\nmax_age = \"1h\"\n",
            data.display()
        ),
    )
    .unwrap();
    let n = 2000;
    let mut child = agent(&config, &keys, port, Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let text: String = (0..n).map(|i| format!("line {i} {CANARY}\n")).collect();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged(&data, &keys, port).len() < n {
        assert!(child.try_wait().unwrap().is_none(), "the agent exited");
        assert!(Instant::now() < deadline, "the lines did not all reach the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    // The log header holds the KMS key's ARN and its ciphertext, never a line in plaintext.
    let wal_files = sealed_wal::list(&data.join(sealed_wal::WAL_DIR)).unwrap();
    assert!(!wal_files.is_empty());
    for (_, p) in &wal_files {
        let raw = std::fs::read(p).unwrap();
        assert!(raw.windows(arn.len()).any(|w| w == arn.as_bytes()), "no KMS key id in {}", p.display());
        assert!(!raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "plaintext in {}", p.display());
    }

    // Recovery: replays through KMS, seals, exits.
    let out = agent(&config, &keys, port, Stdio::null()).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("write-ahead log replayed"), "{err}");
    let out = Command::new(bin())
        .args(["query", data.to_str().unwrap(), "--keys", keys.to_str().unwrap(), "--format", "jsonl"])
        .envs(aws_env(port))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sealed: BTreeSet<usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["body"].as_str()?.strip_prefix("line ")?.split(' ').next()?.parse().ok()
        })
        .collect();
    assert_eq!(sealed, (0..n).collect::<BTreeSet<_>>());
    assert!(sealed_wal::list(&data.join(sealed_wal::WAL_DIR)).unwrap().is_empty());
}
