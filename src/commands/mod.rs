//! One module per subcommand, each with its clap `Args` and a `run` that returns the exit
//! code.

pub mod keys;
pub mod query;
pub mod run;
pub mod segments;
pub mod validate;
