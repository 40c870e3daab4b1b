//! The `filter` transform: keeps only the events that match every condition given. The
//! conditions and their meaning are those of [`crate::filter`], shared with the `tail` sink
//! and `sealtrail query`; this file is only their TOML surface.

use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::component::{
    BuildContext, Transform, TransformConfig, TransformContext, TransformKind, parse_transform,
};
use crate::event::{Batch, Event, Signal, Signals};
use crate::filter::{self, FilterSpec};

pub const KIND: TransformKind = TransformKind {
    name: "filter",
    description: "keeps the events that match level, service, signal, trace id and grep conditions",
    parse: parse_transform::<FilterConfig>,
};

/// Configuration for the `filter` transform. Every condition given must hold (see
/// [`crate::filter`] for what each one means).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A regular expression over the log body, span name, status message, span event names
    /// and attribute keys and values. `pattern` is the older name.
    #[serde(default, alias = "pattern")]
    pub grep: Option<String>,
    /// Minimum level (`trace`, `debug`, `info`, `warn`, `error`, `fatal`). Logs without a
    /// level count as `info`; spans as `error` when their status is error, else `info`.
    #[serde(default)]
    pub level: Option<String>,
    /// Service name globs (a string or a list); any may match. `services` is the older name.
    #[serde(default, alias = "services", deserialize_with = "one_or_many")]
    pub service: Vec<String>,
    /// Keep only this signal (`logs` or `spans`; `log`, `span` and `traces` also work).
    #[serde(default)]
    pub signal: Option<String>,
    /// Keep only the events of this trace (32 hex digits).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Keep the events that do *not* match the conditions instead.
    #[serde(default)]
    pub invert: bool,
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl FilterConfig {
    /// The conditions as the shared filter reads them.
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            grep: self.grep.clone(),
            level: self.level.clone(),
            services: self.service.clone(),
            signal: self.signal.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

impl TransformConfig for FilterConfig {
    fn outputs(&self, input: Signals) -> Signals {
        // Inverted, a signal condition still lets the other conditions' failures of that
        // signal through: only the plain form narrows the output.
        match (self.signal.as_deref().and_then(filter::parse_signal), self.invert) {
            (Some(Signal::Logs), false) => Signals { logs: input.logs, spans: false },
            (Some(Signal::Spans), false) => Signals { logs: false, spans: input.spans },
            _ => input,
        }
    }

    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Transform>> {
        let filter = self.spec().build()?;
        Ok(Box::new(Filter { filter, invert: self.invert }))
    }
}

struct Filter {
    filter: filter::Filter,
    invert: bool,
}

impl Filter {
    fn keep(&self, e: &Event) -> bool {
        self.filter.matches(e) != self.invert
    }
}

impl Transform for Filter {
    fn transform(&mut self, batch: Batch, cx: &TransformContext) -> Option<Batch> {
        let keep = batch.iter().filter(|e| self.keep(e)).count();
        cx.metrics.add("dropped.filtered", (batch.len() - keep) as u64);
        if keep == batch.len() {
            return Some(batch);
        }
        if keep == 0 {
            return None;
        }
        Some(Arc::new(batch.iter().filter(|e| self.keep(e)).cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogRecord;
    use crate::metrics::ComponentMetrics;

    fn log(body: &str, sev: i32) -> Event {
        Event::Log(LogRecord { body: body.into(), severity_number: sev, ..Default::default() })
    }

    #[test]
    fn keeps_matching_events() {
        let cfg: FilterConfig = toml::from_str("level = \"warn\"\npattern = \"pay\"").unwrap();
        let mut f = cfg.build(&BuildContext::new("f", &Default::default())).unwrap();
        let cx = TransformContext { id: "f".into(), metrics: Arc::new(ComponentMetrics::new("t")) };
        let batch = Arc::new(vec![log("pay ok", 9), log("pay failed", 17), log("other", 17), log("pay?", 0)]);
        let out = f.transform(batch, &cx).unwrap();
        let bodies: Vec<_> =
            out.iter().map(|e| if let Event::Log(l) = e { l.body.clone() } else { String::new() }).collect();
        // A record without a level counts as info, below `warn`.
        assert_eq!(bodies, ["pay failed"]);
        assert_eq!(cx.metrics.get("dropped.filtered"), 3);
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            "level = \"loud\"",
            "signal = \"metrics\"",
            "pattern = \"(\"",
            "trace_id = \"x\"",
            "service = \"[\"",
        ] {
            let cfg: FilterConfig = toml::from_str(bad).unwrap();
            assert!(cfg.build(&BuildContext::new("f", &Default::default())).is_err(), "{bad}");
        }
    }
}
