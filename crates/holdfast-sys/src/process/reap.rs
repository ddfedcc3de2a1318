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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use holdfast_core::unix::Pid;
use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};

use crate::os::{core_pid, core_signal, nix_pid};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::model::ExitStatus;

pub use holdfast_core::unix::ReapSeq;

/// The number of the latest reap so far (0 before any). Read it *before* checking that a
/// pid is alive: that pid's own exit will be reaped with a greater number, while a process
/// that had the pid earlier was reaped with this one or less.
pub fn latest() -> ReapSeq {
    ReapSeq(REAPS.load(Ordering::SeqCst))
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
        match waitid(Id::Pid(nix_pid(pid)), flags) {
            Ok(_) => return Some(f()),
            Err(Errno::EINTR) => continue,
            // ECHILD: reaped already (or never ours).
            Err(_) => return None,
        }
    }
}

/// The exit of a process that is not holdfast's child (adopted after a restart, see
/// [`super::pidfd`]), numbered like a reap so that the process table orders it with the
/// others. Its exit status is whatever the pidfd could tell.
pub fn adopted_exit(pid: Pid, pgid: Option<Pid>, status: ExitStatus) -> Reaped {
    let _reaping = REAPING.lock().unwrap_or_else(PoisonError::into_inner);
    let seq = ReapSeq(REAPS.fetch_add(1, Ordering::SeqCst) + 1);
    Reaped {
        pid,
        seq,
        pgid,
        status,
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
    if crate::os::getpid() == Pid::from_raw(1) {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// The receiver is gone; nobody listens for exits any more.
struct Closed;

/// Reaps until no exited child is left (`ECHILD` or nothing ready).
fn reap_all(tx: &UnboundedSender<Reaped>) -> Result<(), Closed> {
    while reap_one(tx)? {}
    Ok(())
}

/// Reaping is paused (see [`pause`]).
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Stops reaping until [`unpause`]: a child that exits from now on stays a zombie, for
/// the next image of holdfast to reap (`holdfast upgrade --self`). When this returns,
/// every exit reaped before is already on the reaper's channel (each is sent while
/// [`REAPING`] is held), so none is lost between the two images.
pub fn pause() {
    let _reaping = REAPING.lock().unwrap_or_else(PoisonError::into_inner);
    PAUSED.store(true, Ordering::SeqCst);
}

/// Reaping goes on (the re-execution failed), starting with the children that exited
/// while it was paused: their SIGCHLD came and went, so the reaper is woken by hand.
pub fn unpause() {
    PAUSED.store(false, Ordering::SeqCst);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGCHLD);
}

/// Reaps one exited child, if any, and sends it on `tx`: whether one was. Loops
/// internally over the rare child that vanishes between peeking and reaping.
fn reap_one(tx: &UnboundedSender<Reaped>) -> Result<bool, Closed> {
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
                return Ok(false);
            }
        };
        let Some(pid) = peeked.pid().map(core_pid) else {
            return Ok(false); // StillAlive: children exist, none has exited.
        };
        // Still a zombie (WNOWAIT): its /proc entry, with the group, is still there.
        let pgid = super::proc_stat(pid).ok().map(|stat| stat.pgid);
        let _reaping = REAPING.lock().unwrap_or_else(PoisonError::into_inner);
        if PAUSED.load(Ordering::SeqCst) {
            return Ok(false);
        }
        // Numbered before the pid is freed (a number may go unused).
        let seq = ReapSeq(REAPS.fetch_add(1, Ordering::SeqCst) + 1);
        match waitpid(nix_pid(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                if let Some(status) = exit_status(status) {
                    let reaped = Reaped {
                        pid,
                        seq,
                        pgid,
                        status,
                    };
                    // Sent under the lock: see `pause`.
                    tx.send(reaped).map_err(|_| Closed)?;
                    return Ok(true);
                }
                // Not an exit (cannot happen without WUNTRACED/WCONTINUED): look again.
            }
            // Someone else reaped it in between, against the rules: move on.
            Err(Errno::ECHILD | Errno::EINTR) => {}
            Err(errno) => {
                tracing::error!(%errno, %pid, "waitpid failed");
                return Ok(false);
            }
        }
    }
}

fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Exited(code)),
        // nix reports only the standard signals, which all have a core name; anything
        // else would be reported the way a shell does, as exit code 128 + n.
        WaitStatus::Signaled(_, signal, core_dumped) => Some(match core_signal(signal) {
            Some(signal) => ExitStatus::Signaled {
                signal,
                core_dumped,
            },
            None => ExitStatus::Exited(128 + signal as i32),
        }),
        _ => None,
    }
}
