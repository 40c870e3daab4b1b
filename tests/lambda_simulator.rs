//! The extension against an independent implementation of the same APIs: the
//! `lambda-simulator` crate (Runtime, Extensions and Telemetry APIs with event delivery).
//!
//! The simulator produces platform telemetry (`platform.initStart`, `platform.start`,
//! `platform.runtimeDone`, `platform.report`, …) but no `function` records (it does not
//! capture a runtime's output), so this test checks the lifecycle and the platform events;
//! function logs are covered against the in-repo emulator (`tests/lambda.rs`). The runtime
//! side is played by this test over the Runtime API.

mod common;
#[path = "common/lambda_emulator.rs"]
mod emulator;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use hyper::Method;
use lambda_simulator::{FreezeMode, InvocationStatus, ShutdownReason, Simulator};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_against_the_lambda_simulator_crate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write(
        dir.path(),
        "lambda.toml",
        "[sources.lambda]\ntype = \"lambda_telemetry\"\nport = 0\n[sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"lambda\"]\nallow_unredacted = true\n",
    );
    let sim = Simulator::builder()
        .function_name("checkout")
        .freeze_mode(FreezeMode::None)
        .extension_ready_timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_millis(2000))
        .build()
        .await
        .expect("start the simulator");
    let api = sim.runtime_api_url().replace("http://", "");

    let mut cmd = common::cmd(dir.path());
    cmd.arg("lambda")
        .envs(sim.lambda_env_vars())
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("SEALTRAIL_CONFIG", &cfg)
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sealtrail");
    let stdout = child.stdout.take().unwrap();
    let reader =
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());

    sim.wait_for(|| async { sim.extension_count().await >= 1 }, Duration::from_secs(20))
        .await
        .expect("the extension registered");
    // As in Lambda, the function's Init (the runtime's first `next`) starts once the
    // extension has finished its own Init: the simulator does not hold the runtime back, and
    // it replays no earlier events to a late subscriber.
    sim.wait_for(
        || async { !sim.get_telemetry_events_by_type("platform.telemetrySubscription").await.is_empty() },
        Duration::from_secs(20),
    )
    .await
    .expect("the extension subscribed");
    let mut request_ids = Vec::new();
    for n in 0..3 {
        let id = sim.enqueue_payload(json!({"n": n})).await;
        // Play the function's runtime: take the invocation and answer it.
        let (status, _) =
            emulator::http(&api, Method::GET, "/2018-06-01/runtime/invocation/next", &[], vec![])
                .await
                .expect("runtime next");
        assert_eq!(status, 200);
        let (status, _) = emulator::http(
            &api,
            Method::POST,
            &format!("/2018-06-01/runtime/invocation/{id}/response"),
            &[("Content-Type", "application/json")],
            b"\"ok\"".to_vec(),
        )
        .await
        .expect("runtime response");
        assert_eq!(status, 202);
        let state =
            sim.wait_for_invocation_complete(&id, Duration::from_secs(20)).await.expect("invocation done");
        assert_eq!(state.status, InvocationStatus::Success);
        sim.wait_for_extensions_ready(&id, Duration::from_secs(10)).await.expect("extension took the INVOKE");
        request_ids.push(id);
    }
    let registered = sim.get_registered_extensions().await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].name, "sealtrail");

    // The simulator emits each platform.report from a task of its own once the extensions
    // are ready; wait until the last one exists, so SHUTDOWN comes after it as in Lambda.
    sim.wait_for(
        || async { sim.get_telemetry_events_by_type("platform.report").await.len() >= 3 },
        Duration::from_secs(20),
    )
    .await
    .expect("three reports");
    sim.graceful_shutdown(ShutdownReason::Spindown).await;
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                return (Some(s), err);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                return (None, String::new());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    let (status, stderr) = status;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    let recs: Vec<Value> = reader.join().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for id in &request_ids {
        for kind in ["platform.start", "platform.runtimeDone", "platform.report"] {
            assert!(
                recs.iter()
                    .any(|r| r["body"] == kind && r["attributes"]["faas.invocation_id"] == id.as_str()),
                "no {kind} for {id} in {:?}\nstderr: {stderr}",
                recs.iter()
                    .map(|r| (r["body"].clone(), r["attributes"]["faas.invocation_id"].clone()))
                    .collect::<Vec<_>>()
            );
        }
    }
    assert!(recs.iter().all(|r| r["service"] == "checkout"));
}
