//! The `generate` source: emits log records from a list of lines, as fast as the pipeline
//! takes them or at a fixed pace. For trying a pipeline out and for benchmarks.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::component::SourceContext;
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::event::{Event, LogRecord, Signals, SourceId, now_nanos};
use crate::units;

pub const KIND: SourceKind = SourceKind {
    name: "generate",
    description: "emits log records from a list of lines (for trying pipelines out and benchmarks)",
    parse: parse_source::<GenerateConfig>,
};

/// Configuration for the `generate` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// The lines to emit, in turn.
    #[serde(default = "default_lines")]
    pub lines: Vec<String>,
    /// How many records to emit before the source ends (0: until shutdown).
    #[serde(default)]
    pub count: u64,
    /// Records per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Pause between batches (default 0: as fast as the pipeline takes them).
    #[serde(default)]
    pub interval: Option<units::Duration>,
    /// The older `interval`, in milliseconds.
    #[serde(default, deserialize_with = "units::legacy_millis")]
    pub interval_ms: Option<units::Duration>,
    /// The service name given to every record.
    #[serde(default)]
    pub service: String,
}

fn default_lines() -> Vec<String> {
    vec![
        "GET /api/orders/1042 200 12ms".to_owned(),
        "payment authorised for order 1042".to_owned(),
        "cache miss key=session:9f2c ttl=300".to_owned(),
    ]
}

fn default_batch_size() -> usize {
    1000
}

impl SourceConfig for GenerateConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        anyhow::ensure!(!self.lines.is_empty(), "`lines` is empty");
        anyhow::ensure!(self.batch_size > 0, "`batch_size` must be at least 1");
        let interval = units::either(
            "interval",
            self.interval,
            "interval_ms",
            self.interval_ms,
            units::Duration::default(),
        )
        .map_err(anyhow::Error::msg)?
        .get();
        Ok(Box::new(Generate { config: self.clone(), interval, source: SourceId::from(cx.id) }))
    }
}

struct Generate {
    config: GenerateConfig,
    /// `interval` as resolved from the current or the older name.
    interval: Duration,
    source: SourceId,
}

impl Source for Generate {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let Generate { config, interval, source } = *self;
            let mut sent = 0u64;
            let mut next = 0usize;
            let mut shutdown = cx.shutdown.clone();
            while config.count == 0 || sent < config.count {
                if cx.shutdown.reason().is_some() {
                    break;
                }
                let n = match config.count {
                    0 => config.batch_size,
                    c => config.batch_size.min((c - sent) as usize),
                };
                let now = now_nanos();
                let mut batch = Vec::with_capacity(n);
                for _ in 0..n {
                    batch.push(Event::Log(LogRecord {
                        observed_time: now,
                        body: config.lines[next].clone(),
                        service: config.service.clone(),
                        source: source.clone(),
                        ..LogRecord::default()
                    }));
                    next = (next + 1) % config.lines.len();
                }
                sent += n as u64;
                if cx.out.send(Arc::new(batch)).await.is_err() {
                    break;
                }
                if !interval.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = shutdown.recv() => break,
                    }
                }
            }
            Ok(())
        })
    }
}
