//! One module per subcommand, each with its clap `Args` and a `run` that returns the exit
//! code.

pub mod lambda;
pub mod redact;
pub mod run;
pub mod tail;
pub mod validate;
