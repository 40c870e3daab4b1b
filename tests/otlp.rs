//! The `otlp` source and sink through the real binary: OTLP/gRPC and OTLP/HTTP (protobuf,
//! JSON, gzip) in, JSON lines out of a console sink; every bad-input case of issue 5; the
//! backpressure answers; shutdown draining; TLS and mutual TLS; 10,000 concurrent connections;
//! and forwarding through the `otlp` sink to a second agent.

mod otlp_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use otlp_support::*;
use prost::Message;
use sealtrail::otlp::{ExportTraceServiceResponse, LogsServiceClient, TRACE_EXPORT_PATH, TraceServiceClient};

const T: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn grpc_clients(
    addr: SocketAddr,
) -> (TraceServiceClient<tonic::transport::Channel>, LogsServiceClient<tonic::transport::Channel>) {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (
        TraceServiceClient::new(ch.clone()).send_compressed(tonic::codec::CompressionEncoding::Gzip),
        LogsServiceClient::new(ch),
    )
}

/// Checks that `events` hold exactly the spans of `spans(trace_byte, n, _)`, ids and parent
/// links intact.
fn assert_spans(events: &[serde_json::Value], trace_byte: u8, n: usize) {
    let mut got: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["trace_id"] == hex(&[trace_byte; 16]) && e["signal"] == "spans").collect();
    got.sort_by_key(|e| e["name"].as_str().unwrap()[3..].parse::<usize>().unwrap());
    assert_eq!(got.len(), n);
    let root = {
        let mut id = vec![trace_byte; 8];
        id[..4].copy_from_slice(&1u32.to_be_bytes());
        hex(&id)
    };
    for (i, e) in got.iter().enumerate() {
        let mut id = vec![trace_byte; 8];
        id[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
        assert_eq!(e["span_id"], hex(&id));
        assert_eq!(e["parent_span_id"], if i == 0 { serde_json::Value::Null } else { root.clone().into() });
        assert_eq!(e["service"], "checkout");
        assert_eq!(e["kind"], 2);
        assert_eq!(e["status_code"], 1);
    }
}

#[test]
fn grpc_spans_and_logs_arrive_with_ids_and_parent_links() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config(""));
    let addr = agent.grpc.unwrap();
    rt().block_on(async {
        let (mut traces, mut logs) = grpc_clients(addr).await;
        let r = traces.export(spans(0x11, 20, 10)).await.unwrap().into_inner();
        assert_eq!(r.partial_success, None);
        let r = logs.export(log_records(&["first", "second"])).await.unwrap().into_inner();
        assert_eq!(r.partial_success, None);
    });
    let events = agent.events(22, T);
    assert_spans(&events, 0x11, 20);
    let span = events.iter().find(|e| e["name"] == "op 3").unwrap();
    assert_eq!(span["attributes"]["attr.9"], "value 9");
    assert_eq!(span["scope_name"], "test");
    let logs: Vec<_> = events.iter().filter(|e| e["signal"] == "logs").collect();
    assert_eq!(logs.iter().map(|l| l["body"].as_str().unwrap()).collect::<Vec<_>>(), ["first", "second"]);
    assert_eq!(logs[0]["trace_id"], hex(&[7; 16]));
    assert_eq!(logs[0]["span_id"], hex(&[8; 8]));
    assert_eq!(logs[0]["severity_number"], 9);
    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert_eq!(counter(&log, "source.in", "events_out"), 22);
}

#[test]
fn http_accepts_protobuf_json_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config(""));
    let addr = agent.http.unwrap();

    let r = post(addr, "/v1/traces", "application/x-protobuf", &spans(0x21, 5, 3).encode_to_vec());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(ExportTraceServiceResponse::decode(&r.body[..]).unwrap().partial_success, None);

    let gz = gzip(&spans(0x22, 4, 3).encode_to_vec());
    let r = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
        &gz,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeLogs":[{"scope":{"name":"lib"},"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":"SEVERITY_NUMBER_WARN",
      "body":{"stringValue":"json log"},"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"m","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":true}}]}}}]}]}]}]}"#;
    let r = post(addr, "/v1/logs", "application/json; charset=utf-8", json.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), "{}");

    let events = agent.events(10, T);
    assert_spans(&events, 0x21, 5);
    assert_spans(&events, 0x22, 4);
    let log = events.iter().find(|e| e["signal"] == "logs").unwrap();
    assert_eq!(log["body"], "json log");
    assert_eq!(log["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(log["severity_number"], 13);
    assert_eq!(log["attributes"]["n"], 42);
    assert_eq!(log["attributes"]["m"]["k"], true);
    assert_eq!(log["attributes"]["sealtrail.otlp.scope.name"], "lib");
    let (status, _, _) = agent.stop();
    assert!(status.success());
}

#[test]
fn http_bad_input_gets_clear_errors_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir.path(),
        "a",
        &console_config("max_request_bytes = 65536\nmax_items_per_request = 50"),
    );
    let addr = agent.http.unwrap();
    let good = spans(0x31, 2, 1).encode_to_vec();

    let r = post(addr, "/v1/traces", "text/plain", &good);
    assert_eq!(r.status, 415);
    let st = sealtrail::otlp::RpcStatus::decode(&r.body[..]).unwrap();
    assert!(st.message.contains("Content-Type must be"), "{}", st.message);

    let r = post(addr, "/v1/traces", "application/json", b"{\"resourceSpans\": [");
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["message"].as_str().unwrap().starts_with("invalid OTLP/JSON at $: not valid JSON"), "{v}");

    let r = post(
        addr,
        "/v1/traces",
        "application/json",
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("$.resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{}", r.text());

    let r = post(addr, "/v1/logs", "application/x-protobuf", b"\x0a\xff\xff\xff\xff\x0f garbage");
    assert_eq!(r.status, 400);
    assert!(sealtrail::otlp::RpcStatus::decode(&r.body[..]).unwrap().message.starts_with("invalid protobuf"));

    assert_eq!(post(addr, "/v1/metrics", "application/x-protobuf", &good).status, 404);
    assert_eq!(http_request(addr, "GET", "/v1/traces", &[], b"").status, 405);
    let r = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "br")],
        &good,
    );
    assert_eq!(r.status, 415);

    // Oversized as sent, and as inflated: 64 MiB of zeros gzip to ~64 KiB but are refused
    // after 64 KiB + 1 inflated bytes.
    let r = post(addr, "/v1/traces", "application/x-protobuf", &vec![0u8; 70_000]);
    assert_eq!(r.status, 413);
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 65536, "bomb of {} bytes", bomb.len());
    let r = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(r.status, 413);
    assert!(
        sealtrail::otlp::RpcStatus::decode(&r.body[..]).unwrap().message.contains("after gzip decompression")
    );
    let r = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
        b"not gzip at all",
    );
    assert_eq!(r.status, 400);

    // Too many items: refused whole, not retryable.
    let r = post(addr, "/v1/traces", "application/x-protobuf", &spans(0x32, 51, 0).encode_to_vec());
    assert_eq!(r.status, 413);

    // Ids of the wrong length: the rest of the request is accepted (partial success).
    let mut req = spans(0x33, 3, 1);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1; 7];
    let r = post(addr, "/v1/traces", "application/x-protobuf", &req.encode_to_vec());
    assert_eq!(r.status, 200);
    let ps = ExportTraceServiceResponse::decode(&r.body[..]).unwrap().partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("spans[1]: spanId must be 8 bytes"), "{}", ps.error_message);
    let r = post(
        addr,
        "/v1/logs",
        "application/json",
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"ok"}},{"traceId":"abcd"}]}]}]}"#,
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], "1");

    // A client that promises a body and disconnects halfway.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 60000\r\n\r\n")
        .unwrap();
    s.write_all(&good).unwrap();
    drop(s);

    // Nobody else noticed: a good request still goes through.
    let r = post(addr, "/v1/traces", "application/x-protobuf", &good);
    assert_eq!(r.status, 200);
    let events = agent.events(5, T);
    assert_spans(&events, 0x31, 2);
    let partial: Vec<_> =
        events.iter().filter(|e| e["trace_id"] == hex(&[0x33; 16])).map(|e| &e["name"]).collect();
    assert_eq!(partial, ["op 0", "op 2"]);

    let (status, rest, log) = agent.stop();
    assert!(status.success());
    assert!(rest.is_empty());
    let valid_log =
        events.iter().find(|e| e["signal"] == "logs").expect("the valid record of the partial request");
    assert_eq!(valid_log["body"], "ok");
    for (name, n) in [
        ("refused.unsupported_media_type", 1),
        ("refused.invalid_json", 2),
        ("refused.malformed_protobuf", 1),
        ("refused.not_found", 1),
        ("refused.method_not_allowed", 1),
        ("refused.unsupported_encoding", 1),
        ("refused.too_large", 1),
        ("refused.too_large_decompressed", 1),
        ("refused.bad_gzip", 1),
        ("refused.too_many_items", 1),
        ("rejected.spans", 1),
        ("rejected.logs", 1),
        ("refused.body_read", 1),
    ] {
        assert_eq!(counter(&log, "source.in", name), n, "{name} in {log}");
    }
    assert!(!log.contains("panicked"));
}

/// Sends one raw gRPC request (HTTP/2, one length-prefixed message) and returns the
/// `grpc-status` and `grpc-message`.
async fn grpc_raw(addr: SocketAddr, path: &str, frame: Vec<u8>, gzip: bool) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if gzip {
        req = req.header("grpc-encoding", "gzip");
    }
    let resp = send.send_request(req.body(Full::new(Bytes::from(frame))).unwrap()).await.unwrap();
    let mut headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    if let Some(t) = collected.trailers() {
        headers.extend(t.clone());
    }
    let get = |k: &str| headers.get(k).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (get("grpc-status"), get("grpc-message"))
}

fn grpc_frame(msg: &[u8], compressed: bool) -> Vec<u8> {
    let mut f = vec![u8::from(compressed)];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

#[test]
fn grpc_bad_input_gets_statuses_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir.path(),
        "a",
        &console_config("max_request_bytes = 65536\nmax_items_per_request = 50"),
    );
    let addr = agent.grpc.unwrap();
    rt().block_on(async {
        // Malformed protobuf.
        let (code, _) =
            grpc_raw(addr, TRACE_EXPORT_PATH, grpc_frame(b"\x0a\xff\xff\xff\xff\x0f", false), false).await;
        assert_eq!(code, "13", "INTERNAL: tonic's decode error");
        // A gzip bomb: tiny on the wire, refused when inflation passes the limit.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        let (code, msg) = grpc_raw(addr, TRACE_EXPORT_PATH, grpc_frame(&bomb, true), true).await;
        assert_ne!(code, "0", "{msg}");
        assert_ne!(code, "", "{msg}");
        // Too large as sent.
        let (code, _) = grpc_raw(addr, TRACE_EXPORT_PATH, grpc_frame(&vec![0u8; 70_000], false), false).await;
        // RESOURCE_EXHAUSTED without RetryInfo (as grpc-go answers), which OTLP clients do not
        // retry; tonic's own OUT_OF_RANGE would make them retry forever.
        assert_eq!(code, "8", "RESOURCE_EXHAUSTED: message larger than max");
        // Unknown method.
        let (code, _) = grpc_raw(
            addr,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            grpc_frame(b"", false),
            false,
        )
        .await;
        assert_eq!(code, "12");

        let (mut traces, _) = grpc_clients(addr).await;
        let err = traces.export(spans(0x41, 51, 0)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("more than the limit of 50"));
        let mut req = spans(0x42, 3, 0);
        req.resource_spans[0].scope_spans[0].spans[2].trace_id = vec![];
        let ps = traces.export(req).await.unwrap().into_inner().partial_success.unwrap();
        assert_eq!(ps.rejected_spans, 1);
        assert!(ps.error_message.contains("traceId must be 16 bytes"), "{}", ps.error_message);
        // Others unaffected.
        traces.export(spans(0x43, 4, 2)).await.unwrap();
    });
    let events = agent.events(6, T);
    assert_spans(&events, 0x42, 2);
    assert_spans(&events, 0x43, 4);
    let (status, _, log) = agent.stop();
    assert!(status.success());
    assert_eq!(counter(&log, "source.in", "refused.grpc.internal"), 1, "{log}");
    assert_eq!(counter(&log, "source.in", "refused.grpc.unimplemented"), 1);
    assert_eq!(counter(&log, "source.in", "refused.grpc.invalid_argument"), 1);
    assert!(counter(&log, "source.in", "refused.grpc.resource_exhausted") >= 1);
    assert_eq!(counter(&log, "source.in", "refused.too_many_items"), 1);
    assert_eq!(counter(&log, "source.in", "rejected.spans"), 1);
}

#[test]
fn a_full_pipeline_answers_retry_later_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The console sink writes to a pipe this test does not read at first: it blocks, the
    // channels fill, and the source must refuse rather than queue.
    let mut agent = Agent::start_stalled(dir.path(), "a", &console_config("retry_after_secs = 2"));
    let (http, grpc) = (agent.http.unwrap(), agent.grpc.unwrap());
    let body = spans(0x51, 200, 10).encode_to_vec();
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..2000 {
        let r = post(http, "/v1/traces", "application/x-protobuf", &body);
        match r.status {
            200 => accepted += 1,
            429 => {
                refused = Some(r);
                break;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    let r = refused.expect("the pipeline never filled up");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(sealtrail::otlp::RpcStatus::decode(&r.body[..]).unwrap().message.contains("pipeline is full"));
    rt().block_on(async {
        let (mut traces, _) = grpc_clients(grpc).await;
        let err = traces.export(spans(0x52, 1, 0)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // The status carries a RetryInfo so that OTLP clients do retry.
        let st = sealtrail::otlp::RpcStatus::decode(err.details()).unwrap();
        let info = sealtrail::otlp::RetryInfo::decode(&st.details[0].value[..]).unwrap();
        assert_eq!(info.retry_delay.unwrap().seconds, 2);
    });
    // Drain: everything accepted arrives, and new requests are accepted again.
    agent.resume_stdout();
    let events = agent.events(accepted * 200, Duration::from_secs(120));
    assert_eq!(events.len(), accepted * 200);
    let r = post(http, "/v1/traces", "application/x-protobuf", &spans(0x53, 3, 0).encode_to_vec());
    assert_eq!(r.status, 200);
    assert_spans(&agent.events(3, T), 0x53, 3);
    let (status, _, log) = agent.stop();
    assert!(status.success());
    assert!(counter(&log, "source.in", "refused.pipeline_full") >= 2, "{log}");
}

#[test]
fn shutdown_delivers_everything_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config(""));
    let addr = agent.http.unwrap();
    for b in 0..10u8 {
        let r = post(addr, "/v1/traces", "application/x-protobuf", &spans(0x60 + b, 50, 2).encode_to_vec());
        assert_eq!(r.status, 200);
    }
    let (status, events, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert_eq!(events.len(), 500);
    for b in 0..10u8 {
        assert_spans(&events, 0x60 + b, 50);
    }
}

#[test]
fn configuration_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |cfg: &str| {
        let p = dir.path().join("v.toml");
        std::fs::write(&p, cfg).unwrap();
        std::process::Command::new(bin())
            .args(["validate", "--config", p.to_str().unwrap()])
            .env("SEALTRAIL_KEYS", dir.path().join("keys"))
            .output()
            .unwrap()
    };
    let sink = "[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\nallow_unredacted = true\n";
    let cases = [
        (
            "grpc_address = \"0.0.0.0:4317\"",
            "`grpc_address` = 0.0.0.0:4317 is not a loopback address and no `tls` is configured",
        ),
        ("http_address = \"localhost:4318\"", "`http_address`: \"localhost:4318\" is not a listen address"),
        ("grpc_address = \"\"\nhttp_address = \"\"", "both `grpc_address` and `http_address` are disabled"),
        ("tls = { crt_file = \"/nope.crt\", key_file = \"/nope.key\" }", "cannot read /nope.crt"),
        ("max_request_bytes = 10", "`max_request_bytes` must be at least 1024"),
        ("grpc_adress = \"127.0.0.1:1\"", "grpc_adress"),
    ];
    for (extra, want) in cases {
        let out = validate(&format!("[sources.in]\ntype = \"otlp\"\n{extra}\n{sink}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
    let out = validate(&format!(
        "[sources.in]\ntype = \"otlp\"\ngrpc_address = \"0.0.0.0:4317\"\nallow_plaintext = true\n{sink}"
    ));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sink_cases = [
        ("endpoint = \"ftp://x\"", "must start with http:// or https://"),
        ("endpoint = \"http://x:1\"\ntls = {}", "`tls` is set but `endpoint` is http://"),
        (
            "endpoint = \"http://x:1\"\nheaders = { \"bad header\" = \"v\" }",
            "\"bad header\" is not a valid header name",
        ),
        (
            "endpoint = \"http://x:1\"\nheaders = { \"x-api-key\" = \"s3cr3t\\n\" }",
            "the value of \"x-api-key\" is not a valid header value",
        ),
        ("endpoint = \"http://x:1\"\nprotocol = \"carrier_pigeon\"", "carrier_pigeon"),
    ];
    for (extra, want) in sink_cases {
        let out = validate(&format!(
            "[sources.in]\ntype = \"otlp\"\n[sinks.up]\ntype = \"otlp\"\ninputs = [\"in\"]\nallow_unredacted = true\n{extra}\n"
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains("s3cr3t"), "a header value leaked: {err}");
    }
}

#[test]
fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().display();
    let agent = Agent::start(
        dir.path(),
        "a",
        &console_config(&format!(
            "tls = {{ crt_file = \"{d}/server.crt\", key_file = \"{d}/server.key\", client_ca_file = \"{d}/ca.crt\" }}"
        )),
    );
    let addr = agent.http.unwrap();
    let grpc = agent.grpc.unwrap();
    // A plain-text client gets nowhere.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));

    let body = spans(0x71, 3, 1).encode_to_vec();
    rt().block_on(async {
        use sealtrail::net::tls::ClientTls;
        let with_cert = ClientTls {
            ca_file: Some(dir.path().join("ca.crt")),
            crt_file: Some(dir.path().join("client.crt")),
            key_file: Some(dir.path().join("client.key")),
            server_name: None,
        };
        let without_cert = ClientTls { ca_file: Some(dir.path().join("ca.crt")), ..Default::default() };
        let status = tls_post(addr, with_cert.client_config(&[b"http/1.1"]).unwrap(), body.clone()).await;
        assert_eq!(status.unwrap(), 200);
        // Without a client certificate the handshake (or the first read) fails.
        let r = tls_post(addr, without_cert.client_config(&[b"http/1.1"]).unwrap(), body.clone()).await;
        assert!(r.is_err(), "a client without certificate was served: {r:?}");
        // gRPC over TLS with the client certificate, through an `otlp` sink-like client: h2.
        let status = tls_post_h2(grpc, with_cert.client_config(&[b"h2"]).unwrap(), spans(0x72, 2, 0)).await;
        assert_eq!(status, "0");
    });
    let events = agent.events(5, T);
    assert_spans(&events, 0x71, 3);
    assert_spans(&events, 0x72, 2);
    let (status, _, log) = agent.stop();
    assert!(status.success());
    assert!(counter(&log, "source.in", "refused.tls_handshake") >= 2, "{log}");
}

async fn tls_stream(
    addr: SocketAddr,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

async fn tls_post(
    addr: SocketAddr,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let io = tls_stream(addr, config).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post("/v1/traces")
        .header("host", "localhost")
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

async fn tls_post_h2(
    addr: SocketAddr,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    req: sealtrail::otlp::ExportTraceServiceRequest,
) -> String {
    let io = tls_stream(addr, config).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let r = http::Request::post(format!("https://localhost{TRACE_EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(grpc_frame(&req.encode_to_vec(), false))))
        .unwrap();
    let resp = send.send_request(r).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Issue 5's 10,000 concurrent connections.
const FLOOD: usize = 10_000;

/// The flood tests take turns: two floods at once would need more client descriptors than
/// the hard limit (20,000 here) allows.
static FLOOD_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Opens `n` connections to `addr` and keeps them open.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"))).collect()
}

#[test]
fn ten_thousand_concurrent_connections_do_not_disturb_other_clients() {
    // The test process holds the client ends; the agent starts with the usual soft limit of
    // 1,024 open files and must raise it to the hard limit itself to hold the server ends.
    let _turn = FLOOD_TURN.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit(FLOOD as u64 + 4096);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with_fd_limit(dir.path(), "a", &console_config("max_connections = 10500"), 1024);
    let (soft, hard) = agent.fd_limits();
    assert_eq!(soft, hard, "the agent did not raise its open files limit");
    assert!(soft > FLOOD as u64, "the hard limit ({hard}) is too low for this test");
    let (http, grpc) = (agent.http.unwrap(), agent.grpc.unwrap());

    // OTLP/HTTP: 10,000 idle connections; a fresh client is served meanwhile.
    let mut held = flood(http, FLOOD);
    let r = post(http, "/v1/traces", "application/x-protobuf", &spans(0x81, 2, 0).encode_to_vec());
    assert_eq!(r.status, 200, "{}", r.text());
    // A fifth of the held connections send a request at once; every one gets an answer.
    let senders = FLOOD / 5;
    let body = log_records(&["from a held connection"]).encode_to_vec();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for s in held.iter_mut().take(senders) {
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
    }
    // Accepted, or (2,000 one-record batches at once outrun the console sink) "retry
    // later", which the client then does.
    let mut retry = 0;
    for s in held.iter_mut().take(senders) {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let r = parse_response(&raw);
        match r.status {
            200 => {}
            429 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                retry += 1;
            }
            s => panic!("status {s}: {}", r.text()),
        }
    }
    drop(held);
    for _ in 0..retry {
        let mut attempts = 0;
        while post(http, "/v1/logs", "application/x-protobuf", &body).status != 200 {
            attempts += 1;
            assert!(attempts < 100, "never accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let events = agent.events(2 + senders, Duration::from_secs(60));
    assert_eq!(events.iter().filter(|e| e["signal"] == "logs").count(), senders);

    // OTLP/gRPC: 10,000 idle connections; a tonic client's export goes through.
    let held = flood(grpc, FLOOD);
    rt().block_on(async {
        let (mut traces, _) = grpc_clients(grpc).await;
        traces.export(spans(0x82, 3, 2)).await.unwrap();
    });
    assert_spans(&agent.events(3, T), 0x82, 3);
    drop(held);

    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    for refused in ["refused.max_connections", "refused.accept_error"] {
        assert_eq!(counter(&log, "source.in", refused), 0, "{refused}: {log}");
    }
}

#[test]
fn beyond_max_connections_the_excess_is_closed_at_once_and_counted() {
    // The default limit (4,096 per listener) against 10,000 connections: the excess is closed
    // at once (a clean EOF, not a hang), counted, and the other listener is unaffected.
    let _turn = FLOOD_TURN.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit(FLOOD as u64 + 4096);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config(""));
    let (http, grpc) = (agent.http.unwrap(), agent.grpc.unwrap());
    let held = flood(http, FLOOD);
    const LIMIT: usize = 4096;
    // Connections are accepted in order: the first 4,096 hold the permits.
    for s in &held {
        s.set_nonblocking(true).unwrap();
    }
    let closed = |held: &[TcpStream]| held.iter().filter(|s| is_closed(s)).count();
    let start = std::time::Instant::now();
    while closed(&held) < FLOOD - LIMIT {
        assert!(start.elapsed() < T, "only {} of {} excess connections closed", closed(&held), FLOOD - LIMIT);
        std::thread::sleep(Duration::from_millis(100));
    }
    // A newcomer on the full listener is refused just as cleanly…
    let mut extra = TcpStream::connect(http).unwrap();
    extra.set_read_timeout(Some(T)).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "served beyond the limit");
    // …while the gRPC listener, with its own limit, serves as usual.
    rt().block_on(async {
        let (mut traces, _) = grpc_clients(grpc).await;
        traces.export(spans(0x83, 1, 0)).await.unwrap();
    });
    assert_spans(&agent.events(1, T), 0x83, 1);
    // Once the flood is gone, HTTP clients are served again.
    drop(held);
    let mut attempts = 0;
    loop {
        let mut s = TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let body = spans(0x84, 1, 0).encode_to_vec();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if !raw.is_empty() {
            assert_eq!(parse_response(&raw).status, 200);
            break;
        }
        // The agent may not have seen every held connection close yet.
        attempts += 1;
        assert!(attempts < 100, "never served after the flood");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_spans(&agent.events(1, T), 0x84, 1);
    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");
    let refused = counter(&log, "source.in", "refused.max_connections");
    assert!(refused > (FLOOD - LIMIT) as u64, "{refused}: {log}");
}

/// Whether the server has closed `s` (a non-blocking socket): end of stream or reset, as
/// opposed to nothing to read yet.
fn is_closed(s: &TcpStream) -> bool {
    match s.peek(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn max_connections_refuses_the_excess_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config("max_connections = 3"));
    let addr = agent.http.unwrap();
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(T)).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "the fourth connection was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let r = post(addr, "/v1/traces", "application/x-protobuf", &spans(0x91, 1, 0).encode_to_vec());
    assert_eq!(r.status, 200);
    let (_, _, log) = agent.stop();
    assert!(counter(&log, "source.in", "refused.max_connections") >= 1, "{log}");
}

fn forward_config(protocol: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[sources.in]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
         [sinks.up]\ntype = \"otlp\"\ninputs = [\"in\"]\nallow_unredacted = true\nendpoint = \"http://{upstream}\"\n\
         protocol = \"{protocol}\"\n{extra}\n"
    )
}

#[test]
fn forwards_to_another_agent_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let downstream = Agent::start(dir.path(), "down", &console_config(""));
    let via_grpc = Agent::start(dir.path(), "grpc", &forward_config("grpc", downstream.grpc.unwrap(), ""));
    let via_http =
        Agent::start(dir.path(), "http", &forward_config("http_protobuf", downstream.http.unwrap(), ""));

    let mut req = spans(0xa1, 30, 5);
    // Every field kind survives the hop: nested values, events, links, flags.
    let sp = &mut req.resource_spans[0].scope_spans[0].spans[0];
    sp.flags = 0x301;
    sp.events.push(sealtrail::otlp::proto::trace::span::Event {
        time_unix_nano: 5,
        name: "ev".into(),
        attributes: vec![kv("e", s("v"))],
        dropped_attributes_count: 1,
    });
    sp.links.push(sealtrail::otlp::proto::trace::span::Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        trace_state: "x=y".into(),
        ..Default::default()
    });
    let r = post(via_grpc.http.unwrap(), "/v1/traces", "application/x-protobuf", &req.encode_to_vec());
    assert_eq!(r.status, 200);
    let r = post(
        via_http.http.unwrap(),
        "/v1/traces",
        "application/x-protobuf",
        &spans(0xa2, 7, 1).encode_to_vec(),
    );
    assert_eq!(r.status, 200);
    rt().block_on(async {
        let (_, mut logs) = grpc_clients(via_http.grpc.unwrap()).await;
        logs.export(log_records(&["forwarded log"])).await.unwrap();
    });
    let events = downstream.events(38, T);
    assert_spans(&events, 0xa1, 30);
    assert_spans(&events, 0xa2, 7);
    let first = events.iter().find(|e| e["trace_id"] == hex(&[0xa1; 16]) && e["name"] == "op 0").unwrap();
    assert_eq!(first["events"][0]["name"], "ev");
    assert_eq!(first["links"][0]["span_id"], hex(&[4; 8]));
    assert_eq!(first["attributes"]["sealtrail.otlp.flags"], 0x301);
    let log = events.iter().find(|e| e["signal"] == "logs").unwrap();
    assert_eq!(log["body"], "forwarded log");
    for a in [via_grpc, via_http] {
        let (status, _, log) = a.stop();
        assert!(status.success(), "{log}");
        assert_eq!(counter(&log, "sink.up", "dropped.export_failed"), 0, "{log}");
    }
    let (status, _, _) = downstream.stop();
    assert!(status.success());
}

/// A one-shot upstream on a raw socket: answers each HTTP request with the next status of
/// `statuses` and records the request heads.
fn fake_upstream(statuses: Vec<u16>) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for status in statuses {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Read the head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "upstream connection closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < p + 4 + len {
                        let n = s.read(&mut chunk).unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    heads.push(head);
                    break;
                }
            }
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nRetry-After: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(resp.as_bytes()).unwrap();
        }
        heads
    });
    (addr, h)
}

#[test]
fn the_sink_retries_sends_headers_from_the_environment_and_drops_after_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let (up, heads) = fake_upstream(vec![503, 502, 200, 400]);
    let agent = Agent::start_with(
        dir.path(),
        "fwd",
        &forward_config(
            "http_protobuf",
            up,
            "headers = { \"x-api-key\" = \"${TEST_API_KEY}\" }\ninitial_backoff_ms = 10\nmax_backoff_ms = 50",
        ),
        &[("TEST_API_KEY", "k-123")],
    );
    let r =
        post(agent.http.unwrap(), "/v1/traces", "application/x-protobuf", &spans(0xb1, 3, 0).encode_to_vec());
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let r =
        post(agent.http.unwrap(), "/v1/logs", "application/x-protobuf", &log_records(&["x"]).encode_to_vec());
    assert_eq!(r.status, 200);
    let heads = heads.join().unwrap();
    assert_eq!(heads.len(), 4);
    for h in &heads[..3] {
        assert!(h.starts_with("POST /v1/traces HTTP/1.1"), "{h}");
        assert!(h.to_ascii_lowercase().contains("x-api-key: k-123"), "{h}");
        assert!(h.to_ascii_lowercase().contains("content-encoding: gzip"), "{h}");
    }
    assert!(heads[3].starts_with("POST /v1/logs"));
    let (status, _, log) = agent.stop();
    assert!(status.success());
    assert_eq!(counter(&log, "sink.up", "retries"), 2, "{log}");
    assert_eq!(counter(&log, "sink.up", "dropped.export_failed"), 1, "{log}");
    assert!(!log.contains("k-123"), "the API key was logged");
}

#[test]
fn forwards_over_mutual_tls_with_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().display();
    let downstream = Agent::start(
        dir.path(),
        "down",
        &console_config(&format!(
            "tls = {{ crt_file = \"{d}/server.crt\", key_file = \"{d}/server.key\", client_ca_file = \"{d}/ca.crt\" }}"
        )),
    );
    let tls = format!(
        "tls = {{ ca_file = \"{d}/ca.crt\", crt_file = \"{d}/client.crt\", key_file = \"{d}/client.key\" }}"
    );
    let relay = |name: &str, protocol: &str, addr: SocketAddr| {
        let cfg =
            forward_config(protocol, addr, &tls).replace("endpoint = \"http://", "endpoint = \"https://");
        Agent::start(dir.path(), name, &cfg)
    };
    let via_grpc = relay("grpc", "grpc", downstream.grpc.unwrap());
    let via_http = relay("http", "http_protobuf", downstream.http.unwrap());
    // Without the client certificate the downstream refuses: the events are retried, then
    // dropped and counted.
    let no_cert = Agent::start(
        dir.path(),
        "nocert",
        &forward_config(
            "grpc",
            downstream.grpc.unwrap(),
            &format!("tls = {{ ca_file = \"{d}/ca.crt\" }}\nmax_retries = 1"),
        )
        .replace("endpoint = \"http://", "endpoint = \"https://"),
    );
    for (agent, b) in [(&via_grpc, 0xc1u8), (&via_http, 0xc2), (&no_cert, 0xc3)] {
        let r = post(
            agent.http.unwrap(),
            "/v1/traces",
            "application/x-protobuf",
            &spans(b, 6, 2).encode_to_vec(),
        );
        assert_eq!(r.status, 200);
    }
    let events = downstream.events(12, T);
    assert_spans(&events, 0xc1, 6);
    assert_spans(&events, 0xc2, 6);
    let (_, _, log) = no_cert.stop();
    assert_eq!(counter(&log, "sink.up", "dropped.export_failed"), 6, "{log}");
    for a in [via_grpc, via_http] {
        let (status, _, log) = a.stop();
        assert!(status.success());
        assert_eq!(counter(&log, "sink.up", "events_out"), 6, "{log}");
    }
    let (_, rest, _) = downstream.stop();
    assert!(rest.is_empty(), "the client without certificate got through");
}

/// Raises this process's soft limit of open files (the agent inherits it) to `want`, within
/// the hard limit, so the many-connections test does not depend on the shell's `ulimit -n`.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to/read from the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn requests_beyond_max_concurrent_requests_are_told_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "a", &console_config("max_concurrent_requests = 1"));
    let (http, grpc) = (agent.http.unwrap(), agent.grpc.unwrap());
    // A slow client holds the only slot: headers sent, body unfinished.
    let mut slow = TcpStream::connect(http).unwrap();
    slow.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = post(http, "/v1/traces", "application/x-protobuf", &spans(0xd1, 1, 0).encode_to_vec());
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        sealtrail::otlp::RpcStatus::decode(&r.body[..])
            .unwrap()
            .message
            .contains("too many requests in progress")
    );
    rt().block_on(async {
        let (mut traces, _) = grpc_clients(grpc).await;
        let err = traces.export(spans(0xd2, 1, 0)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(!sealtrail::otlp::RpcStatus::decode(err.details()).unwrap().details.is_empty(), "RetryInfo");
    });
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let r = post(http, "/v1/traces", "application/x-protobuf", &spans(0xd3, 2, 0).encode_to_vec());
    assert_eq!(r.status, 200);
    assert_spans(&agent.events(2, T), 0xd3, 2);
    let (_, _, log) = agent.stop();
    assert_eq!(counter(&log, "source.in", "refused.too_many_requests"), 2, "{log}");
}
