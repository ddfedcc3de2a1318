//! Conversions between holdfast's config and the other supervisors' formats: systemd
//! units ([`systemd`]) and supervisord's INI ([`supervisord`]).
//!
//! Pure text transformations: the validated model in, text out (and supervisord text in,
//! holdfast TOML out). The CLI glue (`cli::gen`, `cli::import`) reads and writes files.

pub mod supervisord;
pub mod systemd;

use std::collections::BTreeMap;

/// Why a setting could not be written in the other supervisor's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    #[error("cannot write {setting}={value:?}: {why}")]
    Unrepresentable {
        setting: String,
        value: String,
        why: String,
    },
}

/// The config as written of an instanced service: its command and env with the
/// `{instance}` placeholders the validated (expanded) spec no longer has.
#[derive(Debug, Clone, Default)]
pub struct Template {
    pub count: u32,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}
