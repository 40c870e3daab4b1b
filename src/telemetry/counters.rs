//! The per-component counters of [`Registry`] as OpenTelemetry observable counters.
//!
//! Every data point carries `component_kind` (`source`, `transform`, `sink`, or `agent` for
//! the agent's own parts such as `telemetry`) and `component_id`. Counter names map to
//! metrics as follows (all cumulative, monotonic):
//!
//! | registry counter | metric | extra attribute |
//! |---|---|---|
//! | `events_in`, `events_out`, `bytes_in`, `bytes_out`, `segments_sealed` | `sealtrail.component.<name>` | |
//! | `redactions.<d>` | `sealtrail.component.redactions` | `detector` |
//! | `dropped.<r>`, `refused.<r>` | `sealtrail.component.dropped`, `….refused` | `reason` |
//! | `errors.<k>` | `sealtrail.component.errors` | `kind` |
//! | `rejected.<s>` | `sealtrail.component.rejected` | `signal` |
//! | anything else | `sealtrail.component.counter` | `counter` (the registry name) |
//!
//! The callbacks run on the SDK's reader thread once per export interval and only read
//! atomics (plus one short lock per component for the named counters).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableCounter};

use crate::metrics::Registry;
use crate::metrics::names::{self, Family};

/// Plain counters: registry name, unit, description.
const PLAIN: [(&str, &str, &str); 5] = [
    (names::EVENTS_IN, "{event}", "Events a component received."),
    (names::EVENTS_OUT, "{event}", "Events a component passed on or wrote."),
    (names::BYTES_IN, "By", "Bytes of events a component received (estimated size)."),
    (names::BYTES_OUT, "By", "Bytes a component passed on or wrote."),
    (names::SEGMENTS_SEALED, "{segment}", "Sealed segments written."),
];

/// Families `prefix.detail`: prefix, attribute that carries the detail, description. Every
/// [`Family`] has one (the test below checks it).
const FAMILIES: [(&str, &str, &str); 5] = [
    (Family::Redactions.prefix(), "detector", "Secrets redacted, by detector."),
    (Family::Dropped.prefix(), "reason", "Events dropped, by reason."),
    (Family::Refused.prefix(), "reason", "Requests or connections refused, by reason."),
    (Family::Errors.prefix(), "kind", "Errors, by kind."),
    (Family::Rejected.prefix(), "signal", "Items rejected from accepted requests, by signal."),
];

/// What a registry counter becomes.
enum Route<'a> {
    Plain(&'static str),
    Family(&'static str, &'a str),
    Other,
    /// The total `errors` atomic: its parts are exported as `errors{kind}`.
    Skip,
}

fn route(name: &str) -> Route<'_> {
    if let Some((p, ..)) = PLAIN.iter().find(|(p, ..)| *p == name) {
        return Route::Plain(p);
    }
    if name == names::ERRORS {
        return Route::Skip;
    }
    if let Some((prefix, detail)) = name.split_once('.') {
        if let Some((p, ..)) = FAMILIES.iter().find(|(p, ..)| *p == prefix) {
            return Route::Family(p, detail);
        }
    }
    Route::Other
}

/// `source.app` → (`source`, `app`); a name without a kind is the agent's own (`telemetry`).
fn component(name: &str) -> (&str, &str) {
    match name.split_once('.') {
        Some((kind @ ("source" | "transform" | "sink"), id)) => (kind, id),
        _ => ("agent", name),
    }
}

/// Which registry counters an instrument reports: `None` not this one, `Some(extra)` yes, with
/// an optional extra attribute.
type Wanted = Box<dyn Fn(&str) -> Option<Option<KeyValue>> + Send + Sync>;

/// Registers one observable counter per metric; keep the handles for the provider's life.
pub(super) fn register(meter: &Meter, registry: &Registry) -> Vec<ObservableCounter<u64>> {
    let mut out = Vec::new();
    let observe = |registry: Registry, wanted: Wanted| {
        move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
            for m in registry.all() {
                let (kind, id) = component(&m.name);
                let base = [
                    KeyValue::new("component_kind", kind.to_owned()),
                    KeyValue::new("component_id", id.to_owned()),
                ];
                for (name, value) in m.snapshot() {
                    match wanted(&name) {
                        None => {}
                        Some(None) => o.observe(value, &base),
                        Some(Some(extra)) => o.observe(value, &[base[0].clone(), base[1].clone(), extra]),
                    }
                }
            }
        }
    };
    for (name, unit, description) in PLAIN {
        let wanted =
            Box::new(move |n: &str| matches!(route(n), Route::Plain(p) if p == name).then_some(None));
        out.push(
            meter
                .u64_observable_counter(format!("sealtrail.component.{name}"))
                .with_unit(unit)
                .with_description(description)
                .with_callback(observe(registry.clone(), wanted))
                .build(),
        );
    }
    for (prefix, attribute, description) in FAMILIES {
        let wanted = Box::new(move |n: &str| match route(n) {
            Route::Family(p, detail) if p == prefix => {
                Some(Some(KeyValue::new(attribute, detail.to_owned())))
            }
            _ => None,
        });
        out.push(
            meter
                .u64_observable_counter(format!("sealtrail.component.{prefix}"))
                .with_description(description)
                .with_callback(observe(registry.clone(), wanted))
                .build(),
        );
    }
    let wanted = Box::new(|n: &str| {
        matches!(route(n), Route::Other).then(|| Some(KeyValue::new("counter", n.to_owned())))
    });
    out.push(
        meter
            .u64_observable_counter("sealtrail.component.counter")
            .with_description("Other per-component counters, by registry name.")
            .with_callback(observe(registry.clone(), wanted))
            .build(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_route_to_metrics() {
        assert!(matches!(route("events_in"), Route::Plain("events_in")));
        assert!(matches!(route("redactions.card"), Route::Family("redactions", "card")));
        assert!(matches!(route("refused.max_connections"), Route::Family("refused", "max_connections")));
        assert!(matches!(route("errors"), Route::Skip));
        assert!(matches!(route("retries"), Route::Other));
        assert!(matches!(route("files.opened"), Route::Other));
        assert_eq!(component("source.app"), ("source", "app"));
        assert_eq!(component("sink.vault.x"), ("sink", "vault.x"));
        assert_eq!(component("telemetry"), ("agent", "telemetry"));
    }

    /// Every family the code can bump is exported as its own metric.
    #[test]
    fn every_family_is_exported() {
        for f in Family::ALL {
            assert!(FAMILIES.iter().any(|(p, ..)| *p == f.prefix()), "{f:?} has no metric");
            let name = f.counter("x");
            assert!(matches!(route(&name), Route::Family(p, "x") if p == f.prefix()), "{name}");
        }
    }
}
