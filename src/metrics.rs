//! The agent's own counters, per component: events and bytes in and out, errors, drops by
//! reason, redactions by detector, segments sealed.
//!
//! Counters are atomics updated once per batch (never per event in a hot loop). Named
//! counters (drops, redactions, …) live in a small map behind a mutex, also touched once per
//! batch. The registry is logged at shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Default)]
pub struct ComponentMetrics {
    /// `source.app`, `transform.scrub`, `sink.vault`.
    pub name: String,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    named: Mutex<BTreeMap<String, u64>>,
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
        self.add(&names::Family::Errors.counter(kind), 1);
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
}
