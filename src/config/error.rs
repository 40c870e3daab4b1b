//! Configuration errors: every one names where it was found (file, line, component).

use std::fmt;

/// Where something was written: a configuration file, and a line and column in it (1-based,
/// the column in characters; 0 unknown). Both come from the spans the TOML parser keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Origin {
    /// A whole file (no position known).
    pub fn file(file: impl Into<String>) -> Origin {
        Origin { file: file.into(), line: 0, column: 0 }
    }

    /// The position of byte offset `pos` in `text`.
    pub fn at_offset(file: impl Into<String>, text: &str, pos: usize) -> Origin {
        let before = text.get(..pos.min(text.len())).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = memchr::memchr_iter(b'\n', before.as_bytes()).count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Origin { file: file.into(), line, column }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => f.write_str(&self.file),
            (l, 0) => write!(f, "{}:{l}", self.file),
            (l, c) => write!(f, "{}:{l}:{c}", self.file),
        }
    }
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Option<Origin>,
    /// The component, as `sources.app`, `transforms.scrub` or `sinks.vault`.
    pub component: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError { origin: None, component: None, message: message.into() }
    }

    pub fn at(mut self, origin: Origin) -> ConfigError {
        self.origin = Some(origin);
        self
    }

    pub fn component(mut self, component: impl Into<String>) -> ConfigError {
        self.component = Some(component.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        if let Some(c) = &self.component {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All the errors found while loading a configuration: the loader collects every error it
/// can find rather than stopping at the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            0 => f.write_str("invalid configuration"),
            1 => write!(f, "invalid configuration: {}", self.0[0]),
            n => {
                write!(f, "invalid configuration ({n} errors):")?;
                for e in &self.0 {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}
