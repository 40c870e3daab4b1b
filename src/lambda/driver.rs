//! The extension's lifecycle: register, load the configuration, start the topology,
//! subscribe the telemetry listener, loop on `event/next`, and on SHUTDOWN end the topology
//! through its one shutdown path within the deadline.
//!
//! With `[telemetry]` enabled, the agent's own exporters start as in `sealtrail run`; each
//! invoke gets a span, and since the environment may be frozen as soon as the extension is
//! back in `event/next`, the spans and counters are flushed just before that call (bounded
//! by [`INVOKE_FLUSH_LIMIT`]) and once more after the segments are sealed at SHUTDOWN, with
//! what is left of the deadline.
//!
//! Failures are reported the way the platform expects: a configuration, listener or
//! subscription failure during Init through `init/error`, a fatal failure afterwards
//! through `exit/error`, each with an `Extension.<Reason>` type, and the process exits
//! non-zero. A refused registration cannot be reported (there is no extension id yet): the
//! agent says why on standard error and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use opentelemetry::trace::Span as _;
use opentelemetry::{KeyValue, global};

use super::client::{Client, LifecycleEvent, Subscribed};
use super::{FunctionInfo, Handle, Invoke, ShutdownInfo};
use crate::components;
use crate::config::{self, Config, Overrides};
use crate::exit_codes;
use crate::metrics::Registry;
use crate::telemetry::{self, Flushed, Telemetry};
use crate::topology::{self, Outcome, Reason};

/// How the extension was started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Configuration files (`--config` or `$SEALTRAIL_CONFIG`); empty: the layer's file, else
    /// the embedded Lambda default.
    pub config: Vec<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub keys: Option<PathBuf>,
}

/// The SHUTDOWN budget when the event carries no deadline: the platform's 2 s for external
/// extensions.
const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_millis(2000);

/// How long the telemetry listener may take to come up during Init (which has 10 s).
const LISTENER_TIMEOUT: Duration = Duration::from_secs(5);

/// The most the end-of-invoke telemetry flush may delay the return to `event/next` (and so
/// the end of the invoke as Lambda bills it). An export to a collector in the same region
/// takes a few milliseconds; a slower one finishes in the background, and the next flush
/// is skipped while it runs.
pub const INVOKE_FLUSH_LIMIT: Duration = Duration::from_millis(100);

/// Runs the extension to the end and returns the exit code.
pub fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sealtrail")
        .enable_all()
        .build()?;
    let r = runtime.block_on(drive(opts));
    runtime.shutdown_background();
    r
}

/// The file name the extension registers under: Lambda checks it against the executable it
/// started from `/opt/extensions/`.
pub fn extension_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sealtrail".to_owned())
}

/// Loads the configuration: the given files, else the layer's `/opt/sealtrail/config.toml`,
/// else the embedded Lambda default.
pub fn load_config(opts: &Options) -> anyhow::Result<Config> {
    let overrides = Overrides { data_dir: opts.data_dir.clone(), keys_dir: opts.keys.clone() };
    if !opts.config.is_empty() {
        return Ok(config::load_files(&components::KINDS, &opts.config, &overrides)?);
    }
    let layer = std::path::Path::new(super::LAYER_CONFIG_PATH);
    if layer.exists() {
        return Ok(config::load_files(&components::KINDS, &[layer.to_path_buf()], &overrides)?);
    }
    let files = [config::Source { name: super::DEFAULT_CONFIG_NAME.to_owned(), text: super::DEFAULT_CONFIG }];
    Ok(config::load(&components::KINDS, &files, &overrides, &|name| std::env::var(name).ok())?)
}

async fn drive(opts: Options) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").ok().filter(|v| !v.is_empty()).ok_or_else(|| {
        exit_codes::config_error(anyhow!(
            "AWS_LAMBDA_RUNTIME_API is not set: `sealtrail lambda` runs as an extension inside AWS Lambda"
        ))
    })?;
    let client = Client::new(api);
    let name = extension_name();
    let reg = client
        .register(&name)
        .await
        .map_err(|e| anyhow!(e).context("cannot register as a Lambda extension"))?;
    tracing::info!(name = %name, "registered as a Lambda extension");

    let mut function = FunctionInfo::from_env();
    if function.name.is_empty() {
        function.name = reg.function_name.clone().unwrap_or_default();
    }
    if function.version.is_empty() {
        function.version = reg.function_version.clone().unwrap_or_default();
    }
    let handle = Arc::new(Handle::new(function));

    let built = load_config(&opts).and_then(|c| {
        let n = c.sources.iter().filter(|s| s.kind == crate::sources::lambda_telemetry::KIND.name).count();
        anyhow::ensure!(
            n <= 1,
            "{n} `lambda_telemetry` sources: an extension has one Telemetry API subscription"
        );
        Ok((topology::build_with(&c, Some(&handle))?, n == 1, c.globals.telemetry))
    });
    let registry = Registry::default();
    // Registered before the exporters start, so the invoke counter is exported from the first.
    let invokes = registry.component("lambda");
    // The agent's own telemetry starts as in `sealtrail run`; it is flushed per invoke below.
    let built = built.and_then(|(b, t, options)| {
        Ok((b, t, Telemetry::start(&options, &registry, &tokio::runtime::Handle::current())?))
    });
    let (built, telemetry, mut exporter) = match built {
        Ok(b) => b,
        Err(e) => {
            report_init(&client, &reg.id, "Extension.ConfigInvalid", &format!("{e:#}")).await;
            return Err(exit_codes::config_error(e.context("invalid configuration")));
        }
    };

    let stop_handle = handle.clone();
    let stop = async move {
        tokio::select! {
            _ = stop_handle.shutdown_requested() => Reason::Requested,
            r = topology::signals() => r,
        }
    };
    let mut topo = tokio::spawn(topology::run(built, registry.clone(), stop));

    if telemetry {
        let ready = tokio::select! {
            r = handle.wait_listener() => r,
            _ = tokio::time::sleep(LISTENER_TIMEOUT) => Err(format!("no telemetry listener after {LISTENER_TIMEOUT:?}")),
        };
        let failure = match ready {
            Err(msg) => Some(("Extension.ListenerFailed", msg)),
            Ok(ready) => match client.subscribe(&reg.id, &ready.subscription).await {
                Ok(Subscribed::Yes) => None,
                Ok(Subscribed::NotSupported(m)) => {
                    tracing::warn!(
                        "the Telemetry API is not available here ({m}); no function logs will arrive"
                    );
                    None
                }
                Err(e) => Some(("Extension.SubscriptionFailed", format!("{e}"))),
            },
        };
        if let Some((kind, msg)) = failure {
            report_init(&client, &reg.id, kind, &msg).await;
            stop_pipeline(&handle, &mut topo, &registry).await;
            return Err(anyhow!("{msg}").context("cannot subscribe to the Lambda Telemetry API"));
        }
    }
    tracing::info!(
        elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
        telemetry,
        "registered and subscribed; waiting for events"
    );

    // The span of the invoke in progress: it ends when the extension goes back to
    // `event/next`, i.e. when it is done with the invoke.
    let mut invocation: Option<global::BoxedSpan> = None;
    let shutdown = loop {
        if let Some(span) = invocation.take() {
            end_invoke(span, exporter.as_ref()).await;
        }
        let event = tokio::select! {
            e = client.next(&reg.id) => e,
            done = &mut topo => {
                // The pipeline ended before SHUTDOWN: a component failed, or a signal.
                let outcome = done.map_err(|e| anyhow!("the pipeline task failed: {e}"))?;
                registry.log_summary();
                // What the agent can still say about it, within the platform's usual budget.
                if let Some(t) = exporter.take() {
                    let _ = t.shutdown_within(DEFAULT_SHUTDOWN_BUDGET - super::SHUTDOWN_MARGIN).await;
                }
                return match outcome.failures.first() {
                    Some((name, err)) => {
                        let msg = format!("{name}: {err}");
                        report_exit(&client, &reg.id, "Extension.PipelineFailed", &msg).await;
                        Err(anyhow!(msg))
                    }
                    None => Ok(ExitCode::from(exit_codes::OK)),
                };
            }
        };
        match event {
            Ok(LifecycleEvent::Invoke { request_id, deadline_ms, trace }) => {
                tracing::debug!(request_id = %request_id, "invoke");
                invokes.add("invokes", 1);
                if exporter.is_some() {
                    // Inside the function's X-Ray trace when the INVOKE carries one.
                    let mut span = match trace.as_deref().map(super::parse_xray) {
                        Some((Some(t), Some(p))) => telemetry::child_span("sealtrail.lambda.invoke", t, p),
                        _ => telemetry::span("sealtrail.lambda.invoke"),
                    };
                    // The platform's request id: an identifier, not event data.
                    span.set_attribute(KeyValue::new("faas.invocation_id", request_id.clone()));
                    invocation = Some(span);
                }
                handle.set_invoke(Invoke { request_id, deadline_ms, trace });
            }
            Ok(LifecycleEvent::Shutdown { reason, deadline_ms }) => {
                let deadline = if deadline_ms == 0 {
                    Instant::now() + DEFAULT_SHUTDOWN_BUDGET
                } else {
                    super::deadline_instant(deadline_ms)
                };
                break ShutdownInfo { reason, deadline };
            }
            Err(e) => {
                let msg = format!("{e}");
                report_exit(&client, &reg.id, "Extension.EventLoopFailed", &msg).await;
                stop_pipeline(&handle, &mut topo, &registry).await;
                return Err(anyhow!(e).context("the Lambda event loop failed"));
            }
        }
    };

    let received = Instant::now();
    let left = shutdown.deadline.saturating_duration_since(received);
    tracing::info!(reason = %shutdown.reason, left_ms = left.as_millis() as u64, "SHUTDOWN: sealing");
    let mut span = telemetry::span("sealtrail.lambda.shutdown");
    span.set_attribute(KeyValue::new("sealtrail.shutdown.reason", shutdown.reason.clone()));
    span.set_attribute(KeyValue::new("sealtrail.shutdown.budget_ms", left.as_millis() as i64));
    // Aim to be done a margin before the kill; with less time than the margin left, use
    // half of what is left rather than giving up at once.
    let limit = left.saturating_sub(super::SHUTDOWN_MARGIN).max(left / 2);
    let deadline = shutdown.deadline;
    handle.begin_shutdown(shutdown);
    let outcome = match tokio::time::timeout(limit, &mut topo).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(anyhow!("the pipeline task failed: {e}")),
        Err(_) => {
            registry.log_summary();
            return Err(anyhow!(
                "the pipeline did not finish within the SHUTDOWN deadline ({} ms left at SHUTDOWN)",
                left.as_millis()
            ));
        }
    };
    registry.log_summary();
    tracing::info!(elapsed_ms = received.elapsed().as_secs_f64() * 1e3, "sealed; exiting");
    span.end();
    // The segments are sealed; the telemetry gets what is left of the budget.
    if let Some(t) = exporter {
        let budget =
            deadline.saturating_duration_since(Instant::now()).saturating_sub(super::SHUTDOWN_MARGIN);
        if t.shutdown_within(budget).await != Flushed::Done {
            tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "the agent's own telemetry was not exported within the SHUTDOWN deadline; abandoned"
            );
        }
    }
    finish(outcome)
}

/// Ends the span of an invoke and exports what the agent has to say about it before the
/// environment may be frozen, waiting at most [`INVOKE_FLUSH_LIMIT`].
async fn end_invoke(mut span: global::BoxedSpan, exporter: Option<&Telemetry>) {
    span.end();
    if let Some(t) = exporter {
        match t.flush(INVOKE_FLUSH_LIMIT).await {
            Flushed::Done => {}
            r => tracing::debug!(result = ?r, "telemetry flush at the end of the invoke did not finish"),
        }
    }
}

fn finish(outcome: Outcome) -> anyhow::Result<ExitCode> {
    if let Some((name, err)) = outcome.failures.first() {
        anyhow::bail!("{name}: {err}");
    }
    Ok(ExitCode::from(exit_codes::OK))
}

/// Ends the pipeline after a failure during Init or in the event loop (what was already
/// received is still sealed), within the platform's usual shutdown budget.
async fn stop_pipeline(handle: &Handle, topo: &mut tokio::task::JoinHandle<Outcome>, registry: &Registry) {
    handle.begin_shutdown(ShutdownInfo {
        reason: "failure".into(),
        deadline: Instant::now() + DEFAULT_SHUTDOWN_BUDGET,
    });
    let _ = tokio::time::timeout(DEFAULT_SHUTDOWN_BUDGET - super::SHUTDOWN_MARGIN, topo).await;
    registry.log_summary();
}

async fn report_init(client: &Client, id: &str, kind: &str, msg: &str) {
    tracing::error!(error_type = kind, "init failed: {msg}");
    if let Err(e) = client.init_error(id, kind, msg).await {
        tracing::warn!("cannot report the init error to Lambda: {e}");
    }
}

async fn report_exit(client: &Client, id: &str, kind: &str, msg: &str) {
    tracing::error!(error_type = kind, "exiting: {msg}");
    if let Err(e) = client.exit_error(id, kind, msg).await {
        tracing::warn!("cannot report the exit error to Lambda: {e}");
    }
}
