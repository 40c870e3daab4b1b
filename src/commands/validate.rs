//! `sealtrail validate`: load and build every component without starting anything, with the
//! same configuration files, data directory and keyring that `run` would use (the same
//! [`AgentArgs`]), print the topology, exit 2 on any error. `--list-kinds` prints every
//! component kind instead.

use std::io::Write;
use std::process::ExitCode;

use super::AgentArgs;
use crate::component::Kinds;
use crate::components;
use crate::config::{self, Config, DEFAULT_CONFIG_NAME};
use crate::topology;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Print every source, transform and sink kind with its description, and exit.
    #[arg(long)]
    pub list_kinds: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if args.list_kinds {
        write_kinds(&components::KINDS, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = config::load_files(&components::KINDS, &args.agent.config, &args.agent.overrides())?;
    topology::build(&config)?;
    let names: Vec<String> = if args.agent.config.is_empty() {
        vec![DEFAULT_CONFIG_NAME.to_owned()]
    } else {
        args.agent.config.iter().map(|p| p.display().to_string()).collect()
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

/// Prints every kind, one per line: section, `type` name, description.
pub fn write_kinds(kinds: &Kinds, out: &mut impl Write) -> std::io::Result<()> {
    let rows = (kinds.sources.iter().map(|k| ("source", k.name, k.description)))
        .chain(kinds.transforms.iter().map(|k| ("transform", k.name, k.description)))
        .chain(kinds.sinks.iter().map(|k| ("sink", k.name, k.description)));
    for (section, name, description) in rows {
        writeln!(out, "{section:<9} {name:<16} {description}")?;
    }
    Ok(())
}
