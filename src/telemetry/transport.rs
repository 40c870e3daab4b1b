//! How the agent's telemetry reaches the collector: the OTLP exporters of
//! `opentelemetry-otlp` over the agent's one HTTP client and connector ([`crate::net::client`]:
//! tonic over the connector for gRPC, the pooled client for HTTP), wrapped so that every export runs on the agent's runtime under a time
//! limit and a failure is counted and logged at most once per interval.
//!
//! The SDK calls exporters from its own threads with a plain `block_on`; [`InRuntime`] enters
//! the agent's runtime around each poll so tokio timers, sockets and spawned connection tasks
//! work there, while the runtime's worker threads keep doing the pipeline's work.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::config::{Checked, TelemetryOptions, TelemetryProtocol};
use crate::metrics::ComponentMetrics;
use crate::net::client::{Client, CompiledHeaders, Connector, Endpoint, Pool};

/// The most bytes of a collector's response body read back.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long an idle connection to the collector is kept for the next export.
const IDLE: Duration = Duration::from_secs(90);

/// Counts export failures and rate-limits their warnings: at most one per `every`.
pub(super) struct Report {
    every: Duration,
    last: Mutex<Option<Instant>>,
    metrics: Arc<ComponentMetrics>,
}

impl Report {
    pub(super) fn new(every: Duration, metrics: Arc<ComponentMetrics>) -> Report {
        Report { every, last: Mutex::new(None), metrics }
    }

    fn result(&self, signal: &'static str, r: &OTelSdkResult) {
        let (exported, failed) = match signal {
            "traces" => ("exports.traces", "export_traces"),
            _ => ("exports.metrics", "export_metrics"),
        };
        let Err(e) = r else {
            self.metrics.add(exported, 1);
            return;
        };
        self.metrics.error(failed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= self.every) {
            *last = Some(Instant::now());
            tracing::warn!(
                signal,
                "exporting the agent's own {signal} failed (the pipeline is not affected; at most one such \
                 warning per {:?}): {e}",
                self.every
            );
        }
    }
}

/// What every guarded export shares.
#[derive(Clone)]
pub(super) struct Guard {
    pub handle: tokio::runtime::Handle,
    pub timeout: Duration,
    pub report: Arc<Report>,
    pub signal: &'static str,
}

impl Guard {
    /// Runs `export` on the agent's runtime within the time limit, and reports its result.
    fn run<'a>(&self, export: impl Future<Output = OTelSdkResult> + Send + 'a) -> InRuntime<'a> {
        let (timeout, report, signal) = (self.timeout, self.report.clone(), self.signal);
        InRuntime {
            handle: self.handle.clone(),
            fut: Box::pin(async move {
                let r = match tokio::time::timeout(timeout, export).await {
                    Ok(r) => r,
                    Err(_) => Err(OTelSdkError::Timeout(timeout)),
                };
                report.result(signal, &r);
                r
            }),
        }
    }
}

/// A future polled inside the agent's runtime context, whichever thread polls it.
pub(super) struct InRuntime<'a> {
    handle: tokio::runtime::Handle,
    fut: Pin<Box<dyn Future<Output = OTelSdkResult> + Send + 'a>>,
}

impl Future for InRuntime<'_> {
    type Output = OTelSdkResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OTelSdkResult> {
        let _enter = self.handle.enter();
        self.fut.as_mut().poll(cx)
    }
}

/// The OTLP span exporter behind a [`Guard`].
#[derive(Debug)]
pub(super) struct GuardedSpans {
    pub inner: opentelemetry_otlp::SpanExporter,
    pub guard: Guard,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("signal", &self.signal).field("timeout", &self.timeout).finish()
    }
}

impl SpanExporter for GuardedSpans {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.guard.run(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP metric exporter behind a [`Guard`].
pub(super) struct GuardedMetrics {
    pub inner: opentelemetry_otlp::MetricExporter,
    pub guard: Guard,
}

impl PushMetricExporter for GuardedMetrics {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.guard.run(self.inner.export(metrics)).await
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The connection settings shared by the span and the metric exporter.
pub(super) struct Link {
    endpoint: Endpoint,
    timeout: Duration,
    headers: CompiledHeaders,
    /// The agent's HTTP client (HTTP/protobuf only), shared by both exporters.
    client: Option<Client>,
    /// A lazily connecting channel, shared by both exporters (gRPC only).
    channel: Option<tonic::transport::Channel>,
}

impl Link {
    /// Builds the connector (and, for gRPC, a lazy channel: this must run inside the agent's
    /// runtime). Connects nowhere.
    pub(super) fn new(options: &TelemetryOptions, checked: &Checked) -> anyhow::Result<Link> {
        let endpoint = checked
            .endpoint
            .clone()
            .ok_or_else(|| anyhow::anyhow!("telemetry: `endpoint` is required when `enabled = true`"))?;
        let alpn: &[&[u8]] = match options.protocol {
            TelemetryProtocol::Grpc => &[b"h2"],
            TelemetryProtocol::HttpProtobuf => &[b"http/1.1"],
        };
        let connector = Connector::new(&endpoint, options.tls.as_ref(), alpn)
            .map_err(|e| anyhow::anyhow!("telemetry: {e:#}"))?;
        let headers = options.headers.compile().map_err(|e| anyhow::anyhow!("telemetry: {e:#}"))?;
        let (client, channel) = match options.protocol {
            TelemetryProtocol::Grpc => {
                (None, Some(connector.grpc_channel(&endpoint.authority, checked.timeout)))
            }
            TelemetryProtocol::HttpProtobuf => {
                let connector = connector.with_connect_timeout(checked.timeout);
                (Some(Client::new(connector, Pool::KeepIdle(IDLE))), None)
            }
        };
        Ok(Link { endpoint, timeout: checked.timeout, headers, client, channel })
    }

    fn http_client(&self) -> anyhow::Result<HttpTransport> {
        let client =
            self.client.clone().ok_or_else(|| anyhow::anyhow!("telemetry: no HTTP client for gRPC"))?;
        Ok(HttpTransport { client, headers: self.headers.http.clone(), timeout: self.timeout })
    }

    fn url(&self, suffix: &str) -> String {
        self.endpoint.url(suffix)
    }

    /// The interceptor that sets exactly the configured metadata: whatever the exporter took
    /// from `OTEL_EXPORTER_OTLP_HEADERS` (the served function's settings) is dropped.
    fn metadata(&self) -> impl tonic::service::Interceptor + Clone + Send + Sync + 'static {
        let md = self.headers.grpc.clone();
        move |mut req: tonic::Request<()>| {
            *req.metadata_mut() = md.clone();
            Ok(req)
        }
    }

    pub(super) fn span_exporter(&self) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
        let b = opentelemetry_otlp::SpanExporter::builder();
        let r = match &self.channel {
            Some(ch) => b
                .with_tonic()
                .with_channel(ch.clone())
                .with_interceptor(self.metadata())
                .with_timeout(self.timeout)
                .build(),
            None => b
                .with_http()
                .with_http_client(self.http_client()?)
                .with_endpoint(self.url("/v1/traces"))
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(self.timeout)
                .build(),
        };
        r.map_err(|e| anyhow::anyhow!("telemetry: cannot build the span exporter: {e}"))
    }

    pub(super) fn metric_exporter(&self) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
        let b = opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
        let r = match &self.channel {
            Some(ch) => b
                .with_tonic()
                .with_channel(ch.clone())
                .with_interceptor(self.metadata())
                .with_timeout(self.timeout)
                .build(),
            None => b
                .with_http()
                .with_http_client(self.http_client()?)
                .with_endpoint(self.url("/v1/metrics"))
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(self.timeout)
                .build(),
        };
        r.map_err(|e| anyhow::anyhow!("telemetry: cannot build the metric exporter: {e}"))
    }
}

/// The agent's HTTP client ([`crate::net::client`]) as the exporters' `HttpClient`, with a
/// connection kept between exports.
struct HttpTransport {
    client: Client,
    headers: http::HeaderMap,
    timeout: Duration,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are secrets; the client holds nothing worth printing.
        f.debug_struct("HttpTransport").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl HttpClient for HttpTransport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout).into()),
        }
    }
}

impl HttpTransport {
    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        // Only the body's own headers and the configured ones go out (see `Link::metadata`).
        let mut req = http::Request::post(parts.uri).body(Full::new(body))?;
        for name in [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING] {
            if let Some(v) = parts.headers.get(&name) {
                req.headers_mut().insert(name, v.clone());
            }
        }
        for (k, v) in &self.headers {
            req.headers_mut().insert(k, v.clone());
        }
        Ok(self.client.send_collect(req, MAX_RESPONSE_BYTES).await?)
    }
}
