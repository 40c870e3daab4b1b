//! sealtrail: an agent for logs and traces that never lets a secret reach disk or a screen.
//!
//! The library holds the engine; `src/main.rs` is a thin command-line front over
//! [`commands`]. A run goes: [`config`] loads and checks a Vector-style TOML configuration
//! against the kinds in [`components`], [`topology`] builds its components and moves
//! [`event::Batch`]es of events from [`sources`] through [`transforms`] to [`sinks`] over
//! bounded channels, and [`metrics`] counts what each component did. The traits and contexts
//! that every component shares are in [`component`]. ARCHITECTURE.md has the module map and
//! the layering rule (lower modules never import higher ones; `tests/module_layers.rs`
//! checks it).

pub mod api;
pub mod cli;
pub mod commands;
pub mod component;
pub mod components;
pub mod config;
pub mod event;
pub mod exit_codes;
pub mod filter;
pub mod keys;
pub mod lambda;
pub mod loggen;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod redact;
pub mod s3;
pub mod segment;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod topology;
pub mod transforms;
pub mod units;
