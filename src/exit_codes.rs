//! The process exit codes (ARCHITECTURE.md "Formats", exit codes), in one place.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A failure at run time.
pub const RUNTIME: u8 = 1;
/// A usage or configuration error.
pub const CONFIG: u8 = 2;
/// A decryption or integrity failure.
pub const INTEGRITY: u8 = 3;

/// An error that carries the exit code it should end the process with.
///
/// Its `Display` is the whole chain of the wrapped error, and it reports no `source` of its
/// own, so printing it with `{:#}` shows each cause once.
#[derive(Debug, thiserror::Error)]
#[error("{inner:#}")]
pub struct CodedError {
    pub code: u8,
    pub inner: anyhow::Error,
}

impl CodedError {
    pub fn new(code: u8, inner: impl Into<anyhow::Error>) -> CodedError {
        CodedError { code, inner: inner.into() }
    }
}

/// Shorthand: an error that exits with [`CONFIG`].
pub fn config_error(e: impl Into<anyhow::Error>) -> anyhow::Error {
    CodedError::new(CONFIG, e).into()
}

/// Shorthand: an error that exits with [`INTEGRITY`].
pub fn integrity_error(e: impl Into<anyhow::Error>) -> anyhow::Error {
    CodedError::new(INTEGRITY, e).into()
}

/// The exit code for an error: the code it carries, [`CONFIG`] for configuration errors,
/// else [`RUNTIME`].
pub fn for_error(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(code_of(e))
}

/// The numeric form of [`for_error`].
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<CodedError>() {
        return c.code;
    }
    if e.downcast_ref::<crate::config::ConfigErrors>().is_some() {
        return CONFIG;
    }
    RUNTIME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_print_each_cause_once() {
        let e = config_error(anyhow::anyhow!("root cause").context("while loading"));
        assert_eq!(format!("{e:#}"), "while loading: root cause");
    }

    #[test]
    fn codes() {
        assert_eq!(code_of(&anyhow::anyhow!("x")), RUNTIME);
        assert_eq!(code_of(&config_error(anyhow::anyhow!("x"))), CONFIG);
        assert_eq!(code_of(&integrity_error(anyhow::anyhow!("x"))), INTEGRITY);
        let e: anyhow::Error = crate::config::ConfigErrors(vec![]).into();
        assert_eq!(code_of(&e), CONFIG);
    }
}
