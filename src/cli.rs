//! The command line: the clap definitions and the dispatch to [`crate::commands`]. Each
//! subcommand's flags live with its code in `src/commands/<name>.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

const EXAMPLES: &str = "\
Examples:
  sealtrail run                                   # embedded default: stdin → redact → sealed
  printf 'a\\nb\\n' | sealtrail run --config config/console.toml
  sealtrail run --config config/sidecar.toml      # run a function as a child, seal its output
  sealtrail validate --config config/sidecar.toml
  cat app.log | sealtrail redact --stats
  SEALTRAIL_TAIL_TOKEN=... sealtrail tail --level warn --grep timeout
  sealtrail keys create payments
  sealtrail segments ./sealtrail-data --keys ~/.local/share/sealtrail/keys
  sealtrail query ./sealtrail-data --since 15m --level warn --grep timeout
  sealtrail scan app.log ./sealtrail-data --format json
  sealtrail sql \"SELECT service, count(*) FROM logs GROUP BY service\" ./sealtrail-data

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,
3 decryption or integrity failure.";

/// A log and trace agent that never lets a secret reach disk or a screen.
#[derive(Debug, Parser)]
#[command(name = "sealtrail", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Format of the agent's own log lines on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "SEALTRAIL_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (with no --config: the embedded default configuration).
    Run(commands::run::RunArgs),
    /// Check configuration files and print the topology; exit 2 on any error.
    Validate(commands::validate::ValidateArgs),
    /// Redact standard input to standard output (a streaming line filter, same engine as the
    /// `redact` transform).
    Redact(commands::redact::RedactArgs),
    /// Watch an agent's live, redacted event stream (its `tail` sink).
    #[cfg(feature = "tools")]
    Tail(commands::tail::TailArgs),
    /// Live view of a running agent's components (its `[api]` /metrics): events/s, bytes/s,
    /// redactions/s, errors, channel fill.
    #[cfg(feature = "tools")]
    Top(commands::top::TopArgs),
    /// Run as an AWS Lambda extension (the default when AWS_LAMBDA_RUNTIME_API is set).
    Lambda(commands::lambda::LambdaArgs),
    /// Manage the keyring: create, list, rotate, show, import keys; verify the audit log.
    Keys(commands::keys::KeysArgs),
    /// List sealed segments (with --keys: rows and time ranges from the decrypted footers).
    #[cfg(feature = "tools")]
    Segments(commands::segments::SegmentsArgs),
    /// Decrypt sealed segments and print the events that match the filters.
    #[cfg(feature = "tools")]
    Query(commands::query::QueryArgs),
    /// Report what the redaction engine finds in log files, standard input or sealed segments:
    /// counts per detector, file and field, with line or row positions, never the values.
    /// Exit 0 clean, 1 found, 2 usage, 3 unreadable.
    #[cfg(feature = "tools")]
    Scan(commands::scan::ScanArgs),
    /// SQL over sealed segments (tables `logs` and `spans`), decrypted in memory (Apache
    /// DataFusion; built with the cargo feature `sql`).
    #[cfg(feature = "sql")]
    Sql(commands::sql::SqlArgs),
}

impl Cli {
    /// Runs the chosen command and returns the process exit code.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Some(Command::Run(a)) => commands::run::run(a),
            Some(Command::Validate(a)) => commands::validate::run(a),
            Some(Command::Redact(a)) => commands::redact::run(a),
            #[cfg(feature = "tools")]
            Some(Command::Tail(a)) => commands::tail::run(a),
            #[cfg(feature = "tools")]
            Some(Command::Top(a)) => commands::top::run(a),
            Some(Command::Lambda(a)) => commands::lambda::run(a),
            Some(Command::Keys(a)) => commands::keys::run(a),
            #[cfg(feature = "tools")]
            Some(Command::Segments(a)) => commands::segments::run(a),
            #[cfg(feature = "tools")]
            Some(Command::Query(a)) => commands::query::run(a),
            #[cfg(feature = "tools")]
            Some(Command::Scan(a)) => commands::scan::run(a),
            #[cfg(feature = "sql")]
            Some(Command::Sql(a)) => commands::sql::run(a),
            None if lambda_environment() => commands::lambda::run(commands::lambda::LambdaArgs::from_env()),
            None => {
                use clap::CommandFactory;
                Cli::command().print_help()?;
                Ok(ExitCode::from(crate::exit_codes::CONFIG))
            }
        }
    }

    /// The default filter for the agent's own logs: `info` while running, `warn` for the
    /// one-shot commands. `RUST_LOG` or `SEALTRAIL_LOG` override it.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Some(Command::Run(_)) | Some(Command::Lambda(_)) => "info",
            None if lambda_environment() => "info",
            _ => "warn",
        }
    }
}

/// Whether the process runs inside AWS Lambda (where a start without a subcommand means
/// extension mode).
fn lambda_environment() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty())
}

/// Sets up the agent's own diagnostics on standard error.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("SEALTRAIL_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
