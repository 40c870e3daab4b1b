//! The `lambda_telemetry` source: the HTTP listener the Lambda Telemetry API delivers to, and
//! the mapping of its batches (JSON arrays of `{time, type, record}`) to log records.
//!
//! The listener answers every batch as soon as it is parsed: converted records go to an
//! in-memory queue bounded by bytes, and a forwarding task feeds the pipeline from it, so a
//! slow sink never makes the platform wait or retry. A queue over its budget drops the batch
//! and counts it (`dropped.backlog_full`); a malformed batch gets 400 and is counted
//! (`errors.malformed_batch`).
//!
//! In extension mode ([`crate::lambda`]) the source reports its bound port to the driver,
//! which subscribes it; the driver's SHUTDOWN starts the normal topology shutdown, and the
//! source keeps accepting for a short grace window (the platform delivers its last buffered
//! records after sending SHUTDOWN), then closes the listener, finishes the requests in
//! flight, delivers the queue, and returns.
//!
//! Mapping (attribute names follow OpenTelemetry semantic conventions where one exists):
//! - `function` and `extension` records, strings or JSON objects, become log records. From a
//!   JSON object, `message` is the body, `level` the severity, `timestamp` the time and
//!   `requestId` the request id; the other fields become attributes.
//! - `platform.*` records become log records whose body is the type and whose attributes are
//!   the record's fields, nested objects flattened with dots (`metrics.durationMs`).
//! - Every record gets `faas.invocation_id` (the request id: from the record, else from the
//!   last `platform.start` in the stream, else from the driver's INVOKE), `lambda.type`, the
//!   X-Ray trace id as its trace and span id when known, and the function name as service.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value as J;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::component::lambda::{self, Handle, ListenerReady};
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::component::{Fanout, SourceContext};
use crate::event::{Batch, Event, KeyValue, LogRecord, Signals, SourceId, Value, now_nanos, severity};
use crate::metrics::ComponentMetrics;

pub const KIND: SourceKind = SourceKind {
    name: "lambda_telemetry",
    description: "AWS Lambda Telemetry API: function logs and platform events (extension mode)",
    parse: parse_source::<LambdaTelemetryConfig>,
};

/// The Telemetry API schema versions the platform accepts.
pub const SCHEMA_VERSIONS: &[&str] = &["2022-07-01", "2022-12-13", "2025-01-29"];

/// The telemetry types one can subscribe to.
pub const TYPES: &[&str] = &["platform", "function", "extension"];

/// Attribute keys this source sets.
pub mod attr {
    /// The Lambda request id.
    pub const REQUEST_ID: &str = "faas.invocation_id";
    /// The Telemetry API event type (`function`, `platform.report`, …).
    pub const TYPE: &str = "lambda.type";
}

/// Configuration for the `lambda_telemetry` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaTelemetryConfig {
    /// The port the listener binds (0: any free port; the subscription names the bound one).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The address the listener binds: all interfaces by default, as the platform delivers
    /// to `sandbox.localdomain`.
    #[serde(default = "default_address")]
    pub address: String,
    /// The host of the destination URI given to the platform.
    #[serde(default = "default_destination_host")]
    pub destination_host: String,
    /// Telemetry types to subscribe to: any of `platform`, `function`, `extension`.
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// The Telemetry API schema version. From `2022-12-13` on, JSON-format function logs
    /// arrive as objects.
    #[serde(default = "default_schema")]
    pub schema_version: String,
    /// How the platform batches deliveries.
    #[serde(default)]
    pub buffering: Buffering,
    /// The largest request body accepted (larger: 413). The platform sends up to about
    /// twice `buffering.max_bytes`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Records accepted but not yet taken by the pipeline, in bytes; beyond it batches are
    /// dropped and counted, so memory stays bounded.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// After SHUTDOWN, keep accepting deliveries this long (the platform flushes its last
    /// buffered records), within the SHUTDOWN deadline.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// When to ask the sealed sink to seal: `limits` (default: only the sink's own row, byte
    /// and age limits), `end` (after every invoke's `platform.report`), `periodic` (every
    /// `flush_interval`). SHUTDOWN always seals everything.
    #[serde(default)]
    pub flush: FlushPolicy,
    /// The period of the `periodic` flush policy (the old name `flush_interval_secs` is
    /// accepted).
    #[serde(default = "default_flush_interval", alias = "flush_interval_secs")]
    pub flush_interval: crate::units::Duration,
    /// The service name of every record (used by key rules); default: the function name
    /// (`AWS_LAMBDA_FUNCTION_NAME`).
    #[serde(default)]
    pub service: Option<String>,
}

/// The subscription's `buffering` object (the platform's limits are checked at build).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffering {
    /// Records per batch, 1,000 to 10,000.
    #[serde(default = "default_max_items")]
    pub max_items: u32,
    /// Bytes per batch, 262,144 to 1,048,576.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
    /// Longest wait before a batch is sent, 25 to 30,000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

impl Default for Buffering {
    fn default() -> Buffering {
        Buffering {
            max_items: default_max_items(),
            max_bytes: default_max_bytes(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// See [`LambdaTelemetryConfig::flush`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    #[default]
    Limits,
    End,
    Periodic,
}

fn default_port() -> u16 {
    9315
}
fn default_address() -> String {
    "0.0.0.0".into()
}
fn default_destination_host() -> String {
    "sandbox.localdomain".into()
}
fn default_types() -> Vec<String> {
    vec!["platform".into(), "function".into()]
}
fn default_schema() -> String {
    "2022-12-13".into()
}
fn default_max_body_bytes() -> usize {
    4 << 20
}
fn default_max_buffered_bytes() -> usize {
    8 << 20
}
fn default_grace_ms() -> u64 {
    100
}
fn default_flush_interval() -> crate::units::Duration {
    crate::units::Duration::from_secs(60)
}
fn default_max_items() -> u32 {
    1000
}
fn default_max_bytes() -> u32 {
    262_144
}
fn default_timeout_ms() -> u32 {
    100
}

/// Time kept for sealing after the grace window: the grace window ends this long before the
/// SHUTDOWN deadline at the latest.
const SEAL_RESERVE: Duration = Duration::from_millis(300);

impl LambdaTelemetryConfig {
    /// The subscription request body, for a listener bound at `port`.
    pub fn subscription(&self, port: u16) -> J {
        serde_json::json!({
            "schemaVersion": self.schema_version,
            "types": self.types,
            "buffering": {
                "maxItems": self.buffering.max_items,
                "maxBytes": self.buffering.max_bytes,
                "timeoutMs": self.buffering.timeout_ms,
            },
            "destination": {"protocol": "HTTP", "URI": format!("http://{}:{port}", self.destination_host)},
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut errs = Vec::new();
        if !SCHEMA_VERSIONS.contains(&self.schema_version.as_str()) {
            errs.push(format!(
                "`schema_version` {:?} is not one of {}",
                self.schema_version,
                SCHEMA_VERSIONS.join(", ")
            ));
        }
        if self.types.is_empty() {
            errs.push("`types` must name at least one of platform, function, extension".into());
        }
        for t in &self.types {
            if !TYPES.contains(&t.as_str()) {
                errs.push(format!(
                    "unknown telemetry type {t:?} in `types`: use platform, function or extension"
                ));
            }
        }
        let b = &self.buffering;
        let range = |name: &str, v: u32, lo: u32, hi: u32, errs: &mut Vec<String>| {
            if !(lo..=hi).contains(&v) {
                errs.push(format!("`buffering.{name}` = {v} is outside the platform's limits {lo}..={hi}"));
            }
        };
        range("max_items", b.max_items, 1000, 10_000, &mut errs);
        range("max_bytes", b.max_bytes, 262_144, 1_048_576, &mut errs);
        range("timeout_ms", b.timeout_ms, 25, 30_000, &mut errs);
        if self.address.parse::<std::net::IpAddr>().is_err() {
            errs.push(format!("`address` {:?} is not an IP address", self.address));
        }
        if self.destination_host.is_empty() || self.destination_host.contains(['/', ':', ' ']) {
            errs.push(format!("`destination_host` {:?} is not a host name", self.destination_host));
        }
        if self.max_body_bytes < (self.buffering.max_bytes as usize) * 2 {
            errs.push(format!(
                "`max_body_bytes` = {} is below twice `buffering.max_bytes` ({}): the platform would get 413s",
                self.max_body_bytes,
                self.buffering.max_bytes as usize * 2
            ));
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            errs.push("`max_buffered_bytes` must be at least `max_body_bytes`".into());
        }
        if self.flush == FlushPolicy::Periodic && self.flush_interval.get().as_secs() == 0 {
            errs.push("`flush_interval` must be at least 1s".into());
        }
        if errs.is_empty() { Ok(()) } else { Err(anyhow::anyhow!(errs.join("; "))) }
    }
}

impl SourceConfig for LambdaTelemetryConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        self.check()?;
        let handle = cx.lambda.cloned();
        let function =
            handle.as_ref().map(|h| h.function.clone()).unwrap_or_else(lambda::FunctionInfo::from_env);
        let service = self.service.clone().unwrap_or_else(|| function.name.clone());
        let mut resource =
            vec![KeyValue::new("cloud.provider", "aws"), KeyValue::new("cloud.platform", "aws_lambda")];
        if !function.name.is_empty() {
            resource.push(KeyValue::new("faas.name", function.name.clone()));
        }
        if !function.version.is_empty() {
            resource.push(KeyValue::new("faas.version", function.version.clone()));
        }
        if !function.region.is_empty() {
            resource.push(KeyValue::new("cloud.region", function.region.clone()));
        }
        Ok(Box::new(LambdaTelemetrySource {
            config: self.clone(),
            handle,
            mapper: Mapper { source: Arc::from(cx.id), service, resource },
        }))
    }
}

/// The running source.
struct LambdaTelemetrySource {
    config: LambdaTelemetryConfig,
    handle: Option<Arc<Handle>>,
    mapper: Mapper,
}

/// What the request handlers share.
struct Ingest {
    mapper: Mapper,
    handle: Option<Arc<Handle>>,
    stream: Mutex<StreamState>,
    queue: mpsc::UnboundedSender<(Batch, usize, bool)>,
    queued_bytes: Arc<AtomicUsize>,
    max_buffered_bytes: usize,
    max_body_bytes: usize,
    seal_on_report: bool,
    metrics: Arc<ComponentMetrics>,
}

impl Source for LambdaTelemetrySource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let LambdaTelemetrySource { config, handle, mapper } = *self;
            let SourceContext { out, shutdown, metrics, .. } = cx;
            let addr = format!("{}:{}", config.address, config.port);
            let listener = match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    let msg = format!("cannot listen on {addr}: {e}");
                    if let Some(h) = &handle {
                        h.listener_ready(Err(msg.clone()));
                    }
                    anyhow::bail!(msg);
                }
            };
            let port = listener.local_addr()?.port();
            tracing::info!(port, "telemetry listener ready");
            if let Some(h) = &handle {
                h.listener_ready(Ok(ListenerReady { subscription: config.subscription(port), port }));
            } else {
                tracing::warn!(
                    "not in Lambda extension mode: listening, but nothing subscribes this listener"
                );
            }

            let (qtx, qrx) = mpsc::unbounded_channel();
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let ingest = Arc::new(Ingest {
                mapper,
                handle: handle.clone(),
                stream: Mutex::new(StreamState::default()),
                queue: qtx,
                queued_bytes: queued_bytes.clone(),
                max_buffered_bytes: config.max_buffered_bytes,
                max_body_bytes: config.max_body_bytes,
                seal_on_report: config.flush == FlushPolicy::End,
                metrics: metrics.clone(),
            });
            let periodic = (config.flush == FlushPolicy::Periodic)
                .then(|| config.flush_interval.get().max(Duration::from_secs(1)));
            let forward = forward(qrx, out, queued_bytes, periodic);
            let grace = Duration::from_millis(config.shutdown_grace_ms);
            let serve = serve(listener, ingest, shutdown, handle, grace);
            let (served, ()) = tokio::join!(serve, forward);
            served
        })
    }
}

/// Accepts deliveries until shutdown plus the grace window, then finishes the requests in
/// flight. Returns when every connection is done (which drops the last queue sender).
async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    mut shutdown: crate::component::Shutdown,
    handle: Option<Arc<Handle>>,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let stop_accepting = async {
        shutdown.recv().await;
        let deadline = handle.as_ref().and_then(|h| h.shutdown_info()).map(|s| s.deadline);
        let grace = match deadline {
            Some(d) => grace.min(d.saturating_duration_since(Instant::now()).saturating_sub(SEAL_RESERVE)),
            None => grace,
        };
        tokio::time::sleep(grace).await;
        deadline
    };
    tokio::pin!(stop_accepting);
    let deadline = loop {
        tokio::select! {
            biased;
            d = &mut stop_accepting => break d,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let ingest = ingest.clone();
                    let mut stop = stop_rx.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let ingest = ingest.clone();
                            async move { Ok::<_, Infallible>(ingest.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("telemetry listener: accept failed: {e}");
                    ingest.metrics.error("accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    };
    // Stop accepting: new deliveries are refused from here on.
    drop(listener);
    drop(ingest);
    let _ = stop_tx.send(true);
    let limit = deadline
        .map(|d| d.saturating_duration_since(Instant::now()).saturating_sub(lambda::SHUTDOWN_MARGIN))
        .unwrap_or(Duration::from_secs(5));
    if tokio::time::timeout(limit, async { while conns.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = conns.len(), "telemetry listener: closing deliveries still in flight");
        conns.shutdown().await;
    }
    Ok(())
}

/// Feeds the pipeline from the queue until every sender is gone, then returns (which drops
/// the output: the end of input for downstream components).
async fn forward(
    mut rx: mpsc::UnboundedReceiver<(Batch, usize, bool)>,
    mut out: Fanout,
    queued: Arc<AtomicUsize>,
    periodic: Option<Duration>,
) {
    let mut tick = periodic.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                if out.send_seal().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some((batch, bytes, seal)) = item else { break };
        queued.fetch_sub(bytes, Ordering::Relaxed);
        if out.send(batch).await.is_err() {
            // Every consumer stopped (a sink failed); the topology reports that failure.
            return;
        }
        // The seal marker follows the invoke's records through the pipeline, so the sink
        // seals them and not a moment earlier.
        if seal && out.send_seal().await.is_err() {
            return;
        }
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

impl Ingest {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        // The Telemetry API POSTs; the older Logs API may PUT.
        if req.method() != Method::POST && req.method() != Method::PUT {
            return reply(StatusCode::METHOD_NOT_ALLOWED, r#"{"errorType":"MethodNotAllowed"}"#);
        }
        let body = match Limited::new(req.into_body(), self.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    self.metrics.error("body_too_large");
                    tracing::warn!(limit = self.max_body_bytes, "telemetry batch rejected: body too large");
                    return reply(StatusCode::PAYLOAD_TOO_LARGE, r#"{"errorType":"PayloadTooLarge"}"#);
                }
                self.metrics.error("read");
                return reply(StatusCode::BAD_REQUEST, r#"{"errorType":"ReadError"}"#);
            }
        };
        let envelopes: Vec<Envelope> = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.error("malformed_batch");
                // serde's message can quote the input: log only where it failed.
                tracing::warn!(line = e.line(), column = e.column(), "malformed telemetry batch rejected");
                return reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorType":"InvalidBatch","errorMessage":"malformed JSON"}"#,
                );
            }
        };
        self.metrics.add("batches", 1);
        let mut events = Vec::with_capacity(envelopes.len());
        let saw_report = {
            let mut st = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            let invoke = self.handle.as_ref().and_then(|h| h.invoke());
            self.mapper.map(envelopes, &mut st, invoke.as_ref(), &mut events)
        };
        let dropped_by_platform = events.iter().filter_map(platform_drops).sum::<u64>();
        self.metrics.add("dropped.platform", dropped_by_platform);
        let bytes: usize = events.iter().map(Event::size_estimate).sum();
        let n = events.len();
        let now = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now > self.max_buffered_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.add("dropped.backlog_full", n as u64);
            tracing::warn!(
                records = n,
                "telemetry batch dropped: the pipeline is behind and the backlog is full"
            );
            return reply(StatusCode::OK, "\"OK\"");
        }
        if self.queue.send((Arc::new(events), bytes, saw_report && self.seal_on_report)).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.add("dropped.stopped", n as u64);
        }
        reply(StatusCode::OK, "\"OK\"")
    }
}

/// `droppedRecords` of a `platform.logsDropped` record.
fn platform_drops(e: &Event) -> Option<u64> {
    let Event::Log(l) = e else { return None };
    if !matches!(crate::event::find_attr(&l.attributes, attr::TYPE), Some(Value::Str(t)) if t == "platform.logsDropped")
    {
        return None;
    }
    match crate::event::find_attr(&l.attributes, "droppedRecords") {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// One element of a delivered batch.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    time: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    record: J,
}

/// What the stream has told so far about the invoke its records belong to.
#[derive(Debug, Default)]
struct StreamState {
    request_id: Option<String>,
    trace: (Option<[u8; 16]>, Option<[u8; 8]>),
}

/// Turns envelopes into log records.
struct Mapper {
    source: SourceId,
    service: String,
    resource: Vec<KeyValue>,
}

impl Mapper {
    /// Maps a batch; returns whether it held a `platform.report` (the end of an invoke).
    fn map(
        &self,
        batch: Vec<Envelope>,
        st: &mut StreamState,
        invoke: Option<&lambda::Invoke>,
        out: &mut Vec<Event>,
    ) -> bool {
        let observed = now_nanos();
        let mut saw_report = false;
        for env in batch {
            let mut rec = LogRecord {
                time: env.time.as_deref().map(parse_time).unwrap_or(0),
                observed_time: observed,
                service: self.service.clone(),
                resource: self.resource.clone(),
                source: self.source.clone(),
                ..LogRecord::default()
            };
            let mut request_id = None;
            if env.kind == "function" || env.kind == "extension" {
                match env.record {
                    J::String(s) => {
                        let line = s.strip_suffix('\n').unwrap_or(&s);
                        let line = line.strip_suffix('\r').unwrap_or(line);
                        rec.severity_number = text_level(line).unwrap_or(0);
                        rec.body = line.to_owned();
                    }
                    J::Object(mut m) => {
                        if let Some(J::String(l)) = m.remove("level") {
                            rec.severity_number = severity::parse_level(&l).unwrap_or(0);
                            rec.severity_text = l;
                        }
                        if let Some(J::String(t)) = m.remove("timestamp") {
                            let t = parse_time(&t);
                            if t != 0 {
                                rec.time = t;
                            }
                        }
                        if let Some(J::String(r)) = m.remove("requestId") {
                            request_id = Some(r);
                        }
                        rec.body = match m.remove("message") {
                            Some(J::String(s)) => s,
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        for (k, v) in m {
                            rec.attributes.push(KeyValue { key: k, value: json_value(v) });
                        }
                    }
                    J::Null => {}
                    other => rec.body = other.to_string(),
                }
                if request_id.is_none() {
                    request_id = st
                        .request_id
                        .clone()
                        .or_else(|| invoke.map(|i| i.request_id.clone()).filter(|r| !r.is_empty()));
                }
                if st.request_id.is_some() {
                    (rec.trace_id, rec.span_id) = st.trace;
                } else if let Some(t) = invoke.and_then(|i| i.trace.as_deref()) {
                    (rec.trace_id, rec.span_id) = lambda::parse_xray(t);
                }
            } else {
                rec.body = env.kind.clone();
                let mut trace_value = None;
                match env.record {
                    J::Object(m) => {
                        for (k, v) in m {
                            match (k.as_str(), v) {
                                ("requestId", J::String(r)) => request_id = Some(r),
                                ("tracing", J::Object(t)) => {
                                    if let Some(J::String(v)) = t.get("value") {
                                        trace_value = Some(v.clone());
                                    }
                                    flatten("tracing", J::Object(t), &mut rec.attributes);
                                }
                                (_, v) => flatten(&k, v, &mut rec.attributes),
                            }
                        }
                    }
                    // platform.fault (Logs API) carries a string.
                    J::String(s) => rec.body = format!("{}: {s}", env.kind),
                    _ => {}
                }
                let trace = trace_value.as_deref().map(lambda::parse_xray).unwrap_or_default();
                (rec.trace_id, rec.span_id) = trace;
                if rec.severity_number == 0 {
                    rec.severity_number = match crate::event::find_attr(&rec.attributes, "status") {
                        Some(Value::Str(s)) if s != "success" => severity::ERROR,
                        _ => severity::INFO,
                    };
                }
                match env.kind.as_str() {
                    "platform.start" => {
                        st.request_id = request_id.clone();
                        st.trace = trace;
                    }
                    "platform.report" => {
                        saw_report = true;
                        if st.request_id == request_id {
                            st.request_id = None;
                            st.trace = (None, None);
                        }
                    }
                    _ => {}
                }
            }
            rec.attributes.push(KeyValue::new(attr::TYPE, env.kind));
            if let Some(r) = request_id {
                rec.attributes.push(KeyValue::new(attr::REQUEST_ID, r));
            }
            out.push(Event::Log(rec));
        }
        saw_report
    }
}

/// `[INFO]\t…` (the text format of the managed runtimes) → a severity number.
fn text_level(line: &str) -> Option<i32> {
    let rest = line.strip_prefix('[')?;
    let end = rest.get(..10.min(rest.len()))?.find(']')?;
    severity::parse_level(&rest[..end])
}

/// RFC 3339 → UTC nanoseconds (0 when it does not parse).
fn parse_time(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0)
}

/// Flattens nested objects into dotted keys; arrays and scalars become values.
fn flatten(prefix: &str, v: J, out: &mut Vec<KeyValue>) {
    match v {
        J::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        v => out.push(KeyValue { key: prefix.to_owned(), value: json_value(v) }),
    }
}

/// A JSON value as an attribute value.
fn json_value(v: J) -> Value {
    match v {
        J::Null => Value::Empty,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => {
            n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Double(n.as_f64().unwrap_or(0.0)))
        }
        J::String(s) => Value::Str(s),
        J::Array(a) => Value::Array(a.into_iter().map(json_value).collect()),
        J::Object(m) => {
            Value::Map(m.into_iter().map(|(k, v)| KeyValue { key: k, value: json_value(v) }).collect())
        }
    }
}

#[cfg(test)]
mod tests {
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
        let e = parse("schema_version = \"2020-01-01\"\ntypes = [\"logs\"]\n[buffering]\nmax_items = 5\ntimeout_ms = 10")
            .check()
            .unwrap_err()
            .to_string();
        for part in ["schema_version", "\"logs\"", "buffering.max_items", "buffering.timeout_ms"] {
            assert!(e.contains(part), "{e}");
        }
        assert!(parse("address = \"localhost\"").check().is_err());
        assert!(parse("max_body_bytes = 1000").check().is_err());
        assert!(toml::from_str::<LambdaTelemetryConfig>("bogus = 1").is_err());
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
        let built = cfg
            .build(&BuildContext { id: "tel", globals: &Default::default(), lambda: Some(&handle) })
            .unwrap();
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
            post(port, r#"[{"type":"platform.report","record":{"requestId":"r1","status":"success"}}]"#)
                .await,
            200
        );
        assert!(matches!(rx.recv().await, Some(Message::Batch(b)) if b.len() == 1));
        // The seal order follows the report's batch.
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
}
