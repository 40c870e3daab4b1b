//! Options that apply to the whole agent (`data_dir`, `[keys]`, `[telemetry]`): every
//! component may read them, so they live in the component layer and `config` fills them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Options that apply to the whole agent.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    /// Where sealed segments, checkpoints and other state go.
    pub data_dir: PathBuf,
    pub keys: KeysOptions,
    /// The `[telemetry]` section: the agent's own traces and metrics (off by default).
    pub telemetry: crate::telemetry::TelemetryOptions,
    /// The `[api]` section: health, readiness and Prometheus metrics (off when absent).
    pub api: Option<crate::api::ApiOptions>,
    /// Environment variables the configuration interpolates into a secret field (a token,
    /// password, secret, key or header value). The `exec` source removes them from its
    /// child's environment, beside every `SEALTRAIL_KEY_*` and `SEALTRAIL_TAIL_TOKEN`.
    pub secret_env: std::collections::BTreeSet<String>,
}

impl Default for GlobalOptions {
    fn default() -> GlobalOptions {
        GlobalOptions {
            data_dir: PathBuf::from("./sealtrail-data"),
            keys: KeysOptions::default(),
            telemetry: crate::telemetry::TelemetryOptions::default(),
            api: None,
            secret_env: Default::default(),
        }
    }
}

/// The `[keys]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysOptions {
    /// The keyring directory. `--keys` and `SEALTRAIL_KEYS` take precedence; the default is
    /// `$XDG_DATA_HOME/sealtrail/keys` (usually `~/.local/share/sealtrail/keys`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The key used when no rule matches.
    #[serde(default = "default_key_name")]
    pub default: String,
    /// Key choice per service or function name, first match wins.
    #[serde(default)]
    pub rules: Vec<KeyRule>,
    /// The AWS KMS endpoint URL for `kms:` keys (a private endpoint, a test server); default:
    /// `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`, else the region's public endpoint.
    #[serde(default)]
    pub kms_endpoint: Option<String>,
}

impl Default for KeysOptions {
    fn default() -> KeysOptions {
        KeysOptions { dir: None, default: default_key_name(), rules: Vec::new(), kms_endpoint: None }
    }
}

fn default_key_name() -> String {
    "default".to_owned()
}

/// One `[[keys.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    /// A glob over the service or function name (`payments-*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The key name to use for matching events.
    pub key: String,
}

/// Where the keyring lives: `--keys`, else `SEALTRAIL_KEYS` (both arrive as
/// `config::Overrides::keys_dir`), else `[keys] dir`, else `$XDG_DATA_HOME/sealtrail/keys`, else
/// `~/.local/share/sealtrail/keys`.
pub fn default_keys_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Path::new(&x).join("sealtrail/keys");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/sealtrail/keys")
}

impl GlobalOptions {
    /// The keyring directory after every override (see [`default_keys_dir`]).
    pub fn keys_dir(&self) -> PathBuf {
        self.keys.dir.clone().unwrap_or_else(default_keys_dir)
    }
}
