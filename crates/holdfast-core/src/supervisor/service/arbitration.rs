//! What holdfast makes of an observed service's upstream: whether it answers (and
//! whether holdfast gave up on it), and the restart or takeover it asked for.

use std::time::Instant;

use crate::unix::Pid;

/// Failed syncs in a row (spanning `arbiter_timeout`) before holdfast decides the
/// upstream is gone: one lost answer is not a dead upstream.
pub const GONE_AFTER_FAILURES: u32 = 3;

/// Whether the upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Reachable,
    /// It stopped answering at `since`, `failures` syncs in a row; decided once
    /// `arbiter_timeout` passed with `GONE_AFTER_FAILURES` of them.
    Unreachable {
        since: Instant,
        error: String,
        failures: u32,
        verdict: Verdict,
    },
    /// Given up on, but a takeover found the upstream's own process alive (a hung or
    /// restarting supervisord): no takeover now, the last view stands. Only a sync's
    /// answer shows it reachable again; failed syncs decide again (a takeover, with no
    /// second report).
    Alive {
        error: String,
    },
}

/// What holdfast made of an upstream that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet given up on: a dependent still waits for the service.
    Pending,
    /// Given up on and reported (and taken over, if allowed): it holds nothing up.
    GivenUp,
    /// Given up on before, and a takeover called off (`Reach::Alive`): still holds
    /// nothing up; the takeover is tried again once the failures decide anew.
    Retrying,
}

impl Reach {
    /// Given up on: an `after` dependent is not held back by it.
    pub(super) fn given_up(&self) -> bool {
        match self {
            Reach::Reachable => false,
            Reach::Alive { .. } => true,
            Reach::Unreachable { verdict, .. } => *verdict != Verdict::Pending,
        }
    }
}

/// A restart holdfast asked of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arbitration {
    Idle,
    /// Asked; a new start must show by `deadline`.
    Restarting {
        deadline: Instant,
    },
    /// `deadline` passed before a sync asked after it answered: that sync decides
    /// (a new start: restarted; none: timed out), so the timeout is never judged on a
    /// view older than the deadline.
    Overdue {
        deadline: Instant,
    },
    /// Taking over: waiting for the shell to say whether it adopted the process.
    TakingOver,
    /// Back to the upstream (after a takeover) because its last answer showed its own
    /// copy running: the first answer of the new observation decides. That copy
    /// running: observed, as before the takeover. Gone since: holdfast starts
    /// `command` again, or a start would leave nobody running the service. An upstream
    /// that answers nothing decisive (busy, stopping) by `deadline` is simply observed.
    Rejoining {
        deadline: Instant,
    },
}

/// What holdfast last did about the upstream, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arbitrated {
    RestartRequested,
    /// The upstream restarted the service: its new pid.
    Restarted(Option<Pid>),
    RestartTimedOut,
    Unreachable(String),
    /// holdfast runs it now: the adopted pid, or `None` when `command` was started.
    TakenOver(Option<Pid>),
}

impl std::fmt::Display for Arbitrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arbitrated::RestartRequested => f.write_str("restart requested"),
            Arbitrated::Restarted(Some(pid)) => write!(f, "restarted by upstream (pid {pid})"),
            Arbitrated::Restarted(None) => f.write_str("restarted by upstream"),
            Arbitrated::RestartTimedOut => f.write_str("restart request timed out"),
            Arbitrated::Unreachable(error) => write!(f, "upstream unreachable: {error}"),
            Arbitrated::TakenOver(Some(pid)) => write!(f, "taken over (adopted pid {pid})"),
            Arbitrated::TakenOver(None) => f.write_str("taken over (command started)"),
        }
    }
}
