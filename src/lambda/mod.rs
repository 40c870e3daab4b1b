//! AWS Lambda extension mode: the Extensions API client ([`client`]), the lifecycle driver
//! ([`driver`]: register, subscribe, the `event/next` loop, SHUTDOWN with its deadline, error
//! reporting) and the embedded Lambda default configuration.
//!
//! The [`Handle`] that the driver shares with the `lambda_telemetry` source lives in the
//! component layer (`crate::component::lambda`): the driver passes it to the topology build,
//! which gives it to components in their build context. There is no process-wide handle.

pub mod client;
pub mod driver;

/// The embedded Lambda default configuration (`config/lambda.toml`), used when neither
/// `$SEALTRAIL_CONFIG` nor `/opt/sealtrail/config.toml` exists.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/lambda.toml");

/// The name under which the embedded Lambda default appears in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded lambda default>";

/// Where a layer puts its configuration (`sealtrail/config.toml` in the layer zip).
pub const LAYER_CONFIG_PATH: &str = "/opt/sealtrail/config.toml";

pub use crate::component::lambda::{
    FunctionInfo, Handle, Invoke, ListenerReady, SHUTDOWN_MARGIN, ShutdownInfo, deadline_instant, parse_xray,
};
