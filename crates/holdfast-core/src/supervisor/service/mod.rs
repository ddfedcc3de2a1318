//! The state machine of one service: restart policy, start limit, backoff, stopping.
//!
//! Pure: no I/O, no clock reads. [`Service::handle`] takes one [`Order`] and `now` and
//! returns effects; the supervisor core is its only owner and caller, and reads it back
//! through the accessors below. Every state that waits for time exposes it through
//! [`Service::deadline`], so the shell needs exactly one timer for everything.

mod arbitration;
mod cause;
mod exit;
mod observed;
mod resume;
mod start;
mod state;
mod stop;
mod takeover;
mod upgrade;
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::unix::Pid;

use super::Effect;
use super::event::EventKind;
use crate::health::{Monitor, ProbeOutcome};
use crate::model::{ExitStatus, ServiceKind, ServiceName, ServiceSpec};
use crate::notify::NotifyMsg;
use crate::unix::ReapSeq;

pub(crate) use self::cause::round_ms;
pub use self::cause::{Cause, FailReason, SpawnFailure};
pub use self::observed::{
    Arbitrated, Arbitration, Observation, Reach, Runner, UpstreamReport, UpstreamState,
    UpstreamView, Verdict,
};
pub use self::resume::{LivePhase, LiveRun, Resumed, ResumedState};
pub use self::state::{
    AfterStop, Drain, Escalation, ForkerExit, KillScope, MainProcess, RunId, Start, State, Watchdog,
};
pub use self::upgrade::{Phase, Rollout, Serving};
pub use self::watch::{Duplicate, Watch};

/// How long to wait for a group to disappear after SIGKILL before giving up on it.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// Delay before retrying a spawn that failed because holdfast itself was short of
/// descriptors, memory or processes (see [`SpawnFailure::HoldfastResources`]).
pub const RESOURCE_RETRY: Duration = Duration::from_secs(1);

/// What the supervisor core asks of one service: the outside world's inputs for its
/// runs, and the core's own decisions (launch, wait, stop, reconfigure).
#[derive(Debug, Clone, PartialEq)]
pub(in crate::supervisor) enum Order {
    /// Begin a spawn; `run` is fresh (the core owns the counter).
    Launch(RunId),
    /// A start was requested while `after` dependencies are still coming up.
    WaitFor(Vec<ServiceName>),
    Spawned {
        run: RunId,
        pid: Pid,
    },
    SpawnFailed {
        run: RunId,
        error: SpawnFailure,
    },
    Exited {
        run: RunId,
        status: ExitStatus,
        group_alive: bool,
    },
    GroupEmpty {
        run: RunId,
    },
    ProbeResult {
        run: RunId,
        outcome: ProbeOutcome,
    },
    Ready {
        run: RunId,
    },
    Notify {
        run: RunId,
        msgs: Vec<NotifyMsg>,
        alive_at: ReapSeq,
    },
    Adopted {
        run: RunId,
        pid: Pid,
        alive_at: ReapSeq,
    },
    /// Time passed: act on an expired deadline, start a due health probe.
    Tick,
    /// Stop by hand (`Stay`), for a restart (`Start`), or for removal (`Remove`). Only
    /// for a service that is not already stopped or failed.
    Stop(AfterStop),
    /// A start by hand forgets earlier failures: the start limit begins anew.
    ResetFailures,
    /// `reset-failed`: a fresh start limit; a failed (not quarantined) service is
    /// stopped again.
    ResetFailed,
    /// A new definition; it takes effect at the next spawn.
    Reconfigure(Arc<ServiceSpec>),
    /// Roll the running service out to the build `to`, starting it as `run`.
    Upgrade {
        run: RunId,
        to: std::path::PathBuf,
        back: Option<String>,
    },
    /// A service that does not run starts `to` next time.
    SwitchBuild(std::path::PathBuf),
    /// Stopping because a reload removed it, the service is back in the plan: do `then`
    /// once stopped instead of being forgotten.
    CancelRemoval(AfterStop),
    /// The daemon shuts down: no run ends in a restart from now on, and a service that
    /// waits (for dependencies or a backoff) stops.
    Shutdown,
    /// What the upstream of an observed service said at one sync.
    Upstream {
        run: RunId,
        report: Box<UpstreamReport>,
    },
    /// The shell took the observed service over: `adopted` is the upstream's process it
    /// now holds, `None` when there was none to adopt (then holdfast starts it).
    TakenOver {
        run: RunId,
        adopted: Option<Pid>,
    },
    /// What the old upstream of a taken-over service said at one sync of watch `run`.
    UpstreamWatch {
        run: RunId,
        report: Box<UpstreamReport>,
    },
}

/// What a service needs from the core after an order: private to the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::supervisor) enum FollowUp {
    /// Launch it with a fresh run (a backoff expired, a restart's stop finished).
    Start,
    /// Its stop for removal finished: forget it.
    Forget,
}

/// Whether an ended run goes to the restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Apply,
    /// The daemon is shutting down: every run ends in `stopped`.
    Suspended,
}

/// One service and its history.
#[derive(Debug)]
pub struct Service {
    spec: Arc<ServiceSpec>,
    state: State,
    /// When the current state was entered.
    since: Instant,
    /// Automatic restarts performed, for `status`.
    restarts: u32,
    /// Consecutive failures, for exponential backoff; reset after a stable run.
    attempt: u32,
    /// Times of recent automatic restarts, for the start limit.
    restart_times: VecDeque<Instant>,
    last_exit: Option<(ExitStatus, Instant)>,
    rng: fastrand::Rng,
    /// Health of the current run (reset at each spawn), when the service has probes.
    health: Option<Monitor>,
    /// Environment set by an `exit_codes` restart action, laid over `spec.env` until a
    /// clean start or a start by hand.
    env_overrides: BTreeMap<String, String>,
    /// Last `STATUS=` text of the current run (reset at each launch).
    status_text: Option<String>,
    /// Why the last run ended, when it was holdfast's decision (not ready, watchdog).
    last_cause: Option<Cause>,
    /// What ended the run before the last automatic restart (kept across runs).
    last_restart: Option<Cause>,
    /// What the stop signals reach, as events tell it.
    kill_scope: KillScope,
    policy: Policy,
    follow_up: Option<FollowUp>,
    /// Earlier runs whose processes may outlive them (oldest first).
    draining: Vec<Drain>,
    /// The build the next run executes (services with `[upgrade]`): the spec's pinned
    /// build until an upgrade moves the service on.
    build: Option<std::path::PathBuf>,
    /// The rollout under way, if any.
    rollout: Option<Rollout>,
    /// Removed by a reload while earlier runs still drained: forgotten once they are gone.
    forget_when_drained: bool,
    /// Who runs it: the upstream of a `managed_by` service until holdfast takes over.
    runner: Runner,
    /// What holdfast last did about the upstream (observed services), for `status`.
    arbitrated: Option<Arbitrated>,
    /// Taken over: the old upstream, still asked (see `watch.rs`).
    watch: Option<Watch>,
}

impl Service {
    pub(in crate::supervisor) fn new(
        spec: Arc<ServiceSpec>,
        now: Instant,
        seed: u64,
        kill_scope: KillScope,
    ) -> Self {
        Self {
            state: State::Stopped,
            since: now,
            restarts: 0,
            attempt: 0,
            restart_times: VecDeque::new(),
            last_exit: None,
            rng: fastrand::Rng::with_seed(seed),
            health: None,
            env_overrides: BTreeMap::new(),
            status_text: None,
            last_cause: None,
            last_restart: None,
            kill_scope,
            policy: Policy::Apply,
            follow_up: None,
            draining: Vec::new(),
            build: spec.upgrade.as_ref().map(|u| u.build.clone()),
            rollout: None,
            forget_when_drained: false,
            runner: Runner::of(&spec),
            arbitrated: None,
            watch: None,
            spec,
        }
    }

    /// Says how stop signals reach this service's processes (a fact of the shell).
    pub(in crate::supervisor) fn set_kill_scope(&mut self, scope: KillScope) {
        self.kill_scope = scope;
    }

    /// The one entry point: applies `order` and returns what the shell must do. What
    /// the core must do next is left for [`Service::take_follow_up`].
    pub(in crate::supervisor) fn handle(&mut self, order: Order, now: Instant) -> Vec<Effect> {
        let mut effects = self.apply(order, now);
        effects.extend(self.rollout_progress(now));
        effects
    }

    fn apply(&mut self, order: Order, now: Instant) -> Vec<Effect> {
        if let State::Observed(_) = self.state {
            return self.observed_order(order, now);
        }
        match order {
            Order::Launch(run) => self.launch(run, now),
            Order::WaitFor(on) => {
                self.enter(State::Waiting, now);
                vec![self.emit(EventKind::Waiting { on })]
            }
            Order::Spawned { run, pid } => self.spawned(run, pid, now),
            Order::SpawnFailed { run, error } => self.spawn_failed(run, error, now),
            Order::Exited {
                run,
                status,
                group_alive,
            } => self.exited(run, status, group_alive, now),
            Order::GroupEmpty { run } => self.group_empty(run, now),
            Order::ProbeResult { run, outcome } => self.probe_result(run, outcome, now),
            Order::Ready { run } => self.ready(run),
            Order::Notify {
                run,
                msgs,
                alive_at,
            } => self.notify(run, msgs, alive_at, now),
            Order::Adopted { run, pid, alive_at } => self.adopted(run, pid, alive_at),
            Order::Tick => {
                let mut effects = self.tick(now);
                effects.extend(self.rollout_tick(now));
                effects.extend(self.probe_if_due(now));
                effects.extend(self.watch_tick(now));
                effects
            }
            Order::Stop(then) => {
                let mut effects = self.abandon_rollout(now);
                let removal = then == AfterStop::Remove;
                effects.extend(self.stop(then, now));
                if removal && self.is_inactive_state() && self.has_runs_to_wait_for() {
                    self.forget_when_drained = true;
                }
                effects
            }
            Order::Upgrade { run, to, back } => self.upgrade(run, to, back, now),
            Order::SwitchBuild(to) => self.switch_build(to),
            Order::ResetFailures => {
                self.reset_failures();
                Vec::new()
            }
            Order::ResetFailed => self.reset_failed(now),
            Order::Reconfigure(spec) => {
                // The build an upgrade moved the service to stays, unless the program
                // itself changed (then the new config's build is the one to run).
                let program = |s: &ServiceSpec| (s.command.first().cloned(), s.upgrade.is_some());
                if program(&spec) != program(&self.spec) {
                    self.build = spec.upgrade.as_ref().map(|u| u.build.clone());
                }
                // A service that becomes observed is the upstream's from its next start
                // (a taken-over one stays holdfast's while its upstream is the same).
                if spec.managed_by.as_ref().map(|m| &m.upstream)
                    != self.spec.managed_by.as_ref().map(|m| &m.upstream)
                {
                    self.runner = Runner::of(&spec);
                    self.watch = None;
                }
                self.spec = spec;
                Vec::new()
            }
            Order::CancelRemoval(then) => {
                if let State::Stopping { then: slot, .. } = &mut self.state {
                    *slot = then;
                } else if std::mem::take(&mut self.forget_when_drained) && then == AfterStop::Start
                {
                    self.follow_up = Some(FollowUp::Start);
                }
                Vec::new()
            }
            Order::UpstreamWatch { run, report } => self.watch_report(run, *report, now),
            // Only an observed service hears from an upstream.
            Order::Upstream { .. } | Order::TakenOver { .. } => Vec::new(),
            Order::Shutdown => {
                self.policy = Policy::Suspended;
                self.watch = None;
                let mut effects = self.abandon_rollout(now);
                effects.extend(match self.state {
                    State::Waiting | State::Backoff { .. } => self.stop(AfterStop::Stay, now),
                    _ => Vec::new(),
                });
                effects
            }
        }
    }

    /// What the core must do for this service after the last order, once.
    pub(in crate::supervisor) fn take_follow_up(&mut self) -> Option<FollowUp> {
        self.follow_up.take()
    }

    /// Whether the core has a follow-up to take (see [`Service::take_follow_up`]).
    pub(in crate::supervisor) fn has_follow_up(&self) -> bool {
        self.follow_up.is_some()
    }

    pub fn name(&self) -> &ServiceName {
        &self.spec.name
    }
    pub fn spec(&self) -> &Arc<ServiceSpec> {
        &self.spec
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn since(&self) -> Instant {
        self.since
    }
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    pub fn last_exit(&self) -> Option<(ExitStatus, Instant)> {
        self.last_exit
    }
    /// Why the last run was ended by holdfast (not ready in time, watchdog timeout).
    pub fn last_cause(&self) -> Option<&Cause> {
        self.last_cause.as_ref()
    }
    /// What ended the run that the last (or the pending) automatic restart replaces.
    pub fn last_restart(&self) -> Option<&Cause> {
        self.last_restart.as_ref()
    }

    /// Earlier runs whose processes may still be alive beside the current one.
    pub fn draining(&self) -> &[Drain] {
        &self.draining
    }

    /// The build the current (or next) run executes, for a service with `[upgrade]`.
    pub fn build(&self) -> Option<&std::path::Path> {
        self.build.as_deref()
    }

    /// The rollout under way, if any.
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    /// What holdfast last did about the upstream of an observed service.
    pub fn arbitrated(&self) -> Option<&Arbitrated> {
        self.arbitrated.as_ref()
    }

    /// The observation of a service the upstream runs, while holdfast observes it.
    pub fn observation(&self) -> Option<&Observation> {
        match &self.state {
            State::Observed(observation) => Some(observation),
            _ => None,
        }
    }

    /// Health of the current run, while it is starting or running (or observed).
    pub fn health(&self) -> Option<&Monitor> {
        match self.state {
            State::Starting { .. } | State::Running { .. } | State::Observed(_) => {
                self.health.as_ref()
            }
            _ => None,
        }
    }

    /// Environment overrides in force for the next spawns (see `ExitAction::Restart`).
    pub fn env_overrides(&self) -> &BTreeMap<String, String> {
        &self.env_overrides
    }

    /// The earliest time this service needs the core's attention: its state deadline
    /// or its next health probe.
    pub fn wakeup(&self) -> Option<Instant> {
        if let State::Observed(observation) = &self.state {
            return self.observed_wakeup(observation);
        }
        let probe = self.health().and_then(Monitor::due);
        [
            self.deadline(),
            probe,
            self.rollout_deadline(),
            self.watch_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The current run, if a process of this service may be alive.
    pub fn run(&self) -> Option<RunId> {
        match self.state {
            State::Launching { run } => Some(run),
            _ => self.state.live().map(|(run, _, _)| run),
        }
    }

    /// The main pid while one exists: the spawned process (also the process group id),
    /// unless `MAINPID=` or a forking service's pidfile named another.
    pub fn pid(&self) -> Option<Pid> {
        match &self.state {
            State::Starting {
                start, main_pid, ..
            } if start.forker.is_some() => *main_pid,
            State::Starting { pid, main_pid, .. } | State::Running { pid, main_pid, .. } => {
                Some(main_pid.unwrap_or(*pid))
            }
            State::Stopping {
                pid,
                main_pid,
                main: MainProcess::Alive,
                ..
            } => Some(main_pid.unwrap_or(*pid)),
            _ => None,
        }
    }

    /// The main process named by `MAINPID=` or a pidfile (not the spawned one), while a
    /// run is live.
    pub fn named_main_pid(&self) -> Option<Pid> {
        self.state.main_pid()
    }

    /// When the current run was spawned, while any of its processes may be alive.
    pub fn spawned_at(&self) -> Option<Instant> {
        self.state.live().map(|(_, _, spawned)| spawned)
    }

    /// The `STATUS=` text of the current run; a run that ended says nothing any more.
    pub fn status_text(&self) -> Option<&str> {
        self.run().and(self.status_text.as_deref())
    }

    /// Process group of the current run, while any of its processes may be alive.
    pub fn group(&self) -> Option<Pid> {
        self.state.live().map(|(_, pid, _)| pid)
    }

    /// An autostart service on its way up: holdfast's own start-up (its `READY=1`) is
    /// not over. An observed service never holds it (waiting for its dependencies
    /// either, before its observation begins): holdfast does not start it, and
    /// an upstream slow to (a unit stuck activating) must not keep holdfast un-ready;
    /// its `after` dependents still wait for it, and they do hold it.
    pub fn holds_start_up(&self) -> bool {
        self.spec.autostart && !self.observes() && self.is_coming_up()
    }

    /// On the way to running: a dependent must wait for it. A stop that is followed by
    /// a start (a restart by hand or for a reload) or by the restart policy (leftovers
    /// of a crashed run being cleaned up) counts: the service is coming back. An
    /// observed service is up once its upstream shows it running.
    pub fn is_coming_up(&self) -> bool {
        match &self.state {
            State::Observed(observation) => observation.is_coming_up(),
            state => matches!(
                state,
                State::Waiting
                    | State::Launching { .. }
                    | State::Starting { .. }
                    | State::Backoff { .. }
                    | State::Stopping {
                        then: AfterStop::Start | AfterStop::Exit { .. },
                        ..
                    }
            ),
        }
    }

    /// Any process of the service may be alive.
    pub fn is_active(&self) -> bool {
        self.run().is_some()
    }

    /// Stopped or failed, and no earlier run still serves or is still being stopped:
    /// nothing to wait for.
    pub fn is_inactive(&self) -> bool {
        self.is_inactive_state() && !self.has_runs_to_wait_for()
    }

    fn is_inactive_state(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed { .. })
    }

    /// When this service next needs a `tick`, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Starting { spawned, .. } if self.is_up() => {
                Some(crate::clock::later(*spawned, self.spec.start_secs))
            }
            // `None` with `start_timeout = "infinity"`: it waits for readiness for ever.
            State::Starting { start, .. } => start.deadline,
            State::Running { watchdog, .. } => watchdog.deadline,
            State::Backoff { until } => Some(*until),
            State::Stopping { deadline, .. } => *deadline,
            _ => None,
        }
    }

    /// Ready in every required sense: the readiness condition is met and a forking
    /// service's daemon has been adopted. Only a starting run can still be short of it.
    pub fn is_up(&self) -> bool {
        match &self.state {
            State::Starting {
                start, main_pid, ..
            } => {
                let adopted = match self.spec.kind {
                    ServiceKind::Simple => true,
                    ServiceKind::Forking { .. } => main_pid.is_some(),
                };
                start.ready && adopted
            }
            State::Running { .. } => true,
            _ => false,
        }
    }

    fn enter(&mut self, state: State, now: Instant) {
        self.state = state;
        self.since = now;
    }

    fn emit(&self, kind: EventKind) -> Effect {
        Effect::emit(&self.spec.name, kind)
    }

    /// A start by hand forgets earlier failures: the start limit begins anew.
    fn reset_failures(&mut self) {
        self.attempt = 0;
        self.restart_times.clear();
        // A manual start also resets what exit-code actions changed.
        self.env_overrides.clear();
    }

    /// `reset-failed` (systemctl's): the start limit begins anew and a failed service is
    /// stopped again. A quarantined one stays: only a release (or a start) ends that.
    fn reset_failed(&mut self, now: Instant) -> Vec<Effect> {
        self.attempt = 0;
        self.restart_times.clear();
        match &self.state {
            State::Failed {
                reason: FailReason::Quarantined(_),
            } => Vec::new(),
            State::Failed { .. } => {
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::FailureReset)]
            }
            _ => Vec::new(),
        }
    }
}
