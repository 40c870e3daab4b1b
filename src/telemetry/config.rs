//! The `[telemetry]` section: where the agent sends its own traces and metrics, and how.
//!
//! Parsing is serde's (`deny_unknown_fields`); [`TelemetryOptions::check`] does the rest of
//! the validation at load time and names the field at fault, so the loader can point at its
//! line. Nothing here connects anywhere.

use std::time::Duration;

use serde::Deserialize;

use crate::net::client::Endpoint;
pub use crate::net::client::Headers;
use crate::net::tls::ClientTls;

/// The `[telemetry]` section. Off unless `enabled = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryOptions {
    /// Export the agent's own traces and metrics (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The OTLP receiver: `http://host:4317` for gRPC, `http://host:4318` for HTTP (the agent
    /// appends `/v1/traces` and `/v1/metrics` to the path). `https://` turns TLS on. Required
    /// when enabled. The `OTEL_EXPORTER_OTLP_*` variables are ignored: they belong to the
    /// functions the agent serves, which often point them at the agent itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: TelemetryProtocol,
    /// Extra request headers (gRPC metadata), e.g. `{ "x-api-key" = "${API_KEY}" }`. Values
    /// are never logged.
    #[serde(default)]
    pub headers: Headers,
    /// TLS settings for an `https://` endpoint (default: the system's roots).
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// How often metrics are exported (`500ms`, `10s`, `1m`; default `60s`). A final export
    /// happens at shutdown.
    #[serde(default = "default_export_interval")]
    pub export_interval: String,
    /// The time limit of one export, retries included (default `5s`). It also bounds how much
    /// telemetry can delay the agent's exit.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// The `service.name` resource attribute (default `sealtrail`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Export spans of the agent's own operations (default true).
    #[serde(default = "yes")]
    pub traces: bool,
    /// Export the per-component counters (default true).
    #[serde(default = "yes")]
    pub metrics: bool,
}

impl Default for TelemetryOptions {
    fn default() -> TelemetryOptions {
        TelemetryOptions {
            enabled: false,
            endpoint: None,
            protocol: TelemetryProtocol::default(),
            headers: Headers::default(),
            tls: None,
            export_interval: default_export_interval(),
            timeout: default_timeout(),
            service_name: default_service_name(),
            traces: true,
            metrics: true,
        }
    }
}

fn default_export_interval() -> String {
    "60s".to_owned()
}
fn default_timeout() -> String {
    "5s".to_owned()
}
fn default_service_name() -> String {
    "sealtrail".to_owned()
}
fn yes() -> bool {
    true
}

/// The OTLP transport of the agent's own telemetry.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TelemetryProtocol {
    #[default]
    #[serde(rename = "http/protobuf", alias = "http_protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// A validation failure: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// The checked, typed form of the options.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `None` when telemetry is disabled and no endpoint is given.
    pub endpoint: Option<Endpoint>,
    pub export_interval: Duration,
    pub timeout: Duration,
}

impl TelemetryOptions {
    /// Validates every field (also when disabled, so a typo is caught before it matters) and
    /// returns the typed values; `endpoint` is required only when enabled.
    ///
    /// # Errors
    /// Every problem found, each naming its field. Header values are never quoted: they are
    /// usually secrets.
    pub fn check(&self) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field, message: String| errors.push(FieldError { field, message });
        let interval = duration(&self.export_interval, "export_interval", Duration::from_millis(100));
        let timeout = duration(&self.timeout, "timeout", Duration::from_millis(100));
        let interval = interval.unwrap_or_else(|m| {
            err("export_interval", m);
            Duration::ZERO
        });
        let timeout = timeout.unwrap_or_else(|m| {
            err("timeout", m);
            Duration::ZERO
        });
        if self.service_name.trim().is_empty() {
            err("service_name", "`service_name` must not be empty".into());
        }
        for problem in self.headers.problems() {
            err("headers", problem);
        }
        let mut endpoint = None;
        match &self.endpoint {
            None if self.enabled => err(
                "enabled",
                "`endpoint` is required when `enabled = true` (e.g. \"http://127.0.0.1:4318\")".into(),
            ),
            None => {}
            Some(e) => match Endpoint::parse(e, "endpoint") {
                Err(x) => err("endpoint", x.to_string()),
                Ok(u) => {
                    if self.tls.is_some() && !u.https {
                        err("tls", "`tls` is set but `endpoint` is http://; use https://".into());
                    }
                    endpoint = Some(u);
                }
            },
        }
        if self.enabled && !self.traces && !self.metrics {
            err("enabled", "`traces` and `metrics` are both false: nothing to export".into());
        }
        if errors.is_empty() {
            Ok(Checked { endpoint, export_interval: interval, timeout })
        } else {
            Err(errors)
        }
    }
}

fn duration(s: &str, field: &str, min: Duration) -> Result<Duration, String> {
    match crate::units::Duration::parse(s).map(crate::units::Duration::get) {
        Ok(d) if d >= min => Ok(d),
        Ok(_) => Err(format!("`{field}` = {s:?} is too short: at least {}ms", min.as_millis())),
        Err(_) => Err(format!("`{field}` = {s:?} is not a duration such as \"500ms\", \"10s\" or \"1m\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> TelemetryOptions {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let o = parse("");
        assert!(!o.enabled && o.traces && o.metrics);
        assert_eq!(o.protocol, TelemetryProtocol::HttpProtobuf);
        assert_eq!(o.service_name, "sealtrail");
        let c = o.check().unwrap();
        assert_eq!(c.export_interval, Duration::from_secs(60));
        assert_eq!(c.timeout, Duration::from_secs(5));
    }

    #[test]
    fn protocols_parse() {
        assert_eq!(parse("protocol = \"grpc\"").protocol, TelemetryProtocol::Grpc);
        assert_eq!(parse("protocol = \"http/protobuf\"").protocol, TelemetryProtocol::HttpProtobuf);
        assert!(toml::from_str::<TelemetryOptions>("protocol = \"http/json\"").is_err());
        assert!(toml::from_str::<TelemetryOptions>("endpont = \"x\"").is_err());
    }

    #[test]
    fn every_bad_field_is_named() {
        let o = parse(
            "enabled = true\nexport_interval = \"soon\"\ntimeout = \"1ms\"\nservice_name = \" \"\n\
             headers = { \"bad name\" = \"v\", ok = \"line\\nbreak-secret\" }",
        );
        let e = o.check().unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["export_interval", "timeout", "service_name", "headers", "headers", "enabled"]);
        assert!(e.iter().all(|e| !e.message.contains("break-secret")), "{e:?}");
        assert!(e[5].message.contains("`endpoint` is required"));
    }

    #[test]
    fn endpoints_are_checked() {
        let bad = |e: &str| {
            let o = parse(&format!("enabled = true\nendpoint = {e:?}"));
            o.check().unwrap_err()[0].message.clone()
        };
        assert!(bad("ftp://x:1").contains("must start with http"));
        assert!(bad("not a url").contains("is not a URL"));
        let o = parse("enabled = true\nendpoint = \"http://h:4318\"\ntls = {}");
        assert_eq!(o.check().unwrap_err()[0].field, "tls");
        let o = parse("enabled = true\nendpoint = \"https://h:4318/base\"\ntraces = false");
        assert_eq!(o.check().unwrap().endpoint.map(|e| e.base_path).as_deref(), Some("/base"));
        let o = parse("enabled = true\nendpoint = \"http://h\"\ntraces = false\nmetrics = false");
        assert!(o.check().unwrap_err()[0].message.contains("nothing to export"));
    }

    #[test]
    fn header_values_stay_out_of_debug_output() {
        let o = parse("headers = { x-api-key = \"s3cr3t\" }");
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }
}
