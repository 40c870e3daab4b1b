//! Lambda extension mode end to end: the real binary as a child process against the in-repo
//! emulator of the Extensions and Telemetry APIs (`common/lambda_emulator.rs`), through Init,
//! invokes with function logs (string and JSON records) and platform events, and SHUTDOWN;
//! plus the failure cases of the issue. These use a `console` JSON sink so they need no other
//! component; `tests/lambda_sealed.rs` runs the embedded default (redact → sealed → query).

mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emulator::{Behaviour, Emulator, records};
use serde_json::{Value, json};

const CARD: &str = "4111 1111 1111 1111";
const URL_SECRET: &str = "hunter2";
const TRACE: &str = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1";
const INIT: Duration = Duration::from_secs(20);

/// The console test configuration: telemetry on any free port → JSON lines on stdout.
fn console_config(dir: &Path, extra: &str) -> PathBuf {
    common::write(
        dir,
        "lambda.toml",
        &format!(
            "[sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\n{extra}\n[sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"lambda\"]\nallow_unredacted = true\n"
        ),
    )
}

/// The extension as a child process, with its output collected by threads.
struct Extension {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn start(emu: &Emulator, dir: &Path, config: Option<&Path>, args: &[&str]) -> Extension {
    let mut c = common::cmd(dir);
    c.args(args)
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "eu-west-1")
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match config {
        Some(p) => c.env("SEALTRAIL_CONFIG", p),
        None => c.env_remove("SEALTRAIL_CONFIG"),
    };
    let mut child = c.spawn().expect("start sealtrail");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let (o, e) = (stdout.clone(), stderr.clone());
    let readers = vec![
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                o.lock().unwrap().push(line);
            }
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            e.lock().unwrap().push_str(&s);
        }),
    ];
    Extension { child, stdout, stderr, readers }
}

impl Extension {
    /// Waits for the exit until `deadline`, then SIGKILLs, as the platform does at the
    /// SHUTDOWN deadline. `None`: it had to be killed.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the exit (generous limit for failure cases) and collects the output.
    fn finish(mut self, deadline: Instant) -> (Option<ExitStatus>, Vec<Value>, String) {
        let status = self.wait_until(deadline);
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let lines = self.stdout.lock().unwrap().clone();
        let records = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
            .collect();
        let err = self.stderr.lock().unwrap().clone();
        (status, records, err)
    }
}

fn attr<'a>(r: &'a Value, k: &str) -> &'a Value {
    &r["attributes"][k]
}

/// Runs one invoke the way the platform does: INVOKE to the extension, then the telemetry
/// of the invoke (start, the function's lines, runtimeDone, report) in one batch.
fn invoke(emu: &Emulator, request_id: &str, lines: Vec<Value>) {
    emu.invoke(request_id, Some(TRACE));
    assert!(emu.wait_idle(INIT), "the extension did not take the INVOKE event");
    let mut batch = vec![records::platform_start(request_id, Some(TRACE))];
    batch.extend(lines);
    batch.push(records::runtime_done(request_id));
    batch.push(records::report(request_id));
    assert_eq!(emu.deliver(&Value::Array(batch)), 200);
}

#[test]
fn lifecycle_with_string_and_json_function_logs_platform_events_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);

    let (sub, _port) = emu.wait_subscribed(INIT).expect("subscribed");
    assert!(emu.wait_idle(INIT), "init did not finish");
    // Registration as the reference describes it.
    let reg = &emu.calls_to("/extension/register")[0];
    assert_eq!(reg.header("Lambda-Extension-Name"), Some("sealtrail"));
    let body: Value = serde_json::from_slice(&reg.body).unwrap();
    assert_eq!(body["events"], json!(["INVOKE", "SHUTDOWN"]));
    assert_eq!(sub["schemaVersion"], "2022-12-13");
    assert_eq!(sub["types"], json!(["platform", "function"]));
    assert!(sub["destination"]["URI"].as_str().unwrap().starts_with("http://sandbox.localdomain:"));
    assert!(emu.calls_to("/telemetry")[0].header("Lambda-Extension-Identifier").is_some());

    // Telemetry produced during Init reaches the extension once it subscribed.
    assert_eq!(emu.deliver(&json!([records::init_start()])), 200);
    let mut expected = Vec::new();
    for (n, rid) in ["req-1", "req-2", "req-3"].iter().enumerate() {
        let text = format!("[INFO]\tinvoke {n} paid with card {CARD}");
        let json_msg = format!("invoke {n} calls https://user:{URL_SECRET}@api.example.com/x");
        expected.push((text.clone(), rid.to_string()));
        expected.push((json_msg.clone(), rid.to_string()));
        invoke(
            &emu,
            rid,
            vec![records::function_text(&text), records::function_json(rid, "WARN", &json_msg)],
        );
    }
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let (status, recs, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");

    for (body, rid) in &expected {
        let r = recs
            .iter()
            .find(|r| r["body"] == *body)
            .unwrap_or_else(|| panic!("missing {body:?} in {recs:?}"));
        assert_eq!(attr(r, "faas.invocation_id"), rid.as_str());
        assert_eq!(attr(r, "lambda.type"), "function");
        assert_eq!(r["service"], "checkout");
        assert_eq!(r["trace_id"], "5f35ae120c0fec141ab77a00bc047aa2");
        assert_eq!(r["resource"]["faas.name"], "checkout");
        assert_eq!(r["resource"]["cloud.region"], "eu-west-1");
    }
    let json_rec = recs.iter().find(|r| r["body"].as_str().unwrap().starts_with("invoke 1 calls")).unwrap();
    assert_eq!(json_rec["severity_text"], "WARN");
    assert_eq!(attr(json_rec, "logger"), "root");
    let text_rec = recs.iter().find(|r| r["body"].as_str().unwrap().starts_with("[INFO]")).unwrap();
    assert_eq!(text_rec["severity_text"], "INFO");

    let reports: Vec<&Value> = recs.iter().filter(|r| r["body"] == "platform.report").collect();
    assert_eq!(reports.len(), 3);
    assert_eq!(attr(reports[0], "faas.invocation_id"), "req-1");
    assert_eq!(attr(reports[0], "status"), "success");
    assert_eq!(attr(reports[0], "metrics.maxMemoryUsedMB"), 41);
    assert_eq!(attr(reports[0], "metrics.durationMs"), 12.5);
    assert!(recs.iter().any(|r| r["body"] == "platform.initStart"));
    assert_eq!(recs.iter().filter(|r| r["body"] == "platform.runtimeDone").count(), 3);

    // The agent's own log never carries event contents.
    assert!(!stderr.contains(CARD) && !stderr.contains(URL_SECRET), "{stderr}");
    assert!(stderr.contains("registered and subscribed"), "{stderr}");
    assert!(emu.init_errors().is_empty() && emu.exit_errors().is_empty());
}

#[test]
fn no_subcommand_with_runtime_api_runs_as_extension_and_accepts_the_documented_forms() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &[]);
    emu.wait_subscribed(INIT).expect("subscribed");
    // The documented forms: eventType and shutdownReason in upper case, deadlineMs a string.
    invoke(&emu, "r-1", vec![records::function_text("hello")]);
    let deadline_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 2000;
    emu.push_event(
        json!({"eventType": "SHUTDOWN", "deadlineMs": deadline_ms.to_string(), "shutdownReason": "SPINDOWN"}),
    );
    let (status, recs, stderr) = ext.finish(Instant::now() + Duration::from_secs(2));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert!(recs.iter().any(|r| r["body"] == "hello" && attr(r, "faas.invocation_id") == "r-1"), "{recs:?}");
}

#[test]
fn batches_arriving_after_shutdown_are_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    emu.wait_subscribed(INIT).expect("subscribed");
    invoke(&emu, "r-1", vec![records::function_text("during the invoke")]);
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    // The platform flushes its last buffered records after sending SHUTDOWN.
    while emu.events_delivered() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let late = json!([records::function_text("flushed after SHUTDOWN"), records::report("r-1")]);
    assert_eq!(emu.deliver(&late), 200);
    let (status, recs, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert!(recs.iter().any(|r| r["body"] == "flushed after SHUTDOWN"), "{recs:?}");
    assert!(recs.iter().any(|r| r["body"] == "during the invoke"));
    // Once it has exited, deliveries are refused (connection refused: status 0).
    assert_eq!(emu.deliver(&json!([records::function_text("too late")])), 0);
}

#[test]
fn malformed_batch_gets_400_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    emu.wait_subscribed(INIT).expect("subscribed");
    assert_eq!(emu.deliver_raw(format!("[{{\"type\":\"function\",\"record\":\"{CARD}").into_bytes()), 400);
    assert_eq!(emu.deliver_raw(b"{\"not\":\"an array\"}".to_vec()), 400);
    assert_eq!(emu.deliver(&json!([records::function_text("fine")])), 200);
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let (status, recs, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert_eq!(recs.len(), 1);
    assert!(stderr.contains("errors.malformed_batch=2"), "{stderr}");
    assert!(!stderr.contains(CARD), "a rejected batch must not be echoed: {stderr}");
}

#[test]
fn registration_refused_exits_cleanly_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour {
        refuse_register: Some((403, "Extension.TooManyExtensions")),
        ..Default::default()
    });
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    let (status, recs, stderr) = ext.finish(Instant::now() + INIT);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("cannot register as a Lambda extension"), "{stderr}");
    assert!(stderr.contains("403") && stderr.contains("Extension.TooManyExtensions"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(recs.is_empty());
    assert!(emu.calls_to("/event/next").is_empty() && emu.calls_to("/telemetry").is_empty());
}

#[test]
fn subscription_refused_is_reported_as_an_init_error() {
    let dir = tempfile::tempdir().unwrap();
    let emu =
        Emulator::start(Behaviour { refuse_subscribe: Some((400, "ValidationError")), ..Default::default() });
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    let (status, _, stderr) = ext.finish(Instant::now() + INIT);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    let errs = emu.init_errors();
    assert_eq!(errs.len(), 1, "{stderr}");
    assert_eq!(errs[0].error_type, "Extension.SubscriptionFailed");
    assert!(errs[0].body["errorMessage"].as_str().unwrap().contains("ValidationError"));
    assert!(stderr.contains("cannot subscribe to the Lambda Telemetry API"), "{stderr}");
    assert!(emu.calls_to("/event/next").is_empty());
}

#[test]
fn invalid_configuration_is_reported_as_an_init_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "[sources.lambda.buffering]\ntimeout_ms = 5\n");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    let (status, _, stderr) = ext.finish(Instant::now() + INIT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "stderr: {stderr}");
    let errs = emu.init_errors();
    assert_eq!(errs.len(), 1, "{stderr}");
    assert_eq!(errs[0].error_type, "Extension.ConfigInvalid");
    assert!(errs[0].body["errorMessage"].as_str().unwrap().contains("buffering.timeout_ms"), "{:?}", errs[0]);
}

#[test]
fn shutdown_with_500_ms_left_delivers_everything_and_exits_0_before_the_kill() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    emu.wait_subscribed(INIT).expect("subscribed");
    let lines: Vec<Value> = (0..2000).map(|i| records::function_text(&format!("line {i}"))).collect();
    invoke(&emu, "r-1", lines);
    // The platform SIGKILLs at the deadline (`finish` does the same).
    let deadline = emu.shutdown("timeout", Duration::from_millis(500));
    let (status, recs, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "killed at the deadline or failed; stderr: {stderr}");
    assert_eq!(recs.iter().filter(|r| r["body"].as_str().unwrap().starts_with("line ")).count(), 2000);
    assert!(stderr.contains("reason=timeout"), "{stderr}");
}

#[test]
fn the_classic_emulators_telemetry_stub_does_not_stop_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour { stub_telemetry: true, ..Default::default() });
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    assert!(emu.wait_idle(INIT), "init did not finish");
    emu.invoke("r-1", None);
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let (status, _, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("Telemetry.NotSupported"), "{stderr}");
    assert!(emu.init_errors().is_empty());
}

#[test]
fn end_of_invoke_flush_policy_and_extension_records() {
    // `flush = "end"` is accepted and the `extension` type is subscribed when asked for.
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg =
        console_config(dir.path(), "flush = \"end\"\ntypes = [\"platform\", \"function\", \"extension\"]\n");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    let (sub, _) = emu.wait_subscribed(INIT).expect("subscribed");
    assert_eq!(sub["types"], json!(["platform", "function", "extension"]));
    emu.invoke("r-1", None);
    assert!(emu.wait_idle(INIT));
    let ext_rec = json!({"time": records::now(), "type": "extension", "record": "other extension says hi"});
    assert_eq!(
        emu.deliver(&json!([records::platform_start("r-1", None), ext_rec, records::report("r-1")])),
        200
    );
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let (status, recs, stderr) = ext.finish(deadline);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    let r = recs.iter().find(|r| r["body"] == "other extension says hi").unwrap();
    assert_eq!(attr(r, "lambda.type"), "extension");
    assert_eq!(attr(r, "faas.invocation_id"), "r-1");
    assert!(r["trace_id"].is_null());
}

#[test]
fn outside_lambda_the_command_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::cmd(dir.path()).arg("lambda").env_remove("AWS_LAMBDA_RUNTIME_API").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("AWS_LAMBDA_RUNTIME_API is not set"), "{}", common::stderr(&out));
}

#[test]
fn a_failing_event_loop_is_reported_as_an_exit_error() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour { fail_next_after: Some(1), ..Default::default() });
    let cfg = console_config(dir.path(), "");
    let ext = start(&emu, dir.path(), Some(&cfg), &["lambda"]);
    emu.wait_subscribed(INIT).expect("subscribed");
    // Records accepted before the failure are still delivered.
    assert_eq!(emu.deliver(&json!([records::function_text("before the failure")])), 200);
    emu.invoke("r-1", None);
    let (status, recs, stderr) = ext.finish(Instant::now() + INIT);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    let errs = emu.exit_errors();
    assert_eq!(errs.len(), 1, "{stderr}");
    assert_eq!(errs[0].error_type, "Extension.EventLoopFailed");
    assert!(errs[0].body["errorMessage"].as_str().unwrap().contains("500"), "{:?}", errs[0]);
    assert!(stderr.contains("the Lambda event loop failed"), "{stderr}");
    assert!(recs.iter().any(|r| r["body"] == "before the failure"), "{recs:?}");
}

#[test]
fn a_stalled_pipeline_never_stalls_the_platform_and_drops_are_counted() {
    // Nobody reads the console sink's stdout for a while: the pipe fills, the pipeline backs
    // up, and the listener keeps answering 200 from its byte-bounded queue; past the queue's
    // budget it drops and counts. Nothing is lost silently: shown = delivered - dropped.
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Behaviour::default());
    let cfg = console_config(dir.path(), "max_body_bytes = 524288\nmax_buffered_bytes = 524288\n");
    let mut child = common::cmd(dir.path())
        .arg("lambda")
        .env("AWS_LAMBDA_RUNTIME_API", emu.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "checkout")
        .env("SEALTRAIL_CONFIG", &cfg)
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    emu.wait_subscribed(INIT).expect("subscribed");
    let (batches, per_batch) = (150, 100);
    for b in 0..batches {
        let batch: Vec<Value> = (0..per_batch)
            .map(|i| records::function_text(&format!("batch {b} record {i} {}", "x".repeat(150))))
            .collect();
        assert_eq!(emu.deliver(&Value::Array(batch)), 200, "batch {b}");
    }
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).count());
    let deadline = emu.shutdown("spindown", Duration::from_millis(2000));
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
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
    let err = err_reader.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {err}");
    let shown = reader.join().unwrap();
    let dropped: usize = err
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dropped.backlog_full="))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0);
    assert!(dropped > 0, "expected the backlog to overflow: {err}");
    assert_eq!(shown + dropped, batches * per_batch, "stderr: {err}");
}
