//! Replacing the running build with a new one without a gap: a rollout.
//!
//! The new run starts beside the one that serves; once it is up, the old run gets its
//! stop signal and drains; once the old one is gone, the new one bakes. A failure before
//! the old run was told to stop puts the old run back in place (it never stopped
//! serving); a failure later starts the old build again beside (or after) the failed one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::unix::{Pid, Signal};

use super::{
    Cause, Drain, Effect, Escalation, FollowUp, KILL_WAIT, MainProcess, Policy, RunId, Service,
    State, Watchdog,
};
use crate::clock::later;
use crate::health::HealthState;
use crate::model::ExitStatus;
use crate::supervisor::event::EventKind;

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
    /// `old`: `None` once the old run exited on its own meanwhile (or for a rollback
    /// that starts the old build after the failed one is gone).
    Starting { old: Option<Serving> },
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

/// What a rollout makes of the end of its new run.
pub(super) enum Rollback {
    /// The rollback took over: the restart policy has nothing to decide.
    Handled(Vec<Effect>),
    /// The rollback's own run failed: these effects, then the restart policy (which
    /// restarts the old build).
    Then(Vec<Effect>),
}

impl Service {
    /// Begins rolling the running service out to `to`: the fresh `run` starts beside the
    /// serving one. The core checked that the service runs and has a build. `back`: this
    /// rollout restores an earlier build (a canary failed), for that reason.
    pub(super) fn upgrade(
        &mut self,
        run: RunId,
        to: PathBuf,
        back: Option<String>,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(serving) = self.running_as_serving() else {
            return Vec::new();
        };
        let Some(from) = self.build.replace(to.clone()) else {
            return Vec::new();
        };
        self.rollout = Some(Rollout {
            from: from.clone(),
            to: to.clone(),
            phase: Phase::Starting { old: Some(serving) },
            since: now,
            back,
        });
        let mut effects = vec![self.emit(EventKind::UpgradeStarted { from, to })];
        effects.extend(self.launch(run, now));
        effects
    }

    /// A service that does not run takes `to` as the build of its next start (no
    /// rollout: nothing serves that could be kept).
    pub(super) fn switch_build(&mut self, to: PathBuf) -> Vec<Effect> {
        self.build = Some(to.clone());
        vec![self.emit(EventKind::Upgraded { build: to })]
    }

    /// The running run, as what a rollout keeps serving beside a new one.
    fn running_as_serving(&self) -> Option<Serving> {
        match self.state {
            State::Running {
                run,
                pid,
                spawned,
                main_pid,
                watchdog,
            } => Some(Serving {
                run,
                pid,
                spawned,
                main_pid,
                watchdog,
            }),
            _ => None,
        }
    }

    fn drain_time(&self) -> Duration {
        self.spec
            .upgrade
            .as_ref()
            .map_or(Duration::ZERO, |u| u.drain)
    }

    fn bake_time(&self) -> Duration {
        self.spec
            .upgrade
            .as_ref()
            .map_or(Duration::ZERO, |u| u.bake)
    }

    /// The runs whose processes may be alive: the current one, the old one of a
    /// rollout and the draining ones. While more than one is, a signal or a liveness
    /// check must not go by the service's cgroup, which holds them all.
    pub fn live_runs(&self) -> impl Iterator<Item = RunId> + '_ {
        (self.run().into_iter())
            .chain(self.old_serving().map(|old| old.run))
            .chain(self.draining.iter().map(|d| d.run))
    }

    /// The old run of a starting rollout, still serving.
    fn old_serving(&self) -> Option<Serving> {
        match &self.rollout {
            Some(Rollout {
                phase: Phase::Starting { old },
                ..
            }) => *old,
            _ => None,
        }
    }

    /// Some earlier run is still being stopped (or still serves): the service is not
    /// done, whatever its state says.
    pub(super) fn has_runs_to_wait_for(&self) -> bool {
        self.old_serving().is_some() || self.draining.iter().any(|d| d.deadline.is_some())
    }

    /// The old run exited on its own while the new one was starting: it is a draining
    /// run now, its leftovers stopped like any run's, and a failure of the new run can
    /// no longer put it back.
    pub(super) fn serving_exited(
        &mut self,
        run: RunId,
        status: ExitStatus,
        group_alive: bool,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        let old = self.old_serving().filter(|old| old.run == run)?;
        if let Some(Rollout {
            phase: Phase::Starting { old: slot },
            ..
        }) = &mut self.rollout
        {
            *slot = None;
        }
        let pid = old.main_pid.unwrap_or(old.pid);
        let mut effects = vec![self.emit(EventKind::Exited { run, pid, status })];
        if group_alive {
            let deadline = self.spec.stop.timeout.deadline(now);
            effects.extend(self.drain_old(old, MainProcess::Exited(status), deadline));
        }
        Some(effects)
    }

    /// The new run is up (just promoted to running): the old run is told to stop and
    /// drains; a rollback is complete once the restored build is up. A new run that is
    /// already UNHEALTHY never takes over.
    pub(super) fn rollout_up(&mut self, now: Instant) -> Vec<Effect> {
        let Some(Rollout {
            phase: Phase::Starting { old },
            back,
            ..
        }) = &self.rollout
        else {
            return Vec::new();
        };
        let (old, back) = (*old, back.clone());
        let unhealthy = self.health().map(|h| h.decay().state()) == Some(HealthState::Unhealthy);
        if back.is_none() && unhealthy {
            let reason = "was unhealthy when it came up".to_owned();
            return match old {
                Some(old) => self.swap_back(old, reason, now),
                None => self.roll_back_live(reason, now).unwrap_or_default(),
            };
        }
        let mut effects = Vec::new();
        if let Some(old) = old {
            let drain = self.drain_time();
            effects.push(self.emit(EventKind::Draining {
                run: old.run,
                pid: old.main_pid.unwrap_or(old.pid),
                drain,
            }));
            effects.extend(self.drain_old(old, MainProcess::Alive, Some(later(now, drain))));
        }
        let rollout = self.rollout.as_mut().expect("matched above");
        rollout.since = now;
        if let Some(reason) = back {
            let (build, from) = (rollout.to.clone(), rollout.from.clone());
            self.rollout = None;
            effects.push(self.emit(EventKind::RolledBack {
                build,
                from,
                reason,
            }));
            return effects;
        }
        match old {
            Some(old) => rollout.phase = Phase::Draining { old: old.run },
            None => effects.extend(self.bake(now)),
        }
        effects
    }

    /// The new run came up unhealthy while the old one still served: the old one is
    /// the running run again, the new one is stopped.
    fn swap_back(&mut self, old: Serving, reason: String, now: Instant) -> Vec<Effect> {
        let Some(rollout) = self.rollout.take() else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        if let Some(new) = self.running_as_serving() {
            let deadline = self.spec.stop.timeout.deadline(now);
            effects.extend(self.drain_old(new, MainProcess::Alive, deadline));
        }
        self.build = Some(rollout.from.clone());
        self.reinstate(old, now);
        effects.push(self.emit(EventKind::RolledBack {
            build: rollout.from,
            from: rollout.to,
            reason,
        }));
        effects
    }

    /// The stop signal to `old` (an earlier run), which keeps its processes until
    /// `deadline` (then SIGKILL).
    fn drain_old(
        &mut self,
        old: Serving,
        main: MainProcess,
        deadline: Option<Instant>,
    ) -> Vec<Effect> {
        self.draining.push(Drain {
            run: old.run,
            group: old.pid,
            pid: old.main_pid.unwrap_or(old.pid),
            main,
            deadline,
            escalation: Escalation::Graceful,
        });
        self.signal_awake(old.run, old.pid, self.spec.stop.signal)
            .to_vec()
    }

    /// The old run is gone: watch the new one for `bake`.
    fn bake(&mut self, now: Instant) -> Vec<Effect> {
        let bake = self.bake_time();
        let Some(rollout) = &mut self.rollout else {
            return Vec::new();
        };
        rollout.phase = Phase::Baking {
            until: later(now, bake),
        };
        rollout.since = now;
        vec![self.emit(EventKind::Baking { bake })]
    }

    /// When the rollout or a draining run next needs a tick. A bake only ends while the
    /// new run runs (one being stopped ends in a rollback instead).
    pub(super) fn rollout_deadline(&self) -> Option<Instant> {
        let bake = match (&self.rollout, &self.state) {
            (
                Some(Rollout {
                    phase: Phase::Baking { until },
                    ..
                }),
                State::Running { .. },
            ) => Some(*until),
            _ => None,
        };
        (self.draining.iter().filter_map(|d| d.deadline))
            .chain(bake)
            .min()
    }

    /// Time passed: escalate draining runs that overstay, move a rollout whose old run
    /// is gone on to its bake, and finish a bake that passed -- only while the new run
    /// runs: one being stopped for a failure is rolled back once it is gone.
    pub(super) fn rollout_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = self.drain_tick(now);
        effects.extend(self.rollout_progress(now));
        let running = matches!(self.state, State::Running { .. });
        if let Some(Rollout {
            phase: Phase::Baking { until },
            to,
            ..
        }) = &self.rollout
            && *until <= now
            && running
        {
            let build = to.clone();
            self.rollout = None;
            effects.push(self.emit(EventKind::Upgraded { build }));
        }
        effects
    }

    /// A draining run past its deadline gets SIGKILL; one that survives that too is
    /// no longer waited for.
    fn drain_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        for at in 0..self.draining.len() {
            let drain = self.draining[at];
            if drain.deadline.is_none_or(|d| d > now) {
                continue;
            }
            let scope = self.kill_scope;
            match drain.escalation {
                // A draining run is not hung: it never gets the dump signal.
                Escalation::Dumping { .. } | Escalation::Graceful => {
                    let slot = &mut self.draining[at];
                    slot.escalation = Escalation::Killed;
                    slot.deadline = Some(later(now, KILL_WAIT));
                    effects.push(self.emit(EventKind::Escalated {
                        pid: drain.pid,
                        scope,
                    }));
                    effects.push(self.signal_run(drain.run, drain.group, Signal::SIGKILL));
                }
                Escalation::Killed => {
                    self.draining[at].deadline = None;
                    effects.push(self.emit(EventKind::StopAbandoned {
                        pid: drain.pid,
                        scope,
                    }));
                }
            }
        }
        effects
    }

    /// After any order: a draining old run that is gone (or given up on) lets a running
    /// new run bake; a service removed while earlier runs drained is forgotten once
    /// they are gone.
    pub(super) fn rollout_progress(&mut self, now: Instant) -> Vec<Effect> {
        if self.forget_when_drained && !self.has_runs_to_wait_for() {
            self.forget_when_drained = false;
            self.follow_up = Some(FollowUp::Forget);
            return vec![
                self.emit(EventKind::Removed),
                Effect::Remove {
                    service: self.spec.name.clone(),
                },
            ];
        }
        let Some(Rollout {
            phase: Phase::Draining { old },
            ..
        }) = self.rollout
        else {
            return Vec::new();
        };
        let waiting = (self.draining.iter()).any(|d| d.run == old && d.deadline.is_some());
        if waiting || !matches!(self.state, State::Running { .. }) {
            return Vec::new();
        }
        self.bake(now)
    }

    /// The new run of a rollout ended (`cause`) instead of serving: roll back. Before
    /// the old run was told to stop, it simply serves on as the running run; later, the
    /// old build starts again. `None` when no rollout is under way or the daemon shuts
    /// down (then the restart policy decides, as for any run).
    pub(super) fn roll_back_on_end(&mut self, cause: &Cause, now: Instant) -> Option<Rollback> {
        if self.policy == Policy::Suspended {
            return None;
        }
        let rollout = self.rollout.take()?;
        if let Some(back) = rollout.back {
            return Some(Rollback::Then(self.restore_failed(
                rollout.to,
                rollout.from,
                format!("{back}; then the old build failed too: {cause}"),
                rollout.phase,
                now,
            )));
        }
        let reason = cause.to_string();
        self.build = Some(rollout.from.clone());
        if let Phase::Starting { old: Some(old) } = rollout.phase {
            self.reinstate(old, now);
            return Some(Rollback::Handled(vec![self.emit(EventKind::RolledBack {
                build: rollout.from,
                from: rollout.to,
                reason,
            })]));
        }
        // The old run is gone or going: start the old build again, at once.
        self.relaunch_old_build(rollout, None, reason, now);
        Some(Rollback::Handled(Vec::new()))
    }

    /// Turns `rollout` around: a rollback to its old build, whose new run the core
    /// launches at once, beside `serving` (the failed build's run, still serving) if any.
    fn relaunch_old_build(
        &mut self,
        rollout: Rollout,
        serving: Option<Serving>,
        reason: String,
        now: Instant,
    ) {
        self.rollout = Some(Rollout {
            from: rollout.to,
            to: rollout.from,
            phase: Phase::Starting { old: serving },
            since: now,
            back: Some(reason),
        });
        self.enter(State::Stopped, now);
        self.follow_up = Some(FollowUp::Start);
    }

    /// A rollback's own run (of `good`) failed: the rollout is over, said so; the bad
    /// run, if it still serves, is stopped, and the restart policy restarts `good`.
    fn restore_failed(
        &mut self,
        good: PathBuf,
        bad: PathBuf,
        reason: String,
        phase: Phase,
        now: Instant,
    ) -> Vec<Effect> {
        self.build = Some(good.clone());
        let mut effects = vec![self.emit(EventKind::RolledBack {
            build: good,
            from: bad,
            reason,
        })];
        if let Phase::Starting { old: Some(bad_run) } = phase {
            let deadline = self.spec.stop.timeout.deadline(now);
            effects.extend(self.drain_old(bad_run, MainProcess::Alive, deadline));
        }
        effects
    }

    /// `old` is the running run again.
    fn reinstate(&mut self, old: Serving, now: Instant) {
        let mut watchdog = old.watchdog;
        watchdog.arm(now);
        let running = State::Running {
            run: old.run,
            pid: old.pid,
            spawned: old.spawned,
            main_pid: old.main_pid,
            watchdog,
        };
        self.enter(running, now);
        self.health = (self.spec.health.as_ref()).map(|h| crate::health::Monitor::new(h, now));
    }

    /// The new run turned UNHEALTHY after it took over: the old build starts beside it,
    /// and it drains once the old one is up. `None` when no rollout is under way, it
    /// is a rollback already or the new run is not up yet (the health action and the
    /// ready timeout apply as usual).
    pub(super) fn roll_back_unhealthy(
        &mut self,
        run: RunId,
        reason: String,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        let rollout = self.rollout.as_ref()?;
        let took_over = !matches!(rollout.phase, Phase::Starting { .. });
        if rollout.back.is_some() || !took_over || self.run() != Some(run) {
            return None;
        }
        self.roll_back_live(reason, now)
    }

    /// The new run serves but must go: the old build starts beside it.
    fn roll_back_live(&mut self, reason: String, now: Instant) -> Option<Vec<Effect>> {
        if self.policy == Policy::Suspended {
            return None;
        }
        let serving = self.running_as_serving()?;
        let rollout = self.rollout.take()?;
        self.build = Some(rollout.from.clone());
        self.relaunch_old_build(rollout, Some(serving), reason, now);
        Some(Vec::new())
    }

    /// A stop by hand, a restart, a removal or the shutdown ends the rollout. Before the
    /// new run was up, the old build stays the service's (the new one never proved
    /// itself) and an old run still serving is stopped too; later, the new build stays.
    pub(super) fn abandon_rollout(&mut self, now: Instant) -> Vec<Effect> {
        let Some(rollout) = self.rollout.take() else {
            return Vec::new();
        };
        let Phase::Starting { old } = rollout.phase else {
            return vec![self.emit(EventKind::Upgraded { build: rollout.to })];
        };
        // A rollback under way already knows its build and why.
        let (good, bad, reason) = match rollout.back {
            Some(reason) => (rollout.to, rollout.from, reason),
            None => (
                rollout.from,
                rollout.to,
                "the service was stopped during the rollout".to_owned(),
            ),
        };
        self.build = Some(good.clone());
        let mut effects = vec![self.emit(EventKind::RolledBack {
            build: good,
            from: bad,
            reason,
        })];
        if let Some(old) = old {
            let deadline = self.spec.stop.timeout.deadline(now);
            effects.extend(self.drain_old(old, MainProcess::Alive, deadline));
        }
        effects
    }
}
