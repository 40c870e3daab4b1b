//! The `sealtrail` binary: a thin front over the library (see `sealtrail::cli`).

use std::process::ExitCode;

use clap::Parser;
use sealtrail::cli::{Cli, init_tracing};
use sealtrail::exit_codes;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit_codes::CONFIG } else { exit_codes::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format, cli.default_log_level());
    match cli.run() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealtrail: {e:#}");
            exit_codes::for_error(&e)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
