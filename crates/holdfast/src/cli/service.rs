//! `holdfast start|stop|restart TARGET...` and `holdfast shutdown`: send the requests and
//! print what the daemon says happens next. Targets are names, `all` or `@group`
//! (see [`super::targets`]).
//!
//! Errors are printed here (as a miette report) and turned into the documented exit code
//! (see [`super::exit`]), instead of being returned, so `main` cannot flatten them all to
//! a generic failure.

use std::path::Path;
use std::process::ExitCode;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{Reply, Request};
use crate::model::ServiceName;

pub fn start(socket: &Path, targets: &[String]) -> miette::Result<ExitCode> {
    each(socket, targets, |name| Request::Start { name })
}

pub fn stop(socket: &Path, targets: &[String]) -> miette::Result<ExitCode> {
    each(socket, targets, |name| Request::Stop { name })
}

pub fn restart(socket: &Path, targets: &[String]) -> miette::Result<ExitCode> {
    each(socket, targets, |name| Request::Restart { name })
}

/// Expands the targets, then sends one request per service; every service is tried and
/// the exit code is the first failure's.
fn each(
    socket: &Path,
    targets: &[String],
    request: impl Fn(ServiceName) -> Request,
) -> miette::Result<ExitCode> {
    let names = match super::targets::expand(socket, targets) {
        Ok(names) => names,
        Err(e) => return Ok(report(e)),
    };
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let result = accepted(socket, request(name))?;
        if code == ExitCode::SUCCESS {
            code = result;
        }
    }
    Ok(code)
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
