//! OTLP/gRPC ingest: batches of 512 spans with 10 attributes each, sent by an HTTP/2 client
//! (pre-encoded, 4 requests in flight on one connection) to the `otlp` source of a running topology
//! whose only sink is `blackhole`, then to one that goes through `redact` into `sealed`
//! (encrypted Parquet segments in a temporary data directory, keys in a temporary keyring).
//! Reports spans per second.
//!
//! Baseline in the same run: the same client against a bare tonic `TraceService` that decodes
//! each request and drops it (no conversion to events, no pipeline), served on the same
//! hyper stack; the ratio is what the conversion and the pipeline cost. A third figure
//! isolates the conversion of a decoded request into events.
//!
//! `cargo bench --bench otlp -- --warm-up-time 1 --measurement-time 3`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use sealtrail::config::{self, Overrides, Source};
use sealtrail::metrics::Registry;
use sealtrail::otlp::proto::{common, resource, trace};
use sealtrail::otlp::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, TraceService, TraceServiceServer,
};
use sealtrail::topology::{self, Reason};

const SPANS: usize = 512;
const ATTRS: usize = 10;
const IN_FLIGHT: usize = 4;

fn request() -> ExportTraceServiceRequest {
    let s = |v: String| common::AnyValue { value: Some(common::any_value::Value::StringValue(v)) };
    let kv = |k: String, v| common::KeyValue { key: k, value: Some(v), key_strindex: 0 };
    let spans = (0..SPANS)
        .map(|i| trace::Span {
            trace_id: vec![(i % 251) as u8 + 1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 8 == 0 { vec![] } else { ((i - i % 8) as u64 + 1).to_be_bytes().to_vec() },
            name: format!("GET /api/orders/{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_010_000_000 + i as u64,
            attributes: (0..ATTRS)
                .map(|a| kv(format!("app.attribute.{a}"), s(format!("value {a} of span {i}"))))
                .collect(),
            status: Some(trace::Status { code: 1, message: String::new() }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![trace::ResourceSpans {
            resource: Some(resource::Resource {
                attributes: vec![kv("service.name".into(), s("checkout".into()))],
                ..Default::default()
            }),
            scope_spans: vec![trace::ScopeSpans {
                scope: Some(common::InstrumentationScope { name: "bench".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A gRPC client that sends a pre-encoded request (the length-prefixed message built once),
/// so that the client's own encoding does not compete with the server for the 2 cores.
#[derive(Clone)]
struct RawClient {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    uri: http::Uri,
}

async fn client(addr: SocketAddr) -> RawClient {
    for _ in 0..100 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let uri = format!("http://{addr}{}", sealtrail::otlp::TRACE_EXPORT_PATH).parse().unwrap();
            return RawClient { send, uri };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {addr} did not come up");
}

impl RawClient {
    /// One export; returns the grpc-status.
    async fn export(&mut self, frame: Bytes) -> String {
        let req = http::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame))
            .unwrap();
        let resp = self.send.send_request(req).await.expect("request");
        let mut status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.expect("response body");
        if let Some(t) = body.trailers() {
            status = status.or_else(|| t.get("grpc-status").map(|v| v.to_str().unwrap().to_owned()));
        }
        status.unwrap_or_default()
    }
}

fn frame(req: &ExportTraceServiceRequest) -> Bytes {
    let msg = req.encode_to_vec();
    let mut f = Vec::with_capacity(msg.len() + 5);
    f.push(0);
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(&msg);
    Bytes::from(f)
}

/// Sends `n` requests with `IN_FLIGHT` in flight; a "retry later" answer is retried (and
/// counted), so every request is accepted in the end. Returns the elapsed time.
async fn send(client: &RawClient, frame: &Bytes, n: u64, retries: &AtomicU64) -> Duration {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (mut client, frame, next) = (client.clone(), frame.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut retried = 0u64;
            while next.fetch_add(1, Relaxed) < n {
                loop {
                    match client.export(frame.clone()).await.as_str() {
                        "0" => break,
                        "8" => {
                            // RESOURCE_EXHAUSTED: the pipeline is full. Wait a little, as a
                            // client does (a real one waits the 1 s of RetryInfo), instead of
                            // spinning on the cores the pipeline needs.
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        other => panic!("export failed with grpc-status {other:?}"),
                    }
                }
            }
            retried
        }));
    }
    for h in handles {
        retries.fetch_add(h.await.unwrap(), Relaxed);
    }
    start.elapsed()
}

/// The baseline server: decodes and drops.
struct Discard;

#[tonic::async_trait]
impl TraceService for Discard {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        std::hint::black_box(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve_baseline(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let svc = TraceServiceServer::new(Discard);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = svc.clone();
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let req = request();
    let frame = frame(&req);
    let mut g = c.benchmark_group("otlp_grpc_ingest");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.sample_size(20);

    // Baseline: decode and drop.
    let base_addr = free_port();
    rt.spawn(serve_baseline(base_addr));
    let base = rt.block_on(client(base_addr));
    let retries = AtomicU64::new(0);
    g.bench_function("baseline_tonic_decode_and_drop", |b| {
        b.iter_custom(|n| rt.block_on(send(&base, &frame, n, &retries)))
    });

    // The agent: otlp source → blackhole.
    let text = |addr: SocketAddr, rest: &str| {
        format!("[sources.otel]\ntype = \"otlp\"\ngrpc_address = \"{addr}\"\nhttp_address = \"\"\n{rest}")
    };
    let blackhole = "[sinks.null]\ntype = \"blackhole\"\ninputs = [\"otel\"]\nallow_unredacted = true\n";
    let (sent, retries) =
        agent(&rt, &mut g, &frame, "sealtrail_otlp_source_to_blackhole", |a| text(a, blackhole), None);
    let (arrived, _) = sent.registry_counts("sink.null", false);
    assert_eq!(arrived, sent.requests * SPANS as u64, "every accepted span reaches the sink");
    eprintln!(
        "otlp bench: {arrived} spans reached the blackhole; {retries} requests were answered RESOURCE_EXHAUSTED and retried"
    );

    // The agent: otlp source → redact → sealed.
    let dir = tempfile::tempdir().unwrap();
    let sealed = "[transforms.scrub]\ntype = \"redact\"\ninputs = [\"otel\"]\n\
                  [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\n";
    let overrides =
        Overrides { data_dir: Some(dir.path().join("data")), keys_dir: Some(dir.path().join("keys")) };
    let (sent, retries) = agent(
        &rt,
        &mut g,
        &frame,
        "sealtrail_otlp_source_redact_sealed",
        |a| text(a, sealed),
        Some(overrides),
    );
    let (written, segments) = sent.registry_counts("sink.vault", true);
    assert_eq!(written, sent.requests * SPANS as u64, "every accepted span is sealed");
    eprintln!(
        "otlp bench: {written} spans sealed in {segments} segments; {retries} requests were answered RESOURCE_EXHAUSTED and retried"
    );
    g.finish();

    // Conversion alone, for reference.
    let mut g = c.benchmark_group("otlp_convert");
    g.throughput(Throughput::Elements(SPANS as u64));
    let source: sealtrail::event::SourceId = "otel".into();
    g.bench_function("spans_to_events_512x10", |b| {
        b.iter_batched(
            || req.clone(),
            |r| {
                let mut out = Vec::with_capacity(SPANS);
                sealtrail::otlp::convert::spans_to_events(r, &source, &mut out);
                out
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// What one agent run accepted.
struct Sent {
    requests: u64,
    registry: Registry,
}

impl Sent {
    /// A sink's events received (`blackhole`) or written (`sealed`: rows in sealed segments),
    /// and its `segments_sealed`.
    fn registry_counts(&self, sink: &str, written: bool) -> (u64, u64) {
        let m = self.registry.component(sink);
        let n = if written { m.events_out.load(Relaxed) } else { m.events_in.load(Relaxed) };
        (n, m.get("segments_sealed"))
    }
}

/// Runs a topology with an `otlp` source on a free port (`config` makes its text), benches
/// exports into it as `name`, then stops it (draining and sealing everything) and returns
/// what was sent and the retries.
fn agent(
    rt: &tokio::runtime::Runtime,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    frame: &Bytes,
    name: &str,
    config: impl Fn(SocketAddr) -> String,
    overrides: Option<Overrides>,
) -> (Sent, u64) {
    let addr = free_port();
    let text = config(addr);
    let cfg = config::load(
        &sealtrail::components::KINDS,
        &[Source { name: "bench".into(), text: &text }],
        &overrides.unwrap_or_default(),
        &|_| None,
    )
    .unwrap();
    let built = topology::build(&cfg).unwrap();
    let registry = Registry::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = rt.spawn(topology::run(built, registry.clone(), async move {
        let _ = stop_rx.await;
        Reason::Requested
    }));
    let client = rt.block_on(client(addr));
    let sent = AtomicU64::new(0);
    let retries = AtomicU64::new(0);
    g.bench_function(name, |b| {
        b.iter_custom(|n| {
            sent.fetch_add(n, Relaxed);
            rt.block_on(send(&client, frame, n, &retries))
        })
    });
    let _ = stop_tx.send(());
    let outcome = rt.block_on(run).unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    (Sent { requests: sent.load(Relaxed), registry }, retries.load(Relaxed))
}

criterion_group!(benches, bench);
criterion_main!(benches);
