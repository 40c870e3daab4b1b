//! The Lambda figures of BENCHMARKS.md, measured on a release binary against the in-repo
//! emulator: start → registered and subscribed, SHUTDOWN → exit with 10,000 buffered
//! records, peak RSS over a 1,000-invoke run, binary size. Ignored in normal test runs (it
//! takes a while and wants a release binary): `scripts/bench-lambda.sh` runs it with
//! `SEALTRAIL_BENCH_BIN` pointing at the layer's binary.
//!
//! The figures are printed, not asserted (no timed assertions in tests); the correctness of
//! each run is asserted (every record delivered, exit 0).
//!
//! Every figure is measured twice in the same run: with `[telemetry]` off (the baseline) and
//! on, exporting over OTLP/HTTP to the test-side collector on loopback (the per-invoke
//! flush included), so the cost of the agent's own telemetry is a ratio of the two.
//!
//! `SEALTRAIL_BENCH_CONFIG` picks the pipeline (default: lambda_telemetry → blackhole, which
//! measures the extension itself; after the merge, the embedded default measures sealing).

#[path = "common/otlp_collector.rs"]
mod collector;
mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector::Collector;
use emulator::{Behaviour, Emulator, records};
use serde_json::Value;

fn bin() -> PathBuf {
    std::env::var_os("SEALTRAIL_BENCH_BIN").map(PathBuf::from).unwrap_or_else(|| common::bin().into())
}

/// The pipeline's configuration file, with a `[telemetry]` section exporting to
/// `telemetry` when given.
fn config(dir: &Path, telemetry: Option<&str>) -> Option<PathBuf> {
    let base = match std::env::var("SEALTRAIL_BENCH_CONFIG").ok().as_deref() {
        Some("default") if telemetry.is_none() => return None,
        Some("default") => include_str!("../config/lambda.toml").to_owned(),
        Some(p) => std::fs::read_to_string(p).unwrap(),
        None => "[sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"lambda\"]\nallow_unredacted = true\n".to_owned(),
    };
    let section = telemetry
        .map(|e| format!("[telemetry]\nenabled = true\nendpoint = \"{e}\"\nexport_interval = \"60s\"\n"))
        .unwrap_or_default();
    // After the base: a section header would swallow its top-level keys (`data_dir`).
    Some(common::write(dir, "bench.toml", &format!("{base}\n{section}")))
}

fn spawn(emu: &Emulator, dir: &Path, wrap_time: bool, telemetry: Option<&str>) -> Child {
    let mut c = if wrap_time {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v").arg(bin());
        c
    } else {
        Command::new(bin())
    };
    c.arg("lambda")
        .current_dir(dir)
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .env("SEALTRAIL_DATA_DIR", dir.join("data"))
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .env("SEALTRAIL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match config(dir, telemetry) {
        Some(p) => c.env("SEALTRAIL_CONFIG", p),
        None => c.env_remove("SEALTRAIL_CONFIG"),
    };
    c.spawn().expect("start the extension")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("median {:.2} ms, p90 {:.2} ms, min {:.2} ms (n={})", p(0.5), p(0.9), v[0], v.len())
}

fn shutdown_and_wait(emu: &Emulator, child: Child) -> (Duration, String) {
    let sent = Instant::now();
    emu.shutdown("spindown", Duration::from_millis(2000));
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    (took, err)
}

#[test]
#[ignore = "benchmark: run by scripts/bench-lambda.sh"]
fn lambda_figures() {
    let b = bin();
    println!("binary: {} ({} bytes)", b.display(), std::fs::metadata(&b).unwrap().len());
    println!("== [telemetry] off");
    figures(None);
    let collector = Collector::start(false);
    let endpoint = format!("http://{}", collector.addr);
    println!("== [telemetry] on, OTLP/HTTP to a collector on loopback");
    figures(Some(&endpoint));
    println!(
        "collector received {} trace and {} metric exports",
        collector.received("/v1/traces").len(),
        collector.received("/v1/metrics").len()
    );
}

fn figures(telemetry: Option<&str>) {
    let b = bin();

    // Baseline: starting the same binary and exiting (`--version`).
    let mut base = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let s = Command::new(&b).arg("--version").stdout(Stdio::null()).status().unwrap();
        assert!(s.success());
        base.push(ms(t.elapsed()));
    }

    // 1. Start → registered, and start → subscribed.
    let (mut reg, mut sub) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(Behaviour::default());
        let t0 = Instant::now();
        let child = spawn(&emu, dir.path(), false, telemetry);
        emu.wait_subscribed(Duration::from_secs(10)).expect("subscribed");
        let (r, s) = emu.init_times();
        reg.push(ms(r.unwrap() - t0));
        sub.push(ms(s.unwrap() - t0));
        assert!(emu.wait_idle(Duration::from_secs(10)));
        shutdown_and_wait(&emu, child);
    }
    println!("baseline, start → exit of `sealtrail --version`: {}", stats(base.clone()));
    println!("start → registered: {}", stats(reg));
    println!("start → registered and subscribed: {}", stats(sub.clone()));

    // 2. SHUTDOWN → exit with 10,000 records delivered in the last invoke.
    let mut shut = Vec::new();
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(Behaviour::default());
        let child = spawn(&emu, dir.path(), false, telemetry);
        emu.wait_subscribed(Duration::from_secs(10)).expect("subscribed");
        emu.invoke("r-1", None);
        assert!(emu.wait_idle(Duration::from_secs(10)));
        for chunk in 0..10 {
            let batch: Vec<Value> = (0..1000)
                .map(|i| {
                    records::function_text(&format!(
                        "request {chunk}-{i} paid 12.50 EUR for order 7781 at shop 42"
                    ))
                })
                .collect();
            assert_eq!(emu.deliver(&Value::Array(batch)), 200);
        }
        let (took, _) = shutdown_and_wait(&emu, child);
        shut.push(ms(took));
    }
    println!("SHUTDOWN → exit, 10,000 records buffered: {}", stats(shut));

    // 3. Peak RSS over 1,000 invokes (5 function lines + start/runtimeDone/report each).
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let child = spawn(&emu, dir.path(), true, telemetry);
    emu.wait_subscribed(Duration::from_secs(10)).expect("subscribed");
    let t = Instant::now();
    let mut back = Vec::new();
    for n in 0..1000 {
        let rid = format!("req-{n}");
        let t = Instant::now();
        emu.invoke(&rid, None);
        assert!(emu.wait_idle(Duration::from_secs(10)));
        back.push(ms(t.elapsed()));
        let mut batch = vec![records::platform_start(&rid, None)];
        for i in 0..5 {
            batch.push(records::function_text(&format!("invoke {n} line {i}: charged card ending 1111")));
        }
        batch.push(records::runtime_done(&rid));
        batch.push(records::report(&rid));
        assert_eq!(emu.deliver(&Value::Array(batch)), 200);
    }
    let run = t.elapsed();
    let (_, err) = shutdown_and_wait(&emu, child);
    let rss_kb: u64 = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time -v output");
    // The emulator polls every 2 ms: a resolution of 2 ms.
    println!("INVOKE queued → extension back in next: {}", stats(back));
    println!(
        "1,000 invokes ({} records) in {:.2} s; peak RSS {:.1} MiB ({rss_kb} kB)",
        8000,
        run.as_secs_f64(),
        rss_kb as f64 / 1024.0
    );
}
