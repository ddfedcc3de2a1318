//! `holdfast signal TARGET... SIGNAL` and `holdfast reset-failed [TARGET...]`.

use std::path::Path;
use std::process::ExitCode;

use super::service::report;
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
    let names = match super::targets::expand(socket, targets, super::targets::Grain::Instance) {
        Ok(names) => names,
        Err(e) => return Ok(report(e)),
    };
    // Every service is tried; the exit code is the first failure's.
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let request = Request::Signal {
            name,
            signal: signal.clone(),
            all,
        };
        let result = accepted(socket, request);
        if code == ExitCode::SUCCESS {
            code = result;
        }
    }
    Ok(code)
}

pub fn reset_failed(socket: &Path, targets: &[String]) -> miette::Result<ExitCode> {
    let names = if targets.is_empty() {
        Vec::new()
    } else {
        match super::targets::expand(socket, targets, super::targets::Grain::Instance) {
            Ok(names) => names,
            Err(e) => return Ok(report(e)),
        }
    };
    Ok(accepted(socket, Request::ResetFailed { names }))
}

/// Sends a request answered by `Accepted` and prints the daemon's message.
fn accepted(socket: &Path, request: Request) -> ExitCode {
    match client::call(socket, request) {
        Ok(Reply::Accepted { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(other) => report(ClientError::Protocol(format!(
            "holdfast answered with an unexpected reply: {other:?}"
        ))),
        Err(e) => report(e),
    }
}
