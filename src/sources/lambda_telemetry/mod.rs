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
//!
//! Files: this one holds the configuration; [`listener`] runs the source on the agent's one
//! server loop ([`crate::net::server`]); [`handler`] answers a delivery; [`queue`] feeds the
//! pipeline from the in-memory queue; [`mapping`] turns Telemetry API records into events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value as J;
use tokio::sync::mpsc;

mod handler;
mod listener;
mod mapping;
mod queue;
#[cfg(test)]
mod tests;

use handler::Ingest;
use listener::LambdaTelemetrySource;
use mapping::{Envelope, Mapper, StreamState};

use crate::component::lambda::{self, Handle, ListenerReady};
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::component::{Fanout, SourceContext};
use crate::event::{Batch, Event, KeyValue, LogRecord, Signals, SourceId, Value, now_nanos, severity};
use crate::metrics::ComponentMetrics;
use crate::net::server::{Limits, ListenerConfig, Server};

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
    /// Default `"100ms"`.
    #[serde(default)]
    pub shutdown_grace: Option<crate::units::Duration>,
    /// The older `shutdown_grace`, in milliseconds.
    #[serde(default, deserialize_with = "crate::units::legacy_millis")]
    pub shutdown_grace_ms: Option<crate::units::Duration>,
    /// When to ask the sealed sink to seal: `limits` (default: only the sink's own row, byte
    /// and age limits), `end` (after every invoke's `platform.report`), `periodic` (every
    /// `flush_interval`). SHUTDOWN always seals everything.
    #[serde(default)]
    pub flush: FlushPolicy,
    /// The period of the `periodic` flush policy.
    #[serde(default = "default_flush_interval", alias = "flush_interval_secs")]
    pub flush_interval: crate::units::Duration,
    /// The service name of every record (used by key rules); default: the function name
    /// (`AWS_LAMBDA_FUNCTION_NAME`).
    #[serde(default)]
    pub service: Option<String>,
    /// Connections open at once; more are closed at once (default 64; the platform uses a
    /// few).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Listener timeouts (`[sources.X.listener]`): headers, body, idle connections.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Answer a delivery 200 only once its records are in a durable sink's fsynced
    /// write-ahead log; a delivery that could not be made durable, or that finds the backlog
    /// full, gets 503 (the platform delivers it again) instead of being dropped. Needs a
    /// `sealed` sink with `wal = true` downstream. Default false.
    #[serde(default)]
    pub acknowledgements: bool,
}

/// What the handler queues for the forwarding task: the records, their size, whether a seal
/// order follows them, and their acknowledgement token when the source acknowledges.
pub(super) type Queued = (Batch, usize, bool, Option<crate::component::Ack>);

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
fn default_max_connections() -> usize {
    64
}
const DEFAULT_SHUTDOWN_GRACE: crate::units::Duration = crate::units::Duration::from_millis(100);
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
        if let Err(e) = self.resolve_shutdown_grace() {
            errs.push(e);
        }
        if errs.is_empty() { Ok(()) } else { Err(anyhow::anyhow!(errs.join("; "))) }
    }

    /// `shutdown_grace` from the current or the older `_ms` name (an error when both are set).
    fn resolve_shutdown_grace(&self) -> Result<Duration, String> {
        crate::units::either(
            "shutdown_grace",
            self.shutdown_grace,
            "shutdown_grace_ms",
            self.shutdown_grace_ms,
            DEFAULT_SHUTDOWN_GRACE,
        )
        .map(crate::units::Duration::get)
    }

    /// [`Self::resolve_shutdown_grace`] after `check` accepted it.
    fn shutdown_grace(&self) -> Duration {
        self.resolve_shutdown_grace().unwrap_or(DEFAULT_SHUTDOWN_GRACE.get())
    }
}

impl SourceConfig for LambdaTelemetryConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    fn acknowledgements(&self) -> bool {
        self.acknowledgements
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        self.check()?;
        let limits = self.listener.limits(self.max_connections)?;
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
            limits,
        }))
    }
}
