//! The component layer: the traits every component implements, the registration records that
//! make a component kind known to the configuration loader ([`Kinds`]), what a component gets
//! when it is built ([`BuildContext`]) and when it runs ([`context`]), the one shutdown path
//! ([`shutdown`]), the channel [`Message`], the global options, and the Lambda session that
//! the extension driver passes to the `lambda_telemetry` source ([`lambda`]).
//!
//! This layer sits below `config` and `topology` and above `event`, `metrics`, `telemetry`
//! and `units` (see ARCHITECTURE.md): components, the loader and the runtime all depend on
//! it, and it depends on none of them.
//!
//! A component has two halves, as in Vector: a *config* type that is exactly what the user
//! wrote (deserialized with `deny_unknown_fields`), and a *runtime* type that `build` compiles
//! from it. `build` does all validation and has no side effects (it binds no port, spawns no
//! process, opens no file for writing), so `sealtrail validate` runs it on every component
//! without starting anything.
//!
//! Components never see the graph: the topology gives a source a [`SourceContext`] with its
//! output, a sink a [`SinkInput`], and runs transforms batch by batch.

pub mod ack;
pub mod context;
pub mod globals;
pub mod lambda;
pub mod shutdown;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

pub use ack::{Ack, AckStatus, AckWait};
pub use context::{Closed, Fanout, Full, Message, Received, Routes, SinkContext, SinkInput, SourceContext};
pub use globals::{GlobalOptions, KeyRule, KeysOptions, default_keys_dir};
pub use shutdown::{Reason, Shutdown, ShutdownTrigger};

use crate::event::{Batch, Signals};

/// A boxed future as returned by the run methods (the traits stay object safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What `build` gets: the component's id, the global options and, in Lambda extension mode,
/// the session the driver shares with the `lambda_telemetry` source.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The component id, e.g. `app` for `[sources.app]`.
    pub id: &'a str,
    pub globals: &'a GlobalOptions,
    /// Set by the Lambda extension driver, `None` elsewhere. Passed here rather than through a
    /// process-wide global so that two topologies in one process (tests) never share one.
    pub lambda: Option<&'a Arc<lambda::Handle>>,
}

impl<'a> BuildContext<'a> {
    /// A context outside Lambda extension mode.
    pub fn new(id: &'a str, globals: &'a GlobalOptions) -> BuildContext<'a> {
        BuildContext { id, globals, lambda: None }
    }
}

/// The configuration of a source.
pub trait SourceConfig: Debug + Send + Sync {
    /// The signals this source emits.
    fn outputs(&self) -> Signals;

    /// Validates the configuration and compiles the runtime source. No side effects.
    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>>;

    /// Whether a configuration reload may stop this source and start its new version. A
    /// source whose input cannot be opened twice (the agent's stdin, a wrapped child) says
    /// no: a change to it keeps the running one and is reported as needing a restart.
    fn restartable(&self) -> bool {
        true
    }

    /// `true` when the source sets `acknowledgements = true`: it answers its clients (or
    /// advances its checkpoint) only once every durable sink has the batch (see [`ack`]).
    /// The topology refuses such a source without a durable sink downstream.
    fn acknowledgements(&self) -> bool {
        false
    }
}

/// A running source: pushes batches into `cx.out` until its input ends or `cx.shutdown` fires,
/// then returns. Returning drops the output, which tells downstream components to flush.
pub trait Source: Send {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>>;
}

/// The configuration of a transform.
pub trait TransformConfig: Debug + Send + Sync {
    /// The signals this transform accepts.
    fn accepts(&self) -> Signals {
        Signals::ALL
    }

    /// The signals it emits, given the signals it receives.
    fn outputs(&self, input: Signals) -> Signals {
        input
    }

    /// `true` for the `redact` transform: what comes out of it is redacted. The loader uses
    /// this to enforce that every sink is downstream of redaction (ARCHITECTURE.md, "The data
    /// path").
    fn redacts(&self) -> bool {
        false
    }

    /// Validates the configuration and compiles the runtime transform. No side effects.
    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Transform>>;
}

/// A running transform. The topology calls it for each batch in arrival order, on a task of
/// its own, and calls `flush` once when all inputs have ended.
pub trait Transform: Send {
    /// Transforms one batch; `None` drops the whole batch (a filter that kept nothing).
    fn transform(&mut self, batch: Batch, cx: &TransformContext) -> Option<Batch>;

    /// Emits whatever the transform still holds when its inputs end.
    fn flush(&mut self, _cx: &TransformContext) -> Option<Batch> {
        None
    }
}

/// What a transform gets with each batch: its id and its counters.
pub struct TransformContext {
    pub id: String,
    pub metrics: Arc<crate::metrics::ComponentMetrics>,
}

/// The configuration of a sink.
pub trait SinkConfig: Debug + Send + Sync {
    /// The signals this sink accepts.
    fn accepts(&self) -> Signals {
        Signals::ALL
    }

    /// Validates the configuration and compiles the runtime sink. No side effects.
    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>>;

    /// `true` when the sink makes a batch durable before it resolves the batch's
    /// acknowledgement (the sealed sink with `wal = true`): what a source with
    /// `acknowledgements = true` needs downstream.
    fn durable(&self) -> bool {
        false
    }

    /// Called by the loader when the sink sets `allow_unredacted = true`: a sink that would
    /// serve those events to other hosts refuses (with the message) unless its own explicit
    /// opt-in is set, so that one flag cannot expose raw data to the network silently.
    fn check_unredacted(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A running sink: consumes batches from `input` until it ends (`recv` returns `None`), then
/// flushes everything it holds and returns.
pub trait Sink: Send {
    fn run(self: Box<Self>, input: SinkInput, cx: SinkContext) -> BoxFuture<anyhow::Result<()>>;
}

/// Parses a component's table (without `type`, `inputs` and the other fields the topology
/// owns) into its config type. The deserializer keeps the spans of the file, so an error says
/// where the field it is about was written.
pub type ParseFn<T> = fn(toml::de::ValueDeserializer<'_>) -> Result<Box<T>, toml::de::Error>;

/// A source kind as the loader knows it: the `type` name and how to parse its table.
pub struct SourceKind {
    pub name: &'static str,
    pub description: &'static str,
    pub parse: ParseFn<dyn SourceConfig>,
}

/// A transform kind as the loader knows it.
pub struct TransformKind {
    pub name: &'static str,
    pub description: &'static str,
    pub parse: ParseFn<dyn TransformConfig>,
}

/// A sink kind as the loader knows it.
pub struct SinkKind {
    pub name: &'static str,
    pub description: &'static str,
    pub parse: ParseFn<dyn SinkConfig>,
}

/// Every component kind the configuration loader accepts. The loader takes this as an
/// argument (the list itself is `crate::components::KINDS`), so `config` never imports a
/// source, transform or sink.
#[derive(Clone, Copy)]
pub struct Kinds {
    pub sources: &'static [SourceKind],
    pub transforms: &'static [TransformKind],
    pub sinks: &'static [SinkKind],
}

/// The parse function for a source config type: `parse: parse_source::<StdinConfig>`.
pub fn parse_source<T: SourceConfig + DeserializeOwned + 'static>(
    v: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn SourceConfig>, toml::de::Error> {
    Ok(Box::new(T::deserialize(v)?))
}

/// The parse function for a transform config type.
pub fn parse_transform<T: TransformConfig + DeserializeOwned + 'static>(
    v: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn TransformConfig>, toml::de::Error> {
    Ok(Box::new(T::deserialize(v)?))
}

/// The parse function for a sink config type.
pub fn parse_sink<T: SinkConfig + DeserializeOwned + 'static>(
    v: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn SinkConfig>, toml::de::Error> {
    Ok(Box::new(T::deserialize(v)?))
}
