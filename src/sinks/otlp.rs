//! The `otlp` sink: forwards spans and log records to an upstream OTLP receiver (a collector,
//! a vendor endpoint, another sealtrail) over OTLP/gRPC or OTLP/HTTP with protobuf bodies, in
//! batches, gzip-compressed, with retries and exponential backoff on the codes the OTLP
//! specification calls retryable, custom headers (API keys, usually from `${ENV}`) and TLS.
//!
//! Connections go through the agent's one HTTP client ([`crate::net::client`]): its connector
//! (TCP, then rustls when the endpoint is `https://`) is also tonic's, so gRPC and HTTP share
//! the TLS settings and the ring provider. A batch that
//! still fails after the last retry, or that the upstream refuses for good, is dropped and
//! counted (`dropped.export_failed`) with a warning that names the upstream's reason, never
//! event contents or header values.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prost::Message;
use serde::Deserialize;

use crate::component::{BoxFuture, BuildContext, Sink, SinkConfig, SinkKind, parse_sink};
use crate::component::{SinkContext, SinkInput};
use crate::event::{Batch, Event};
use crate::metrics::ComponentMetrics;
use crate::net::client::{Client, ClientError, CompiledHeaders, Connector, Endpoint, Pool};
use crate::net::exposure;
use crate::net::tls::ClientTls;

pub use crate::net::client::Headers;

/// The most bytes of an upstream's response body read back (an OTLP response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long an idle connection to the upstream is kept for the next batch.
const IDLE: Duration = Duration::from_secs(60);
use crate::otlp::convert::{logs_from_events, traces_from_events};
use crate::otlp::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse, LogsServiceClient, TraceServiceClient,
};

pub const KIND: SinkKind = SinkKind {
    name: "otlp",
    description: "forwards spans and logs to an upstream OTLP receiver over gRPC or HTTP",
    parse: parse_sink::<OtlpSinkConfig>,
};

/// Configuration for the `otlp` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// The upstream receiver: `http://host:4317` for gRPC, `http://host:4318` for HTTP (the
    /// sink appends `/v1/traces` and `/v1/logs` to the path). `https://` turns TLS on.
    pub endpoint: String,
    /// `grpc` (default) or `http_protobuf`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata), e.g. `{ "x-api-key" = "${API_KEY}" }`. Values are
    /// never logged.
    #[serde(default)]
    pub headers: Headers,
    /// TLS settings for `https://` endpoints.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Allows sending `headers` (usually credentials) to an `http://` endpoint, in plain text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// The most events in one export request (default 512).
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Time limit for one export attempt, in seconds (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// How many times a failed export is retried before its events are dropped (default 5).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry delay, in milliseconds, doubled on each retry (default 100).
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// The longest retry delay, in milliseconds (default 5,000). A server's `Retry-After` or
    /// `RetryInfo` is honoured up to this bound.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

/// The transport to the upstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Grpc,
    HttpProtobuf,
}

/// Request compression.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

fn default_batch_max_events() -> usize {
    512
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_max_retries() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5000
}

impl SinkConfig for OtlpSinkConfig {
    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>> {
        let endpoint = Endpoint::parse(&self.endpoint, "endpoint")?;
        let alpn: &[&[u8]] = match self.protocol {
            Protocol::Grpc => &[b"h2"],
            Protocol::HttpProtobuf => &[b"http/1.1"],
        };
        let connector = Connector::new(&endpoint, self.tls.as_ref(), alpn)?;
        let headers = self.headers.compile()?;
        anyhow::ensure!(
            endpoint.https
                || headers.http.is_empty()
                || self.allow_plaintext
                || exposure::is_loopback_host(&endpoint.host),
            "`headers` would be sent to the http:// endpoint {:?} in plain text (they usually carry \
             credentials); use https:// or set `allow_plaintext = true`",
            self.endpoint
        );
        anyhow::ensure!(self.batch_max_events >= 1, "`batch_max_events` must be at least 1");
        anyhow::ensure!(self.timeout_secs >= 1, "`timeout_secs` must be at least 1");
        anyhow::ensure!(
            self.initial_backoff_ms >= 1 && self.initial_backoff_ms <= self.max_backoff_ms,
            "`initial_backoff_ms` must be between 1 and `max_backoff_ms`"
        );
        Ok(Box::new(OtlpSink { config: self.clone(), connector, endpoint, headers }))
    }
}

/// The compiled sink.
struct OtlpSink {
    config: OtlpSinkConfig,
    connector: Connector,
    endpoint: Endpoint,
    headers: CompiledHeaders,
}

impl Sink for OtlpSink {
    fn run(self: Box<Self>, mut input: SinkInput, cx: SinkContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let max = self.config.batch_max_events;
            let mut exporter = Exporter::new(*self, cx.metrics.clone());
            let mut pending: Vec<Batch> = Vec::new();
            while let Some(batch) = input.recv().await {
                let mut n = batch.len();
                pending.push(batch);
                // Take whatever else is ready now, to send fuller requests.
                while n < max {
                    match input.try_recv() {
                        Ok(b) => {
                            n += b.len();
                            pending.push(b);
                        }
                        Err(_) => break,
                    }
                }
                let events: Vec<&Event> = pending.iter().flat_map(|b| b.iter()).collect();
                for chunk in events.chunks(max) {
                    let spans = chunk.iter().filter(|e| matches!(e, Event::Span(_))).count();
                    if spans > 0 {
                        exporter
                            .export(Payload::Traces(traces_from_events(chunk.iter().copied())), spans)
                            .await;
                    }
                    if spans < chunk.len() {
                        let logs = logs_from_events(chunk.iter().copied());
                        exporter.export(Payload::Logs(logs), chunk.len() - spans).await;
                    }
                }
                pending.clear();
            }
            Ok(())
        })
    }
}

/// One export request.
enum Payload {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

/// Why one export attempt failed.
#[derive(Debug)]
enum Failure {
    /// Worth retrying (after the server's delay, if it gave one).
    Retryable { reason: String, after: Option<Duration> },
    /// The upstream refused the data for good.
    Permanent { reason: String },
}

/// The connection state and the retry loop.
struct Exporter {
    sink: OtlpSink,
    metrics: Arc<ComponentMetrics>,
    grpc: Option<tonic::transport::Channel>,
    /// The pooled HTTP client (keeps the connection alive between batches).
    http: Client,
}

impl Exporter {
    fn new(sink: OtlpSink, metrics: Arc<ComponentMetrics>) -> Exporter {
        let timeout = Duration::from_secs(sink.config.timeout_secs);
        let grpc = (sink.config.protocol == Protocol::Grpc)
            .then(|| sink.connector.grpc_channel(&sink.endpoint.authority, timeout));
        let http = Client::new(sink.connector.clone().with_connect_timeout(timeout), Pool::KeepIdle(IDLE));
        Exporter { sink, metrics, grpc, http }
    }

    /// Exports one request, retrying as configured; counts what was sent or dropped.
    async fn export(&mut self, payload: Payload, events: usize) {
        let c = &self.sink.config;
        let (max_retries, max_backoff) = (c.max_retries, Duration::from_millis(c.max_backoff_ms));
        let mut backoff = Duration::from_millis(c.initial_backoff_ms);
        let mut tries = 0u32;
        loop {
            let attempt = match &payload {
                Payload::Traces(r) => self.send_traces(r.clone()).await,
                Payload::Logs(r) => self.send_logs(r.clone()).await,
            };
            match attempt {
                Ok(rejected) => {
                    self.metrics.add_out(events, 0);
                    if rejected > 0 {
                        self.metrics.add("upstream_rejected", rejected);
                    }
                    return;
                }
                Err(Failure::Retryable { reason, after }) if tries < max_retries => {
                    tries += 1;
                    self.metrics.add("retries", 1);
                    let delay = after.unwrap_or_else(|| jitter(backoff)).min(max_backoff);
                    tracing::debug!(attempt = tries, ?delay, "export failed, retrying: {reason}");
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(Failure::Retryable { reason, .. }) | Err(Failure::Permanent { reason }) => {
                    self.metrics.add("dropped.export_failed", events as u64);
                    self.metrics.error("export");
                    tracing::warn!(
                        events,
                        retries = tries,
                        "export to the OTLP upstream failed; events dropped: {reason}"
                    );
                    return;
                }
            }
        }
    }

    /// One gRPC or HTTP attempt; returns the number of items the upstream rejected.
    async fn send_traces(&mut self, req: ExportTraceServiceRequest) -> Result<u64, Failure> {
        match self.grpc.clone() {
            Some(ch) => {
                let mut client = TraceServiceClient::new(ch);
                if self.sink.config.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = self.sink.headers.grpc.clone();
                let resp = client.export(request).await.map_err(grpc_failure)?;
                Ok(resp.into_inner().partial_success.map(|p| p.rejected_spans.max(0) as u64).unwrap_or(0))
            }
            None => {
                let body = self.http_post("/v1/traces", req.encode_to_vec()).await?;
                rejected_in(&body, |r: ExportTraceServiceResponse| {
                    r.partial_success.map(|p| p.rejected_spans)
                })
            }
        }
    }

    async fn send_logs(&mut self, req: ExportLogsServiceRequest) -> Result<u64, Failure> {
        match self.grpc.clone() {
            Some(ch) => {
                let mut client = LogsServiceClient::new(ch);
                if self.sink.config.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = self.sink.headers.grpc.clone();
                let resp = client.export(request).await.map_err(grpc_failure)?;
                Ok(resp
                    .into_inner()
                    .partial_success
                    .map(|p| p.rejected_log_records.max(0) as u64)
                    .unwrap_or(0))
            }
            None => {
                let body = self.http_post("/v1/logs", req.encode_to_vec()).await?;
                rejected_in(&body, |r: ExportLogsServiceResponse| {
                    r.partial_success.map(|p| p.rejected_log_records)
                })
            }
        }
    }

    /// POSTs a protobuf body through the pooled client and returns the response body of a
    /// 2xx answer.
    async fn http_post(&mut self, suffix: &str, body: Vec<u8>) -> Result<Bytes, Failure> {
        let timeout = Duration::from_secs(self.sink.config.timeout_secs);
        match tokio::time::timeout(timeout, self.http_post_inner(suffix, body)).await {
            Ok(r) => r,
            Err(_) => {
                Err(Failure::Retryable { reason: format!("no answer within {timeout:?}"), after: None })
            }
        }
    }

    async fn http_post_inner(&mut self, suffix: &str, body: Vec<u8>) -> Result<Bytes, Failure> {
        let gzip = self.sink.config.compression == Compression::Gzip;
        let body = if gzip {
            // A compression failure must never send an empty body as if it were the data.
            gzip_bytes(&body)
                .map_err(|e| Failure::Permanent { reason: format!("gzip compression failed: {e}") })?
        } else {
            body
        };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.sink.endpoint.url(suffix))
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Permanent { reason: format!("building the request: {e}") })?;
        if gzip {
            req.headers_mut().insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.sink.headers.http {
            req.headers_mut().insert(k, v.clone());
        }
        let resp = match self.http.send_collect(req, MAX_RESPONSE_BYTES).await {
            Ok(r) => r,
            // A refused certificate will not change by retrying.
            Err(e @ ClientError::Tls(_)) => return Err(Failure::Permanent { reason: e.to_string() }),
            Err(e) => return Err(Failure::Retryable { reason: e.to_string(), after: None }),
        };
        let status = resp.status();
        let after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let reason = format!("upstream answered {status}");
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(Failure::Retryable { reason, after }),
            _ => Err(Failure::Permanent { reason }),
        }
    }
}

/// The number of items an OTLP/HTTP success body says were rejected. A body that is not an
/// OTLP response is a failure, never "0 rejected": the sink cannot know what arrived.
fn rejected_in<R: Message + Default>(
    body: &[u8],
    rejected: impl Fn(R) -> Option<i64>,
) -> Result<u64, Failure> {
    match R::decode(body) {
        Ok(r) => Ok(rejected(r).unwrap_or(0).max(0) as u64),
        Err(e) => Err(Failure::Permanent {
            reason: format!("upstream answered success with a body that is not an OTLP response ({e})"),
        }),
    }
}

/// The gRPC codes the OTLP specification lists as retryable.
fn grpc_failure(s: tonic::Status) -> Failure {
    use tonic::Code::*;
    let msg: String = s.message().chars().take(200).collect();
    let reason = format!("upstream answered {:?}: {msg}", s.code());
    match s.code() {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => {
            Failure::Retryable { reason, after: None }
        }
        // Retryable only when the server says when (RetryInfo), per the specification.
        ResourceExhausted => match retry_delay(&s) {
            Some(after) => Failure::Retryable { reason, after: Some(after) },
            None => Failure::Permanent { reason },
        },
        _ => Failure::Permanent { reason },
    }
}

/// The `RetryInfo` delay of a status, if it carries one.
fn retry_delay(s: &tonic::Status) -> Option<Duration> {
    let status = crate::otlp::RpcStatus::decode(s.details()).ok()?;
    let any = status.details.iter().find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))?;
    let info = crate::otlp::RetryInfo::decode(&any.value[..]).ok()?;
    let d = info.retry_delay?;
    Some(Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64))
}

/// A delay between `d/2` and `d`, so that many agents do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random::<f64>() * 0.5 + 0.5;
    d.mul_f64(f)
}

fn gzip_bytes(b: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::fast());
    enc.write_all(b)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        let details = crate::otlp::retry_details(8, "full", 3);
        let with = tonic::Status::with_details(tonic::Code::ResourceExhausted, "full", details.into());
        assert!(
            matches!(grpc_failure(with), Failure::Retryable { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let without = tonic::Status::resource_exhausted("too big");
        assert!(matches!(grpc_failure(without), Failure::Permanent { .. }));
        assert!(matches!(
            grpc_failure(tonic::Status::unavailable("x")),
            Failure::Retryable { after: None, .. }
        ));
        assert!(matches!(grpc_failure(tonic::Status::invalid_argument("x")), Failure::Permanent { .. }));
    }

    /// Issue 11: an undecodable success body was counted as "0 rejected".
    #[test]
    fn an_undecodable_response_is_a_failure_not_zero_rejected() {
        let garbage = [0xff_u8, 0xff, 0xff];
        let r = rejected_in(&garbage, |r: ExportLogsServiceResponse| {
            r.partial_success.map(|p| p.rejected_log_records)
        });
        assert!(
            matches!(r, Err(Failure::Permanent { ref reason }) if reason.contains("not an OTLP response"))
        );
        let ok = ExportLogsServiceResponse {
            partial_success: Some(crate::otlp::ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: String::new(),
            }),
        };
        let n = rejected_in(&ok.encode_to_vec(), |r: ExportLogsServiceResponse| {
            r.partial_success.map(|p| p.rejected_log_records)
        });
        assert!(matches!(n, Ok(3)));
        assert!(matches!(
            rejected_in(&[], |r: ExportLogsServiceResponse| r
                .partial_success
                .map(|p| p.rejected_log_records)),
            Ok(0)
        ));
    }

    /// Issue 13: credentials in `headers` over `http://` need an explicit opt-in.
    #[test]
    fn headers_over_plain_http_need_allow_plaintext() {
        let build = |extra: &str| {
            let c: OtlpSinkConfig = toml::from_str(&format!(
                "endpoint = \"http://10.0.0.1:4318\"\nprotocol = \"http_protobuf\"\n{extra}"
            ))
            .unwrap();
            c.build(&BuildContext { id: "up", globals: &Default::default(), lambda: None })
                .err()
                .map(|e| format!("{e:#}"))
        };
        let e = build("headers = { x-api-key = \"s3cr3t-value\" }").expect("refused");
        assert!(e.contains("allow_plaintext = true") && e.contains("plain text"), "{e}");
        assert!(!e.contains("s3cr3t-value"), "{e}");
        assert_eq!(build("headers = { x-api-key = \"k\" }\nallow_plaintext = true"), None);
        assert_eq!(build(""), None);
        let local: OtlpSinkConfig =
            toml::from_str("endpoint = \"http://127.0.0.1:4318\"\nheaders = { k = \"v\" }").unwrap();
        assert!(local.build(&BuildContext { id: "up", globals: &Default::default(), lambda: None }).is_ok());
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100), "{d:?}");
        }
    }
}
