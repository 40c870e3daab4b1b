//! Transforms: what happens to events between sources and sinks. One module per transform
//! kind; [`KINDS`] is the list the configuration loader reads.

pub mod filter;
pub mod redact;

use crate::component::TransformKind;

/// Every transform kind, by its `type` name.
pub const KINDS: &[TransformKind] = &[filter::KIND, redact::KIND];
