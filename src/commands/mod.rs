//! One module per subcommand, each with its clap `Args` and a `run` that returns the exit
//! code.

pub mod keys;
pub mod lambda;
#[cfg(feature = "tools")]
pub mod query;
pub mod redact;
#[cfg(feature = "tools")]
pub mod remote;
pub mod run;
#[cfg(feature = "tools")]
pub mod scan;
#[cfg(feature = "tools")]
pub mod segments;
#[cfg(feature = "tools")]
pub mod tail;
#[cfg(feature = "tools")]
pub mod top;
pub mod validate;

use std::path::PathBuf;

use crate::config::Overrides;

/// The arguments that say which configuration and keyring an agent runs with, shared by
/// `run`, `validate` and `lambda` (flattened into each) so that `validate` checks exactly what
/// `run` would start: same files, same data directory, same keyring.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (repeat to merge several). Without one: the embedded default (in
    /// Lambda: /opt/sealtrail/config.toml when it exists, else the embedded Lambda default).
    #[arg(long = "config", short = 'c', env = "SEALTRAIL_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Data directory (overrides `data_dir` in the configuration).
    #[arg(long, env = "SEALTRAIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keyring directory (overrides `[keys] dir`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
}

impl AgentArgs {
    /// What the command line and environment override in the loaded configuration.
    pub fn overrides(&self) -> Overrides {
        Overrides { data_dir: self.data_dir.clone(), keys_dir: self.keys.clone() }
    }

    /// The arguments as the environment gives them, for the Lambda start without a
    /// subcommand (where clap does not run).
    pub fn from_env() -> AgentArgs {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        AgentArgs {
            config: var("SEALTRAIL_CONFIG")
                .map(|v| {
                    v.to_string_lossy().split(',').filter(|s| !s.is_empty()).map(PathBuf::from).collect()
                })
                .unwrap_or_default(),
            data_dir: var("SEALTRAIL_DATA_DIR").map(PathBuf::from),
            keys: var("SEALTRAIL_KEYS").map(PathBuf::from),
        }
    }
}
