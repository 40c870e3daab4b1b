//! The `otlp` source: receives spans and log records from OpenTelemetry SDKs and collectors,
//! over OTLP/gRPC (`TraceService/Export`, `LogsService/Export`) and OTLP/HTTP (`/v1/traces`,
//! `/v1/logs`, protobuf or JSON, optionally gzip-compressed), with or without TLS.
//!
//! The module is split by layer: this file holds the configuration and its validation;
//! listeners, TLS, connection limits, timeouts and graceful shutdown are the agent's one
//! server loop ([`crate::net::server`]); [`grpc`] and [`http`] turn requests into calls of [`ingest::Ingest`],
//! which converts them to events and hands them to the pipeline without waiting: when the
//! pipeline is full the client is told to retry later (gRPC `RESOURCE_EXHAUSTED` with a
//! `RetryInfo`, HTTP 429 with `Retry-After`), so no request is ever queued inside the agent.

mod grpc;
mod http;
mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::component::SourceContext;
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::event::Signals;
use crate::net::server::{Limits, ListenerConfig, listen};
use crate::net::tls::{Alpn, ServerTls};

pub const KIND: SourceKind = SourceKind {
    name: "otlp",
    description: "spans and logs from OpenTelemetry exporters over OTLP/gRPC and OTLP/HTTP",
    parse: parse_source::<OtlpSourceConfig>,
};

/// Configuration for the `otlp` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    /// Where to serve OTLP/gRPC (`host:port`). An empty string disables gRPC.
    #[serde(default = "default_grpc_address")]
    pub grpc_address: String,
    /// Where to serve OTLP/HTTP (`host:port`). An empty string disables HTTP.
    #[serde(default = "default_http_address")]
    pub http_address: String,
    /// TLS for both listeners. Without it, only loopback addresses may be bound unless
    /// `allow_plaintext` is set.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Allows binding a non-loopback address without TLS (logged as a warning at start).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The largest request body accepted, in bytes, both as received and after gzip
    /// decompression (default 4 MiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// The most spans or log records one request may carry (default 100,000).
    #[serde(default = "default_max_items")]
    pub max_items_per_request: usize,
    /// The most connections open at once on each listener; more are closed at once and
    /// counted (default 4,096).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most requests being read and decoded at once, across both listeners (default 64).
    /// Bounds the memory held by request bodies to about this × `max_request_bytes`; a
    /// request over the limit is answered "retry later" at once, never queued.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// The delay that a client is asked to wait when the pipeline is full (`Retry-After`,
    /// gRPC `RetryInfo`; default 1 s; whole seconds, as `Retry-After` carries). The old name
    /// `retry_after_secs` is accepted.
    #[serde(default = "default_retry_after", alias = "retry_after_secs")]
    pub retry_after: crate::units::Duration,
    /// Timeouts of both listeners (`[sources.X.listener]`): TLS handshake, headers, body,
    /// idle connections and HTTP/2 keep-alive.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Answer success only once every durable sink downstream has the request's events in
    /// its fsynced write-ahead log; a request that could not be made durable is answered
    /// "retry" (gRPC `UNAVAILABLE`, HTTP 503 with `Retry-After`). Needs a `sealed` sink with
    /// `wal = true` downstream. Default false: success once the events are in the pipeline.
    #[serde(default)]
    pub acknowledgements: bool,
}

fn default_grpc_address() -> String {
    "127.0.0.1:4317".to_owned()
}

fn default_http_address() -> String {
    "127.0.0.1:4318".to_owned()
}

fn default_max_request_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_items() -> usize {
    100_000
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_concurrent_requests() -> usize {
    64
}

fn default_retry_after() -> crate::units::Duration {
    crate::units::Duration::from_secs(1)
}

impl SourceConfig for OtlpSourceConfig {
    fn outputs(&self) -> Signals {
        Signals::ALL
    }

    fn acknowledgements(&self) -> bool {
        self.acknowledgements
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        let grpc = parse_address(&self.grpc_address, "grpc_address")?;
        let http = parse_address(&self.http_address, "http_address")?;
        anyhow::ensure!(
            grpc.is_some() || http.is_some(),
            "both `grpc_address` and `http_address` are disabled; enable at least one"
        );
        if let (Some(g), Some(h)) = (grpc, http) {
            // Port 0 asks the system for a free port, different for each listener.
            anyhow::ensure!(
                g != h || g.port() == 0,
                "`grpc_address` and `http_address` are the same address {g}"
            );
        }
        anyhow::ensure!(self.max_request_bytes >= 1024, "`max_request_bytes` must be at least 1024");
        anyhow::ensure!(self.max_items_per_request >= 1, "`max_items_per_request` must be at least 1");
        anyhow::ensure!(self.max_concurrent_requests >= 1, "`max_concurrent_requests` must be at least 1");
        let tls = match &self.tls {
            Some(t) => Some(t.server_config(Alpn::H2AndHttp1)?),
            None => None,
        };
        let listener = self.listener.limits(self.max_connections)?;
        let mut plaintext_public = Vec::new();
        for (field, addr) in [("grpc_address", grpc), ("http_address", http)] {
            let Some(a) = addr else { continue };
            if tls.is_none() && !a.ip().is_loopback() {
                anyhow::ensure!(
                    self.allow_plaintext,
                    "`{field}` = {a} is not a loopback address and no `tls` is configured: \
                     telemetry would cross the network in plain text; configure `tls` or set \
                     `allow_plaintext = true`"
                );
                plaintext_public.push(a);
            }
        }
        Ok(Box::new(OtlpSource {
            grpc,
            http,
            tls,
            plaintext_public,
            limits: ingest::Limits {
                max_request_bytes: self.max_request_bytes,
                max_items: self.max_items_per_request,
                retry_after_secs: self.retry_after.get().as_secs(),
                max_concurrent_requests: self.max_concurrent_requests,
                acknowledgements: self.acknowledgements,
            },
            listener,
            id: cx.id.to_owned(),
        }))
    }
}

fn parse_address(s: &str, field: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    match crate::units::ListenAddress::parse(s) {
        Ok(a) => Ok(Some(a.0)),
        Err(e) => anyhow::bail!("`{field}`: {e}"),
    }
}

/// Binds one listener (when enabled) and logs where it listens.
fn bind(addr: Option<SocketAddr>, name: &str, tls: bool) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let l = listen(addr).map_err(|e| anyhow::anyhow!("cannot listen for {name} on {addr}: {e}"))?;
    tracing::info!(address = %l.local_addr()?, tls, "{name} listening");
    Ok(Some(l))
}

/// How long shutdown waits for in-flight requests; a client that stalls mid-request does not
/// hold the agent hostage: its connection is closed after this.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The compiled source: addresses checked, TLS loaded, nothing bound yet.
struct OtlpSource {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Non-loopback addresses served without TLS (allowed by `allow_plaintext`).
    plaintext_public: Vec<SocketAddr>,
    limits: ingest::Limits,
    listener: Limits,
    id: String,
}

impl Source for OtlpSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let OtlpSource { grpc, http, tls, plaintext_public, limits, listener, id } = *self;
            for a in plaintext_public {
                tracing::warn!(address = %a, "serving OTLP without TLS on a non-loopback address (allow_plaintext)");
            }
            let ingest = Arc::new(ingest::Ingest::new(cx.out, cx.metrics.clone(), &id, limits));
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            let grpc_listener = bind(grpc, "OTLP/gRPC", acceptor.is_some())?;
            let http_listener = bind(http, "OTLP/HTTP", acceptor.is_some())?;
            // The listeners stop when the agent shuts down, or when the process it wraps (the
            // `exec` source of a sidecar) has exited: that process was the one exporting
            // telemetry here, its SDK flushed before it exited, and a sidecar must end with it.
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let mut shutdown = cx.shutdown.clone();
            let exit_code = cx.exit_code.clone();
            let watcher = tokio::spawn(async move {
                let wrapped_exited = async {
                    loop {
                        if exit_code.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                };
                tokio::select! {
                    _ = shutdown.recv() => {}
                    _ = wrapped_exited => tracing::debug!("the wrapped process exited; OTLP listeners stop"),
                }
                let _ = stop_tx.send(true);
            });
            let mut tasks = tokio::task::JoinSet::new();
            if let Some(l) = grpc_listener {
                let router = grpc::Router::new(ingest.clone());
                let server = crate::net::Server {
                    limits: listener,
                    tls: acceptor.clone(),
                    metrics: cx.metrics.clone(),
                    handler: move |req, _peer| router.clone().call(req),
                    name: "OTLP/gRPC",
                };
                tasks.spawn(server.serve(l, crate::net::server::stop_on(stop.clone(), DRAIN_TIMEOUT)));
            }
            if let Some(l) = http_listener {
                let ingest = ingest.clone();
                let server = crate::net::Server {
                    limits: listener,
                    tls: acceptor.clone(),
                    metrics: cx.metrics.clone(),
                    handler: move |req, _peer| http::handle(req, ingest.clone()),
                    name: "OTLP/HTTP",
                };
                tasks.spawn(server.serve(l, crate::net::server::stop_on(stop.clone(), DRAIN_TIMEOUT)));
            }
            while tasks.join_next().await.is_some() {}
            watcher.abort();
            // Every listener has drained (or given up on stalled clients): release the output
            // so the pipeline downstream can flush and end.
            ingest.close();
            Ok(())
        })
    }
}
