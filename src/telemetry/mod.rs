//! The agent's own telemetry: spans of its own operations and its per-component counters,
//! exported over OTLP with `opentelemetry` + `opentelemetry-otlp` when `[telemetry]` is
//! enabled (it is off by default).
//!
//! What is exported is fixed here and never comes from events:
//! - **spans** ([`span`]): `sealtrail.pipeline.start`, `sealtrail.pipeline.shutdown`,
//!   `sealtrail.segment.seal`, `sealtrail.key.wrap_dek`, `sealtrail.key.unwrap_dek`, and in
//!   the Lambda extension `sealtrail.lambda.invoke` and `sealtrail.lambda.shutdown`, whose
//!   attributes are counts, component ids, signals and key ids (`name#version`, never
//!   material). The `tracing` log of the agent is *not* bridged: a debug line could hold event
//!   contents, so the exported spans are made with the OpenTelemetry API directly.
//! - **metrics** ([`counters`]): every counter of [`crate::metrics::Registry`] as an
//!   observable counter with `component_id` and `component_kind` attributes.
//!
//! Export can never stop or slow the pipeline: spans are handed to the SDK's batch processor
//! (a bounded queue, dropped when full, exported on its own thread) and counters are read from
//! the registry's atomics by the SDK's periodic reader thread. Each export runs under a time
//! limit ([`TelemetryOptions::timeout`]), and a failure is counted (`errors.*` of the
//! `telemetry` component) and logged at warn at most once per export interval
//! ([`transport`]). The transports are the `otlp` sink's connector (TCP, rustls), driven
//! by the agent's tokio runtime.
//!
//! A process that may be frozen between bursts of work (the Lambda extension between
//! invokes) cannot wait for the periodic exports: it calls [`Telemetry::flush`] when a burst
//! ends and [`Telemetry::shutdown_within`] at the end, each bounded by the caller's limit.

pub mod config;
mod counters;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

pub use config::{FieldError, Headers, TelemetryOptions, TelemetryProtocol};

use crate::metrics::Registry;

/// The instrumentation scope of every span and metric the agent exports.
pub const SCOPE: &str = "sealtrail";

/// The most spans waiting for export; more are dropped (by the SDK) rather than queued.
const MAX_QUEUED_SPANS: usize = 2048;

/// Starts a span of the agent's own work. A no-op when telemetry is off. Attributes must be
/// counts, ids and names from the configuration, never event contents or key material.
pub fn span(name: &'static str) -> global::BoxedSpan {
    global::tracer(SCOPE).start(name)
}

/// Starts a span as a child of a remote span (the caller's trace, e.g. the X-Ray trace of a
/// Lambda invoke), so a trace viewer shows the agent's work inside it. It is sampled
/// whatever the remote side decided: whether the agent exports is `[telemetry]`'s call.
pub fn child_span(name: &'static str, trace_id: [u8; 16], parent: [u8; 8]) -> global::BoxedSpan {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    let remote = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(parent),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(remote);
    global::tracer(SCOPE).start_with_context(name, &cx)
}

/// Ends `span` with an error status when `r` is an error (the message is the error's
/// `Display`, which in this crate never holds event contents or key material).
pub fn end_with<T, E: std::fmt::Display>(mut span: global::BoxedSpan, r: &Result<T, E>) {
    if let Err(e) = r {
        span.set_status(opentelemetry::trace::Status::error(e.to_string()));
    }
    span.end();
}

/// The running exporters. Dropping it without [`Telemetry::shutdown`] loses what is queued.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    timeout: Duration,
    /// Set while a [`Telemetry::flush`] runs: a flush that outlived its caller's limit is
    /// not joined by another one.
    flushing: Arc<AtomicBool>,
    _counters: Vec<opentelemetry::metrics::ObservableCounter<u64>>,
}

/// How a bounded flush or shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was handed to the collector (or the exporters reported their failure,
    /// which they have counted and logged).
    Done,
    /// The limit passed first; the export goes on in the background until its own
    /// `timeout`, and nobody waits for it.
    TimedOut,
    /// A previous flush is still running (it outlived its limit); this one was skipped.
    Busy,
}

impl Telemetry {
    /// Starts exporting as `options` say; `None` when telemetry is disabled. Nothing
    /// connects before the first export.
    ///
    /// `runtime` drives the exports (the agent's runtime; the SDK threads only wait on it).
    ///
    /// # Errors
    /// Options that do not pass [`TelemetryOptions::check`] (the loader has already reported
    /// those), or an exporter that cannot be built.
    pub fn start(
        options: &TelemetryOptions,
        registry: &Registry,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Option<Telemetry>> {
        if !options.enabled {
            return Ok(None);
        }
        let checked = options.check().map_err(|e| {
            let msgs: Vec<_> = e.into_iter().map(|e| e.message).collect();
            anyhow::anyhow!("telemetry: {}", msgs.join("; "))
        })?;
        let _enter = runtime.enter();
        let resource = Resource::builder_empty()
            .with_service_name(options.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let report =
            Arc::new(transport::Report::new(checked.export_interval, registry.component("telemetry")));
        let link = transport::Link::new(options, &checked)?;
        let guard = |signal| transport::Guard {
            handle: runtime.clone(),
            timeout: checked.timeout,
            report: report.clone(),
            signal,
        };

        let tracer = if options.traces {
            let exporter = transport::GuardedSpans { inner: link.span_exporter()?, guard: guard("traces") };
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_scheduled_delay(checked.export_interval.min(Duration::from_secs(5)))
                .build();
            let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource.clone())
                .build();
            global::set_tracer_provider(provider.clone());
            // Warm the global lookup so the first span does not pay for it on a hot path.
            let _ = provider.tracer(SCOPE);
            Some(provider)
        } else {
            None
        };
        let (meter, counters) = if options.metrics {
            let exporter =
                transport::GuardedMetrics { inner: link.metric_exporter()?, guard: guard("metrics") };
            let reader = PeriodicReader::builder(exporter).with_interval(checked.export_interval).build();
            let provider = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
            let counters =
                counters::register(&opentelemetry::metrics::MeterProvider::meter(&provider, SCOPE), registry);
            (Some(provider), counters)
        } else {
            (None, Vec::new())
        };
        tracing::info!(
            endpoint = %checked.endpoint.as_ref().map(|e| e.url("")).unwrap_or_default(),
            protocol = ?options.protocol,
            traces = options.traces,
            metrics = options.metrics,
            "exporting the agent's own telemetry"
        );
        Ok(Some(Telemetry {
            tracer,
            meter,
            timeout: checked.timeout,
            flushing: Arc::new(AtomicBool::new(false)),
            _counters: counters,
        }))
    }

    /// Exports the queued spans and the counters' current values now, waiting at most
    /// `limit`: for a process that may be frozen right after (a Lambda execution
    /// environment between invokes), where the periodic exports cannot be relied on.
    ///
    /// The SDK's flush blocks, so it runs on a blocking thread; past `limit` the caller goes
    /// on and the export finishes (or hits its own `timeout`) on its own. While it does,
    /// further flushes are skipped ([`Flushed::Busy`]) rather than queued behind it.
    pub async fn flush(&self, limit: Duration) -> Flushed {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return Flushed::Busy;
        }
        let (tracer, meter, flushing) = (self.tracer.clone(), self.meter.clone(), self.flushing.clone());
        let job = tokio::task::spawn_blocking(move || {
            // Failures have been counted and logged by the guarded exporters.
            if let Some(t) = &tracer {
                let _ = t.force_flush();
            }
            if let Some(m) = &meter {
                let _ = m.force_flush();
            }
            flushing.store(false, Ordering::Release);
        });
        match tokio::time::timeout(limit, job).await {
            Ok(_) => Flushed::Done,
            Err(_) => Flushed::TimedOut,
        }
    }

    /// [`Telemetry::shutdown`] from async code, waiting at most `limit` (the exporters keep
    /// their own, longer, limit on a blocking thread that nobody waits for past `limit`).
    pub async fn shutdown_within(self, limit: Duration) -> Flushed {
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || self.shutdown())).await {
            Ok(_) => Flushed::Done,
            Err(_) => Flushed::TimedOut,
        }
    }

    /// Exports what is left (queued spans, the final counter values) and stops, waiting at
    /// most about twice the export timeout. Call it while the runtime passed to
    /// [`Telemetry::start`] is still running.
    pub fn shutdown(self) {
        let limit = self.timeout + Duration::from_millis(500);
        if let Some(t) = &self.tracer {
            if let Err(e) = t.shutdown_with_timeout(limit) {
                tracing::debug!("telemetry: stopping the span exporter: {e}");
            }
        }
        if let Some(m) = &self.meter {
            if let Err(e) = m.shutdown_with_timeout(limit) {
                tracing::debug!("telemetry: stopping the metric exporter: {e}");
            }
        }
    }
}
