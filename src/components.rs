//! The one list of every component kind the agent knows, by section. It is passed into the
//! configuration loader (`config::load(&components::KINDS, …)`), which therefore never
//! imports a source, transform or sink: adding a kind means one line in its section's
//! `KINDS` and nothing in `config` or `topology`.

use crate::component::Kinds;

/// Every source, transform and sink kind.
pub const KINDS: Kinds = Kinds {
    sources: crate::sources::KINDS,
    transforms: crate::transforms::KINDS,
    sinks: crate::sinks::KINDS,
};
