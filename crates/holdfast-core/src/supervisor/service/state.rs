//! The states of one service, each holding what is true only in it: a starting run
//! its readiness and start deadline, a running one its watchdog, a stopping one its
//! escalation. A fact cannot outlive the state it belongs to.

use std::fmt;
use std::time::{Duration, Instant};

use crate::unix::{Pid, Signal};

use super::cause::{Cause, FailReason};
use crate::model::ExitStatus;

/// Identifies one spawn of one service. Exits and timers carry it; stale ones (from an
/// earlier run) are dropped, so a late event can never act on a newer process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {}", self.0)
    }
}

/// How a stop reaches the processes of a run: through the service's cgroup (every
/// process, also those that left the process group) or through its process groups
/// (when cgroups are unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillScope {
    Cgroup,
    #[default]
    ProcessGroup,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running: never started, stopped by hand, or exited without restart.
    Stopped,
    /// Start requested; waiting until the `after` dependencies are up.
    Waiting,
    /// fork/exec in progress (the shell answers with `spawned` or `spawn_failed` before it
    /// handles anything else, so this state is never observed from outside).
    Launching { run: RunId },
    /// Spawned, not yet up for `start_secs` (or not yet ready).
    Starting {
        run: RunId,
        /// The spawned process: the process group leader.
        pid: Pid,
        spawned: Instant,
        /// The main process when it is not the group leader (`MAINPID=`, or the daemon a
        /// forking service left behind).
        main_pid: Option<Pid>,
        start: Start,
    },
    Running {
        run: RunId,
        pid: Pid,
        spawned: Instant,
        main_pid: Option<Pid>,
        watchdog: Watchdog,
    },
    /// The stop signal went to the process group; waiting for the group to empty.
    Stopping {
        run: RunId,
        pid: Pid,
        /// When the run was spawned: its processes have been up since then.
        spawned: Instant,
        main_pid: Option<Pid>,
        main: MainProcess,
        escalation: Escalation,
        /// When to escalate (or give up, once killed); `None` with `stop.timeout =
        /// "infinity"`: the graceful signal is all the service gets.
        deadline: Option<Instant>,
        then: AfterStop,
    },
    /// Waiting to restart.
    Backoff { until: Instant },
    /// Gave up; stays here until started by hand.
    Failed { reason: FailReason },
    /// Run by another supervisor (`managed_by`): holdfast follows what it reports.
    Observed(Box<super::Observation>),
}

/// What a starting run has shown so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The readiness condition was met (`Readiness::None`: at spawn).
    pub ready: bool,
    /// When a run that is not ready fails its start (`EXTEND_TIMEOUT_USEC=` moves it);
    /// `None` with `start_timeout = "infinity"`.
    pub deadline: Option<Instant>,
    /// Keep-alive interval to arm once running (the spec's, or `WATCHDOG_USEC=`).
    pub watchdog: Option<Duration>,
    /// Forking services: the spawned process exited 0 before a daemon was adopted.
    pub forker: Option<ForkerExit>,
}

/// The launcher of a forking service exited (expectedly, with 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkerExit {
    pub status: ExitStatus,
    /// Other members of its process group are still alive.
    pub group_alive: bool,
}

/// The keep-alive countdown of a running run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watchdog {
    pub interval: Option<Duration>,
    /// When a missing keep-alive becomes a watchdog timeout.
    pub deadline: Option<Instant>,
}

impl Watchdog {
    /// Starts (or restarts) the countdown from `now`.
    pub fn arm(&mut self, now: Instant) {
        self.deadline = self
            .interval
            .map(|interval| crate::clock::later(now, interval));
    }
}

/// An earlier run of the service whose processes may still be alive beside the current
/// run: its stop was abandoned (they survived SIGKILL), or it drains while a newer run
/// serves. Its exits are its own: they never touch the current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub run: RunId,
    /// Its process group.
    pub group: Pid,
    /// Its main process (the group leader unless another was named).
    pub pid: Pid,
    pub main: MainProcess,
    /// While holdfast still stops it (the old run of a rollout, told to finish its
    /// connections): when to escalate, then when to give up on it. `None`: nobody
    /// waits for it any more (it survived SIGKILL).
    pub deadline: Option<Instant>,
    pub escalation: Escalation,
}

/// Whether the main process of a stopping service has already been reaped (the rest of
/// its process group may outlive it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainProcess {
    Alive,
    Exited(ExitStatus),
}

/// Escalation as types: the graceful signal first, then SIGKILL; with a `dump_signal`,
/// a hung run gets it first and a while to print its stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// The dump signal went out; at the deadline `next` follows (the graceful signal),
    /// or SIGKILL when `None` (the stop timeout had passed).
    Dumping {
        next: Option<Signal>,
    },
    Graceful,
    Killed,
}

/// What happens once a stop completes.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterStop {
    /// Stay stopped (stop by hand, shutdown).
    Stay,
    /// Start again (restart by hand, changed definition).
    Start,
    /// Forget the service (removed by a reload).
    Remove,
    /// The main process exited on its own and its leftover processes were cleaned up;
    /// now apply the restart policy to that exit.
    Exit { cause: Cause, early: bool },
}

impl State {
    /// The run whose processes may be alive, with its group leader and spawn time.
    pub fn live(&self) -> Option<(RunId, Pid, Instant)> {
        match *self {
            State::Starting {
                run, pid, spawned, ..
            }
            | State::Running {
                run, pid, spawned, ..
            }
            | State::Stopping {
                run, pid, spawned, ..
            } => Some((run, pid, spawned)),
            _ => None,
        }
    }

    /// The main process named apart from the group leader, while a run is live.
    pub fn main_pid(&self) -> Option<Pid> {
        match *self {
            State::Starting { main_pid, .. }
            | State::Running { main_pid, .. }
            | State::Stopping { main_pid, .. } => main_pid,
            _ => None,
        }
    }
}
