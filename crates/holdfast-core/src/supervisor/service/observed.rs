//! Observer mode (`managed_by`): a service another supervisor (the upstream: systemd,
//! supervisord) runs. holdfast never spawns it; its state follows what the upstream
//! reports, health probes run against it as for any service, and when it turns
//! UNHEALTHY holdfast asks the upstream to restart it, once, then waits at most
//! `arbiter_timeout` for the upstream to show a new start. Failures within
//! `health_grace_period` of any start the upstream made are ignored.
//!
//! An upstream that stays unreachable past `arbiter_timeout`, over several failed syncs
//! (`GONE_AFTER_FAILURES`, asked every `arbiter_timeout / 3` at most meanwhile), is
//! reported; with
//! `takeover = true` holdfast takes the service over (`Effect::TakeOver`): it adopts
//! the upstream's process when it is still the one last seen, or starts `command`, and
//! from then on the service is an ordinary one of holdfast's.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use super::arbitration::{Arbitrated, Arbitration, GONE_AFTER_FAILURES, Reach, Verdict};
use super::{AfterStop, Effect, FollowUp, Order, Policy, RunId, Service, State};
use crate::clock::later;
use crate::health::{HealthState, Monitor, Transition};
use crate::model::{ManagedBy, Takeover};
use crate::supervisor::event::EventKind;
use crate::unix::Pid;

/// The upstream's state of the service, in holdfast's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// A state holdfast has no word for (see the view's `detail`).
    Unknown,
}

impl UpstreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Starting => "starting",
            UpstreamState::Running => "running",
            UpstreamState::Stopping => "stopping",
            UpstreamState::Stopped => "stopped",
            UpstreamState::Failed => "failed",
            UpstreamState::Unknown => "unknown",
        }
    }
}

/// What the upstream says of the service at one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamView {
    pub state: UpstreamState,
    /// The upstream's own words for it (`RUNNING`, `active/running`).
    pub detail: String,
    /// Its main process, while it has one.
    pub pid: Option<Pid>,
    /// Names one start of that process (supervisord's start time, systemd's
    /// `ExecMainStartTimestampMonotonic`): a restart changes it even if the pid is reused.
    pub start: Option<u64>,
    /// How long it has been up, by the upstream's clock.
    pub uptime: Option<Duration>,
    /// The start time of `pid` as `/proc` has it (clock ticks since boot), read by the
    /// shell when it saw the view: with the pid it names the process for a takeover.
    pub proc_start: Option<u64>,
    /// The upstream's own process (supervisord's pid, by `supervisor.getPID`) with
    /// its `/proc` start time: a takeover first checks it is really gone.
    pub upstream_pid: Option<(Pid, u64)>,
}

impl UpstreamView {
    /// The process and start that identify one run of the upstream's.
    pub(super) fn start_mark(&self) -> Option<(Pid, Option<u64>)> {
        match self.state {
            UpstreamState::Running | UpstreamState::Starting => Some((self.pid?, self.start)),
            _ => None,
        }
    }
}

/// The outcome of one sync with the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReport {
    Seen(UpstreamView),
    /// The upstream could not be asked (socket gone, timeout, fault): why.
    Unreachable(String),
    /// The upstream answered but cannot say now (supervisord RESTARTING or SHUTDOWN):
    /// it is there, busy; the view stays the last one.
    Busy(String),
}

/// The state of an observed service (`State::Observed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Probes of the service carry it, like a run of holdfast's own.
    pub run: RunId,
    /// The last view the upstream gave; `None` before the first.
    pub view: Option<UpstreamView>,
    /// When the next sync is due; `None` while one is in flight.
    pub sync_due: Option<Instant>,
    /// When the last sync (the one in flight, if any) was asked.
    pub sync_asked: Option<Instant>,
    pub reach: Reach,
    pub arbitration: Arbitration,
}

/// Who runs a service that has `managed_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The upstream does; holdfast observes.
    Upstream,
    /// holdfast, since it took over (or for a service without `managed_by`).
    Holdfast,
}

impl Runner {
    /// Who runs a service of `spec` that holdfast has not taken over.
    pub(super) fn of(spec: &crate::model::ServiceSpec) -> Self {
        match spec.managed_by {
            Some(_) => Runner::Upstream,
            None => Runner::Holdfast,
        }
    }
}

impl Observation {
    /// Why a restart asked now would not reach the upstream, if it would not: one is
    /// pending already, holdfast is taking over, or the upstream does not answer.
    pub fn why_no_restart(&self) -> Option<String> {
        match (&self.arbitration, &self.reach) {
            (Arbitration::Restarting { .. } | Arbitration::Overdue { .. }, _) => {
                Some("a restart asked of its manager is still under way".to_owned())
            }
            (Arbitration::TakingOver, _) => Some("holdfast is taking it over".to_owned()),
            (Arbitration::Rejoining { .. }, _) => {
                Some("holdfast waits for its manager to show its own copy".to_owned())
            }
            (Arbitration::Idle, Reach::Unreachable { error, .. } | Reach::Alive { error }) => {
                Some(format!("its manager does not answer ({error})"))
            }
            (Arbitration::Idle, Reach::Reachable) => None,
        }
    }

    /// What the observed service's state is, as `status` and the API name it.
    pub fn shown_state(&self) -> crate::supervisor::answer::ServiceState {
        use crate::supervisor::answer::ServiceState;
        if matches!(self.reach, Reach::Unreachable { .. }) {
            return ServiceState::Unknown;
        }
        match self.view.as_ref().map(|v| v.state) {
            Some(UpstreamState::Running) => ServiceState::Running,
            Some(UpstreamState::Starting) => ServiceState::Starting,
            Some(UpstreamState::Stopping) => ServiceState::Stopping,
            Some(UpstreamState::Stopped) => ServiceState::Stopped,
            Some(UpstreamState::Failed) => ServiceState::Failed,
            Some(UpstreamState::Unknown) | None => ServiceState::Unknown,
        }
    }

    /// On its way up as `after` sees it, so a dependent waits: the upstream's first
    /// answer is not in (nor the upstream given up on), it says starting (supervisord's
    /// startsecs, systemd's activating: its own readiness), a restart asked of it has
    /// not shown yet, or holdfast is taking it over. Running is up; stopped, failed, a
    /// program it does not know or an upstream given up on hold nothing up, as a
    /// stopped or failed service of holdfast's does not.
    pub fn is_coming_up(&self) -> bool {
        match self.arbitration {
            Arbitration::Restarting { .. }
            | Arbitration::Overdue { .. }
            | Arbitration::TakingOver
            | Arbitration::Rejoining { .. } => return true,
            Arbitration::Idle => {}
        }
        if self.reach.given_up() {
            return false;
        }
        match self.view.as_ref().map(|v| v.state) {
            None | Some(UpstreamState::Starting) => true,
            Some(_) => false,
        }
    }

    /// Why it is in the state it shows, for `status` (and a dependent's `waiting for
    /// web (starting: ...)`): what holdfast waits for from `upstream`, if anything.
    pub fn reason(&self, upstream: &crate::model::Upstream) -> Option<String> {
        use crate::model::Upstream;
        let manager = match upstream {
            Upstream::Systemd { .. } => "systemd",
            Upstream::Supervisord { .. } => "supervisord",
        };
        match (&self.arbitration, &self.reach) {
            (Arbitration::Restarting { .. } | Arbitration::Overdue { .. }, _) => {
                return Some(format!("restart asked of {upstream}"));
            }
            (Arbitration::TakingOver, _) => return Some("holdfast is taking it over".to_owned()),
            (Arbitration::Rejoining { .. }, _) => {
                return Some(format!("going back to {upstream}'s own copy"));
            }
            (Arbitration::Idle, Reach::Unreachable { error, .. } | Reach::Alive { error }) => {
                return Some(format!("{manager} does not answer: {error}"));
            }
            (Arbitration::Idle, Reach::Reachable) => {}
        }
        // Running needs no word: the `managed by` line says it all.
        match &self.view {
            None => Some(format!("no answer from {manager} yet")),
            Some(view) if view.state == UpstreamState::Running => None,
            Some(view) => Some(format!("{manager} says {}", view.detail)),
        }
    }

    fn upstream_running(&self) -> bool {
        self.reach == Reach::Reachable
            && self
                .view
                .as_ref()
                .is_some_and(|v| v.state == UpstreamState::Running)
    }
}

impl Service {
    pub(super) fn managed(&self) -> &ManagedBy {
        self.spec
            .managed_by
            .as_ref()
            .expect("only a service with managed_by is observed")
    }

    /// Whether a launch of this service means observing it, not spawning it.
    pub(super) fn observes(&self) -> bool {
        self.runner == Runner::Upstream && self.spec.managed_by.is_some()
    }

    /// Begins observing instead of spawning: the first sync is due at once.
    pub(super) fn observe(&mut self, run: RunId, now: Instant) -> Vec<Effect> {
        let observation = Observation {
            run,
            view: None,
            sync_due: Some(now),
            sync_asked: None,
            reach: Reach::Reachable,
            arbitration: Arbitration::Idle,
        };
        self.health = None;
        self.enter(State::Observed(Box::new(observation)), now);
        let upstream = self.managed().upstream.to_string();
        let mut effects = vec![self.emit(EventKind::Observing { upstream })];
        effects.extend(self.observed_tick(now));
        effects
    }

    /// Observes the upstream's own copy again after a takeover, on the word of an
    /// answer that may be old: the first of this observation decides.
    /// `last`: that answer, so that a takeover before the next one still finds the
    /// process it showed (to adopt) and the upstream's own pid (to see it alive).
    pub(super) fn rejoin(
        &mut self,
        run: RunId,
        last: Option<UpstreamView>,
        now: Instant,
    ) -> Vec<Effect> {
        let effects = self.observe(run, now);
        let deadline = later(now, self.managed().arbiter_timeout);
        let observation = self.observation_mut();
        observation.arbitration = Arbitration::Rejoining { deadline };
        observation.view = last;
        effects
    }

    pub(super) fn observation_mut(&mut self) -> &mut Observation {
        match &mut self.state {
            State::Observed(observation) => observation,
            _ => unreachable!("called only while observed"),
        }
    }

    /// An order while observed: the upstream runs the service, so nothing here ever
    /// spawns or signals a process.
    pub(super) fn observed_order(&mut self, order: Order, now: Instant) -> Vec<Effect> {
        match order {
            Order::Upstream { run, report } => {
                if run != self.observation_mut().run {
                    return Vec::new();
                }
                self.upstream_report(*report, now)
            }
            Order::TakenOver { run, adopted } => self.taken_over(run, adopted, now),
            Order::Tick => self.observed_tick(now),
            Order::ProbeResult { run, outcome } => {
                if run != self.observation_mut().run || self.health.is_none() {
                    return Vec::new();
                }
                let change = self.health.as_mut().and_then(|m| m.finished(outcome, now));
                let mut effects: Vec<Effect> = change
                    .map(|c| self.health_changed(run, &c))
                    .into_iter()
                    .collect();
                effects.extend(self.arbitrate(now));
                effects
            }
            // A restart by hand is a restart asked of the upstream.
            Order::Stop(AfterStop::Start) => self.ask_restart("restart requested by hand", now),
            Order::Stop(then) => {
                // Stops observing; the upstream's process is none of holdfast's to stop.
                self.health = None;
                self.enter(State::Stopped, now);
                if then == AfterStop::Remove {
                    self.follow_up = Some(FollowUp::Forget);
                }
                vec![self.emit(EventKind::Stopped)]
            }
            Order::Shutdown => {
                self.policy = Policy::Suspended;
                self.health = None;
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::Stopped)]
            }
            Order::Reconfigure(spec) => {
                let same_upstream = spec.managed_by.as_ref().map(|m| &m.upstream)
                    == self.spec.managed_by.as_ref().map(|m| &m.upstream);
                self.spec = spec;
                self.runner = Runner::of(&self.spec);
                if same_upstream {
                    return self.reconfigure_health(now).into_iter().collect();
                }
                // Another upstream (or none: holdfast runs it now): start over.
                self.health = None;
                self.enter(State::Stopped, now);
                self.follow_up = Some(FollowUp::Start);
                vec![self.emit(EventKind::Stopped)]
            }
            // Nothing of holdfast's runs: process inputs are stale, the rest moot.
            _ => Vec::new(),
        }
    }

    /// When an observed service next needs a tick: its sync, a restart's deadline, the
    /// end of the wait for an unreachable upstream, a probe (only while it runs).
    pub(super) fn observed_wakeup(&self, observation: &Observation) -> Option<Instant> {
        let managed = self.spec.managed_by.as_ref()?;
        let restart = match observation.arbitration {
            Arbitration::Restarting { deadline } | Arbitration::Rejoining { deadline } => {
                Some(deadline)
            }
            _ => None,
        };
        let gone = match &observation.reach {
            // Before enough failures, the next failed sync decides (waking at the
            // deadline then would find nothing to do, again and again).
            Reach::Unreachable {
                since,
                verdict: Verdict::Pending | Verdict::Retrying,
                failures,
                ..
            } if *failures >= GONE_AFTER_FAILURES => Some(later(*since, managed.arbiter_timeout)),
            _ => None,
        };
        let probe = observation
            .upstream_running()
            .then(|| self.health.as_ref().and_then(Monitor::due))
            .flatten();
        [observation.sync_due, restart, gone, probe]
            .into_iter()
            .flatten()
            .min()
    }

    fn observed_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let upstream = self.managed().upstream.clone();
        let timeout = self.managed().arbiter_timeout;
        let name = self.spec.name.clone();
        let observation = self.observation_mut();
        if let Arbitration::Restarting { deadline } = observation.arbitration
            && deadline <= now
        {
            // The last view may predate the deadline: ask now (unless a sync is in
            // flight; see `upstream_report`), and let that answer decide.
            observation.arbitration = Arbitration::Overdue { deadline };
            if observation.sync_due.is_some() {
                observation.sync_due = Some(now);
            }
        }
        if let Arbitration::Rejoining { deadline } = observation.arbitration
            && deadline <= now
        {
            observation.arbitration = Arbitration::Idle;
        }
        if observation.sync_due.is_some_and(|due| due <= now) {
            observation.sync_due = None;
            observation.sync_asked = Some(now);
            effects.push(Effect::SyncUpstream {
                service: name,
                run: observation.run,
                upstream,
                timeout,
            });
        }
        effects.extend(self.unreachable_past_timeout(now));
        effects.extend(self.observed_probe(now));
        effects
    }

    fn observed_probe(&mut self, now: Instant) -> Option<Effect> {
        let State::Observed(observation) = &self.state else {
            return None;
        };
        let run = observation.run;
        if !observation.upstream_running() {
            return None;
        }
        let monitor = self.health.as_mut()?;
        monitor.start_if_due(now).then(|| Effect::StartProbe {
            service: self.spec.name.clone(),
            run,
            spec: std::sync::Arc::clone(&self.spec),
        })
    }

    fn upstream_report(&mut self, report: UpstreamReport, now: Instant) -> Vec<Effect> {
        let interval = self.managed().sync_interval;
        // While in doubt, ask often enough that several answers span arbiter_timeout.
        let soon = interval.min(self.managed().arbiter_timeout / 3);
        let observation = self.observation_mut();
        observation.sync_due = Some(later(now, interval));
        // Whether this answer is to a sync asked after an overdue restart's deadline.
        let fresh = match observation.arbitration {
            Arbitration::Overdue { deadline } => {
                observation.sync_asked.is_some_and(|a| a >= deadline)
            }
            _ => false,
        };
        let view = match report {
            UpstreamReport::Seen(view) => view,
            UpstreamReport::Busy(error) => {
                observation.reach = if observation.arbitration == Arbitration::TakingOver {
                    // The shell's answer to a takeover (it comes at once, before any
                    // sync's): the upstream's process lives, its socket still does not
                    // answer. It stays given up on, or a dependent would wait again.
                    observation.arbitration = Arbitration::Idle;
                    Reach::Alive { error }
                } else {
                    Reach::Reachable
                };
                observation.sync_due = Some(later(now, soon));
                return Vec::new();
            }
            UpstreamReport::Unreachable(error) => {
                observation.sync_due = Some(later(now, soon));
                match &mut observation.reach {
                    Reach::Unreachable {
                        error: last,
                        failures,
                        ..
                    } => {
                        *last = error;
                        *failures = failures.saturating_add(1);
                    }
                    Reach::Reachable | Reach::Alive { .. } => {
                        let verdict = if observation.reach.given_up() {
                            Verdict::Retrying
                        } else {
                            Verdict::Pending
                        };
                        observation.reach = Reach::Unreachable {
                            since: now,
                            error,
                            failures: 1,
                            verdict,
                        };
                    }
                }
                let mut effects: Vec<Effect> = self.judge_overdue(fresh, now).into_iter().collect();
                effects.extend(self.unreachable_past_timeout(now));
                return effects;
            }
        };
        let rejoining = matches!(observation.arbitration, Arbitration::Rejoining { .. });
        let back = observation.reach != Reach::Reachable;
        observation.reach = Reach::Reachable;
        let old = observation.view.replace(view.clone());
        // The first answer after going back starts the observation of the copy afresh
        // (its health check included), though the view it began with showed it.
        let new_start = view.start_mark().is_some()
            && (rejoining || view.start_mark() != old.as_ref().and_then(UpstreamView::start_mark));
        let changed = back
            || old.as_ref().is_none_or(|o| {
                (o.state, o.pid, &o.detail) != (view.state, view.pid, &view.detail)
            });
        let mut effects = Vec::new();
        if changed {
            effects.push(self.emit(EventKind::UpstreamState {
                state: view.state,
                detail: view.detail.clone(),
                pid: view.pid.map(Pid::as_raw),
            }));
        }
        if new_start {
            self.upstream_started(&view, now);
        }
        if rejoining {
            // Last: a copy gone makes the service holdfast's, no longer observed.
            effects.extend(self.rejoined(&view, now));
            return effects;
        }
        effects.extend(self.judge_overdue(fresh, now));
        effects
    }

    /// The first answer after going back to the upstream's copy on an old answer
    /// decides. Its copy running, or starting again (supervisord's BACKOFF, systemd's
    /// activating): observed, as before the takeover. Stopping: the next answer
    /// decides. Gone (stopped, failed, a program it does not know): holdfast runs the
    /// service again, as a start asks, when it may take over; else it observes.
    fn rejoined(&mut self, view: &UpstreamView, now: Instant) -> Vec<Effect> {
        if view.state == UpstreamState::Stopping {
            return Vec::new();
        }
        self.observation_mut().arbitration = Arbitration::Idle;
        let gone = matches!(
            view.state,
            UpstreamState::Stopped | UpstreamState::Failed | UpstreamState::Unknown
        );
        if gone && self.managed().takeover == Takeover::Allowed {
            self.copy_gone(now)
        } else {
            Vec::new()
        }
    }

    /// A restart past its deadline with no new start seen: an answer to a sync asked
    /// after the deadline (`fresh`) times it out; an older one asks again at once.
    fn judge_overdue(&mut self, fresh: bool, now: Instant) -> Option<Effect> {
        let timeout = self.managed().arbiter_timeout;
        let observation = self.observation_mut();
        if !matches!(observation.arbitration, Arbitration::Overdue { .. }) {
            return None;
        }
        if !fresh {
            observation.sync_due = Some(now);
            return None;
        }
        observation.arbitration = Arbitration::Idle;
        self.arbitrated = Some(Arbitrated::RestartTimedOut);
        Some(self.emit(EventKind::UpstreamRestartTimedOut { timeout }))
    }

    /// The health check of an observed service: its grace is `health_grace_period`,
    /// counted from each start the upstream makes.
    fn observed_health(&self) -> Option<crate::model::HealthSpec> {
        let grace = self.managed().health_grace_period;
        self.spec.health.as_ref().map(|h| {
            let mut h = h.clone();
            h.decay.grace = grace;
            h
        })
    }

    /// The upstream (re)started the service: health starts afresh, with its grace.
    fn upstream_started(&mut self, view: &UpstreamView, now: Instant) {
        self.health = self.observed_health().map(|h| Monitor::new(&h, now));
        let observation = self.observation_mut();
        if let Arbitration::Restarting { .. } | Arbitration::Overdue { .. } =
            observation.arbitration
        {
            observation.arbitration = Arbitration::Idle;
            self.arbitrated = Some(Arbitrated::Restarted(view.pid));
        }
    }

    /// A reload changed the health check (or kept it) of a service the same upstream
    /// runs: nothing restarts for it, so it applies now to the monitor of the process
    /// the upstream runs, whose history stays. A check added while the upstream runs
    /// one starts now, with its grace. An UNHEALTHY state the new thresholds no longer
    /// bear out steps down now (reported): no later probe would, and the next result
    /// would otherwise ask the upstream for a restart the new check does not want.
    fn reconfigure_health(&mut self, now: Instant) -> Option<Effect> {
        let observation = self.observation_mut();
        let run = observation.run;
        let runs = observation.view.as_ref().and_then(UpstreamView::start_mark);
        let change = match (self.observed_health(), self.health.as_mut()) {
            (Some(spec), Some(monitor)) => monitor.reconfigure(&spec, now),
            (Some(spec), None) if runs.is_some() => {
                self.health = Some(Monitor::new(&spec, now));
                None
            }
            (Some(_), None) => None,
            (None, _) => {
                self.health = None;
                None
            }
        };
        change.map(|c| self.health_changed(run, &c))
    }

    /// The event of a health change of `run`.
    pub(super) fn health_changed(&mut self, run: RunId, change: &Transition) -> Effect {
        self.emit(EventKind::HealthChanged {
            run,
            from: change.from,
            to: change.to,
            failures: change.failures,
            last_error: change.last_error.as_ref().map(ToString::to_string),
        })
    }

    /// An UNHEALTHY service with no restart pending: ask the upstream for one.
    fn arbitrate(&mut self, now: Instant) -> Vec<Effect> {
        let unhealthy = self
            .health
            .as_ref()
            .is_some_and(|m| m.decay().state() == HealthState::Unhealthy);
        if !unhealthy {
            return Vec::new();
        }
        self.ask_restart("turned unhealthy", now)
    }

    fn ask_restart(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        let upstream = self.managed().upstream.clone();
        let timeout = self.managed().arbiter_timeout;
        let name = self.spec.name.clone();
        let observation = self.observation_mut();
        if observation.why_no_restart().is_some() {
            return Vec::new();
        }
        observation.arbitration = Arbitration::Restarting {
            deadline: later(now, timeout),
        };
        self.arbitrated = Some(Arbitrated::RestartRequested);
        vec![
            self.emit(EventKind::UpstreamRestartRequested {
                upstream: upstream.to_string(),
                reason: reason.to_owned(),
            }),
            Effect::RestartUpstream {
                service: name,
                upstream,
                timeout,
            },
        ]
    }
}
