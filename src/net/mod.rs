//! Networking shared by every component that speaks HTTP: one server loop ([`server`]) for the
//! OTLP listeners, the tail sink and the Lambda Telemetry listener, one client ([`client`]) for
//! the OTLP sink, the telemetry exporter, the Lambda APIs and `sealtrail tail`, one TLS configuration
//! ([`tls`]) for listeners and clients, and the small checks that decide whether a listener
//! or a client exposes data on the network ([`exposure`]).
//!
//! This is a low layer: it knows HTTP, TLS, sockets and the counters of
//! [`crate::metrics`], never a configuration file, a topology or a component.

pub mod auth;
pub mod client;
pub mod exposure;
pub mod server;
pub mod tls;

pub use server::{Body, BodyReadTimeout, Limits, ListenerConfig, Server};

/// The error type hyper and tonic accept from bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
