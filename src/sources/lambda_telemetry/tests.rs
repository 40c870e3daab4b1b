//! Unit tests of the `lambda_telemetry` source: mapping, configuration, and one delivery
//! round trip over a real socket.

use super::handler::platform_drops;
use super::mapping::{parse_time, text_level};
use super::*;
use crate::event::find_attr;

fn mapper() -> Mapper {
    Mapper { source: Arc::from("tel"), service: "fn".into(), resource: vec![] }
}

fn map(json: &str, st: &mut StreamState, invoke: Option<&lambda::Invoke>) -> Vec<LogRecord> {
    let batch: Vec<Envelope> = serde_json::from_str(json).unwrap();
    let mut out = Vec::new();
    mapper().map(batch, st, invoke, &mut out);
    out.into_iter()
        .map(|e| match e {
            Event::Log(l) => l,
            Event::Span(_) => unreachable!(),
        })
        .collect()
}

fn s(v: Option<&Value>) -> String {
    v.map(Value::to_text).unwrap_or_default()
}

#[test]
fn function_records_string_and_json_with_request_ids_and_traces() {
    let mut st = StreamState::default();
    let recs = map(
        r#"[
        {"time":"2022-10-12T00:00:00.000Z","type":"platform.start","record":{"requestId":"r1","version":"$LATEST","tracing":{"spanId":"24cd7d670fa455f0","type":"X-Amzn-Trace-Id","value":"Root=1-6352a70e-1e2c502e358361800241fd45;Parent=35465b3a9e2f7c6a;Sampled=1"}}},
        {"time":"2022-10-12T00:00:01.000Z","type":"function","record":"[WARN]\tplain line\n"},
        {"time":"2022-10-12T00:00:02.000Z","type":"function","record":{"timestamp":"2022-10-12T00:03:50.000Z","level":"ERROR","requestId":"r1","message":"json line","logger":"root","extra":{"a":1}}},
        {"time":"2022-10-12T00:00:03.000Z","type":"platform.report","record":{"requestId":"r1","status":"success","metrics":{"durationMs":2599.4,"billedDurationMs":2600,"memorySizeMB":128,"maxMemoryUsedMB":94}}},
        {"time":"2022-10-12T00:00:04.000Z","type":"function","record":"after the invoke"}
    ]"#,
        &mut st,
        None,
    );
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[1].body, "[WARN]\tplain line");
    assert_eq!(recs[1].severity_number, severity::WARN);
    assert_eq!(s(find_attr(&recs[1].attributes, attr::REQUEST_ID)), "r1");
    assert_eq!(hex::encode(recs[1].trace_id.unwrap()), "6352a70e1e2c502e358361800241fd45");
    assert_eq!(hex::encode(recs[1].span_id.unwrap()), "35465b3a9e2f7c6a");
    assert_eq!(recs[1].time, parse_time("2022-10-12T00:00:01.000Z"));
    assert_eq!(recs[1].service, "fn");

    assert_eq!(recs[2].body, "json line");
    assert_eq!(recs[2].severity_text, "ERROR");
    assert_eq!(recs[2].severity_number, severity::ERROR);
    assert_eq!(recs[2].time, parse_time("2022-10-12T00:03:50.000Z"));
    assert_eq!(s(find_attr(&recs[2].attributes, "logger")), "root");
    assert_eq!(s(find_attr(&recs[2].attributes, "extra")), r#"{"a":1}"#);
    assert_eq!(s(find_attr(&recs[2].attributes, attr::TYPE)), "function");

    assert_eq!(recs[3].body, "platform.report");
    assert_eq!(find_attr(&recs[3].attributes, "metrics.durationMs"), Some(&Value::Double(2599.4)));
    assert_eq!(find_attr(&recs[3].attributes, "metrics.maxMemoryUsedMB"), Some(&Value::Int(94)));
    assert_eq!(s(find_attr(&recs[3].attributes, "status")), "success");
    assert_eq!(s(find_attr(&recs[3].attributes, attr::REQUEST_ID)), "r1");
    assert_eq!(recs[3].severity_number, severity::INFO);

    // After the report, the stream no longer knows the request; nothing is attached.
    assert!(find_attr(&recs[4].attributes, attr::REQUEST_ID).is_none());
    assert!(st.request_id.is_none());
}

#[test]
fn the_driver_invoke_is_the_fallback_request_id() {
    let mut st = StreamState::default();
    let inv = lambda::Invoke {
        request_id: "r9".into(),
        deadline_ms: 0,
        trace: Some("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32".into()),
    };
    let recs = map(r#"[{"type":"function","record":"x"}]"#, &mut st, Some(&inv));
    assert_eq!(s(find_attr(&recs[0].attributes, attr::REQUEST_ID)), "r9");
    assert_eq!(hex::encode(recs[0].trace_id.unwrap()), "5f35ae120c0fec141ab77a00bc047aa2");
    assert_eq!(recs[0].time, 0);
}

#[test]
fn failures_are_errors_and_odd_records_do_not_panic() {
    let mut st = StreamState::default();
    let recs = map(
        r#"[{"type":"platform.runtimeDone","record":{"requestId":"r","status":"timeout","errorType":"Sandbox.Timeout"}},
            {"type":"platform.fault","record":"RequestId: r Process exited"},
            {"type":"function","record":12},
            {"type":"function"},
            {"time":"not a time","type":"platform.logsDropped","record":{"droppedBytes":10,"droppedRecords":3,"reason":"slow"}}]"#,
        &mut st,
        None,
    );
    assert_eq!(recs[0].severity_number, severity::ERROR);
    assert_eq!(recs[1].body, "platform.fault: RequestId: r Process exited");
    assert_eq!(recs[2].body, "12");
    assert_eq!(recs[3].body, "");
    assert_eq!(recs[4].time, 0);
    assert_eq!(platform_drops(&Event::Log(recs[4].clone())), Some(3));
}

#[test]
fn config_limits_are_checked() {
    let parse = |t: &str| -> LambdaTelemetryConfig { toml::from_str(t).unwrap() };
    assert!(parse("").check().is_ok());
    let e = parse(
        "schema_version = \"2020-01-01\"\ntypes = [\"logs\"]\n[buffering]\nmax_items = 5\ntimeout_ms = 10",
    )
    .check()
    .unwrap_err()
    .to_string();
    for part in ["schema_version", "\"logs\"", "buffering.max_items", "buffering.timeout_ms"] {
        assert!(e.contains(part), "{e}");
    }
    assert!(parse("address = \"localhost\"").check().is_err());
    assert!(parse("max_body_bytes = 1000").check().is_err());
    assert!(toml::from_str::<LambdaTelemetryConfig>("bogus = 1").is_err());
    // Issue 11: the grace is a duration; the older `_ms` name keeps its unit; not both.
    assert_eq!(parse("").shutdown_grace(), Duration::from_millis(100));
    assert_eq!(parse("shutdown_grace = \"250ms\"").shutdown_grace(), Duration::from_millis(250));
    assert_eq!(parse("shutdown_grace_ms = 250").shutdown_grace(), Duration::from_millis(250));
    let e = parse("shutdown_grace = \"1s\"\nshutdown_grace_ms = 5").check().unwrap_err().to_string();
    assert!(e.contains("`shutdown_grace` and `shutdown_grace_ms`"), "{e}");
    let sub = parse("port = 0").subscription(4242);
    assert_eq!(sub["destination"]["URI"], "http://sandbox.localdomain:4242");
    assert_eq!(sub["schemaVersion"], "2022-12-13");
    assert_eq!(sub["types"], serde_json::json!(["platform", "function"]));
    assert_eq!(sub["buffering"]["maxBytes"], 262_144);
}

/// One HTTP/1.1 POST over a raw socket; returns the status code.
async fn post(port: u16, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn end_policy_sends_a_seal_marker_after_the_report_and_shutdown_drains() {
    use crate::component::Message;
    use crate::component::shutdown;
    let handle = Arc::new(Handle::new(lambda::FunctionInfo { name: "fn".into(), ..Default::default() }));
    let cfg: LambdaTelemetryConfig =
        toml::from_str("port = 0\naddress = \"127.0.0.1\"\nflush = \"end\"\nmax_body_bytes = 524288")
            .unwrap();
    let built =
        cfg.build(&BuildContext { id: "tel", globals: &Default::default(), lambda: Some(&handle) }).unwrap();
    let metrics = Arc::new(ComponentMetrics::new("source.tel"));
    let (tx, mut rx) = mpsc::channel(16);
    let (trigger, sd) = shutdown::channel();
    let cx = SourceContext {
        id: "tel".into(),
        out: Fanout::new(vec![tx], metrics.clone()),
        shutdown: sd,
        metrics: metrics.clone(),
        globals: Default::default(),
        exit_code: Default::default(),
    };
    let task = tokio::spawn(built.run(cx));
    let port = handle.wait_listener().await.unwrap().port;
    let status = post(
        port,
        r#"[{"type":"platform.start","record":{"requestId":"r1"}},{"type":"function","record":"hi"}]"#,
    )
    .await;
    assert_eq!(status, 200);
    let Some(Message::Batch(b)) = rx.recv().await else { panic!("expected a batch") };
    assert_eq!(b.len(), 2);
    assert!(rx.try_recv().is_err(), "no seal order before the end of the invoke");

    assert_eq!(
        post(port, r#"[{"type":"platform.report","record":{"requestId":"r1","status":"success"}}]"#).await,
        200
    );
    assert!(matches!(rx.recv().await, Some(Message::Batch(b)) if b.len() == 1));
    // The seal marker (an empty batch) follows the report's batch.
    let order = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(matches!(order, Message::Seal), "expected the seal order, got {order:?}");

    let big = format!("[{{\"type\":\"function\",\"record\":\"{}\"}}]", "x".repeat(600_000));
    assert_eq!(post(port, &big).await, 413);
    assert_eq!(metrics.get("errors.body_too_large"), 1);
    assert_eq!(post(port, "[{").await, 400);
    assert_eq!(post(port, &"x".repeat(10)).await, 400);
    assert_eq!(metrics.get("errors.malformed_batch"), 2);
    assert_eq!(metrics.get("batches"), 2);

    // Shutdown: the source delivers what it accepted and returns; the output closes.
    assert_eq!(post(port, r#"[{"type":"function","record":"last"}]"#).await, 200);
    trigger.trigger(crate::component::Reason::Requested);
    task.await.unwrap().unwrap();
    let mut rest = Vec::new();
    while let Some(m) = rx.recv().await {
        if let Message::Batch(b) = m {
            rest.extend(b.iter().cloned());
        }
    }
    assert_eq!(rest.len(), 1);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "still accepting");
}

#[test]
fn text_levels() {
    assert_eq!(text_level("[ERROR]\tboom"), Some(severity::ERROR));
    assert_eq!(text_level("[nope] x"), None);
    assert_eq!(text_level("plain"), None);
    assert_eq!(text_level("["), None);
}
