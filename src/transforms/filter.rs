//! The `filter` transform: keeps only the events that match every condition given (minimum
//! level, service names, signal, a regular expression over the log body or span name).

use std::sync::Arc;

use serde::Deserialize;

use crate::component::{
    BuildContext, Transform, TransformConfig, TransformContext, TransformKind, parse_transform,
};
use crate::event::{Batch, Event, Signal, Signals, severity};

pub const KIND: TransformKind = TransformKind {
    name: "filter",
    description: "keeps the events that match level, service, signal and pattern conditions",
    parse: parse_transform::<FilterConfig>,
};

/// Configuration for the `filter` transform. Every condition given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Minimum level of log records (`trace`, `debug`, `info`, `warn`, `error`, `fatal`).
    /// Records without a level pass. Spans are not affected.
    #[serde(default)]
    pub level: Option<String>,
    /// Keep only events of these services.
    #[serde(default)]
    pub services: Vec<String>,
    /// Keep only this signal (`logs` or `spans`).
    #[serde(default)]
    pub signal: Option<String>,
    /// A regular expression over the log body or the span name.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Keep the events that do *not* match the conditions instead.
    #[serde(default)]
    pub invert: bool,
}

impl TransformConfig for FilterConfig {
    fn outputs(&self, input: Signals) -> Signals {
        match self.signal.as_deref() {
            Some("logs") => Signals { logs: input.logs, spans: false },
            Some("spans") => Signals { logs: false, spans: input.spans },
            _ => input,
        }
    }

    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Transform>> {
        let level = match &self.level {
            Some(l) => Some(severity::parse_level(l).ok_or_else(|| {
                anyhow::anyhow!("unknown `level` {l:?}: use trace, debug, info, warn, error or fatal")
            })?),
            None => None,
        };
        let signal = match self.signal.as_deref() {
            None => None,
            Some("logs") => Some(Signal::Logs),
            Some("spans") => Some(Signal::Spans),
            Some(s) => anyhow::bail!("unknown `signal` {s:?}: use logs or spans"),
        };
        let pattern = match &self.pattern {
            Some(p) => {
                Some(regex::Regex::new(p).map_err(|e| anyhow::anyhow!("invalid `pattern` {p:?}: {e}"))?)
            }
            None => None,
        };
        Ok(Box::new(Filter { level, services: self.services.clone(), signal, pattern, invert: self.invert }))
    }
}

struct Filter {
    level: Option<i32>,
    services: Vec<String>,
    signal: Option<Signal>,
    pattern: Option<regex::Regex>,
    invert: bool,
}

impl Filter {
    fn keep(&self, e: &Event) -> bool {
        let matched = self.signal.is_none_or(|s| e.signal() == s)
            && (self.services.is_empty() || self.services.iter().any(|s| s == e.service()))
            && match (self.level, e) {
                (Some(min), Event::Log(l)) => l.severity_number == 0 || l.severity_number >= min,
                _ => true,
            }
            && match (&self.pattern, e) {
                (Some(p), Event::Log(l)) => p.is_match(&l.body),
                (Some(p), Event::Span(s)) => p.is_match(&s.name),
                (None, _) => true,
            };
        matched != self.invert
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
        assert_eq!(bodies, ["pay failed", "pay?"]);
        assert_eq!(cx.metrics.get("dropped.filtered"), 2);
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in ["level = \"loud\"", "signal = \"metrics\"", "pattern = \"(\""] {
            let cfg: FilterConfig = toml::from_str(bad).unwrap();
            assert!(cfg.build(&BuildContext::new("f", &Default::default())).is_err(), "{bad}");
        }
    }
}
