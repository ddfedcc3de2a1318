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
//! - Each reap is numbered ([`ReapSeq`]), the number taken before the pid is freed: a pid
//!   seen alive when the count was N is a different process from any reap numbered N or
//!   less, even if the number was reused since.
//! - Reaping holds [`REAPING`]: [`while_unreaped`] holds it too, so a caller can act on
//!   a child (signal its group) knowing the pid cannot be freed meanwhile.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::model::ExitStatus;

/// The number of a reap: reaps are numbered 1, 2, ... in the order they happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReapSeq(u64);

impl ReapSeq {
    /// The number of the latest reap so far (0 before any). Read it *before* checking
    /// that a pid is alive: that pid's own exit will be reaped with a greater number,
    /// while a process that had the pid earlier was reaped with this one or less.
    pub fn latest() -> ReapSeq {
        ReapSeq(REAPS.load(Ordering::SeqCst))
    }

    /// The number of the `n`th reap (tables of pids are tested with made-up reaps).
    pub const fn from_count(n: u64) -> ReapSeq {
        ReapSeq(n)
    }
}

/// Reaps so far (see [`ReapSeq`]).
static REAPS: AtomicU64 = AtomicU64::new(0);

/// Held while a child is reaped (the moment its pid is freed).
static REAPING: Mutex<()> = Mutex::new(());

/// Runs `f` if `pid` is a child that is not reaped yet (alive or a zombie), with reaping
/// held off until `f` returns: `pid`, and the process group it leads, cannot be freed
/// and reused meanwhile. `None` (without running `f`) once it was reaped.
pub fn while_unreaped<R>(pid: Pid, f: impl FnOnce() -> R) -> Option<R> {
    let _reaping = REAPING.lock().unwrap_or_else(PoisonError::into_inner);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(_) => return Some(f()),
            Err(Errno::EINTR) => continue,
            // ECHILD: reaped already (or never ours).
            Err(_) => return None,
        }
    }
}

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    /// When it was reaped, relative to other reaps.
    pub seq: ReapSeq,
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
        let (seq, reaped) = {
            let _reaping = REAPING.lock().unwrap_or_else(PoisonError::into_inner);
            // Numbered before the pid is freed (a number may go unused).
            let seq = ReapSeq(REAPS.fetch_add(1, Ordering::SeqCst) + 1);
            (seq, waitpid(pid, Some(WaitPidFlag::WNOHANG)))
        };
        match reaped {
            Ok(status) => {
                if let Some(status) = exit_status(status) {
                    return Some(Reaped {
                        pid,
                        seq,
                        pgid,
                        status,
                    });
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
