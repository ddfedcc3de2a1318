//! `holdfast logs NAME [-n N] [-f]`: prints the end of a service's captured output and,
//! with `-f`, follows it across rotations until Ctrl-C (which ends the process).
//!
//! The daemon only tells where the log file is (`status`); the file itself is read
//! directly, so a busy daemon never streams logs. A closed stdout (`| head`) ends the
//! command quietly.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use crate::cli::exit;
use crate::control::client;
use crate::control::protocol::{Reply, Request, Status};
use crate::logs::{Follower, tail};
use crate::model::ServiceName;

pub fn run(
    socket: &Path,
    name: &ServiceName,
    lines: usize,
    follow: bool,
) -> miette::Result<ExitCode> {
    let status = match client::call(socket, Request::Status) {
        Ok(Reply::Status(status)) => status,
        Err(error) => return Ok(super::service::report(error)),
        Ok(other) => {
            return Err(miette!(
                "unexpected reply from holdfast to status: {other:?}"
            ));
        }
    };
    let path = log_path(&status, name)?;
    let mut out = io::stdout().lock();
    let written = if follow {
        print_and_follow(&path, lines, &mut out)
    } else {
        print_tail(&path, lines, &mut out)
    };
    match written {
        Ok(()) => Ok(ExitCode::from(exit::SUCCESS)),
        // The reader went away (`| head`): that is how such a pipeline ends.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::from(exit::SUCCESS)),
        Err(err) => Err(err).into_diagnostic(),
    }
}

/// Where the daemon writes `name`'s output.
fn log_path(status: &Status, name: &ServiceName) -> miette::Result<PathBuf> {
    status
        .services
        .iter()
        .find(|service| &service.name == name)
        .map(|service| PathBuf::from(&service.log))
        .ok_or_else(|| miette!("no service named \"{name}\""))
}

/// The last `lines` lines; nothing if the service has not written anything yet.
fn print_tail(path: &Path, lines: usize, out: &mut impl Write) -> io::Result<()> {
    let lines = match tail(path, lines) {
        Ok(lines) => lines,
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("failed to read log file \"{}\": {err}", path.display()),
            ));
        }
    };
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// The last `lines` lines, then every new one as it is written; returns only on error.
fn print_and_follow(path: &Path, lines: usize, out: &mut impl Write) -> io::Result<()> {
    let mut follower = Follower::open(path)?;
    for line in follower.backlog(lines)? {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let mut write_error = None;
    follower.run(
        |line| match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                write_error = Some(err);
                ControlFlow::Break(())
            }
        },
    )?;
    write_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{DaemonStatus, ServiceStatus};

    fn status_with(name: &str, log: &str) -> Status {
        Status {
            daemon: DaemonStatus {
                pid: 1,
                version: "0".into(),
                config: "/etc/holdfast/holdfast.toml".into(),
                uptime_ms: 0,
                shutting_down: false,
            },
            services: vec![ServiceStatus {
                name: ServiceName::new(name).unwrap(),
                state: "running".into(),
                pid: Some(42),
                since_ms: 0,
                uptime_ms: Some(0),
                restarts: 0,
                last_exit: None,
                reason: None,
                status_text: None,
                holding_up: Vec::new(),
                log: log.into(),
                health: None,
                env_overrides: Default::default(),
                memory_bytes: None,
                tasks: None,
                last_restart_reason: None,
            }],
        }
    }

    #[test]
    fn the_log_path_comes_from_the_daemon_status() {
        let status = status_with("web", "/var/log/holdfast/web.log");
        let path = log_path(&status, &ServiceName::new("web").unwrap()).unwrap();
        assert_eq!(path, PathBuf::from("/var/log/holdfast/web.log"));
    }

    #[test]
    fn an_unknown_service_is_an_error_naming_it() {
        let status = status_with("web", "/var/log/holdfast/web.log");
        let err = log_path(&status, &ServiceName::new("x").unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "no service named \"x\"");
    }

    #[test]
    fn a_service_without_output_yet_prints_nothing() {
        let mut out = Vec::new();
        print_tail(Path::new("/nonexistent/holdfast/web.log"), 10, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn the_last_lines_are_printed_one_per_line() {
        let dir = std::env::temp_dir().join(format!("holdfast-cli-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut out = Vec::new();
        print_tail(&path, 2, &mut out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "two\nthree\n");
    }
}
