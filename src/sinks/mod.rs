//! Sinks: where events leave the agent. One module per sink kind, each with its config
//! struct beside its runtime; [`KINDS`] is the list the configuration loader reads.

pub mod blackhole;
pub mod console;
pub mod otlp;
pub mod sealed;
pub mod tail;

use crate::component::SinkKind;

/// Every sink kind, by its `type` name.
pub const KINDS: &[SinkKind] = &[blackhole::KIND, console::KIND, otlp::KIND, sealed::KIND, tail::KIND];
