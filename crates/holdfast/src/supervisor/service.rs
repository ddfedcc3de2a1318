//! The state machine of one service: restart policy, start limit, backoff, stopping.
//!
//! Pure: no I/O, no clock reads. Each method takes `now` and returns effects. The
//! supervisor core is its only owner and caller. Every state that waits for time exposes
//! it through [`Service::deadline`], so the shell needs exactly one timer for everything.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Effect;
use super::event::{Event, EventKind};
use crate::clock::later;
use crate::health::{Monitor, ProbeOutcome};
use crate::model::{
    Backoff, ExitAction, ExitKey, ExitStatus, Readiness, RestartPolicy, ServiceKind, ServiceName,
    ServiceSpec, UnhealthyAction,
};
use crate::notify::NotifyMsg;
use crate::process::reap::ReapSeq;

/// How long to wait for a group to disappear after SIGKILL before giving up on it.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// Delay before retrying a spawn that failed because holdfast itself was short of
/// descriptors, memory or processes (see [`SpawnFailure::HoldfastResources`]).
pub const RESOURCE_RETRY: Duration = Duration::from_secs(1);

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
    /// Spawned, not yet up for `start_secs`.
    Starting {
        run: RunId,
        pid: Pid,
        spawned: Instant,
    },
    Running {
        run: RunId,
        pid: Pid,
        spawned: Instant,
    },
    /// The stop signal went to the process group; waiting for the group to empty.
    Stopping {
        run: RunId,
        pid: Pid,
        /// When the run was spawned: its processes have been up since then.
        spawned: Instant,
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
}

/// Whether the main process of a stopping service has already been reaped (the rest of
/// its process group may outlive it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainProcess {
    Alive,
    Exited(ExitStatus),
}

/// Escalation as types: the graceful signal first, then SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
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

#[derive(Debug, Clone, PartialEq)]
pub enum FailReason {
    StartLimitHit {
        restarts: u32,
        interval: Duration,
        last: Cause,
    },
    /// No restart configured and the exit was not clean (or too early).
    NoRestart(Cause),
    /// `[service.X.exit_codes]` says to stop and record the exit for review; only a
    /// start by hand (or `quarantine release`) brings the service back.
    Quarantined(Cause),
}

/// Why a spawn failed, which decides who is to blame for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnFailure {
    /// Something about the service (its program, user, directory, limits): a failed
    /// start like a crash, under its restart policy and start limit.
    Service(String),
    /// holdfast itself was short of descriptors, memory or processes (EMFILE, ENFILE,
    /// ENOMEM, EAGAIN while creating pipes or the child): not the service's fault. It is
    /// retried after [`RESOURCE_RETRY`], whatever its restart policy, without counting
    /// against its start limit, so that a passing shortage (a connection flood) cannot
    /// leave it failed for good.
    HoldfastResources(String),
}

impl fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnFailure::Service(error) => write!(f, "{error}"),
            SpawnFailure::HoldfastResources(error) => {
                write!(f, "{error} (holdfast is short of resources; retrying)")
            }
        }
    }
}

/// What ended a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    Exited(ExitStatus),
    /// Exited before it was running: before `start_secs` had passed, or before it was
    /// ready.
    ExitedEarly {
        status: ExitStatus,
        after: Duration,
    },
    SpawnFailed(String),
    /// The readiness condition was not met within `start_timeout` (or the pidfile of a
    /// forking service never named a live daemon).
    NotReady {
        timeout: Duration,
    },
    /// No `WATCHDOG=1` within the watchdog interval (or `WATCHDOG=trigger`).
    WatchdogTimeout {
        interval: Duration,
    },
    /// Stopped because its health probes made it UNHEALTHY (`unhealthy.action = "restart"`).
    Unhealthy {
        failures: u32,
        last_error: Option<String>,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Exited(status) => write!(f, "{status}"),
            Cause::ExitedEarly { status, after } => write!(
                f,
                "{status} after {} (before it was running)",
                humantime::format_duration(round_ms(*after))
            ),
            Cause::SpawnFailed(error) => write!(f, "spawn failed: {error}"),
            Cause::Unhealthy {
                failures,
                last_error,
            } => {
                write!(f, "unhealthy after {failures} failed probes")?;
                match last_error {
                    Some(error) => write!(f, ", last: {error}"),
                    None => Ok(()),
                }
            }
            Cause::NotReady { timeout } => write!(
                f,
                "not ready within {}",
                humantime::format_duration(round_ms(*timeout))
            ),
            Cause::WatchdogTimeout { interval } => write!(
                f,
                "watchdog timeout (no keep-alive within {})",
                humantime::format_duration(round_ms(*interval))
            ),
        }
    }
}

impl Cause {
    /// The typed reason `status` shows for a restart this cause led to.
    pub fn restart_reason(&self) -> super::answer::RestartReason {
        use super::answer::RestartReason;
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let exit = |status: &ExitStatus, early: bool| RestartReason::Exit {
            description: status.to_string(),
            code: status.code(),
            signal: status.signal().map(|s| s.as_str().to_owned()),
            early,
        };
        match self {
            Cause::Exited(status) => exit(status, false),
            Cause::ExitedEarly { status, .. } => exit(status, true),
            Cause::SpawnFailed(error) => RestartReason::SpawnError {
                error: error.clone(),
            },
            Cause::NotReady { timeout } => RestartReason::NotReady {
                timeout_ms: ms(timeout),
            },
            Cause::WatchdogTimeout { interval } => RestartReason::Watchdog {
                interval_ms: ms(interval),
            },
            Cause::Unhealthy {
                failures,
                last_error,
            } => RestartReason::Health {
                failures: *failures,
                last_error: last_error.clone(),
            },
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::StartLimitHit {
                restarts,
                interval,
                last,
            } => write!(
                f,
                "start limit hit: {restarts} restarts within {}, last {last}",
                humantime::format_duration(*interval)
            ),
            FailReason::NoRestart(cause) => write!(f, "{cause} (restart disabled)"),
            FailReason::Quarantined(cause) => write!(
                f,
                "quarantined after {cause}; `holdfast quarantine release` starts it again"
            ),
        }
    }
}

pub(super) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// What the current run told or showed holdfast since its spawn (readiness, notify
/// messages, the adopted daemon). Reset at every launch, so nothing leaks into the
/// next run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// The readiness condition was met (`Readiness::None`: at spawn).
    pub ready: bool,
    /// The main process when it is not the spawned group leader (`MAINPID=`, or the
    /// daemon a forking service left behind).
    pub main_pid: Option<Pid>,
    /// Forking services: the spawned process exited 0, and whether other members of its
    /// group were still alive then.
    pub forker_exit: Option<(ExitStatus, bool)>,
    /// Last `STATUS=` text.
    pub status_text: Option<String>,
    /// Keep-alive interval (the spec's, or the service's `WATCHDOG_USEC=`).
    pub watchdog: Option<Duration>,
    /// When a missing keep-alive becomes a watchdog timeout (only while running).
    pub watchdog_deadline: Option<Instant>,
    /// When a service that is not ready fails its start (`EXTEND_TIMEOUT_USEC=` moves it).
    pub start_deadline: Option<Instant>,
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
    facts: RunFacts,
    /// Why the last run ended, when it was holdfast's decision (not ready, watchdog).
    last_cause: Option<Cause>,
    /// What ended the run before the last automatic restart (kept across runs).
    last_restart: Option<Cause>,
    /// What the stop signals reach, as events tell it.
    kill_scope: KillScope,
}

impl Service {
    pub fn new(spec: Arc<ServiceSpec>, now: Instant, seed: u64) -> Self {
        Self {
            spec,
            state: State::Stopped,
            since: now,
            restarts: 0,
            attempt: 0,
            restart_times: VecDeque::new(),
            last_exit: None,
            rng: fastrand::Rng::with_seed(seed),
            health: None,
            env_overrides: BTreeMap::new(),
            facts: RunFacts::default(),
            last_cause: None,
            last_restart: None,
            kill_scope: KillScope::default(),
        }
    }

    /// Says how stop signals reach this service's processes (a fact of the shell).
    pub fn set_kill_scope(&mut self, scope: KillScope) {
        self.kill_scope = scope;
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
    /// What the current (or last) run reported: status text, readiness, main pid.
    pub fn facts(&self) -> &RunFacts {
        &self.facts
    }
    /// Why the last run was ended by holdfast (not ready in time, watchdog timeout).
    pub fn last_cause(&self) -> Option<&Cause> {
        self.last_cause.as_ref()
    }
    /// What ended the run that the last (or the pending) automatic restart replaces.
    pub fn last_restart(&self) -> Option<&Cause> {
        self.last_restart.as_ref()
    }

    /// Ready in every required sense: the readiness condition is met and a forking
    /// service's daemon has been adopted.
    pub fn is_up(&self) -> bool {
        let adopted = match self.spec.kind {
            ServiceKind::Simple => true,
            ServiceKind::Forking { .. } => self.facts.main_pid.is_some(),
        };
        self.facts.ready && adopted
    }

    /// While starting: what the service still waits for, for `status`.
    pub fn start_wait(&self, now: Instant) -> Option<String> {
        let State::Starting { .. } = self.state else {
            return None;
        };
        if self.is_up() {
            return None;
        }
        let what = match (&self.spec.kind, self.facts.main_pid) {
            (ServiceKind::Forking { pidfile }, None) => {
                format!("waiting for pidfile {}", pidfile.display())
            }
            _ => match &self.spec.ready {
                Readiness::Notify => "waiting for READY=1".to_owned(),
                Readiness::Fd(fd) => format!("waiting for a newline on fd {fd}"),
                Readiness::Tcp(addr) => format!("waiting for tcp {addr} to accept"),
                Readiness::Http(url) => format!("waiting for {url} to answer 2xx"),
                Readiness::Health => "waiting for a passing health probe".to_owned(),
                Readiness::None => return None,
            },
        };
        let Some(deadline) = self.facts.start_deadline else {
            return Some(format!("{what} (no timeout)"));
        };
        let left = deadline.saturating_duration_since(now);
        Some(format!(
            "{what} (timeout in {})",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        ))
    }

    /// Health of the current run, while it is starting or running.
    pub fn health(&self) -> Option<&Monitor> {
        match self.state {
            State::Starting { .. } | State::Running { .. } => self.health.as_ref(),
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
        let probe = self.health().and_then(Monitor::due);
        match (self.deadline(), probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a health probe if one is due: returns the effect asking the shell to run
    /// it. Probes run only while the service is starting or running.
    pub fn probe_if_due(&mut self, now: Instant) -> Option<Effect> {
        let run = match self.state {
            State::Starting { run, .. } | State::Running { run, .. } => run,
            _ => return None,
        };
        let monitor = self.health.as_mut()?;
        monitor.start_if_due(now).then(|| Effect::StartProbe {
            service: self.spec.name.clone(),
            run,
            spec: Arc::clone(&self.spec),
        })
    }

    /// A probe of `run` finished. Results of earlier runs, or arriving after the run
    /// left starting/running, are dropped.
    pub fn probe_result(&mut self, run: RunId, outcome: ProbeOutcome, now: Instant) -> Vec<Effect> {
        let pid = match self.state {
            State::Starting { run: r, pid, .. } | State::Running { run: r, pid, .. }
                if r == run =>
            {
                pid
            }
            _ => return Vec::new(),
        };
        let Some(monitor) = self.health.as_mut() else {
            return Vec::new();
        };
        let passed = outcome == ProbeOutcome::Success;
        let change = monitor.finished(outcome, now);
        let mut effects = Vec::new();
        if passed && self.spec.ready == Readiness::Health {
            // `ready = "health"`: the first passing probe makes the run ready.
            effects.extend(self.ready(run));
        }
        let Some(change) = change else {
            return effects;
        };
        effects.push(self.emit(EventKind::HealthChanged {
            run,
            from: change.from,
            to: change.to,
            failures: change.failures,
            last_error: change.last_error.clone(),
        }));
        let action = self.spec.health.as_ref().map(|h| h.unhealthy_action);
        if change.to == crate::health::HealthState::Unhealthy
            && action == Some(UnhealthyAction::Restart)
        {
            // The normal stop path; the restart policy then acts on the failure (so the
            // backoff delay and the start limit apply, and the restart is counted).
            let then = AfterStop::Exit {
                cause: Cause::Unhealthy {
                    failures: change.failures,
                    last_error: change.last_error,
                },
                early: false,
            };
            effects.extend(self.stop_run(run, pid, then, now));
        }
        effects
    }

    /// The current run, if a process of this service may be alive.
    pub fn run(&self) -> Option<RunId> {
        match self.state {
            State::Launching { run }
            | State::Starting { run, .. }
            | State::Running { run, .. }
            | State::Stopping { run, .. } => Some(run),
            _ => None,
        }
    }

    /// The main pid while one exists: the spawned process (also the process group id),
    /// unless `MAINPID=` or a forking service's pidfile named another.
    pub fn pid(&self) -> Option<Pid> {
        match self.state {
            State::Starting { .. } if self.facts.forker_exit.is_some() => self.facts.main_pid,
            State::Starting { pid, .. } | State::Running { pid, .. } => {
                Some(self.facts.main_pid.unwrap_or(pid))
            }
            State::Stopping {
                pid,
                main: MainProcess::Alive,
                ..
            } => Some(self.facts.main_pid.unwrap_or(pid)),
            _ => None,
        }
    }

    /// When the current run was spawned, while any of its processes may be alive.
    pub fn spawned_at(&self) -> Option<Instant> {
        match self.state {
            State::Starting { spawned, .. }
            | State::Running { spawned, .. }
            | State::Stopping { spawned, .. } => Some(spawned),
            _ => None,
        }
    }

    /// The `STATUS=` text of the current run; a run that ended says nothing any more.
    pub fn status_text(&self) -> Option<&str> {
        self.run().and(self.facts.status_text.as_deref())
    }

    /// Process group of the current run, while any of its processes may be alive.
    pub fn group(&self) -> Option<Pid> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// On the way to running: a dependent must wait for it. A stop that is followed by
    /// a start (a restart by hand or for a reload) or by the restart policy (leftovers
    /// of a crashed run being cleaned up) counts: the service is coming back.
    pub fn is_coming_up(&self) -> bool {
        matches!(
            self.state,
            State::Waiting
                | State::Launching { .. }
                | State::Starting { .. }
                | State::Backoff { .. }
                | State::Stopping {
                    then: AfterStop::Start | AfterStop::Exit { .. },
                    ..
                }
        )
    }

    /// Any process of the service may be alive.
    pub fn is_active(&self) -> bool {
        self.group().is_some() || matches!(self.state, State::Launching { .. })
    }

    /// Stopped or failed: nothing to wait for.
    pub fn is_inactive(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed { .. })
    }

    /// When this service next needs a `tick`, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Starting { spawned, .. } if self.is_up() => {
                Some(later(spawned, self.spec.start_secs))
            }
            // `None` with `start_timeout = "infinity"`: it waits for readiness for ever.
            State::Starting { .. } => self.facts.start_deadline,
            State::Running { .. } => self.facts.watchdog_deadline,
            State::Backoff { until } => Some(until),
            State::Stopping { deadline, .. } => deadline,
            _ => None,
        }
    }

    /// Swaps in a new definition. Takes effect at the next spawn; the caller restarts an
    /// active service so that it does.
    pub fn set_spec(&mut self, spec: Arc<ServiceSpec>) {
        self.spec = spec;
    }

    fn enter(&mut self, state: State, now: Instant) {
        self.state = state;
        self.since = now;
    }

    fn emit(&self, kind: EventKind) -> Effect {
        Effect::Emit(Event {
            service: Some(self.spec.name.clone()),
            kind,
        })
    }

    /// Begins a spawn. `run` is fresh (allocated by the supervisor).
    pub fn launch(&mut self, run: RunId, now: Instant) -> Vec<Effect> {
        self.facts = RunFacts::default();
        self.last_cause = None;
        self.enter(State::Launching { run }, now);
        let spec = if self.env_overrides.is_empty() {
            Arc::clone(&self.spec)
        } else {
            let mut spec = ServiceSpec::clone(&self.spec);
            spec.env.extend(self.env_overrides.clone());
            Arc::new(spec)
        };
        vec![Effect::Spawn {
            service: self.spec.name.clone(),
            run,
            spec,
        }]
    }

    /// The start was requested while `after` dependencies are still coming up.
    pub fn wait_for(&mut self, on: Vec<ServiceName>, now: Instant) -> Vec<Effect> {
        self.enter(State::Waiting, now);
        vec![self.emit(EventKind::Waiting { on })]
    }

    /// A start by hand forgets earlier failures: the start limit begins anew.
    pub fn reset_failures(&mut self) {
        self.attempt = 0;
        self.restart_times.clear();
        // A manual start also resets what exit-code actions changed.
        self.env_overrides.clear();
    }

    /// `reset-failed` (systemctl's): the start limit begins anew and a failed service is
    /// stopped again. A quarantined one stays: only a release (or a start) ends that.
    pub fn reset_failed(&mut self, now: Instant) -> Vec<Effect> {
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

    pub fn spawned(&mut self, run: RunId, pid: Pid, now: Instant) -> Vec<Effect> {
        if self.state != (State::Launching { run }) {
            return Vec::new();
        }
        self.facts = RunFacts {
            ready: self.spec.ready == Readiness::None,
            watchdog: self.spec.watchdog,
            start_deadline: self.spec.start_timeout.deadline(now),
            ..RunFacts::default()
        };
        let state = if self.spec.start_secs.is_zero() && self.is_up() {
            State::Running {
                run,
                pid,
                spawned: now,
            }
        } else {
            State::Starting {
                run,
                pid,
                spawned: now,
            }
        };
        let started = matches!(state, State::Running { .. });
        self.enter(state, now);
        self.health = self.spec.health.as_ref().map(|h| Monitor::new(h, now));
        if started {
            self.arm_watchdog(now);
        }
        let mut effects = vec![self.emit(EventKind::Spawned { run, pid })];
        if started {
            effects.push(self.emit(EventKind::Started { run, pid }));
        }
        effects
    }

    pub fn spawn_failed(&mut self, run: RunId, failure: SpawnFailure, now: Instant) -> Vec<Effect> {
        if self.state != (State::Launching { run }) {
            return Vec::new();
        }
        let mut effects = vec![self.emit(EventKind::SpawnFailed {
            run,
            error: failure.to_string(),
        })];
        match failure {
            SpawnFailure::Service(error) => {
                effects.extend(self.after_run(Cause::SpawnFailed(error), now, false));
            }
            SpawnFailure::HoldfastResources(_) => effects.extend(self.retry_spawn(now)),
        }
        effects
    }

    /// holdfast's own shortage stopped the spawn: try again later, leaving the restart
    /// policy, the start limit and the backoff attempt untouched.
    fn retry_spawn(&mut self, now: Instant) -> Vec<Effect> {
        self.enter(
            State::Backoff {
                until: now + RESOURCE_RETRY,
            },
            now,
        );
        vec![self.emit(EventKind::RestartScheduled {
            delay: RESOURCE_RETRY,
            attempt: self.attempt,
        })]
    }

    /// The main process of `run` was reaped. `group_alive`: other processes of its group
    /// are still around (they are stopped before the restart policy applies).
    pub fn exited(
        &mut self,
        run: RunId,
        status: ExitStatus,
        group_alive: bool,
        now: Instant,
        shutting_down: bool,
    ) -> Vec<Effect> {
        if self.run() != Some(run) {
            return Vec::new();
        }
        let pid = match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => self.facts.main_pid.unwrap_or(pid),
            _ => return Vec::new(),
        };
        if let Some(effects) = self.forker_exited(run, pid, status, group_alive) {
            return effects;
        }
        self.last_exit = Some((status, now));
        let mut effects = vec![self.emit(EventKind::Exited { run, pid, status })];
        match self.state.clone() {
            State::Starting { spawned, .. } | State::Running { spawned, .. } => {
                let ran_for = now.duration_since(spawned);
                // The start_secs timer and the exit can be ready together, and the shell
                // may take the exit first: the time actually run decides. A service that
                // exits before it is ready failed its start too, like systemd's
                // Type=notify (its start_secs is usually 0, so time alone would not say).
                let early = matches!(self.state, State::Starting { .. })
                    && (ran_for < self.spec.start_secs || !self.is_up());
                if ran_for >= self.failure_memory() {
                    self.attempt = 0;
                }
                // A clean start ends exit-code env overrides: the run got to running
                // and exited cleanly, or stayed up longer than the start limit window.
                let ran = matches!(self.state, State::Running { .. });
                if (ran && status.is_clean()) || ran_for >= self.spec.start_limit.interval {
                    self.env_overrides.clear();
                }
                let cause = if early {
                    Cause::ExitedEarly {
                        status,
                        after: ran_for,
                    }
                } else {
                    Cause::Exited(status)
                };
                if group_alive {
                    // Leftover processes of the group are stopped first, like systemd's
                    // control-group kill mode; the policy applies once they are gone.
                    let then = AfterStop::Exit { cause, early };
                    effects.extend(self.begin_stop(
                        run,
                        pid,
                        MainProcess::Exited(status),
                        then,
                        now,
                    ));
                } else if shutting_down {
                    self.enter(State::Stopped, now);
                    effects.push(self.emit(EventKind::Stopped));
                } else {
                    effects.extend(self.after_run(cause, now, early));
                }
            }
            State::Stopping { .. } if group_alive => {
                if let State::Stopping { main, .. } = &mut self.state {
                    *main = MainProcess::Exited(status);
                }
            }
            State::Stopping { .. } => effects.extend(self.finish_stop(now, shutting_down)),
            _ => {}
        }
        effects
    }

    /// The last process of `run`'s group is gone (the main process was reaped earlier).
    pub fn group_empty(&mut self, run: RunId, now: Instant, shutting_down: bool) -> Vec<Effect> {
        if let (State::Starting { run: r, .. }, Some((_, alive))) =
            (&self.state, &mut self.facts.forker_exit)
        {
            if *r == run {
                *alive = false;
            }
            return Vec::new();
        }
        match self.state {
            State::Stopping {
                run: r,
                main: MainProcess::Exited(_),
                ..
            } if r == run => self.finish_stop(now, shutting_down),
            _ => Vec::new(),
        }
    }

    /// Time passed; act on an expired deadline if there is one.
    pub fn tick(&mut self, now: Instant, shutting_down: bool) -> (Vec<Effect>, Option<StartDue>) {
        let Some(deadline) = self.deadline() else {
            return (Vec::new(), None);
        };
        if deadline > now {
            return (Vec::new(), None);
        }
        match self.state.clone() {
            State::Starting { run, pid, spawned } if self.is_up() => {
                self.enter(State::Running { run, pid, spawned }, now);
                self.arm_watchdog(now);
                let main = self.facts.main_pid.unwrap_or(pid);
                (vec![self.emit(EventKind::Started { run, pid: main })], None)
            }
            State::Starting { run, pid, spawned } => {
                (self.not_ready(run, pid, spawned, now, shutting_down), None)
            }
            State::Running { run, pid, .. } => {
                let interval = self.facts.watchdog.unwrap_or_default();
                self.facts.watchdog_deadline = None;
                let main = self.facts.main_pid.unwrap_or(pid);
                let mut effects = vec![self.emit(EventKind::WatchdogTimeout {
                    pid: main,
                    interval,
                })];
                let then = AfterStop::Exit {
                    cause: Cause::WatchdogTimeout { interval },
                    early: false,
                };
                self.last_cause = Some(Cause::WatchdogTimeout { interval });
                effects.extend(self.begin_stop_with(
                    Signal::SIGABRT,
                    run,
                    pid,
                    MainProcess::Alive,
                    then,
                    now,
                ));
                (effects, None)
            }
            State::Backoff { .. } => {
                self.restarts += 1;
                (Vec::new(), Some(StartDue))
            }
            State::Stopping {
                run,
                pid,
                spawned,
                main,
                escalation: Escalation::Graceful,
                then,
                ..
            } => {
                self.enter(
                    State::Stopping {
                        run,
                        pid,
                        spawned,
                        main,
                        escalation: Escalation::Killed,
                        deadline: Some(later(now, KILL_WAIT)),
                        then,
                    },
                    now,
                );
                let effects = vec![
                    self.emit(EventKind::Escalated {
                        pid,
                        scope: self.kill_scope,
                    }),
                    Effect::Signal {
                        service: self.spec.name.clone(),
                        run,
                        group: pid,
                        signal: Signal::SIGKILL,
                    },
                ];
                (effects, None)
            }
            State::Stopping {
                pid,
                escalation: Escalation::Killed,
                ..
            } => {
                let mut effects = vec![self.emit(EventKind::StopAbandoned {
                    pid,
                    scope: self.kill_scope,
                })];
                // Shutdown is not blocked by an unkillable process either; during one,
                // the pending restart (`then`) is dropped like for any other stop.
                effects.extend(self.finish_stop(now, shutting_down));
                (effects, None)
            }
            _ => (Vec::new(), None),
        }
    }

    /// Stop by hand (`then = Stay`), for a restart (`Start`), or for removal (`Remove`).
    /// Returns `None` when there is nothing to stop; the caller decides what that means.
    pub fn stop(&mut self, then: AfterStop, now: Instant) -> Option<Vec<Effect>> {
        match self.state.clone() {
            State::Starting { run, pid, .. } | State::Running { run, pid, .. } => {
                Some(self.stop_run(run, pid, then, now))
            }
            State::Stopping { then: current, .. } => {
                // A pending policy decision on an exit is overridden by a request; the
                // signals already sent stay as they are.
                if let State::Stopping { then: slot, .. } = &mut self.state {
                    *slot = match (current, then) {
                        (AfterStop::Remove, _) | (_, AfterStop::Remove) => AfterStop::Remove,
                        (_, then) => then,
                    };
                }
                Some(Vec::new())
            }
            State::Waiting | State::Backoff { .. } => {
                self.enter(State::Stopped, now);
                Some(vec![self.emit(EventKind::Stopped)])
            }
            State::Launching { .. } => unreachable!("launching is resolved before other input"),
            State::Stopped | State::Failed { .. } => None,
        }
    }

    /// The service, stopping because a reload removed it, is back in the plan: do `then`
    /// once stopped instead of being forgotten.
    pub fn cancel_removal(&mut self, then: AfterStop) {
        if let State::Stopping { then: slot, .. } = &mut self.state {
            *slot = then;
        }
    }

    /// Stops the starting or running `run`. A forking service's launcher may have exited
    /// already (the daemon not adopted yet): then only its leftovers are stopped, and
    /// with none left the stop is complete at once (no exit will come to finish it).
    fn stop_run(&mut self, run: RunId, pid: Pid, then: AfterStop, now: Instant) -> Vec<Effect> {
        let launcher_gone = match self.state {
            State::Starting { .. } if self.facts.main_pid.is_none() => self.facts.forker_exit,
            _ => None,
        };
        match launcher_gone {
            None => self.begin_stop(run, pid, MainProcess::Alive, then, now),
            Some((status, true)) => {
                self.begin_stop(run, pid, MainProcess::Exited(status), then, now)
            }
            Some((status, false)) => {
                // Nothing left to signal (its group may even be reused): done at once.
                let spawned = self.spawned_at().unwrap_or(now);
                self.enter(
                    State::Stopping {
                        run,
                        pid,
                        spawned,
                        main: MainProcess::Exited(status),
                        escalation: Escalation::Killed,
                        deadline: None,
                        then,
                    },
                    now,
                );
                self.finish_stop(now, false)
            }
        }
    }

    fn begin_stop(
        &mut self,
        run: RunId,
        pid: Pid,
        main: MainProcess,
        then: AfterStop,
        now: Instant,
    ) -> Vec<Effect> {
        let signal = self.spec.stop.signal;
        self.begin_stop_with(signal, run, pid, main, then, now)
    }

    /// Like `begin_stop`, with `first` instead of the configured stop signal (SIGABRT
    /// for a watchdog timeout, like systemd's `WatchdogSignal=`).
    fn begin_stop_with(
        &mut self,
        first: Signal,
        run: RunId,
        pid: Pid,
        main: MainProcess,
        then: AfterStop,
        now: Instant,
    ) -> Vec<Effect> {
        let stop = crate::model::StopSpec {
            signal: first,
            ..self.spec.stop
        };
        let spawned = self.spawned_at().unwrap_or(now);
        self.enter(
            State::Stopping {
                run,
                pid,
                spawned,
                main,
                escalation: Escalation::Graceful,
                deadline: stop.timeout.deadline(now),
                then,
            },
            now,
        );
        let signal = |signal| Effect::Signal {
            service: self.spec.name.clone(),
            run,
            group: pid,
            signal,
        };
        vec![
            self.emit(EventKind::StopRequested {
                signal: stop.signal,
                timeout: stop.timeout,
                scope: self.kill_scope,
            }),
            signal(stop.signal),
            // A stopped (SIGSTOP) process would never act on the stop signal.
            signal(Signal::SIGCONT),
        ]
    }

    fn finish_stop(&mut self, now: Instant, shutting_down: bool) -> Vec<Effect> {
        let State::Stopping { then, .. } = self.state.clone() else {
            return Vec::new();
        };
        match then {
            AfterStop::Exit { cause, early } if !shutting_down => self.after_run(cause, now, early),
            AfterStop::Remove => {
                self.enter(State::Stopped, now);
                vec![
                    self.emit(EventKind::Stopped),
                    Effect::Remove {
                        service: self.spec.name.clone(),
                    },
                ]
            }
            AfterStop::Start if !shutting_down => {
                self.enter(State::Stopped, now);
                vec![
                    self.emit(EventKind::Stopped),
                    Effect::StartAgain {
                        service: self.spec.name.clone(),
                    },
                ]
            }
            _ => {
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::Stopped)]
            }
        }
    }

    /// Applies the restart policy to the end of a run.
    fn after_run(&mut self, cause: Cause, now: Instant, early: bool) -> Vec<Effect> {
        // An early exit is a failed start for a restart policy that restarts failures,
        // but an exit 0 stays a clean exit: with `restart = "no"` the service is done,
        // not failed.
        let mut clean = match &cause {
            Cause::Exited(status) | Cause::ExitedEarly { status, .. } => status.is_clean(),
            Cause::SpawnFailed(_)
            | Cause::NotReady { .. }
            | Cause::WatchdogTimeout { .. }
            | Cause::Unhealthy { .. } => false,
        };
        let mut early = early;
        let status = match &cause {
            Cause::Exited(status) | Cause::ExitedEarly { status, .. } => Some(*status),
            Cause::SpawnFailed(_)
            | Cause::NotReady { .. }
            | Cause::WatchdogTimeout { .. }
            | Cause::Unhealthy { .. } => None,
        };
        let mapped = status.and_then(|s| {
            let key = ExitKey::of(s);
            self.spec.exit_codes.get(&key).map(|a| (key, a.clone()))
        });
        let mut effects = Vec::new();
        let mut forced_delay = None;
        let mut forced_restart = false;
        if let Some((key, action)) = mapped {
            effects.push(self.emit(EventKind::ExitActionApplied {
                key,
                action: action.clone(),
            }));
            match action {
                ExitAction::Ignore => {
                    clean = true;
                    early = false;
                }
                ExitAction::Quarantine => {
                    effects.push(Effect::Quarantine {
                        service: self.spec.name.clone(),
                        status: status.expect("only exits are mapped"),
                        reason: cause.to_string(),
                    });
                    effects.extend(self.give_up(FailReason::Quarantined(cause), now));
                    return effects;
                }
                ExitAction::Restart { delay, env } => {
                    forced_restart = true;
                    forced_delay = delay;
                    self.env_overrides.extend(env);
                }
            }
        }
        effects.extend(self.apply_policy(cause, now, clean, early, forced_restart, forced_delay));
        effects
    }

    /// The restart policy proper (`after_run` without exit-code actions). A forced
    /// restart (from an exit-code action) restarts whatever the policy says, still
    /// within the start limit; `forced_delay` replaces the backoff delay.
    fn apply_policy(
        &mut self,
        cause: Cause,
        now: Instant,
        clean: bool,
        early: bool,
        forced_restart: bool,
        forced_delay: Option<Duration>,
    ) -> Vec<Effect> {
        let restart = forced_restart
            || match self.spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean || early,
                RestartPolicy::No => false,
            };
        if !restart {
            if clean {
                self.enter(State::Stopped, now);
                return vec![self.emit(EventKind::Stopped)];
            }
            return self.give_up(FailReason::NoRestart(cause), now);
        }

        let limit = self.spec.start_limit;
        while let Some(&t) = self.restart_times.front() {
            if now.duration_since(t) >= limit.interval {
                self.restart_times.pop_front();
            } else {
                break;
            }
        }
        if self.restart_times.len() >= limit.burst as usize {
            let reason = FailReason::StartLimitHit {
                restarts: self.restart_times.len() as u32,
                interval: limit.interval,
                last: cause,
            };
            return self.give_up(reason, now);
        }
        self.restart_times.push_back(now);
        self.attempt += 1;
        self.last_restart = Some(cause);
        let delay = match forced_delay {
            Some(delay) => delay,
            None => self.delay(self.attempt),
        };
        self.enter(
            State::Backoff {
                until: later(now, delay),
            },
            now,
        );
        vec![self.emit(EventKind::RestartScheduled {
            delay,
            attempt: self.attempt,
        })]
    }

    fn give_up(&mut self, reason: FailReason, now: Instant) -> Vec<Effect> {
        self.enter(
            State::Failed {
                reason: reason.clone(),
            },
            now,
        );
        vec![self.emit(EventKind::GaveUp { reason })]
    }

    /// A run at least this long forgets earlier failures for the backoff delay.
    fn failure_memory(&self) -> Duration {
        match self.spec.backoff {
            Backoff::Exponential { reset_after, .. } => reset_after,
            Backoff::Fixed(_) => self.spec.start_limit.interval,
        }
    }

    /// Restart delay for the n-th consecutive failure (n >= 1).
    fn delay(&mut self, attempt: u32) -> Duration {
        match self.spec.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                max,
                factor,
                jitter,
                ..
            } => {
                let exp = factor.powi(attempt.saturating_sub(1).min(64) as i32);
                let base = (initial.as_secs_f64() * exp).min(max.as_secs_f64());
                let spread = 1.0 + jitter * (2.0 * self.rng.f64() - 1.0);
                // `try_`: a float too large for a Duration must not panic the daemon.
                Duration::try_from_secs_f64((base * spread).clamp(0.0, max.as_secs_f64()))
                    .unwrap_or(max)
            }
        }
    }
}

impl Service {
    /// The readiness condition of `run` was met (a newline on the notification fd, a
    /// TCP connect or HTTP answer, a passing health probe). Ignored unless starting.
    pub fn ready(&mut self, run: RunId) -> Vec<Effect> {
        match self.state {
            State::Starting { run: r, .. } if r == run && !self.facts.ready => {
                self.facts.ready = true;
                self.became_ready(run)
            }
            _ => Vec::new(),
        }
    }

    /// Messages from the service on `NOTIFY_SOCKET` (the shell checked that the sender
    /// belongs to `run`, and that a `MAINPID=` names a process of the service).
    pub fn notify(
        &mut self,
        run: RunId,
        msgs: Vec<NotifyMsg>,
        alive_at: ReapSeq,
        now: Instant,
    ) -> Vec<Effect> {
        let live = matches!(
            self.state,
            State::Starting { run: r, .. } | State::Running { run: r, .. } if r == run
        );
        if !live {
            // A stopping service may still say what it is doing.
            if self.run() == Some(run) {
                for msg in msgs {
                    if let NotifyMsg::Status(text) = msg {
                        self.facts.status_text = Some(text).filter(|t| !t.is_empty());
                    }
                }
            }
            return Vec::new();
        }
        let running = matches!(self.state, State::Running { .. });
        let mut effects = Vec::new();
        for msg in msgs {
            match msg {
                NotifyMsg::Ready => {
                    if self.spec.ready == Readiness::Notify && !self.facts.ready {
                        self.facts.ready = true;
                        effects.extend(self.became_ready(run));
                    }
                }
                NotifyMsg::Status(text) => {
                    self.facts.status_text = Some(text).filter(|t| !t.is_empty());
                }
                NotifyMsg::Watchdog => {
                    if running {
                        self.arm_watchdog(now);
                    }
                }
                NotifyMsg::WatchdogTrigger => {
                    if running && self.facts.watchdog.is_some() {
                        self.facts.watchdog_deadline = Some(now);
                    }
                }
                NotifyMsg::WatchdogUsec(interval) => {
                    self.facts.watchdog = Some(interval);
                    if running {
                        self.arm_watchdog(now);
                    }
                }
                NotifyMsg::ExtendTimeout(by) => {
                    if let Some(deadline) = &mut self.facts.start_deadline {
                        *deadline = (*deadline).max(later(now, by));
                    }
                }
                NotifyMsg::MainPid(pid) => effects.extend(self.set_main_pid(run, pid, alive_at)),
                NotifyMsg::Reloading => effects.push(self.emit(EventKind::Notified {
                    what: "reloading".to_owned(),
                })),
                NotifyMsg::Stopping => effects.push(self.emit(EventKind::Notified {
                    what: "stopping".to_owned(),
                })),
                NotifyMsg::Errno(errno) => effects.push(self.emit(EventKind::Notified {
                    what: format!("errno {errno}"),
                })),
            }
        }
        effects
    }

    /// The pidfile of a forking service named `pid`, a live process of the service: it
    /// becomes the main process.
    pub fn adopted(&mut self, run: RunId, pid: Pid, alive_at: ReapSeq) -> Vec<Effect> {
        match self.state {
            State::Starting { run: r, .. } if r == run && self.facts.main_pid.is_none() => {
                self.set_main_pid(run, pid, alive_at)
            }
            _ => Vec::new(),
        }
    }

    fn set_main_pid(&mut self, run: RunId, pid: Pid, alive_at: ReapSeq) -> Vec<Effect> {
        let unchanged = self.facts.main_pid.or(self.group()) == Some(pid);
        if unchanged {
            return Vec::new();
        }
        let was_up = self.is_up();
        self.facts.main_pid = Some(pid);
        let mut effects = vec![
            self.emit(EventKind::MainPidChanged { pid }),
            Effect::MainPid {
                service: self.spec.name.clone(),
                run,
                pid,
                alive_at,
            },
        ];
        if !was_up && self.is_up() {
            effects.push(self.emit(EventKind::BecameReady { run }));
        }
        effects
    }

    fn became_ready(&mut self, run: RunId) -> Vec<Effect> {
        if self.is_up() {
            vec![self.emit(EventKind::BecameReady { run })]
        } else {
            Vec::new()
        }
    }

    /// Starts (or restarts) the keep-alive countdown from `now`.
    fn arm_watchdog(&mut self, now: Instant) {
        self.facts.watchdog_deadline = self.facts.watchdog.map(|interval| later(now, interval));
    }

    /// The spawned process of a forking service exited. Exit 0 before a daemon was
    /// adopted is the expected double fork: keep starting and read the pidfile.
    fn forker_exited(
        &mut self,
        run: RunId,
        pid: Pid,
        status: ExitStatus,
        group_alive: bool,
    ) -> Option<Vec<Effect>> {
        let ServiceKind::Forking { pidfile } = &self.spec.kind else {
            return None;
        };
        let waiting = matches!(self.state, State::Starting { .. })
            && self.facts.main_pid.is_none()
            && self.facts.forker_exit.is_none()
            && status == ExitStatus::Exited(0);
        if !waiting {
            return None;
        }
        self.facts.forker_exit = Some((status, group_alive));
        let path = pidfile.clone();
        Some(vec![
            self.emit(EventKind::Exited { run, pid, status }),
            self.emit(EventKind::AwaitingPidfile { path: path.clone() }),
            Effect::ReadPidfile {
                service: self.spec.name.clone(),
                run,
                path,
            },
        ])
    }

    /// `start_timeout` passed without the service becoming ready: a failed start. Its
    /// processes are stopped first; the restart policy applies once they are gone.
    fn not_ready(
        &mut self,
        run: RunId,
        pid: Pid,
        spawned: Instant,
        now: Instant,
        shutting_down: bool,
    ) -> Vec<Effect> {
        let timeout = self
            .facts
            .start_deadline
            .unwrap_or(now)
            .saturating_duration_since(spawned);
        let cause = Cause::NotReady { timeout };
        self.last_cause = Some(cause.clone());
        let mut effects = vec![self.emit(EventKind::StartTimedOut { timeout })];
        let then = AfterStop::Exit {
            cause: cause.clone(),
            early: true,
        };
        match self.facts.forker_exit {
            Some((status, true)) => {
                effects.extend(self.begin_stop(run, pid, MainProcess::Exited(status), then, now));
            }
            Some((_, false)) if shutting_down => {
                self.enter(State::Stopped, now);
                effects.push(self.emit(EventKind::Stopped));
            }
            Some((_, false)) => effects.extend(self.after_run(cause, now, true)),
            None => effects.extend(self.begin_stop(run, pid, MainProcess::Alive, then, now)),
        }
        effects
    }
}

/// Returned by `tick` when a backoff expired: the supervisor launches the service with a
/// fresh `RunId` (it owns the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartDue;
