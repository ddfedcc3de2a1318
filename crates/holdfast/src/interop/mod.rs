//! Conversions between holdfast's config and the other supervisors' formats: systemd
//! units ([`systemd`]) and supervisord's INI ([`supervisord`]).
//!
//! Pure text transformations: the validated model in, text out (and supervisord text in,
//! holdfast TOML out). The CLI glue (`cli::gen`, `cli::import`) reads and writes files.

pub mod supervisord;
pub mod systemd;
