//! supervisord.conf: `holdfast import supervisord` turns `[program:x]` sections into
//! holdfast services ([`import`]), `holdfast gen supervisord` writes a service as a
//! `[program:x]` section ([`export`]).
//!
//! The file is read as supervisor reads it ([`ini`], [`lex`]): a value supervisord
//! would reject is an [`ImportError`] at its line, never a guess. What holdfast has no
//! equivalent for is converted as far as it goes and listed, each option with its
//! section and line, in the [`Finding`]s of the report.

pub mod export;
mod import;
pub mod ini;
pub mod lex;
mod sections;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use import::program_options;

/// One option (or section) of the file that the holdfast config does not carry over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The section as written, e.g. `program:web`.
    pub section: String,
    /// 1-based line of the option (of the header, for a whole section).
    pub line: usize,
    /// `None` for a whole section.
    pub option: Option<String>,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.option {
            Some(option) => write!(
                f,
                "line {}: [{}] {option}: {}",
                self.line, self.section, self.reason
            ),
            None => write!(f, "line {}: [{}]: {}", self.line, self.section, self.reason),
        }
    }
}

/// A value supervisord itself would refuse, or that cannot become a holdfast service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ImportError {
    pub line: usize,
    pub message: String,
}

impl ImportError {
    pub fn at(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// What supervisord would know when it reads the file: `%(here)s`, `%(ENV_X)s`,
/// `%(host_node_name)s`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The directory of the file.
    pub here: PathBuf,
    pub env: BTreeMap<String, String>,
    pub host_node_name: String,
}

/// The result of an import: the holdfast config text and what it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub toml: String,
    pub report: Vec<Finding>,
}

/// Converts a supervisord.conf (`text`, named `origin` in the generated header).
pub fn import(text: &str, origin: &str, ctx: &Context) -> Result<Imported, ImportError> {
    let ini = ini::parse(text).map_err(|e| ImportError::at(e.line, e.message))?;
    sections::convert(&ini, origin, ctx)
}

#[cfg(test)]
mod tests;
