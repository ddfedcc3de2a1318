//! One service across a re-execution of holdfast (`holdfast upgrade --self`): what the
//! old image hands over and how the new one puts the service back in the state it had.
//!
//! `Instant`s do not survive `execve` as values, so every time is carried as a span
//! relative to the moment of the snapshot (how long ago a run was spawned, how long a
//! backoff still has to go). Deadlines derived from the spec (start timeout, watchdog,
//! health probes) are re-armed from the resumed times; the start limit begins anew.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::unix::Pid;

use super::{AfterStop, FailReason, RunId, Service, Start, State, Watchdog};
use crate::health::Monitor;
use crate::model::{ExitStatus, Readiness, ServiceKind, ServiceName};

/// What one service was at the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub service: ServiceName,
    pub state: ResumedState,
    /// Automatic restarts performed, for `status`.
    pub restarts: u32,
    /// Consecutive failures, for the next backoff delay.
    pub attempt: u32,
    /// The last exit and how long before the snapshot it happened.
    pub last_exit: Option<(ExitStatus, Duration)>,
    /// The build the service runs (services with `[upgrade]`).
    pub build: Option<PathBuf>,
    /// Environment set by an `exit_codes` restart action.
    pub env_overrides: BTreeMap<String, String>,
    /// The last `STATUS=` text of the current run.
    pub status_text: Option<String>,
}

/// The state of a service at the snapshot, in spans instead of instants.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumedState {
    Stopped,
    /// Waiting for its dependencies: started again (waiting again if they still are not
    /// up) once every service is back.
    Waiting,
    /// The restart is due after `remaining` (zero: at once).
    Backoff {
        remaining: Duration,
    },
    Failed(FailReason),
    /// A run whose processes live on: they are holdfast's children still.
    Live(LiveRun),
}

/// A run that was starting or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRun {
    pub run: RunId,
    /// The spawned process, leader of the run's process group.
    pub group: Pid,
    /// The main process when it is not the group leader.
    pub main_pid: Option<Pid>,
    /// How long before the snapshot it was spawned.
    pub up_for: Duration,
    pub phase: LivePhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivePhase {
    /// Not yet up for `start_secs`; `ready`: its readiness condition was met.
    Starting {
        ready: bool,
    },
    Running,
}

impl Service {
    /// What this service hands over, or why it cannot be handed over now: a state in the
    /// middle of a transition (a stop, a rollout, a draining run) is not carried across.
    pub(in crate::supervisor) fn snapshot(&self, now: Instant) -> Result<Resumed, String> {
        let name = self.name();
        if self.rollout.is_some() {
            return Err(format!("an upgrade of {name} is under way"));
        }
        // A run that survived SIGKILL is given up on: nothing waits for it.
        if self.draining.iter().any(|d| d.deadline.is_some()) {
            return Err(format!("an earlier run of {name} is still draining"));
        }
        let state = match &self.state {
            State::Stopped => ResumedState::Stopped,
            // Observed again from scratch: the upstream is asked anew.
            State::Waiting | State::Observed(_) => ResumedState::Waiting,
            State::Backoff { until } => ResumedState::Backoff {
                remaining: until.saturating_duration_since(now),
            },
            State::Failed { reason } => ResumedState::Failed(reason.clone()),
            State::Starting {
                run,
                pid,
                spawned,
                main_pid,
                start,
            } => {
                // Its pidfile is awaited by the shell, from the spawn on: a new image
                // would not know to read it.
                if matches!(self.spec.kind, ServiceKind::Forking { .. }) {
                    return Err(format!("{name} is starting its daemon (forking)"));
                }
                // The read end of its readiness pipe stays with the old image.
                if !start.ready && matches!(self.spec.ready, Readiness::Fd(_)) {
                    return Err(format!("{name} is starting (waits for its readiness fd)"));
                }
                ResumedState::Live(LiveRun {
                    run: *run,
                    group: *pid,
                    main_pid: *main_pid,
                    up_for: now.saturating_duration_since(*spawned),
                    phase: LivePhase::Starting { ready: start.ready },
                })
            }
            State::Running {
                run,
                pid,
                spawned,
                main_pid,
                ..
            } => ResumedState::Live(LiveRun {
                run: *run,
                group: *pid,
                main_pid: *main_pid,
                up_for: now.saturating_duration_since(*spawned),
                phase: LivePhase::Running,
            }),
            State::Launching { .. } => return Err(format!("{name} is being spawned")),
            State::Stopping { .. } => return Err(format!("{name} is stopping")),
        };
        Ok(self.resumed(state, now))
    }

    /// What a holdfast started after this one was killed makes of this service when its
    /// state cannot be carried as it is (see [`Service::snapshot`]): stopped if it was
    /// being stopped for good, otherwise started again at once (the processes it had
    /// are stopped first); `None` for one being removed by a reload.
    pub(in crate::supervisor) fn fallback(&self, now: Instant) -> Option<Resumed> {
        let state = match &self.state {
            State::Stopping {
                then: AfterStop::Remove,
                ..
            } => return None,
            State::Stopping {
                then: AfterStop::Stay,
                ..
            } => ResumedState::Stopped,
            _ => ResumedState::Backoff {
                remaining: Duration::ZERO,
            },
        };
        Some(self.resumed(state, now))
    }

    fn resumed(&self, state: ResumedState, now: Instant) -> Resumed {
        Resumed {
            service: self.name().clone(),
            state,
            restarts: self.restarts,
            attempt: self.attempt,
            last_exit: self
                .last_exit
                .map(|(status, at)| (status, now.saturating_duration_since(at))),
            build: self.build.clone(),
            env_overrides: self.env_overrides.clone(),
            status_text: self.status_text.clone(),
        }
    }

    /// Puts the service back in the state `resumed` describes. A waiting service stays
    /// stopped: the core starts it again.
    pub(in crate::supervisor) fn resume(&mut self, resumed: Resumed, now: Instant) {
        self.restarts = resumed.restarts;
        self.attempt = resumed.attempt;
        self.last_exit = resumed
            .last_exit
            .map(|(status, ago)| (status, now.checked_sub(ago).unwrap_or(now)));
        if resumed.build.is_some() {
            self.build = resumed.build;
        }
        self.env_overrides = resumed.env_overrides;
        self.status_text = resumed.status_text;
        // holdfast never runs, backs off or fails an observed service: one that did was
        // taken over before, and stays holdfast's.
        if !matches!(resumed.state, ResumedState::Stopped | ResumedState::Waiting) {
            self.runner = super::Runner::Holdfast;
            // No answer of the old image's watch can reach this one, and the core
            // never issues run 0: any later watch differs from it.
            self.watch_upstream(RunId(0), None, now);
        }
        let state = match resumed.state {
            ResumedState::Stopped | ResumedState::Waiting => State::Stopped,
            ResumedState::Backoff { remaining } => State::Backoff {
                until: crate::clock::later(now, remaining),
            },
            ResumedState::Failed(reason) => State::Failed { reason },
            ResumedState::Live(live) => self.live_state(live, now),
        };
        let spawned = state.live().map(|(_, _, spawned)| spawned);
        self.enter(state, now);
        // A fresh health history: probes start over from the resumed spawn.
        self.health = spawned.and_then(|spawned| {
            let monitor = Monitor::new(self.spec.health.as_ref()?, spawned);
            Some(monitor)
        });
    }

    /// The starting or running state of a live run, its deadlines counted from its
    /// spawn (start timeout) or from now (the watchdog gets a full interval: keep-alives
    /// sent while holdfast re-executed were not read).
    fn live_state(&self, live: LiveRun, now: Instant) -> State {
        let spawned = now.checked_sub(live.up_for).unwrap_or(now);
        match live.phase {
            LivePhase::Starting { ready } => State::Starting {
                run: live.run,
                pid: live.group,
                spawned,
                main_pid: live.main_pid,
                start: Start {
                    ready: ready || self.spec.ready == Readiness::None,
                    deadline: self.spec.start_timeout.deadline(spawned),
                    watchdog: self.spec.watchdog,
                    forker: None,
                },
            },
            LivePhase::Running => {
                let mut watchdog = Watchdog {
                    interval: self.spec.watchdog,
                    deadline: None,
                };
                watchdog.arm(now);
                State::Running {
                    run: live.run,
                    pid: live.group,
                    spawned,
                    main_pid: live.main_pid,
                    watchdog,
                }
            }
        }
    }
}
