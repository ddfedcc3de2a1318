//! `holdfast start|stop|restart NAME` and `holdfast shutdown`: send one request and print
//! what the daemon says happens next.
//!
//! Errors are printed here (as a miette report) and turned into the documented exit code
//! (see [`super::exit`]), instead of being returned, so `main` cannot flatten them all to
//! a generic failure.

use std::path::Path;
use std::process::ExitCode;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{Reply, Request};
use crate::model::ServiceName;

pub fn start(socket: &Path, name: ServiceName) -> miette::Result<ExitCode> {
    accepted(socket, Request::Start { name })
}

pub fn stop(socket: &Path, name: ServiceName) -> miette::Result<ExitCode> {
    accepted(socket, Request::Stop { name })
}

pub fn restart(socket: &Path, name: ServiceName) -> miette::Result<ExitCode> {
    accepted(socket, Request::Restart { name })
}

pub fn shutdown(socket: &Path) -> miette::Result<ExitCode> {
    accepted(socket, Request::Shutdown)
}

/// Sends a request answered by `Accepted` and prints the daemon's message.
fn accepted(socket: &Path, request: Request) -> miette::Result<ExitCode> {
    match client::call(socket, request) {
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

/// Prints a client error as a miette report on stderr; returns its exit code.
pub(crate) fn report(error: ClientError) -> ExitCode {
    let code = error.exit_code();
    eprintln!("{:?}", miette::Report::new(error));
    ExitCode::from(code)
}
