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
use crate::component::{BuildContext, GlobalOptions, Routes, Sink, Source, Transform, TransformContext};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::Registry;

/// How many batches a component's input channel holds before its producers wait.
pub const CHANNEL_BATCHES: usize = 8;

/// Every component of a configuration, built (validated) but not started.
pub struct Built {
    pub globals: Arc<GlobalOptions>,
    /// A digest of the global options: when it changes, a reload restarts every component
    /// that can be restarted (they were built with the old options).
    globals_fingerprint: u64,
    /// What of the globals a reload cannot apply: `[api]` and `[telemetry]` (their digest).
    process_fingerprint: u64,
    sources: Vec<Part<dyn Source>>,
    transforms: Vec<Part<dyn Transform>>,
    sinks: Vec<Part<dyn Sink>>,
}

/// A built component and what a reload compares it by.
struct Part<T: ?Sized> {
    id: String,
    inputs: Vec<String>,
    /// [`crate::config::ComponentDef::fingerprint`].
    fingerprint: u64,
    /// Sources only: [`crate::component::SourceConfig::restartable`].
    restartable: bool,
    component: Box<T>,
}

fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
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
    // Hashes of the Debug text: no option value is kept, only the digest.
    let g = &config.globals;
    let mut built = Built {
        globals: globals.clone(),
        globals_fingerprint: digest(&format!("{:?}", (&g.data_dir, &g.keys, &g.secret_env))),
        process_fingerprint: digest(&format!("{:?}", (&g.api, &g.telemetry))),
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    let err = |section: &str, id: &str, origin: &crate::config::Origin, e: anyhow::Error| {
        ConfigError::new(format!("{e:#}")).at(origin.clone()).component(format!("{section}.{id}"))
    };
    for s in &config.sources {
        match s.config.build(&cx(&s.id)) {
            Ok(b) => built.sources.push(Part {
                id: s.id.clone(),
                inputs: Vec::new(),
                fingerprint: s.fingerprint,
                restartable: s.config.restartable(),
                component: b,
            }),
            Err(e) => errors.push(err("sources", &s.id, &s.origin, e)),
        }
    }
    for t in &config.transforms {
        match t.config.build(&cx(&t.id)) {
            Ok(b) => built.transforms.push(Part {
                id: t.id.clone(),
                inputs: t.inputs.clone(),
                fingerprint: t.fingerprint,
                restartable: true,
                component: b,
            }),
            Err(e) => errors.push(err("transforms", &t.id, &t.origin, e)),
        }
    }
    for s in &config.sinks {
        match s.config.build(&cx(&s.id)) {
            Ok(b) => built.sinks.push(Part {
                id: s.id.clone(),
                inputs: s.inputs.clone(),
                fingerprint: s.fingerprint,
                restartable: true,
                component: b,
            }),
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

/// What a configuration reload did, by component (`sources.app`, `sinks.vault`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Unchanged: kept running, never paused.
    pub kept: Vec<String>,
    /// New in the configuration: started.
    pub added: Vec<String>,
    /// Changed: the old one drained (a sink sealed what it held) and the new one started.
    pub restarted: Vec<String>,
    /// Gone from the configuration: drained and stopped.
    pub removed: Vec<String>,
    /// Changed or removed, but cannot be restarted without harm (stdin, a wrapped child;
    /// `[api]`, `[telemetry]`): still running as before until the agent restarts.
    pub needs_restart: Vec<String>,
    /// Could not be applied (an old source did not stop in time, so its new version was not
    /// started).
    pub failed: Vec<String>,
}

/// How long a reload waits for a changed source to stop (it may hold a listening port the
/// new version needs) before giving up on starting the new version.
pub const RELOAD_SOURCE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A validated configuration to apply to the running topology, and where to send the report.
pub struct Reload {
    pub built: Built,
    pub done: tokio::sync::oneshot::Sender<ReloadReport>,
}

/// Runs a built topology until every source has finished (end of input) or `stop` completes,
/// then drains and flushes everything.
pub async fn run(built: Built, registry: Registry, stop: impl Future<Output = Reason> + Send) -> Outcome {
    let (_keep, reloads) = mpsc::channel(1);
    run_reloading(built, registry, stop, reloads).await
}

/// A running component instance, as the topology tracks it for reloads.
struct Live {
    fingerprint: u64,
    restartable: bool,
    /// Transforms and sinks: their input channel (weak: producers' routes hold it open).
    input: Option<mpsc::WeakSender<Message>>,
    /// Sources and transforms: their output routes (weak: they drop with the component).
    routes: Option<std::sync::Weak<Routes>>,
    /// Sources: stops this one source.
    stop: Option<ShutdownTrigger>,
    /// Resolves (with an error) when the task has ended.
    done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Cleared when a newer instance replaces this one, so the old one's end does not mark
    /// the component stopped.
    current: Arc<std::sync::atomic::AtomicBool>,
}

/// The running graph: what is live under each id, and how to start more.
struct Runtime {
    registry: Registry,
    globals: Arc<GlobalOptions>,
    globals_fingerprint: u64,
    process_fingerprint: u64,
    sources: BTreeMap<String, Live>,
    transforms: BTreeMap<String, Live>,
    sinks: BTreeMap<String, Live>,
    /// Each consumer's inputs, as configured (for routing after a reload).
    inputs: BTreeMap<String, Vec<String>>,
    /// Per transform or sink: the channel its metrics probe reads (replaced on restart).
    probes: BTreeMap<String, Arc<Mutex<Option<mpsc::WeakSender<Message>>>>>,
    exit_code: Arc<Mutex<Option<i32>>>,
    /// The first stop reason; once set, no reload is applied and no source started.
    stopping: Option<Reason>,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Runtime {
    fn kind_of(&self, id: &str) -> &'static str {
        if self.sinks.contains_key(id) { "sink" } else { "transform" }
    }

    /// A new input channel for a transform or sink; the caller places the sender in routes.
    fn channel(&mut self, id: &str, kind: &str) -> (mpsc::Sender<Message>, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let slot = self.probes.entry(id.to_owned()).or_insert_with(|| {
            let slot: Arc<Mutex<Option<mpsc::WeakSender<Message>>>> = Arc::default();
            let probe = slot.clone();
            self.registry.component(&format!("{kind}.{id}")).set_channel(Box::new(move || {
                let weak = probe.lock().unwrap_or_else(|p| p.into_inner()).clone();
                weak.and_then(|w| w.upgrade())
                    .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
            }));
            slot
        });
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.downgrade());
        (tx, rx)
    }

    /// The senders to every consumer of `id` in `wiring` (consumer → its inputs), from
    /// `fresh` (channels just made) or the live consumers.
    fn consumers_of(
        &self,
        id: &str,
        wiring: &BTreeMap<String, Vec<String>>,
        fresh: &BTreeMap<String, mpsc::Sender<Message>>,
    ) -> Vec<mpsc::Sender<Message>> {
        let mut out = Vec::new();
        for (consumer, ins) in wiring {
            if !ins.iter().any(|i| i == id) {
                continue;
            }
            if let Some(tx) = fresh.get(consumer) {
                out.push(tx.clone());
            } else if let Some(tx) = self
                .transforms
                .get(consumer)
                .or_else(|| self.sinks.get(consumer))
                .and_then(|l| l.input.as_ref())
                .and_then(mpsc::WeakSender::upgrade)
            {
                out.push(tx);
            }
        }
        out
    }

    fn spawn_sink(&mut self, part: Part<dyn Sink>, rx: mpsc::Receiver<Message>, tx: &mpsc::Sender<Message>) {
        let id = part.id;
        let metrics = self.registry.component(&format!("sink.{id}"));
        let input = SinkInput::new(rx, metrics.clone());
        let cx = SinkContext {
            id: id.clone(),
            metrics: metrics.clone(),
            globals: self.globals.clone(),
            registry: self.registry.clone(),
        };
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let current = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let span = tracing::info_span!("sink", id = %id);
        let task =
            tracked(metrics, current.clone(), done_tx, format!("sinks.{id}"), part.component.run(input, cx));
        self.tasks.spawn(task.instrument(span));
        let live = Live {
            fingerprint: part.fingerprint,
            restartable: true,
            input: Some(tx.downgrade()),
            routes: None,
            stop: None,
            done: Some(done),
            current,
        };
        if let Some(old) = self.sinks.insert(id, live) {
            old.current.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn spawn_transform(
        &mut self,
        part: Part<dyn Transform>,
        rx: mpsc::Receiver<Message>,
        tx: &mpsc::Sender<Message>,
        out: Vec<mpsc::Sender<Message>>,
    ) {
        let id = part.id;
        let metrics = self.registry.component(&format!("transform.{id}"));
        let routes = Routes::new(out);
        let fanout = Fanout::routed(routes.clone(), metrics.clone());
        let cx = TransformContext { id: id.clone(), metrics: metrics.clone() };
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let current = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let span = tracing::info_span!("transform", id = %id);
        let run = run_transform(part.component, rx, fanout, cx);
        self.tasks.spawn(
            tracked(metrics, current.clone(), done_tx, format!("transforms.{id}"), run).instrument(span),
        );
        let live = Live {
            fingerprint: part.fingerprint,
            restartable: true,
            input: Some(tx.downgrade()),
            routes: Some(Arc::downgrade(&routes)),
            stop: None,
            done: Some(done),
            current,
        };
        if let Some(old) = self.transforms.insert(id, live) {
            old.current.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn spawn_source(&mut self, part: Part<dyn Source>, out: Vec<mpsc::Sender<Message>>) {
        let id = part.id;
        let metrics = self.registry.component(&format!("source.{id}"));
        let routes = Routes::new(out);
        let (stop, shutdown) = shutdown::channel();
        let cx = SourceContext {
            id: id.clone(),
            out: Fanout::routed(routes.clone(), metrics.clone()),
            shutdown,
            metrics: metrics.clone(),
            globals: self.globals.clone(),
            exit_code: self.exit_code.clone(),
        };
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let current = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let span = tracing::info_span!("source", id = %id);
        let task =
            tracked(metrics, current.clone(), done_tx, format!("sources.{id}"), part.component.run(cx));
        self.tasks.spawn(task.instrument(span));
        let live = Live {
            fingerprint: part.fingerprint,
            restartable: part.restartable,
            input: None,
            routes: Some(Arc::downgrade(&routes)),
            stop: Some(stop),
            done: Some(done),
            current,
        };
        if let Some(old) = self.sources.insert(id, live) {
            old.current.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Starts a whole built topology (the first start).
    fn start(&mut self, built: Built) {
        let wiring: BTreeMap<String, Vec<String>> =
            (built.transforms.iter().map(|t| (t.id.clone(), t.inputs.clone())))
                .chain(built.sinks.iter().map(|s| (s.id.clone(), s.inputs.clone())))
                .collect();
        let mut fresh = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for (id, kind) in (built.transforms.iter().map(|t| (&t.id, "transform")))
            .chain(built.sinks.iter().map(|s| (&s.id, "sink")))
        {
            let (tx, rx) = self.channel(id, kind);
            fresh.insert(id.clone(), tx);
            receivers.insert(id.clone(), rx);
        }
        self.apply_parts(built, &wiring, fresh, receivers);
        self.inputs = wiring;
    }

    /// Spawns the parts of a built topology: sinks, then transforms, then sources, each wired
    /// to the consumers in `wiring`.
    fn apply_parts(
        &mut self,
        built: Built,
        wiring: &BTreeMap<String, Vec<String>>,
        fresh: BTreeMap<String, mpsc::Sender<Message>>,
        mut receivers: BTreeMap<String, mpsc::Receiver<Message>>,
    ) {
        let mut sinks = Vec::new();
        for part in built.sinks {
            if let (Some(rx), Some(tx)) = (receivers.remove(&part.id), fresh.get(&part.id)) {
                sinks.push((part, rx, tx.clone()));
            }
        }
        let mut transforms = Vec::new();
        for part in built.transforms {
            if let (Some(rx), Some(tx)) = (receivers.remove(&part.id), fresh.get(&part.id)) {
                let out = self.consumers_of(&part.id, wiring, &fresh);
                transforms.push((part, rx, tx.clone(), out));
            }
        }
        let sources: Vec<_> = built
            .sources
            .into_iter()
            .map(|p| {
                let out = self.consumers_of(&p.id, wiring, &fresh);
                (p, out)
            })
            .collect();
        // Every route is made: only the routes hold the channels open from here on.
        drop(fresh);
        for (part, rx, tx) in sinks {
            self.spawn_sink(part, rx, &tx);
        }
        for (part, rx, tx, out) in transforms {
            self.spawn_transform(part, rx, &tx, out);
        }
        for (part, out) in sources {
            self.spawn_source(part, out);
        }
    }

    /// Stops every source (each one's own trigger).
    fn stop_all(&mut self, reason: Reason) {
        self.stopping.get_or_insert(reason);
        for l in self.sources.values() {
            if let Some(t) = &l.stop {
                t.trigger(reason);
            }
        }
    }

    /// Applies a new configuration by difference; see [`ReloadReport`].
    async fn reload(&mut self, mut built: Built) -> ReloadReport {
        let mut report = ReloadReport::default();
        let all_changed = built.globals_fingerprint != self.globals_fingerprint;
        // Compared with what the process started with: a reload never applies these.
        if built.process_fingerprint != self.process_fingerprint {
            report.needs_restart.push("[api] or [telemetry]".to_owned());
        }
        // New and restarted components get the new options; kept ones keep theirs.
        self.globals = built.globals.clone();
        self.globals_fingerprint = built.globals_fingerprint;
        let wiring: BTreeMap<String, Vec<String>> =
            (built.transforms.iter().map(|t| (t.id.clone(), t.inputs.clone())))
                .chain(built.sinks.iter().map(|s| (s.id.clone(), s.inputs.clone())))
                .collect();
        let same = |live: Option<&Live>, fp: u64| live.is_some_and(|l| l.fingerprint == fp && !all_changed);

        // Decide per component; what is kept leaves `built`.
        let mut keep_sources = Vec::new();
        built.sources.retain(|p| {
            let live = self.sources.get(&p.id);
            if same(live, p.fingerprint) {
                report.kept.push(format!("sources.{}", p.id));
                keep_sources.push(p.id.clone());
                false
            } else if live.is_some_and(|l| !l.restartable) {
                report.needs_restart.push(format!("sources.{}", p.id));
                keep_sources.push(p.id.clone());
                false
            } else {
                true
            }
        });
        let mut keep_transforms = Vec::new();
        built.transforms.retain(|p| {
            if same(self.transforms.get(&p.id), p.fingerprint) {
                report.kept.push(format!("transforms.{}", p.id));
                keep_transforms.push(p.id.clone());
                false
            } else {
                true
            }
        });
        built.sinks.retain(|p| {
            if same(self.sinks.get(&p.id), p.fingerprint) {
                report.kept.push(format!("sinks.{}", p.id));
                false
            } else {
                true
            }
        });
        for p in &built.sources {
            let list =
                if self.sources.contains_key(&p.id) { &mut report.restarted } else { &mut report.added };
            list.push(format!("sources.{}", p.id));
        }
        for (section, ids, live) in [
            ("transforms", built.transforms.iter().map(|p| &p.id).collect::<Vec<_>>(), &self.transforms),
            ("sinks", built.sinks.iter().map(|p| &p.id).collect(), &self.sinks),
        ] {
            for id in ids {
                let list = if live.contains_key(id) { &mut report.restarted } else { &mut report.added };
                list.push(format!("{section}.{id}"));
            }
        }
        // Gone from the configuration.
        let new_ids: std::collections::BTreeSet<String> = keep_sources
            .iter()
            .chain(built.sources.iter().map(|p| &p.id))
            .chain(wiring.keys())
            .cloned()
            .collect();
        let mut removed_sources = Vec::new();
        for (id, l) in &self.sources {
            if !new_ids.contains(id) {
                if l.restartable {
                    report.removed.push(format!("sources.{id}"));
                    removed_sources.push(id.clone());
                } else {
                    report.needs_restart.push(format!("sources.{id}"));
                    keep_sources.push(id.clone());
                }
            }
        }
        let removed_consumers: Vec<String> = self
            .transforms
            .keys()
            .chain(self.sinks.keys())
            .filter(|id| !new_ids.contains(*id))
            .cloned()
            .collect();
        for id in &removed_consumers {
            report.removed.push(format!("{}s.{id}", self.kind_of(id)));
        }

        // New channels for new and changed consumers.
        let mut fresh = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for (id, kind) in (built.transforms.iter().map(|t| (t.id.clone(), "transform")))
            .chain(built.sinks.iter().map(|s| (s.id.clone(), "sink")))
        {
            let (tx, rx) = self.channel(&id, kind);
            fresh.insert(id.clone(), tx);
            receivers.insert(id, rx);
        }
        // Until every new route is made, hold each remaining consumer's channel open. Once a
        // kept producer switches away from an old transform, that transform drains and ends on
        // another worker thread; its senders may be the last ones of a kept consumer, which
        // would then see its input end before the new producers are wired to it.
        let held: Vec<mpsc::Sender<Message>> = self
            .transforms
            .iter()
            .chain(self.sinks.iter())
            .filter(|(id, _)| new_ids.contains(*id))
            .filter_map(|(_, l)| l.input.as_ref()?.upgrade())
            .collect();
        // Kept producers switch to the new consumers in one step each. A kept source that the
        // new configuration no longer has keeps feeding its old consumer ids that remain.
        let old_inputs = std::mem::take(&mut self.inputs);
        for id in keep_sources.iter().chain(keep_transforms.iter()) {
            let w = if new_ids.contains(id) { &wiring } else { &old_inputs };
            let out = self.consumers_of(id, w, &fresh);
            let routes =
                self.sources.get(id).or_else(|| self.transforms.get(id)).and_then(|l| l.routes.as_ref());
            if let Some(r) = routes.and_then(std::sync::Weak::upgrade) {
                r.set(out);
            }
        }
        // Tests: stand for the reload's thread being preempted here (as under load), which
        // gives old producers time to drain and end before the new ones are wired.
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Changed and removed sources stop before their new versions start (a listener's
        // port is free again); what they read still flows to their old consumers, which
        // drain once they are done.
        let stopping: Vec<String> = built
            .sources
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| self.sources.contains_key(id))
            .chain(removed_sources)
            .collect();
        let mut waits = Vec::new();
        for id in &stopping {
            if let Some(l) = self.sources.get_mut(id) {
                if let Some(t) = &l.stop {
                    t.trigger(Reason::Requested);
                }
                l.current.store(false, std::sync::atomic::Ordering::Relaxed);
                waits.push((id.clone(), l.done.take()));
            }
        }
        for (id, done) in waits {
            if let Some(done) = done
                && tokio::time::timeout(RELOAD_SOURCE_STOP_WAIT, done).await.is_err()
            {
                tracing::error!(source = %id, "reload: the old source did not stop within {:?}; its new version is not started", RELOAD_SOURCE_STOP_WAIT);
                report.failed.push(format!("sources.{id}"));
                built.sources.retain(|p| p.id != id);
            }
            if !built.sources.iter().any(|p| p.id == id) {
                self.sources.remove(&id);
            }
        }
        for id in &removed_consumers {
            if let Some(l) = self.transforms.remove(id).or_else(|| self.sinks.remove(id)) {
                l.current.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if self.stopping.is_none() {
            self.apply_parts(built, &wiring, fresh, receivers);
        }
        drop(held);
        self.inputs = wiring;
        report
    }
}

/// [`run`] that also applies configuration reloads as they arrive (SIGHUP in `run`).
pub async fn run_reloading(
    built: Built,
    registry: Registry,
    stop: impl Future<Output = Reason> + Send,
    mut reloads: mpsc::Receiver<Reload>,
) -> Outcome {
    use opentelemetry::trace::Span as _;
    let mut start_span = crate::telemetry::span("sealtrail.pipeline.start");
    start_span.set_attribute(opentelemetry::KeyValue::new("sealtrail.sources", built.sources.len() as i64));
    start_span
        .set_attribute(opentelemetry::KeyValue::new("sealtrail.transforms", built.transforms.len() as i64));
    start_span.set_attribute(opentelemetry::KeyValue::new("sealtrail.sinks", built.sinks.len() as i64));
    let source_count = built.sources.len();
    let mut rt = Runtime {
        registry: registry.clone(),
        globals: built.globals.clone(),
        globals_fingerprint: built.globals_fingerprint,
        process_fingerprint: built.process_fingerprint,
        sources: BTreeMap::new(),
        transforms: BTreeMap::new(),
        sinks: BTreeMap::new(),
        inputs: BTreeMap::new(),
        probes: BTreeMap::new(),
        exit_code: Arc::new(Mutex::new(None)),
        stopping: None,
        tasks: JoinSet::new(),
    };
    rt.start(built);
    tracing::debug!(sources = source_count, "topology started");
    start_span.end();

    let mut outcome = Outcome::default();
    tokio::pin!(stop);
    let mut stopped = false;
    let mut reloads_open = true;
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
                rt.stop_all(reason);
            }
            reload = reloads.recv(), if reloads_open => {
                let Some(reload) = reload else {
                    reloads_open = false;
                    continue;
                };
                if rt.stopping.is_some() {
                    tracing::warn!("reload ignored: the agent is shutting down");
                    continue;
                }
                let report = rt.reload(reload.built).await;
                let _ = reload.done.send(report);
            }
            done = rt.tasks.join_next() => {
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
                        rt.stop_all(Reason::Requested);
                    }
                    Err(join) => {
                        let name = "a component task".to_owned();
                        tracing::error!("{name} panicked: {join}");
                        outcome.failures.push((name, join.to_string()));
                        rt.stop_all(Reason::Requested);
                    }
                }
            }
        }
    }
    outcome.exit_code = *rt.exit_code.lock().unwrap_or_else(|p| p.into_inner());
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
/// The end of the task drops `done`; an instance that a reload replaced (`current` cleared)
/// leaves the state to its successor.
async fn tracked(
    metrics: Arc<crate::metrics::ComponentMetrics>,
    current: Arc<std::sync::atomic::AtomicBool>,
    done: tokio::sync::oneshot::Sender<()>,
    name: String,
    task: impl Future<Output = anyhow::Result<()>>,
) -> (String, anyhow::Result<()>) {
    use crate::metrics::State;
    metrics.set_state(State::Running);
    let r = task.await;
    if current.load(std::sync::atomic::Ordering::Relaxed) || r.is_err() {
        metrics.set_state(if r.is_ok() { State::Stopped } else { State::Failed });
    }
    drop(done);
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

    /// Feeds the events the test sends until the test drops its sender.
    struct TestSource(Option<mpsc::Receiver<Event>>);

    impl Source for TestSource {
        fn run(
            mut self: Box<Self>,
            mut cx: SourceContext,
        ) -> crate::component::BoxFuture<anyhow::Result<()>> {
            Box::pin(async move {
                let Some(mut rx) = self.0.take() else { return Ok(()) };
                while let Some(e) = rx.recv().await {
                    cx.out.send_events(vec![e]).await.map_err(|_| anyhow::anyhow!("no consumer left"))?;
                }
                Ok(())
            })
        }
    }

    /// Keeps every body it receives.
    struct TestSink(Arc<Mutex<Vec<String>>>);

    impl Sink for TestSink {
        fn run(
            self: Box<Self>,
            mut input: SinkInput,
            _: SinkContext,
        ) -> crate::component::BoxFuture<anyhow::Result<()>> {
            Box::pin(async move {
                while let Some(batch) = input.recv().await {
                    for e in batch.iter() {
                        if let Event::Log(l) = e {
                            self.0.lock().unwrap().push(l.body.to_string());
                        }
                    }
                }
                Ok(())
            })
        }
    }

    fn test_built(
        source: Option<mpsc::Receiver<Event>>,
        sink: &Arc<Mutex<Vec<String>>>,
        transform_fp: u64,
    ) -> Built {
        Built {
            globals: Arc::new(GlobalOptions::default()),
            globals_fingerprint: 0,
            process_fingerprint: 0,
            sources: vec![Part {
                id: "app".into(),
                inputs: Vec::new(),
                fingerprint: 1,
                restartable: false,
                component: Box::new(TestSource(source)),
            }],
            transforms: vec![Part {
                id: "scrub".into(),
                inputs: vec!["app".into()],
                fingerprint: transform_fp,
                restartable: true,
                component: Box::new(PassThrough),
            }],
            sinks: vec![Part {
                id: "out".into(),
                inputs: vec!["scrub".into()],
                fingerprint: 1,
                restartable: true,
                component: Box::new(TestSink(sink.clone())),
            }],
        }
    }

    /// A reload that restarts a transform between a kept source and a kept sink: the old
    /// transform drains and ends on another worker thread while the reload wires the new
    /// one, and its senders were the kept sink's last. The sink then saw its input end, and
    /// the new transform failed with "every consumer of this component has stopped" (seen
    /// in CI on tests/reload.rs under load). Repeated, because the window is a race.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_transform_never_leaves_a_kept_sink_without_input() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (events, rx) = mpsc::channel(4);
        let (reloads_tx, reloads) = mpsc::channel(1);
        let run = tokio::spawn(run_reloading(
            test_built(Some(rx), &seen, 0),
            Registry::default(),
            std::future::pending(),
            reloads,
        ));
        const ROUNDS: usize = 300;
        for i in 0..ROUNDS {
            events.send(log(&format!("line {i}"))).await.unwrap();
            let (done, report) = tokio::sync::oneshot::channel();
            reloads_tx.send(Reload { built: test_built(None, &seen, i as u64 + 1), done }).await.unwrap();
            let report = report.await.unwrap();
            assert_eq!(report.restarted, ["transforms.scrub"], "round {i}");
        }
        drop(events);
        let outcome = run.await.unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), ROUNDS, "every line exactly once");
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
