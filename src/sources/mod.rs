//! Sources: where events enter the agent. One module per source kind, each with its config
//! struct beside its runtime; [`KINDS`] is the list the configuration loader reads.

pub mod exec;
pub mod file;
pub mod generate;
pub mod lambda_telemetry;
pub mod lines;
pub mod otlp;
pub mod stdin;

use crate::component::SourceKind;

/// Every source kind, by its `type` name.
pub const KINDS: &[SourceKind] =
    &[exec::KIND, file::KIND, generate::KIND, lambda_telemetry::KIND, otlp::KIND, stdin::KIND];
