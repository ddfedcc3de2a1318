//! `holdfast gen systemd`: the unit equivalent to a service's config ([`service`]), or
//! the unit that runs holdfast itself ([`self_unit`]).
//!
//! What systemd cannot express is never dropped silently: it is listed in a comment
//! block at the top of the unit ([`Unit::note`]).

pub mod escape;
mod self_unit;
mod service;

use std::fmt::Write as _;
use std::time::Duration;

pub use super::{GenError, Template};
pub use self_unit::{SelfInputs, self_unit};
pub use service::service_unit;

/// A generated unit: its file name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedUnit {
    pub file_name: String,
    pub text: String,
}

/// A unit being written: settings per section, and notes on what has no equivalent.
#[derive(Debug, Default)]
pub struct Unit {
    header: Vec<String>,
    notes: Vec<String>,
    unit: Vec<String>,
    service: Vec<String>,
    install: Vec<String>,
    trailer: Vec<String>,
}

/// The sections of a service unit.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    Unit,
    Service,
    Install,
}

impl Unit {
    /// A line of the leading comment that says where the unit came from.
    pub fn header(&mut self, line: impl Into<String>) {
        self.header.push(line.into());
    }

    /// Something of the config that the unit does not carry over.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    pub fn set(&mut self, section: Section, key: &str, value: impl AsRef<str>) {
        self.set_line(section, format!("{key}={}", value.as_ref()));
    }

    /// A comment inside a section (explaining the setting that follows).
    pub fn comment(&mut self, section: Section, text: &str) {
        self.set_line(section, format!("# {text}"));
    }

    fn set_line(&mut self, section: Section, line: String) {
        match section {
            Section::Unit => self.unit.push(line),
            Section::Service => self.service.push(line),
            Section::Install => self.install.push(line),
        }
    }

    /// Comment lines after the last section (a suggested companion unit).
    pub fn trailer(&mut self, line: impl Into<String>) {
        self.trailer.push(line.into());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "# {line}");
        }
        if !self.notes.is_empty() {
            out.push_str("#\n# Not carried over (systemd has no equivalent):\n");
            for note in &self.notes {
                let _ = writeln!(out, "#   - {note}");
            }
        }
        for (name, lines) in [
            ("Unit", &self.unit),
            ("Service", &self.service),
            ("Install", &self.install),
        ] {
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n[{name}]");
            lines.iter().for_each(|l| {
                let _ = writeln!(out, "{l}");
            });
        }
        if !self.trailer.is_empty() {
            out.push('\n');
            self.trailer.iter().for_each(|l| {
                let _ = writeln!(out, "# {l}");
            });
        }
        out
    }
}

/// A time span as systemd writes it: whole seconds as `5s`, else milliseconds.
pub fn timespan(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans_use_the_largest_exact_unit() {
        assert_eq!(timespan(Duration::from_secs(5)), "5s");
        assert_eq!(timespan(Duration::from_millis(250)), "250ms");
        assert_eq!(timespan(Duration::from_micros(1500)), "1500us");
        assert_eq!(timespan(Duration::ZERO), "0s");
    }
}
