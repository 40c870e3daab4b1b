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
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "sql")]
pub mod sql_output;
#[cfg(feature = "sql")]
pub mod sql_table;
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

/// The bearer token a client command (`tail`, `top`) presents: from `--token-file` (trimmed;
/// a file others can read is warned about) or else the variable `env`; empty means none.
///
/// # Errors
/// A configuration error (exit 2) naming the file when it cannot be read or is not UTF-8, or
/// when the token is not printable ASCII without spaces (it goes into an HTTP header).
#[cfg(feature = "tools")]
pub(crate) fn client_token(
    token_file: Option<&std::path::Path>,
    env: &str,
) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    use crate::exit_codes::config_error;
    let token = match token_file {
        Some(p) => {
            crate::net::auth::warn_if_shared(p);
            let raw = zeroize::Zeroizing::new(
                std::fs::read(p)
                    .map_err(|e| config_error(anyhow::anyhow!("--token-file {}: {e}", p.display())))?,
            );
            let s = std::str::from_utf8(&raw)
                .map_err(|_| config_error(anyhow::anyhow!("--token-file {}: not UTF-8 text", p.display())))?;
            Some(zeroize::Zeroizing::new(s.trim().to_owned()))
        }
        None => std::env::var(env).ok().map(|t| zeroize::Zeroizing::new(t.trim().to_owned())),
    }
    .filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| !t.chars().all(|c| c.is_ascii_graphic())) {
        return Err(config_error(anyhow::anyhow!("the token must be printable ASCII without spaces")));
    }
    Ok(token)
}
