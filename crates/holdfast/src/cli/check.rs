//! `holdfast check FILE`: validate a config without running it.
//!
//! Prints a one-line summary on success; otherwise every problem as a miette report on
//! stderr (coloured only when stderr is a terminal) and exits with `INVALID_CONFIG`.
//! Besides the schema, it checks what would fail at spawn on this machine (see
//! `config::load`). A config without services is valid but warned about on stderr.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::exit;
use crate::config::{self, ConfigError};

pub fn run(file: &Path) -> miette::Result<ExitCode> {
    match config::load(file) {
        Ok(plan) => {
            let names: Vec<&str> = plan.services.keys().map(|name| name.as_str()).collect();
            let noun = if names.len() == 1 {
                "service"
            } else {
                "services"
            };
            let list = if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            };
            if names.is_empty() {
                eprintln!(
                    "warning: {}: no [service.*] tables, holdfast would supervise nothing",
                    file.display()
                );
            }
            println!("ok: {}: {} {noun}{list}", file.display(), names.len());
            Ok(ExitCode::SUCCESS)
        }
        // Not a config problem: the generic error path names the file and exits 1.
        Err(err @ ConfigError::Read { .. }) => Err(err.into()),
        Err(err) => {
            eprint!("{}", err.render_terminal(std::io::stderr().is_terminal()));
            Ok(ExitCode::from(exit::INVALID_CONFIG))
        }
    }
}
