//! `holdfast upgrade --self`: the daemon re-executes the binary now at its path, in
//! place; this waits until the new image answers (its `execs` count went up, same pid)
//! or the old one reports that the exec failed.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::exit;
use super::service::report;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{DaemonStatus, Reply, Request};
use crate::model::Timeout;

/// Pause between two looks at a daemon that is re-executing (it answers again within
/// milliseconds: it only sets itself up anew).
const RETRY: Duration = Duration::from_millis(50);

pub fn run(socket: &Path, no_block: bool, timeout: Timeout) -> miette::Result<ExitCode> {
    let before = match daemon(socket) {
        Ok(daemon) => daemon,
        Err(e) => return Ok(report(e)),
    };
    // The daemon's pid as seen from here (it may run in another pid namespace): whether
    // it still lives tells a daemon between two images from one that died.
    let pid = match client::daemon_pid(socket) {
        Ok(pid) => nix::unistd::Pid::from_raw(pid),
        Err(e) => return Ok(report(e)),
    };
    match client::call(socket, Request::UpgradeSelf) {
        Ok(Reply::Accepted { message }) => println!("{message}"),
        Ok(other) => {
            return Ok(report(ClientError::Protocol(format!(
                "holdfast answered with an unexpected reply: {other:?}"
            ))));
        }
        // The connection closed before the answer: the exec came first. The new image
        // tells.
        Err(ClientError::Protocol(_)) => {}
        Err(e) => return Ok(report(e)),
    }
    if no_block {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = timeout.duration().map(|d| Instant::now() + d);
    loop {
        // A daemon between two images does not answer: look again.
        match daemon(socket) {
            Ok(now) => {
                if let Some(code) = outcome(&before, &now) {
                    return Ok(code);
                }
            }
            Err(_) if nix::sys::signal::kill(pid, None).is_err() => {
                eprintln!("holdfast: the daemon (pid {pid}) exited instead of re-executing");
                return Ok(ExitCode::from(exit::FAILURE));
            }
            Err(_) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!("holdfast: timed out waiting for the re-executed daemon to answer");
            return Ok(ExitCode::from(exit::TIMED_OUT));
        }
        std::thread::sleep(RETRY);
    }
}

fn daemon(socket: &Path) -> Result<DaemonStatus, ClientError> {
    match client::call(socket, Request::Status)? {
        Reply::Status(status) => Ok(status.daemon),
        other => Err(ClientError::Protocol(format!(
            "holdfast answered with an unexpected reply: {other:?}"
        ))),
    }
}

/// What `now` says of the upgrade asked of `before`, once it says anything.
fn outcome(before: &DaemonStatus, now: &DaemonStatus) -> Option<ExitCode> {
    if now.pid != before.pid {
        eprintln!(
            "holdfast: pid {} answers now, not pid {} re-executed: the daemon was restarted",
            now.pid, before.pid
        );
        return Some(ExitCode::from(exit::FAILURE));
    }
    if now.execs > before.execs {
        println!(
            "holdfast {} runs as pid {} (re-execution {}); every service kept running",
            now.version, now.pid, now.execs
        );
        return Some(ExitCode::SUCCESS);
    }
    let error = now.reexec_error.as_ref()?;
    eprintln!(
        "holdfast: upgrade --self failed: {error}; holdfast {} runs on as it was",
        now.version
    );
    Some(ExitCode::from(exit::FAILURE))
}
