//! The agent's own counters, per component: events and bytes in and out, errors, drops by
//! reason, redactions by detector, segments sealed.
//!
//! Counters are atomics updated once per batch (never per event in a hot loop). Named
//! counters (drops, redactions, …) live in a small map behind a mutex, also touched once per
//! batch. The registry is logged at shutdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counter names, in one place: what the code bumps and what `[telemetry]` exports as metric
/// families (`telemetry::counters`) both come from here, so the two cannot drift apart.
pub mod names {
    pub const EVENTS_IN: &str = "events_in";
    pub const EVENTS_OUT: &str = "events_out";
    pub const BYTES_IN: &str = "bytes_in";
    pub const BYTES_OUT: &str = "bytes_out";
    /// The total of every `errors.<kind>` counter.
    pub const ERRORS: &str = "errors";
    pub const SEGMENTS_SEALED: &str = "segments_sealed";

    /// A family of counters `<prefix>.<detail>`, exported as one metric with the detail as an
    /// attribute.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Family {
        /// Secrets redacted, by detector.
        Redactions,
        /// Events dropped, by reason.
        Dropped,
        /// Requests or connections refused, by reason.
        Refused,
        /// Errors, by kind.
        Errors,
        /// Items rejected from accepted requests, by signal.
        Rejected,
    }

    impl Family {
        pub const ALL: [Family; 5] =
            [Family::Redactions, Family::Dropped, Family::Refused, Family::Errors, Family::Rejected];

        /// The name prefix (`dropped` for `dropped.full`).
        pub const fn prefix(self) -> &'static str {
            match self {
                Family::Redactions => "redactions",
                Family::Dropped => "dropped",
                Family::Refused => "refused",
                Family::Errors => "errors",
                Family::Rejected => "rejected",
            }
        }

        /// The counter name for one detail: `Family::Dropped.counter("full")` is `dropped.full`.
        pub fn counter(self, detail: &str) -> String {
            format!("{}.{detail}", self.prefix())
        }
    }
}

/// Counters of one component.
#[derive(Default)]
pub struct ComponentMetrics {
    /// `source.app`, `transform.scrub`, `sink.vault`.
    pub name: String,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    named: Mutex<BTreeMap<String, u64>>,
    /// A [`State`] as its `u8`: what `GET /ready` reports.
    state: AtomicU8,
    /// When the last error was counted (Unix milliseconds, 0 = never): a sink whose last
    /// error is recent is "failing" for `GET /ready`.
    last_error_ms: AtomicU64,
    /// The component's input channel: (batches queued, capacity). Set by the topology for
    /// transforms and sinks; it holds a weak sender, so it never keeps a channel open.
    channel: OnceLock<Box<ChannelProbe>>,
}

/// Reads a component's input channel fill: `Some((queued, capacity))` while it is open.
pub type ChannelProbe = dyn Fn() -> Option<(usize, usize)> + Send + Sync;

/// Where a component is in its life, as `GET /ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Built, its task not yet started.
    Starting = 0,
    Running = 1,
    /// Finished without an error (end of input, drained).
    Stopped = 2,
    /// Its task ended with an error.
    Failed = 3,
}

impl State {
    pub const fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Running,
            2 => State::Stopped,
            3 => State::Failed,
            _ => State::Starting,
        }
    }
}

impl ComponentMetrics {
    pub fn new(name: impl Into<String>) -> ComponentMetrics {
        ComponentMetrics { name: name.into(), ..Default::default() }
    }

    pub fn add_in(&self, events: usize, bytes: usize) {
        self.events_in.fetch_add(events as u64, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub fn add_out(&self, events: usize, bytes: usize) {
        self.events_out.fetch_add(events as u64, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// Adds to a named counter such as `dropped.queue_full` or `redactions.card`.
    pub fn add(&self, counter: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.named.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(counter) {
            Some(v) => *v += n,
            None => {
                m.insert(counter.to_owned(), n);
            }
        }
    }

    /// Counts an error of a kind (also adds to `errors`).
    pub fn error(&self, kind: &str) {
        self.errors.fetch_add(1, Relaxed);
        self.last_error_ms.store(unix_ms(), Relaxed);
        self.add(&names::Family::Errors.counter(kind), 1);
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Relaxed);
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    /// When the last error was counted (Unix milliseconds), if ever.
    pub fn last_error_ms(&self) -> Option<u64> {
        Some(self.last_error_ms.load(Relaxed)).filter(|&t| t > 0)
    }

    /// Attaches the probe of the component's input channel (the first call wins).
    pub fn set_channel(&self, probe: Box<ChannelProbe>) {
        let _ = self.channel.set(probe);
    }

    /// The input channel's (batches queued, capacity), while it is open.
    pub fn channel_fill(&self) -> Option<(usize, usize)> {
        self.channel.get().and_then(|p| p())
    }

    /// `source`, `transform` or `sink`, and the component id, from `name`.
    pub fn kind_and_id(&self) -> (&str, &str) {
        self.name.split_once('.').unwrap_or(("", &self.name))
    }

    /// The value of a named counter (0 if never touched).
    pub fn get(&self, counter: &str) -> u64 {
        self.named.lock().unwrap_or_else(|p| p.into_inner()).get(counter).copied().unwrap_or(0)
    }

    /// Every counter as (name, value), the fixed ones first; zero counters left out.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            (names::EVENTS_IN.to_owned(), self.events_in.load(Relaxed)),
            (names::EVENTS_OUT.to_owned(), self.events_out.load(Relaxed)),
            (names::BYTES_IN.to_owned(), self.bytes_in.load(Relaxed)),
            (names::BYTES_OUT.to_owned(), self.bytes_out.load(Relaxed)),
            (names::ERRORS.to_owned(), self.errors.load(Relaxed)),
        ];
        v.extend(self.named.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)));
        v.retain(|(_, n)| *n > 0);
        v
    }
}

impl std::fmt::Debug for ComponentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentMetrics")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("counters", &self.snapshot())
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64).max(1)
}

/// All components' counters.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    components: Arc<Mutex<Vec<Arc<ComponentMetrics>>>>,
}

impl Registry {
    /// Registers (or returns) the counters of the component `name`.
    pub fn component(&self, name: &str) -> Arc<ComponentMetrics> {
        let mut c = self.components.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = c.iter().find(|m| m.name == name) {
            return m.clone();
        }
        let m = Arc::new(ComponentMetrics::new(name));
        c.push(m.clone());
        m
    }

    pub fn all(&self) -> Vec<Arc<ComponentMetrics>> {
        self.components.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Logs every component's counters at info level (counts only: never event contents).
    pub fn log_summary(&self) {
        for m in self.all() {
            let line: Vec<String> = m.snapshot().iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::info!(component = %m.name, "{}", if line.is_empty() { "idle".to_owned() } else { line.join(" ") });
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of every component's counters, channel fill
/// levels and the process's CPU time and resident memory: what `GET /metrics` serves.
///
/// Names are stable: `sealtrail_component_<counter>_total` with `component_id` and
/// `component_kind` (`source`, `transform`, `sink`) labels; a counter family
/// ([`names::Family`]) is one metric with its detail as a label (`detector`, `reason`,
/// `kind`, `signal`); any other named counter `a.b` becomes `sealtrail_component_a_b_total`.
/// Counters never touched are left out (Prometheus treats a missing series as zero).
pub mod prometheus {
    use super::*;

    /// The `Content-Type` of the exposition.
    pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

    /// One sample: labels (beyond the component's) and value.
    struct Sample {
        component: usize,
        extra: Option<(&'static str, String)>,
        value: u64,
    }

    /// Renders the registry and the process figures.
    pub fn render(registry: &Registry) -> String {
        let components = registry.all();
        // Metric name → (help, samples), in name order so the output is stable.
        let mut metrics: BTreeMap<String, (String, Vec<Sample>)> = BTreeMap::new();
        for (i, m) in components.iter().enumerate() {
            let fixed = [
                (names::EVENTS_IN, "Events received.", m.events_in.load(Relaxed)),
                (names::EVENTS_OUT, "Events sent on (or written).", m.events_out.load(Relaxed)),
                (names::BYTES_IN, "Bytes received (estimated size of the events).", m.bytes_in.load(Relaxed)),
                (names::BYTES_OUT, "Bytes sent on (or written).", m.bytes_out.load(Relaxed)),
                (names::ERRORS, "Errors of every kind.", m.errors.load(Relaxed)),
            ];
            for (name, help, value) in fixed {
                let e = metrics.entry(metric_name(name)).or_insert_with(|| (help.to_owned(), Vec::new()));
                e.1.push(Sample { component: i, extra: None, value });
            }
            let named = m.named.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (counter, value) in named {
                let (name, help, extra) = match family_of(&counter) {
                    Some((f, detail)) => (
                        family_metric(f),
                        family_help(f).to_owned(),
                        Some((family_label(f), detail.to_owned())),
                    ),
                    None => (metric_name(&counter), format!("The `{counter}` counter."), None),
                };
                let e = metrics.entry(name).or_insert_with(|| (help, Vec::new()));
                e.1.push(Sample { component: i, extra, value });
            }
        }
        let mut out = String::with_capacity(4096);
        for (name, (help, samples)) in &metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for s in samples {
                let (kind, id) = components[s.component].kind_and_id();
                out.push_str(name);
                out.push_str("{component_id=\"");
                escape(&mut out, id);
                out.push_str("\",component_kind=\"");
                escape(&mut out, kind);
                out.push('"');
                if let Some((label, value)) = &s.extra {
                    let _ = write!(out, ",{label}=\"");
                    escape(&mut out, value);
                    out.push('"');
                }
                let _ = writeln!(out, "}} {}", s.value);
            }
        }
        let channels: Vec<_> =
            components.iter().filter_map(|m| m.channel_fill().map(|f| (m.kind_and_id(), f))).collect();
        if !channels.is_empty() {
            for (name, help, pick) in [
                ("sealtrail_channel_batches", "Batches waiting in the component's input channel.", 0usize),
                ("sealtrail_channel_capacity_batches", "Capacity of the component's input channel.", 1),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                for ((kind, id), (queued, cap)) in &channels {
                    out.push_str(name);
                    out.push_str("{component_id=\"");
                    escape(&mut out, id);
                    out.push_str("\",component_kind=\"");
                    escape(&mut out, kind);
                    let _ = writeln!(out, "\"}} {}", if pick == 0 { *queued } else { *cap });
                }
            }
        }
        if let Some(p) = process() {
            let _ =
                writeln!(out, "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.");
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {}", p.cpu_seconds);
            let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {}", p.rss_bytes);
        }
        out
    }

    /// The process's CPU time and resident memory.
    #[derive(Debug, Clone, Copy)]
    pub struct Process {
        pub cpu_seconds: f64,
        pub rss_bytes: u64,
    }

    /// Reads `/proc/self/stat` (Linux); `None` elsewhere or when it cannot be read.
    pub fn process() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: count from its end.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // Fields 14 and 15 (utime, stime) and 24 (rss, in pages), counted from field 3.
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        if hz <= 0 || page <= 0 {
            return None;
        }
        Some(Process { cpu_seconds: ticks as f64 / hz as f64, rss_bytes: rss_pages * page as u64 })
    }

    /// `events_in` → `sealtrail_component_events_in_total`; anything outside `[a-zA-Z0-9_]`
    /// becomes `_`.
    pub fn metric_name(counter: &str) -> String {
        let mut s = String::from("sealtrail_component_");
        s.extend(counter.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
        s.push_str("_total");
        s
    }

    fn family_of(counter: &str) -> Option<(names::Family, &str)> {
        let (prefix, detail) = counter.split_once('.')?;
        names::Family::ALL.into_iter().find(|f| f.prefix() == prefix).map(|f| (f, detail))
    }

    /// The metric of a family. The error family is `errors_by_kind` so that it does not
    /// share a name with the `errors` total.
    pub fn family_metric(f: names::Family) -> String {
        match f {
            names::Family::Errors => metric_name("errors_by_kind"),
            f => metric_name(f.prefix()),
        }
    }

    /// The label that carries a family's detail.
    pub const fn family_label(f: names::Family) -> &'static str {
        match f {
            names::Family::Redactions => "detector",
            names::Family::Dropped | names::Family::Refused => "reason",
            names::Family::Errors => "kind",
            names::Family::Rejected => "signal",
        }
    }

    fn family_help(f: names::Family) -> &'static str {
        match f {
            names::Family::Redactions => "Secrets redacted, by detector.",
            names::Family::Dropped => "Events dropped, by reason.",
            names::Family::Refused => "Requests or connections refused, by reason.",
            names::Family::Errors => "Errors, by kind.",
            names::Family::Rejected => "Items rejected from accepted requests, by signal.",
        }
    }

    /// Escapes a label value (`\\`, `\"`, newline), as the format requires.
    fn escape(out: &mut String, v: &str) {
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let r = Registry::default();
        let m = r.component("sink.x");
        m.add_in(3, 30);
        m.add("dropped.full", 2);
        m.add("dropped.full", 1);
        m.error("io");
        assert!(Arc::ptr_eq(&m, &r.component("sink.x")));
        let snap = m.snapshot();
        assert!(snap.contains(&("events_in".into(), 3)));
        assert!(snap.contains(&("dropped.full".into(), 3)));
        assert!(snap.contains(&("errors.io".into(), 1)));
        assert_eq!(m.get("nope"), 0);
    }

    #[test]
    fn prometheus_text_names_and_labels() {
        let r = Registry::default();
        let m = r.component("sink.va\"ult");
        m.add_in(3, 30);
        m.add("redactions.card", 2);
        m.add("timeouts.idle", 1);
        m.error("io");
        m.set_channel(Box::new(|| Some((2, 8))));
        let text = prometheus::render(&r);
        for want in [
            "# TYPE sealtrail_component_events_in_total counter\n",
            "sealtrail_component_events_in_total{component_id=\"va\\\"ult\",component_kind=\"sink\"} 3\n",
            "sealtrail_component_events_out_total{component_id=\"va\\\"ult\",component_kind=\"sink\"} 0\n",
            "sealtrail_component_redactions_total{component_id=\"va\\\"ult\",component_kind=\"sink\",detector=\"card\"} 2\n",
            "sealtrail_component_errors_by_kind_total{component_id=\"va\\\"ult\",component_kind=\"sink\",kind=\"io\"} 1\n",
            "sealtrail_component_errors_total{component_id=\"va\\\"ult\",component_kind=\"sink\"} 1\n",
            "sealtrail_component_timeouts_idle_total{component_id=\"va\\\"ult\",component_kind=\"sink\"} 1\n",
            "sealtrail_channel_batches{component_id=\"va\\\"ult\",component_kind=\"sink\"} 2\n",
            "sealtrail_channel_capacity_batches{component_id=\"va\\\"ult\",component_kind=\"sink\"} 8\n",
            "# TYPE process_resident_memory_bytes gauge\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(m.last_error_ms().is_some());
        assert_eq!(m.state(), State::Starting);
        m.set_state(State::Failed);
        assert_eq!(m.state(), State::Failed);
    }
}
