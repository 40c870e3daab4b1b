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

use std::time::Duration;

use serde::Deserialize;

use crate::component::{BoxFuture, BuildContext, Sink, SinkConfig, SinkKind, parse_sink};
use crate::component::{SinkContext, SinkInput};
use crate::event::{Batch, Event};
use crate::net::client::{CompiledHeaders, Connector, Endpoint};
use crate::net::exposure;
use crate::net::tls::ClientTls;
use crate::otlp::{ExportLogsServiceRequest, ExportTraceServiceRequest};
use crate::units;

pub use crate::net::client::Headers;

mod exporter;

use exporter::Exporter;

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
    /// Time limit for one export attempt (default `"10s"`; old name `timeout_secs`).
    #[serde(default = "default_timeout", alias = "timeout_secs")]
    pub timeout: units::Duration,
    /// How many times a failed export is retried before its events are dropped (default 5).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry delay, doubled on each retry (default `"100ms"`).
    #[serde(default)]
    pub initial_backoff: Option<units::Duration>,
    /// The older `initial_backoff`, in milliseconds.
    #[serde(default, deserialize_with = "units::legacy_millis")]
    pub initial_backoff_ms: Option<units::Duration>,
    /// The longest retry delay (default `"5s"`). A server's `Retry-After` or `RetryInfo` is
    /// honoured up to this bound.
    #[serde(default)]
    pub max_backoff: Option<units::Duration>,
    /// The older `max_backoff`, in milliseconds.
    #[serde(default, deserialize_with = "units::legacy_millis")]
    pub max_backoff_ms: Option<units::Duration>,
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
fn default_timeout() -> units::Duration {
    units::Duration::from_secs(10)
}
fn default_max_retries() -> u32 {
    5
}

/// The time settings of the sink, resolved and checked.
#[derive(Debug, PartialEq, Eq)]
struct Timing {
    timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl OtlpSinkConfig {
    fn timing(&self) -> anyhow::Result<Timing> {
        let timeout = self.timeout.get();
        anyhow::ensure!(timeout >= Duration::from_millis(1), "`timeout` must be at least 1ms");
        let default_initial = units::Duration::from_millis(100);
        let initial_backoff = units::either(
            "initial_backoff",
            self.initial_backoff,
            "initial_backoff_ms",
            self.initial_backoff_ms,
            default_initial,
        )
        .map_err(anyhow::Error::msg)?
        .get();
        let default_max = units::Duration::from_secs(5);
        let max_backoff = units::either(
            "max_backoff",
            self.max_backoff,
            "max_backoff_ms",
            self.max_backoff_ms,
            default_max,
        )
        .map_err(anyhow::Error::msg)?
        .get();
        anyhow::ensure!(
            initial_backoff >= Duration::from_millis(1) && initial_backoff <= max_backoff,
            "`initial_backoff` must be between 1ms and `max_backoff`"
        );
        Ok(Timing { timeout, initial_backoff, max_backoff })
    }
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
        let timing = self.timing()?;
        Ok(Box::new(OtlpSink {
            config: self.clone(),
            connector,
            endpoint,
            headers,
            timeout: timing.timeout,
            initial_backoff: timing.initial_backoff,
            max_backoff: timing.max_backoff,
        }))
    }
}

/// The compiled sink.
struct OtlpSink {
    config: OtlpSinkConfig,
    connector: Connector,
    endpoint: Endpoint,
    headers: CompiledHeaders,
    timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
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
                    exporter.export_signal::<ExportTraceServiceRequest>(chunk).await;
                    exporter.export_signal::<ExportLogsServiceRequest>(chunk).await;
                }
                pending.clear();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Issue 11: durations everywhere, the old millisecond fields kept with their meaning.
    #[test]
    fn backoff_takes_durations_and_the_old_millisecond_fields() {
        let build = |extra: &str| -> Result<(Duration, Duration, Duration), String> {
            let c: OtlpSinkConfig = toml::from_str(&format!("endpoint = \"http://127.0.0.1:4317\"\n{extra}"))
                .map_err(|e| e.to_string())?;
            let cx = BuildContext { id: "up", globals: &Default::default(), lambda: None };
            c.build(&cx).map_err(|e| format!("{e:#}"))?;
            let t = c.timing().map_err(|e| format!("{e:#}"))?;
            Ok((t.timeout, t.initial_backoff, t.max_backoff))
        };
        let ms = Duration::from_millis;
        assert_eq!(build(""), Ok((ms(10_000), ms(100), ms(5_000))));
        assert_eq!(
            build("initial_backoff_ms = 20\nmax_backoff_ms = 900\ntimeout_secs = 3"),
            Ok((ms(3_000), ms(20), ms(900)))
        );
        assert_eq!(
            build("initial_backoff = \"20ms\"\nmax_backoff = 2\ntimeout = \"1m\""),
            Ok((ms(60_000), ms(20), ms(2_000)))
        );
        let both = build("initial_backoff = \"1s\"\ninitial_backoff_ms = 5").unwrap_err();
        assert!(both.contains("`initial_backoff` and `initial_backoff_ms` are the same setting"), "{both}");
        let bad = build("initial_backoff = \"9s\"").unwrap_err();
        assert!(bad.contains("`initial_backoff` must be between 1ms and `max_backoff`"), "{bad}");
    }
}
