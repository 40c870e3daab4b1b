//! One module per subcommand, each with its clap `Args` and a `run` that returns the exit
//! code.

pub mod keys;
pub mod lambda;
pub mod query;
pub mod redact;
pub mod run;
pub mod segments;
pub mod tail;
pub mod validate;
