//! `holdfast signal TARGET... SIGNAL` and `holdfast reset-failed [TARGET...]`.

use std::path::Path;
use std::process::ExitCode;

use super::service::{each, report};
use crate::config::value::parse_signal_arg;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request};

pub fn signal(
    socket: &Path,
    targets: &[String],
    signal: &str,
    all: bool,
) -> miette::Result<ExitCode> {
    // Checked here too, so a typo is reported before any service is signalled.
    let signal = match parse_signal_arg(signal) {
        Ok(signal) => signal.as_str().to_owned(),
        Err(e) => {
            return Ok(report(ClientError::Daemon(ControlError {
                kind: ErrorKind::BadRequest,
                message: format!("{}: {}", e.label, e.help),
            })));
        }
    };
    each(socket, targets, |name| Request::Signal {
        name,
        signal: signal.clone(),
        all,
    })
}

pub fn reset_failed(socket: &Path, targets: &[String]) -> miette::Result<ExitCode> {
    let names = if targets.is_empty() {
        Vec::new()
    } else {
        match super::targets::expand(socket, targets) {
            Ok(names) => names,
            Err(e) => return Ok(report(e)),
        }
    };
    match client::call(socket, Request::ResetFailed { names }) {
        Ok(Reply::Accepted { message }) => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => Ok(report(ClientError::Protocol(format!(
            "holdfast answered with an unexpected reply: {other:?}"
        )))),
        Err(e) => Ok(report(e)),
    }
}
