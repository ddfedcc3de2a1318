//! Reaping: holdfast's own SIGCHLD-driven `waitid`/`waitpid` loop.
//!
//! Invariants:
//! - This is the only code in holdfast that waits for children: it reaps *every* child
//!   (services, their orphaned descendants when holdfast is a subreaper or PID 1, and
//!   children that failed before exec). `tokio::process` and `std::process::Child::wait`
//!   must not be used anywhere, or exit statuses would be stolen in both directions.
//! - SIGCHLD coalesces, so each wake-up reaps until no exited child is left.
//! - Each exit is reported with the child's process group, read from `/proc` while the
//!   child is still a zombie (`WNOWAIT`), because after reaping the pid may be reused.

use std::io;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::model::ExitStatus;

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    /// The child's process group at the time it exited; `None` if `/proc` could not
    /// tell (it is read from the zombie just before reaping, so this is rare).
    pub pgid: Option<Pid>,
    pub status: ExitStatus,
}

/// Spawns the reaper task on the current tokio runtime. It reaps once at start (children
/// that exited before it existed) and then on every SIGCHLD, sending each exit on `tx`.
/// The task ends when `tx`'s receiver is dropped.
///
/// The SIGCHLD handler is installed before this returns, so no exit after `start` is
/// missed. Must be called from within a tokio runtime.
pub fn start(tx: UnboundedSender<Reaped>) -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            if reap_all(&tx).is_err() {
                return;
            }
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Makes holdfast the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so
/// a service's double-forked processes stay visible and are reaped here. A no-op as
/// PID 1, which already is everyone's reaper.
pub fn become_subreaper() -> io::Result<()> {
    if nix::unistd::getpid() == Pid::from_raw(1) {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// The receiver is gone; nobody listens for exits any more.
struct Closed;

/// Reaps until no exited child is left (`ECHILD` or nothing ready).
fn reap_all(tx: &UnboundedSender<Reaped>) -> Result<(), Closed> {
    while let Some(reaped) = reap_one() {
        tx.send(reaped).map_err(|_| Closed)?;
    }
    Ok(())
}

/// Reaps one exited child, if any. Loops internally over the rare child that vanishes
/// between peeking and reaping.
fn reap_one() -> Option<Reaped> {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let peeked = match waitid(Id::All, flags) {
            Ok(status) => status,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all. Anything else (EINVAL) would repeat forever.
            Err(errno) => {
                if errno != Errno::ECHILD {
                    tracing::error!(%errno, "waitid failed; reaping stops until the next SIGCHLD");
                }
                return None;
            }
        };
        let Some(pid) = peeked.pid() else {
            return None; // StillAlive: children exist, none has exited.
        };
        // Still a zombie (WNOWAIT): its /proc entry, with the group, is still there.
        let pgid = super::proc_stat(pid).ok().map(|stat| stat.pgid);
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                if let Some(status) = exit_status(status) {
                    return Some(Reaped { pid, pgid, status });
                }
                // Not an exit (cannot happen without WUNTRACED/WCONTINUED): look again.
            }
            // Someone else reaped it in between, against the rules: move on.
            Err(Errno::ECHILD | Errno::EINTR) => {}
            Err(errno) => {
                tracing::error!(%errno, %pid, "waitpid failed");
                return None;
            }
        }
    }
}

fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Exited(code)),
        WaitStatus::Signaled(_, signal, core_dumped) => Some(ExitStatus::Signaled {
            signal,
            core_dumped,
        }),
        _ => None,
    }
}
