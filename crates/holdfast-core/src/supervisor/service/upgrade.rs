//! Replacing the running build with a new one without a gap: a rollout.
//!
//! The new run starts beside the one that serves; once it is up, the old run gets its
//! stop signal and drains; once the old one is gone, the new one bakes. A failure before
//! the old run was told to stop puts the old run back in place (it never stopped
//! serving); a failure later starts the old build again beside (or after) the failed one.

use std::path::PathBuf;
use std::time::Instant;

use crate::unix::Pid;

use super::{RunId, Watchdog};

/// One rollout of a service, from the build it runs to a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The build that served when the rollout began.
    pub from: PathBuf,
    /// The build being rolled out (when rolling back: `from` again, see `back`).
    pub to: PathBuf,
    pub phase: Phase,
    /// When the phase began.
    pub since: Instant,
    /// `Some(reason)` once the rollout failed and the old build is being restored.
    pub back: Option<String>,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// The new run (the service's current run) starts while the old one serves.
    Starting { old: Serving },
    /// The new run is up; the old run got its stop signal and finishes its connections.
    Draining { old: RunId },
    /// The old run is gone; the new one is watched until `until`.
    Baking { until: Instant },
}

impl Phase {
    /// The phase's name, as `status` and `upgrade --status` show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Starting { .. } => "starting",
            Phase::Draining { .. } => "draining",
            Phase::Baking { .. } => "baking",
        }
    }
}

/// The old run while it still serves beside the starting new one: what it takes to put
/// it back as the service's running run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub run: RunId,
    /// Its process group.
    pub pid: Pid,
    pub spawned: Instant,
    pub main_pid: Option<Pid>,
    pub watchdog: Watchdog,
}
