//! `sealtrail lambda`: run as an AWS Lambda extension (also what the binary does when it is
//! started with no subcommand while `AWS_LAMBDA_RUNTIME_API` is set). The lifecycle lives in
//! [`crate::lambda::driver`].

use std::path::PathBuf;
use std::process::ExitCode;

use crate::lambda::driver::{self, Options};

#[derive(Debug, Default, clap::Args)]
pub struct LambdaArgs {
    /// Configuration file (repeat to merge several). Without one: /opt/sealtrail/config.toml
    /// when it exists, else the embedded Lambda default.
    #[arg(long = "config", short = 'c', env = "SEALTRAIL_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Data directory (overrides `data_dir` in the configuration).
    #[arg(long, env = "SEALTRAIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keyring directory (overrides `[keys] dir`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
}

impl LambdaArgs {
    /// The arguments as the environment gives them, for the start without a subcommand.
    pub fn from_env() -> LambdaArgs {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        LambdaArgs {
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

pub fn run(args: LambdaArgs) -> anyhow::Result<ExitCode> {
    driver::run(Options { config: args.config, data_dir: args.data_dir, keys: args.keys })
}
