//! The topology runtime: builds every component of a checked [`Config`], connects them with
//! bounded channels, runs them as tokio tasks, and shuts them down in order.
//!
//! Each transform and sink owns one bounded channel that all its inputs send into (fan-in);
//! each component's output is a [`Fanout`] that holds a sender to each consumer. When a source
//! returns, its senders drop; a consumer sees its channel close once all its inputs are gone,
//! flushes, and returns in turn, so the end of input ripples through the graph and every
//! accepted event is delivered before the agent exits.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use crate::component::shutdown;
pub use crate::component::{
    Closed, Fanout, Full, Message, Reason, Received, Shutdown, ShutdownTrigger, SinkContext, SinkInput,
    SourceContext,
};

use crate::component::lambda::Handle as LambdaHandle;
use crate::component::{BuildContext, GlobalOptions, Sink, Source, Transform, TransformContext};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::Registry;

/// How many batches a component's input channel holds before its producers wait.
pub const CHANNEL_BATCHES: usize = 8;

/// Every component of a configuration, built (validated) but not started.
pub struct Built {
    pub globals: Arc<GlobalOptions>,
    sources: Vec<(String, Box<dyn Source>)>,
    transforms: Vec<(String, Vec<String>, Box<dyn Transform>)>,
    sinks: Vec<(String, Vec<String>, Box<dyn Sink>)>,
}

/// Builds every component; collects every build error, each naming its component.
pub fn build(config: &Config) -> Result<Built, ConfigErrors> {
    build_with(config, None)
}

/// [`build`] for the Lambda extension: components get the driver's session in their
/// [`BuildContext`].
pub fn build_with(config: &Config, lambda: Option<&Arc<LambdaHandle>>) -> Result<Built, ConfigErrors> {
    let globals = Arc::new(config.globals.clone());
    let mut errors = Vec::new();
    let cx = |id| BuildContext { id, globals: &config.globals, lambda };
    let mut built =
        Built { globals: globals.clone(), sources: Vec::new(), transforms: Vec::new(), sinks: Vec::new() };
    let err = |section: &str, id: &str, origin: &crate::config::Origin, e: anyhow::Error| {
        ConfigError::new(format!("{e:#}")).at(origin.clone()).component(format!("{section}.{id}"))
    };
    for s in &config.sources {
        match s.config.build(&cx(&s.id)) {
            Ok(b) => built.sources.push((s.id.clone(), b)),
            Err(e) => errors.push(err("sources", &s.id, &s.origin, e)),
        }
    }
    for t in &config.transforms {
        match t.config.build(&cx(&t.id)) {
            Ok(b) => built.transforms.push((t.id.clone(), t.inputs.clone(), b)),
            Err(e) => errors.push(err("transforms", &t.id, &t.origin, e)),
        }
    }
    for s in &config.sinks {
        match s.config.build(&cx(&s.id)) {
            Ok(b) => built.sinks.push((s.id.clone(), s.inputs.clone(), b)),
            Err(e) => errors.push(err("sinks", &s.id, &s.origin, e)),
        }
    }
    for s in &config.sources {
        if s.config.acknowledgements() && !reaches_durable_sink(config, &s.id) {
            errors.push(err(
                "sources",
                &s.id,
                &s.origin,
                anyhow::anyhow!(
                    "`acknowledgements = true` needs a durable sink downstream (a `sealed` sink with `wal = true`), and none of this source's sinks is one"
                ),
            ));
        }
    }
    if errors.is_empty() { Ok(built) } else { Err(ConfigErrors(errors)) }
}

/// Whether a sink whose [`durable`](crate::component::SinkConfig::durable) is `true` is
/// downstream of component `from`, through any transforms.
fn reaches_durable_sink(config: &Config, from: &str) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if config.sinks.iter().any(|s| s.config.durable() && s.inputs.contains(&id)) {
            return true;
        }
        todo.extend(config.transforms.iter().filter(|t| t.inputs.contains(&id)).map(|t| t.id.clone()));
    }
    false
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Components that failed, with their error.
    pub failures: Vec<(String, String)>,
    /// The exit code a source asked for (the `exec` source: its child's).
    pub exit_code: Option<i32>,
    /// Set when shutdown came from a signal or a request, not from the end of input.
    pub reason: Option<Reason>,
}

/// Runs a built topology until every source has finished (end of input) or `stop` completes,
/// then drains and flushes everything.
pub async fn run(built: Built, registry: Registry, stop: impl Future<Output = Reason> + Send) -> Outcome {
    use opentelemetry::trace::Span as _;
    let mut start_span = crate::telemetry::span("sealtrail.pipeline.start");
    start_span.set_attribute(opentelemetry::KeyValue::new("sealtrail.sources", built.sources.len() as i64));
    start_span
        .set_attribute(opentelemetry::KeyValue::new("sealtrail.transforms", built.transforms.len() as i64));
    start_span.set_attribute(opentelemetry::KeyValue::new("sealtrail.sinks", built.sinks.len() as i64));
    let (trigger, shutdown) = shutdown::channel();
    let exit_code = Arc::new(Mutex::new(None));

    // One input channel per transform and sink.
    let mut inputs: BTreeMap<String, mpsc::Sender<Message>> = BTreeMap::new();
    let mut receivers: BTreeMap<String, mpsc::Receiver<Message>> = BTreeMap::new();
    for id in built.transforms.iter().map(|t| &t.0).chain(built.sinks.iter().map(|s| &s.0)) {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let kind = if built.sinks.iter().any(|s| &s.0 == id) { "sink" } else { "transform" };
        let weak = tx.downgrade();
        registry.component(&format!("{kind}.{id}")).set_channel(Box::new(move || {
            weak.upgrade().map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
        }));
        inputs.insert(id.clone(), tx);
        receivers.insert(id.clone(), rx);
    }
    // The consumers of each component.
    let mut consumers: BTreeMap<String, Vec<mpsc::Sender<Message>>> = BTreeMap::new();
    let wiring = built.transforms.iter().map(|(id, ins, _)| (id, ins));
    for (id, ins) in wiring.chain(built.sinks.iter().map(|(id, ins, _)| (id, ins))) {
        for i in ins {
            consumers.entry(i.clone()).or_default().push(inputs[id].clone());
        }
    }
    drop(inputs);

    let mut tasks: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
    for (id, _, sink) in built.sinks {
        let metrics = registry.component(&format!("sink.{id}"));
        let input = SinkInput::new(receivers.remove(&id).expect("sink channel"), metrics.clone());
        let cx = SinkContext {
            id: id.clone(),
            metrics,
            globals: built.globals.clone(),
            registry: registry.clone(),
        };
        let span = tracing::info_span!("sink", id = %id);
        tasks.spawn(tracked(cx.metrics.clone(), format!("sinks.{id}"), sink.run(input, cx)).instrument(span));
    }
    for (id, _, transform) in built.transforms {
        let metrics = registry.component(&format!("transform.{id}"));
        let rx = receivers.remove(&id).expect("transform channel");
        let out = Fanout::new(consumers.remove(&id).unwrap_or_default(), metrics.clone());
        let cx = TransformContext { id: id.clone(), metrics };
        let span = tracing::info_span!("transform", id = %id);
        let m = cx.metrics.clone();
        tasks.spawn(
            tracked(m, format!("transforms.{id}"), run_transform(transform, rx, out, cx)).instrument(span),
        );
    }
    let mut source_count = 0;
    for (id, source) in built.sources {
        let metrics = registry.component(&format!("source.{id}"));
        let cx = SourceContext {
            id: id.clone(),
            out: Fanout::new(consumers.remove(&id).unwrap_or_default(), metrics.clone()),
            shutdown: shutdown.clone(),
            metrics,
            globals: built.globals.clone(),
            exit_code: exit_code.clone(),
        };
        let span = tracing::info_span!("source", id = %id);
        source_count += 1;
        tasks.spawn(tracked(cx.metrics.clone(), format!("sources.{id}"), source.run(cx)).instrument(span));
    }
    tracing::debug!(sources = source_count, "topology started");
    start_span.end();

    let mut outcome = Outcome::default();
    tokio::pin!(stop);
    let mut stopped = false;
    // From the stop request, or the first component to end (the end of input), until all
    // have drained.
    let mut shutdown_span: Option<opentelemetry::global::BoxedSpan> = None;
    loop {
        tokio::select! {
            reason = &mut stop, if !stopped => {
                stopped = true;
                let mut span = crate::telemetry::span("sealtrail.pipeline.shutdown");
                span.set_attribute(opentelemetry::KeyValue::new("sealtrail.shutdown.reason", format!("{reason:?}")));
                shutdown_span.get_or_insert(span);
                tracing::info!(?reason, "shutting down: draining sources, flushing transforms and sinks");
                outcome.reason = Some(reason);
                trigger.trigger(reason);
            }
            done = tasks.join_next() => {
                let Some(done) = done else { break };
                if shutdown_span.is_none() {
                    let mut span = crate::telemetry::span("sealtrail.pipeline.shutdown");
                    // Usually a source at the end of its input; a failed component also ends up here.
                    span.set_attribute(opentelemetry::KeyValue::new("sealtrail.shutdown.reason", "component finished"));
                    shutdown_span = Some(span);
                }
                match done {
                    Ok((_, Ok(()))) => {}
                    Ok((name, Err(e))) => {
                        tracing::error!(component = %name, "failed: {e:#}");
                        outcome.failures.push((name, format!("{e:#}")));
                        // A failed component stops the pipeline: sources stop, the rest drains.
                        trigger.trigger(Reason::Requested);
                    }
                    Err(join) => {
                        let name = "a component task".to_owned();
                        tracing::error!("{name} panicked: {join}");
                        outcome.failures.push((name, join.to_string()));
                        trigger.trigger(Reason::Requested);
                    }
                }
            }
        }
    }
    outcome.exit_code = *exit_code.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mut span) = shutdown_span {
        span.set_attribute(opentelemetry::KeyValue::new("sealtrail.failures", outcome.failures.len() as i64));
        if !outcome.failures.is_empty() {
            span.set_status(opentelemetry::trace::Status::error("a component failed"));
        }
        span.end();
    }
    outcome
}

/// Runs a component's task, recording its [`State`](crate::metrics::State) for `GET /ready`.
async fn tracked(
    metrics: Arc<crate::metrics::ComponentMetrics>,
    name: String,
    task: impl Future<Output = anyhow::Result<()>>,
) -> (String, anyhow::Result<()>) {
    use crate::metrics::State;
    metrics.set_state(State::Running);
    let r = task.await;
    metrics.set_state(if r.is_ok() { State::Stopped } else { State::Failed });
    (name, r)
}

async fn run_transform(
    mut transform: Box<dyn Transform>,
    mut rx: mpsc::Receiver<Message>,
    mut out: Fanout,
    cx: TransformContext,
) -> anyhow::Result<()> {
    while let Some(message) = rx.recv().await {
        let (batch, ack) = match message {
            Message::Batch(b) => (b, None),
            // The token travels with what the batch became (see `component::ack`).
            Message::Acked(b, a) => (b, Some(a)),
            // Passed on in order, never transformed.
            Message::Seal => {
                out.send_seal().await?;
                continue;
            }
        };
        let bytes: usize = batch.iter().map(crate::event::Event::size_estimate).sum();
        cx.metrics.add_in(batch.len(), bytes);
        match transform.transform(batch, &cx) {
            Some(b) => out.send_with(b, ack).await?,
            // Dropped on purpose (filtered): nothing of it is left to deliver.
            None => {
                if let Some(a) = ack {
                    a.resolve();
                }
            }
        }
    }
    if let Some(b) = transform.flush(&cx) {
        out.send(b).await?;
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM and returns it as a [`Reason`].
pub async fn signals() -> Reason {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::warn!("cannot install signal handlers; stop with end of input");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Reason::Signal(libc::SIGINT),
        _ = term.recv() => Reason::Signal(libc::SIGTERM),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Batch, Event, LogRecord};
    use crate::metrics::ComponentMetrics;

    /// Drops every batch, as a filter that keeps nothing does.
    struct DropAll;

    struct PassThrough;

    impl Transform for PassThrough {
        fn transform(&mut self, batch: Batch, _: &TransformContext) -> Option<Batch> {
            Some(batch)
        }
    }

    impl Transform for DropAll {
        fn transform(&mut self, _: Batch, _: &TransformContext) -> Option<Batch> {
            None
        }
    }

    fn log(body: &str) -> Event {
        Event::Log(LogRecord { body: body.into(), ..Default::default() })
    }

    /// A seal marker reaches the sink behind the batches sent before it, through a transform,
    /// even one that drops those batches; `recv` never returns it.
    #[tokio::test]
    async fn seal_markers_pass_transforms_in_order() {
        let metrics = Arc::new(ComponentMetrics::new("t"));
        let (src_tx, src_rx) = mpsc::channel(4);
        let (sink_tx, sink_rx) = mpsc::channel(4);
        let mut source = Fanout::new(vec![src_tx], metrics.clone());
        let cx = TransformContext { id: "t".into(), metrics: metrics.clone() };
        let task = tokio::spawn(run_transform(
            Box::new(PassThrough),
            src_rx,
            Fanout::new(vec![sink_tx], metrics.clone()),
            cx,
        ));
        source.send_events(vec![log("a")]).await.unwrap();
        source.send_seal().await.unwrap();
        source.send_events(vec![log("b")]).await.unwrap();
        drop(source);
        task.await.unwrap().unwrap();
        let mut input = SinkInput::new(sink_rx, metrics.clone());
        assert!(matches!(input.recv_or_seal().await, Some(Received::Batch(b)) if b.len() == 1));
        assert!(matches!(input.recv_or_seal().await, Some(Received::Seal)));
        assert!(matches!(input.recv_or_seal().await, Some(Received::Batch(b)) if b.len() == 1));
        assert!(input.recv_or_seal().await.is_none());

        // Dropped batches: only the marker comes through, and `recv` skips it.
        let (src_tx, src_rx) = mpsc::channel(4);
        let (sink_tx, sink_rx) = mpsc::channel(4);
        let mut source = Fanout::new(vec![src_tx], metrics.clone());
        let cx = TransformContext { id: "t".into(), metrics: metrics.clone() };
        let task = tokio::spawn(run_transform(
            Box::new(DropAll),
            src_rx,
            Fanout::new(vec![sink_tx], metrics.clone()),
            cx,
        ));
        source.send_events(vec![log("a")]).await.unwrap();
        source.send_seal().await.unwrap();
        drop(source);
        task.await.unwrap().unwrap();
        let mut input = SinkInput::new(sink_rx, metrics);
        assert!(input.recv().await.is_none());
    }

    /// Issue 15, end-to-end acknowledgements: a batch fanned out to two sinks through a
    /// transform is delivered once both shares are resolved; a batch a transform drops
    /// counts as done; a share left in a channel that is dropped (a sink that stopped)
    /// fails the batch.
    #[tokio::test]
    async fn acknowledgement_tokens_follow_the_batch_through_transforms_to_every_sink() {
        use crate::component::AckStatus;
        let metrics = Arc::new(ComponentMetrics::new("t"));
        let (src_tx, src_rx) = mpsc::channel(4);
        let (a_tx, a_rx) = mpsc::channel(4);
        let (b_tx, b_rx) = mpsc::channel(4);
        let mut source = Fanout::new(vec![src_tx], metrics.clone());
        let cx = TransformContext { id: "t".into(), metrics: metrics.clone() };
        let task = tokio::spawn(run_transform(
            Box::new(PassThrough),
            src_rx,
            Fanout::new(vec![a_tx, b_tx], metrics.clone()),
            cx,
        ));
        let wait = source.send_acked(Arc::new(vec![log("a")])).await.unwrap();
        let mut durable = SinkInput::new(a_rx, metrics.clone());
        let mut plain = SinkInput::new(b_rx, metrics.clone());
        let (m, share) = durable.recv_acked().await.unwrap();
        assert!(matches!(m, Message::Batch(b) if b.len() == 1));
        // The plain sink's share is resolved on receipt; the durable one still holds its own.
        assert_eq!(plain.recv().await.map(|b| b.len()), Some(1));
        let pending = tokio::spawn(wait.wait());
        tokio::task::yield_now().await;
        assert!(!pending.is_finished(), "delivered before the durable sink resolved its share");
        share.expect("a share for the durable sink").resolve();
        assert_eq!(pending.await.unwrap(), AckStatus::Delivered);

        // A durable sink that drops its share unresolved (it failed): the batch failed.
        let wait = source.send_acked(Arc::new(vec![log("b")])).await.unwrap();
        let (_, share) = durable.recv_acked().await.unwrap();
        assert!(plain.recv().await.is_some());
        drop(share);
        assert_eq!(wait.wait().await, AckStatus::Failed);

        // A sink that has stopped: the share left in its channel fails the batch.
        drop(plain);
        let wait = source.send_acked(Arc::new(vec![log("c")])).await.unwrap();
        let (_, share) = durable.recv_acked().await.unwrap();
        share.unwrap().resolve();
        assert_eq!(wait.wait().await, AckStatus::Failed);
        drop(source);
        task.await.unwrap().unwrap();

        // Dropped by a transform (a filter that kept nothing): done.
        let (src_tx, src_rx) = mpsc::channel(4);
        let (sink_tx, sink_rx) = mpsc::channel(4);
        let mut source = Fanout::new(vec![src_tx], metrics.clone());
        let cx = TransformContext { id: "t".into(), metrics: metrics.clone() };
        let task = tokio::spawn(run_transform(
            Box::new(DropAll),
            src_rx,
            Fanout::new(vec![sink_tx], metrics.clone()),
            cx,
        ));
        let wait = source.send_acked(Arc::new(vec![log("d")])).await.unwrap();
        assert_eq!(wait.wait().await, AckStatus::Delivered);
        // `try_send_acked` (the OTLP path) carries a share too.
        let wait = source.try_send_acked(Arc::new(vec![log("e")])).unwrap();
        assert_eq!(wait.wait().await, AckStatus::Delivered);
        drop(source);
        task.await.unwrap().unwrap();
        drop(sink_rx);
    }

    /// Issue 11, "one channel message": an empty batch from `try_send` (the OTLP source's
    /// path) used to travel as an empty `Batch`, which is how the seal order was encoded, so
    /// the sealed sink sealed every open segment early. Seal is now its own variant and an
    /// empty batch is never sent.
    #[tokio::test]
    async fn an_empty_batch_is_never_a_seal_order() {
        let metrics = Arc::new(ComponentMetrics::new("t"));
        let (tx, rx) = mpsc::channel(4);
        let mut source = Fanout::new(vec![tx], metrics.clone());
        source.try_send(Arc::new(Vec::new())).unwrap();
        source.try_send(Arc::new(vec![log("a")])).unwrap();
        drop(source);
        let mut input = SinkInput::new(rx, metrics);
        assert!(matches!(input.recv_or_seal().await, Some(Message::Batch(b)) if b.len() == 1));
        assert!(input.recv_or_seal().await.is_none());
    }
}
