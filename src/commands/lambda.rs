//! `sealtrail lambda`: run as an AWS Lambda extension (also what the binary does when it is
//! started with no subcommand while `AWS_LAMBDA_RUNTIME_API` is set). The lifecycle lives in
//! [`crate::lambda::driver`].

use std::process::ExitCode;

use super::AgentArgs;
use crate::lambda::driver::{self, Options};

#[derive(Debug, Default, clap::Args)]
pub struct LambdaArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
}

impl LambdaArgs {
    /// The arguments as the environment gives them, for the start without a subcommand.
    pub fn from_env() -> LambdaArgs {
        LambdaArgs { agent: AgentArgs::from_env() }
    }
}

pub fn run(args: LambdaArgs) -> anyhow::Result<ExitCode> {
    let AgentArgs { config, data_dir, keys } = args.agent;
    driver::run(Options { config, data_dir, keys })
}
