//! `sealtrail validate`: load and build every component without starting anything, print
//! the topology, exit 2 on any error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Config, DEFAULT_CONFIG_NAME, Overrides};
use crate::topology;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Configuration file (repeat to merge several). Without one: the embedded default.
    #[arg(long = "config", short = 'c', env = "SEALTRAIL_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = config::load_files(&args.config, &Overrides::default())?;
    topology::build(&config)?;
    let mut out = std::io::stdout().lock();
    let names: Vec<String> = if args.config.is_empty() {
        vec![DEFAULT_CONFIG_NAME.to_owned()]
    } else {
        args.config.iter().map(|p| p.display().to_string()).collect()
    };
    writeln!(out, "{}: ok", names.join(", "))?;
    write_topology(&config, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints every component with its type and its edges, in data-flow order.
pub fn write_topology(config: &Config, out: &mut impl Write) -> std::io::Result<()> {
    let order = config::graph::topological_order(config).unwrap_or_default();
    for id in order {
        if let Some(s) = config.sources.iter().find(|s| s.id == id) {
            writeln!(out, "  source    {id} ({}) emits {}", s.kind, s.config.outputs())?;
        } else if let Some(t) = config.transforms.iter().find(|t| t.id == id) {
            writeln!(out, "  transform {id} ({}) <- {}", t.kind, t.inputs.join(", "))?;
        } else if let Some(s) = config.sinks.iter().find(|s| s.id == id) {
            let note = if s.allow_unredacted { " [allow_unredacted]" } else { "" };
            writeln!(out, "  sink      {id} ({}) <- {}{note}", s.kind, s.inputs.join(", "))?;
        }
    }
    Ok(())
}
