//! The supervisor core: all services, their ordering, shutdown and reload.
//!
//! Pure and synchronous: `handle(input, now) -> effects` is the one entry point. What
//! happened to processes, control requests and reloads are all inputs; a control input
//! is answered by one `Effect::Reply` among the effects. Follow-ups inside the core (a
//! restart once a stop finished, forgetting a removed service) never leave it. The
//! runtime task is its only owner; nothing else mutates service state. Time only moves
//! when the caller says so, which is what lets unit tests run a 10-minute scenario in
//! microseconds.

mod control;
mod order;
#[cfg(test)]
mod reference;
mod resume;
mod services;

pub use self::control::unknown_service;
pub use self::resume::Snapshot;
pub use self::upgrade::Canary;

mod upgrade;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::unix::Pid;
use crate::unix::Signal;

use self::services::Services;
use super::event::{Event, EventKind};
use super::service::{
    AfterStop, FailReason, FollowUp, KillScope, Order, RunId, Service, SpawnFailure, State,
    UpstreamReport,
};
use crate::health::ProbeOutcome;
use crate::model::{ExitStatus, Plan, ServiceName, ServiceSpec, Upstream};
use crate::notify::NotifyMsg;
use crate::supervisor::answer::{ControlError, ReloadPlan, ServiceState};
use crate::unix::ReapSeq;

/// Something that happened outside the core, or a request to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start every autostart service (once, at boot).
    Boot,
    /// In place of `Boot` after holdfast re-executed itself (`upgrade --self`): every
    /// service as the old image left it, its live runs still holdfast's children.
    Resume(Snapshot),
    Spawned {
        service: ServiceName,
        run: RunId,
        pid: Pid,
    },
    SpawnFailed {
        service: ServiceName,
        run: RunId,
        error: SpawnFailure,
    },
    /// The main process of `run` was reaped; `group_alive` says whether other members of
    /// its process group remain.
    Exited {
        service: ServiceName,
        run: RunId,
        status: ExitStatus,
        group_alive: bool,
    },
    /// The process group of `run` has no members left.
    GroupEmpty {
        service: ServiceName,
        run: RunId,
    },
    /// A health probe started for `run` (by `Effect::StartProbe`) finished.
    ProbeResult {
        service: ServiceName,
        run: RunId,
        outcome: ProbeOutcome,
    },
    /// A deadline may have passed.
    Tick,
    Shutdown,
    /// The readiness condition of `run` was met (fd newline, TCP connect, HTTP 2xx,
    /// passing health probe).
    Ready {
        service: ServiceName,
        run: RunId,
    },
    /// Messages on `NOTIFY_SOCKET` from a process of `run`. A `MAINPID=` among them was
    /// seen alive when reaps had reached `alive_at`.
    Notify {
        service: ServiceName,
        run: RunId,
        msgs: Vec<NotifyMsg>,
        alive_at: ReapSeq,
    },
    /// The pidfile of forking `run` named `pid`, a live process of the service (seen
    /// alive when reaps had reached `alive_at`).
    Adopted {
        service: ServiceName,
        run: RunId,
        pid: Pid,
        alive_at: ReapSeq,
    },
    /// A control request to start, stop or restart `service`. Answered by an
    /// `Effect::Reply`.
    Command {
        command: Command,
        service: ServiceName,
    },
    /// `holdfast signal`: `signal` for the current run of `service`. Answered by an
    /// `Effect::Reply`; the signal itself is an `Effect::SignalMain` (whose failure the
    /// shell reports instead) or an `Effect::Signal`.
    Signal {
        service: ServiceName,
        signal: Signal,
        whom: SignalWhom,
    },
    /// `holdfast reset-failed` of `services` (none named: every failed one). Answered
    /// by an `Effect::Reply`.
    ResetFailed {
        services: Vec<ServiceName>,
    },
    /// A new plan (the config file was reloaded). Answered by an `Effect::Reply` with
    /// `Answer::Reload`.
    Reload(Plan),
    /// Roll `service` (every instance of a base name, one at a time) out to the build
    /// `to`, which the shell has verified. Answered by an `Effect::Reply`.
    Upgrade {
        service: ServiceName,
        to: std::path::PathBuf,
    },
    /// The outcome of an `Effect::SyncUpstream` of observed `service`, for the
    /// observation `run` it was asked for (a report of an earlier one is dropped).
    Upstream {
        service: ServiceName,
        run: RunId,
        report: Box<UpstreamReport>,
    },
    /// The answer to `Effect::TakeOver`: `adopted` is the upstream's process, now held
    /// by the shell (its exit reaches the core as the exit of `run`), or `None`.
    TakenOver {
        service: ServiceName,
        run: RunId,
        adopted: Option<Pid>,
    },
    /// The outcome of an `Effect::WatchUpstream` of taken-over `service`, for the
    /// watch `run` (an answer to an earlier watch is dropped).
    UpstreamWatch {
        service: ServiceName,
        run: RunId,
        report: Box<UpstreamReport>,
    },
}

/// Requests from the control API that change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

/// Who gets a signal sent by hand (systemctl kill's `--kill-whom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalWhom {
    /// The main process only (what `kill -HUP $(pidof nginx)` means).
    Main,
    /// Every process of the current run: its cgroup, or its process groups.
    All,
}

/// What a control input did, for the requester.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// What happens next, in a sentence (or a line per service).
    Accepted(String),
    /// What a reload changes.
    Reload(ReloadPlan),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// fork/exec a process for `run`; answer with `Input::Spawned` or `Input::SpawnFailed`
    /// before handling any other input.
    Spawn {
        service: ServiceName,
        run: RunId,
        spec: Arc<ServiceSpec>,
    },
    /// Signal the whole process group of `run`.
    Signal {
        service: ServiceName,
        run: RunId,
        group: Pid,
        signal: Signal,
    },
    /// Signal only the main process `pid` of `run` (`holdfast signal`), unless it was
    /// reaped meanwhile.
    SignalMain {
        service: ServiceName,
        run: RunId,
        pid: Pid,
        signal: Signal,
    },
    Emit(Event),
    /// The answer to a control input (`Command`, `Signal`, `ResetFailed`, `Reload`):
    /// exactly one for each, before the effects of the transition it made. An error
    /// changed nothing.
    Reply(Result<Answer, ControlError>),
    /// The service left the plan: release what the shell holds for it (log capture).
    Remove {
        service: ServiceName,
    },
    /// Shutdown finished: every service is stopped.
    Exit,
    /// `pid` is now the main process of `run`: its exit is the run's exit (and its
    /// process group belongs to the run). Only a reap numbered after `alive_at` can be
    /// that exit: an earlier one was of another process that had the same pid.
    MainPid {
        service: ServiceName,
        run: RunId,
        pid: Pid,
        alive_at: ReapSeq,
    },
    /// Read `path` until it names a live process of `run`; answer with `Input::Adopted`.
    /// Stop trying once `run` is no longer starting.
    ReadPidfile {
        service: ServiceName,
        run: RunId,
        path: std::path::PathBuf,
    },
    /// Run one health probe of `run` (the probe is `spec.health`); answer with
    /// `Input::ProbeResult` once it finished or timed out.
    StartProbe {
        service: ServiceName,
        run: RunId,
        spec: Arc<ServiceSpec>,
    },
    /// Ask the upstream of observed `service` what it says of it; answer with
    /// `Input::Upstream` (an upstream that does not answer within `timeout` is
    /// unreachable). Never on the runtime task: it may take that long.
    SyncUpstream {
        service: ServiceName,
        run: RunId,
        upstream: Upstream,
        timeout: std::time::Duration,
    },
    /// Ask the old upstream of taken-over `service` what it says of it, as
    /// `SyncUpstream` does; answer with `Input::UpstreamWatch`.
    WatchUpstream {
        service: ServiceName,
        run: RunId,
        upstream: Upstream,
        timeout: std::time::Duration,
    },
    /// Ask the upstream to restart observed `service` (its answer shows at the next
    /// syncs). Off the runtime task, like `SyncUpstream`.
    RestartUpstream {
        service: ServiceName,
        upstream: Upstream,
        timeout: std::time::Duration,
    },
    /// The upstream of observed `service` is gone and `takeover = true`: hold
    /// `process`, the one it last showed running (pid and `/proc` start time), if it
    /// is still alive (its exit then is the exit of `run`), and answer with
    /// `Input::TakenOver` -- or, when `upstream` (its own process, pid and start
    /// time) is still alive, with `Input::Upstream` of a busy upstream: it is not gone.
    TakeOver {
        service: ServiceName,
        run: RunId,
        process: Option<(Pid, u64)>,
        upstream: Option<(Pid, u64)>,
        attempt: Attempt,
    },
    /// Append a record of this exit to the quarantine queue (`<state_dir>/quarantine.jsonl`).
    Quarantine {
        service: ServiceName,
        status: ExitStatus,
        /// The cause as shown to people.
        reason: String,
    },
}

/// Whether a takeover is the first since the upstream was given up on, or one tried
/// again after the upstream's own process was found alive (a hung supervisord): the
/// shell says so once, not at every try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    First,
    Again,
}

pub struct Supervisor {
    plan: Plan,
    services: Services,
    next_run: u64,
    seed: u64,
    shutting_down: bool,
    /// `Exit` was emitted; it is emitted once.
    shutdown_completed: bool,
    kill_scope: KillScope,
    /// Services added by a reload that share a base name with removed ones still
    /// stopping (`web` replacing `web@0` and `web@1` when `instances` went from 2 to 1),
    /// with those: they start once all of them are gone, so that the old and the new
    /// copy never hold one port at once.
    held: BTreeMap<ServiceName, Vec<ServiceName>>,
    /// Rollouts over the instances of a base name, one instance at a time.
    canaries: BTreeMap<ServiceName, upgrade::Canary>,
}

impl Supervisor {
    /// `seed` feeds the backoff jitter; tests pass a fixed one.
    pub fn new(plan: Plan, now: Instant, seed: u64) -> Self {
        let mut sup = Self {
            plan: plan.clone(),
            services: Services::default(),
            next_run: 1,
            seed,
            shutting_down: false,
            shutdown_completed: false,
            kill_scope: KillScope::default(),
            held: BTreeMap::new(),
            canaries: BTreeMap::new(),
        };
        for spec in plan.services.into_values() {
            sup.insert(spec, now);
        }
        sup
    }

    /// How the shell's stop signals reach services' processes (default: process groups).
    pub fn with_kill_scope(mut self, scope: KillScope) -> Self {
        self.kill_scope = scope;
        self.services.set_kill_scope(scope);
        self
    }

    fn insert(&mut self, spec: ServiceSpec, now: Instant) {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut service = Service::new(Arc::new(spec), now, self.seed, self.kill_scope);
        if self.shutting_down {
            service.handle(Order::Shutdown, now);
        }
        self.services.insert(service, now);
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }
    pub fn service(&self, name: &ServiceName) -> Option<&Service> {
        self.services.get(name)
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The earliest deadline of any service: the only timer the shell needs.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services.next_wakeup()
    }

    /// How many services are in each state, in the order of states; none with 0.
    pub fn census(&self) -> impl Iterator<Item = (ServiceState, usize)> + '_ {
        self.services.census()
    }

    /// No autostart service is on its way up (waiting, starting, in a backoff or
    /// stopping for a restart; an observed one never counts): holdfast's own start-up
    /// is over.
    pub fn settled(&self) -> bool {
        self.services.settled()
    }

    /// Dependencies a waiting service waits for.
    pub fn waiting_on(&self, name: &ServiceName) -> Vec<ServiceName> {
        self.blockers(name)
    }

    /// The one entry point: applies `input` and returns what the shell must do, with the
    /// answer to a control input among it (`Effect::Reply`).
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut effects = self.take(input, now);
        self.settle(&mut effects, now);
        self.follow_canaries(&mut effects, now);
        effects
    }

    /// What `input` itself does, before any follow-up.
    fn take(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::Boot => {
                let names: Vec<ServiceName> = self
                    .services
                    .values()
                    .filter(|s| s.spec().autostart)
                    .map(|s| s.name().clone())
                    .collect();
                self.start_all(names, now)
            }
            Input::Resume(snapshot) => self.resume(snapshot, now),
            Input::Tick => Vec::new(),
            Input::Shutdown => self.begin_shutdown(now),
            Input::Command { command, service } => self.command(command, &service, now),
            Input::Signal {
                service,
                signal,
                whom,
            } => self.signal(&service, signal, whom),
            Input::ResetFailed { services } => self.reset_failed(&services, now),
            Input::Reload(plan) => self.reload(plan, now),
            Input::Upgrade { service, to } => self.upgrade(&service, to, now),
            run_input => match for_service(run_input) {
                // Inputs for a service removed meanwhile are stale: drop them.
                Some((name, order)) => self.order(&name, order, now),
                None => Vec::new(),
            },
        }
    }

    /// Hands `order` to service `name`, if it still exists.
    fn order(&mut self, name: &ServiceName, order: Order, now: Instant) -> Vec<Effect> {
        self.services.handle(name, order, now).unwrap_or_default()
    }

    /// Starts a service, or parks it in `waiting` while an `after` dependency is coming up.
    fn start(&mut self, name: &ServiceName, now: Instant) -> Vec<Effect> {
        let blockers = self.blockers(name);
        let order = if blockers.is_empty() {
            let run = RunId(self.next_run);
            self.next_run += 1;
            Order::Launch(run)
        } else {
            Order::WaitFor(blockers)
        };
        self.order(name, order, now)
    }

    /// Starts several services, dependencies first. `start` only sees a dependency as
    /// coming up once it was started itself, so in name order a dependent named before
    /// its dependency would start at once instead of waiting.
    fn start_all(&mut self, pending: Vec<ServiceName>, now: Instant) -> Vec<Effect> {
        let services = &self.services;
        let order = order::dependencies_first(pending, |n| &services[n].spec().after);
        let mut effects = Vec::new();
        for name in order {
            effects.extend(self.start(&name, now));
        }
        effects
    }

    /// Dependencies of `name` that are coming up: it must start after them.
    fn blockers(&self, name: &ServiceName) -> Vec<ServiceName> {
        self.services[name]
            .spec()
            .after
            .iter()
            .filter(|dep| self.services.get(dep).is_some_and(Service::is_coming_up))
            .cloned()
            .collect()
    }

    fn begin_shutdown(&mut self, now: Instant) -> Vec<Effect> {
        if self.shutting_down {
            return Vec::new();
        }
        self.shutting_down = true;
        let mut effects = vec![Effect::Emit(Event {
            service: None,
            kind: EventKind::ShutdownStarted,
        })];
        for name in self.services.names() {
            effects.extend(self.order(&name, Order::Shutdown, now));
        }
        effects
    }

    /// Follows up on the effects of one input until nothing more is due: internal
    /// restarts and removals, expired deadlines, waiting services whose dependencies
    /// are up, and the next step of a shutdown. Each round visits the services in name
    /// order, but only those the index names: the others have nothing to do.
    fn settle(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        loop {
            let before = effects.len();
            let mut cursor = None;
            while let Some(name) = self.services.next_follow_up(cursor.as_ref()) {
                self.follow_up(&name, effects, now);
                cursor = Some(name);
            }
            self.step(effects, now);
            if effects.len() == before {
                break;
            }
        }
    }

    /// Does what service `name` left for the core to do, if anything.
    fn follow_up(&mut self, name: &ServiceName, effects: &mut Vec<Effect>, now: Instant) {
        match self.services.take_follow_up(name, now) {
            Some(FollowUp::Start) => effects.extend(self.start(name, now)),
            Some(FollowUp::Forget) => {
                self.services.remove(name, now);
                effects.extend(self.release_held(name, now));
            }
            None => {}
        }
    }

    /// `gone` left the plan for good: the services held for it start once nothing else
    /// holds them.
    fn release_held(&mut self, gone: &ServiceName, now: Instant) -> Vec<Effect> {
        let mut free = Vec::new();
        self.held.retain(|name, blockers| {
            blockers.retain(|b| b != gone);
            if blockers.is_empty() {
                free.push(name.clone());
            }
            !blockers.is_empty()
        });
        free.retain(|name| self.services.contains_key(name) && !self.shutting_down);
        self.start_all(free, now)
    }

    /// One round of time-driven and dependency-driven transitions: due services get a
    /// tick (a tick before a service's wakeup does nothing), then waiting services
    /// whose dependencies are up start.
    fn step(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        self.services.mark_due(now);
        let mut cursor = None;
        while let Some(name) = self.services.next_due_or_follow_up(cursor.as_ref()) {
            if self.services.is_due(&name) {
                effects.extend(self.order(&name, Order::Tick, now));
            }
            self.follow_up(&name, effects, now);
            cursor = Some(name);
        }
        if self.shutting_down {
            self.shutdown_step(effects, now);
            return;
        }
        let mut cursor = None;
        while let Some(name) = self.services.next_unblocked(cursor.as_ref()) {
            effects.extend(self.start(&name, now));
            cursor = Some(name);
        }
    }

    /// Stops every active service that no active service depends on (dependents first),
    /// and reports the end of the shutdown once all are inactive.
    fn shutdown_step(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        for name in self.services.stoppable() {
            effects.extend(self.order(&name, Order::Stop(AfterStop::Stay), now));
        }
        if self.services.all_inactive() && !self.shutdown_completed {
            self.shutdown_completed = true;
            effects.push(Effect::Emit(Event {
                service: None,
                kind: EventKind::ShutdownCompleted,
            }));
            effects.push(Effect::Exit);
        }
    }
}

/// An input about one run of one service, as the order for that service.
fn for_service(input: Input) -> Option<(ServiceName, Order)> {
    Some(match input {
        Input::Spawned { service, run, pid } => (service, Order::Spawned { run, pid }),
        Input::SpawnFailed {
            service,
            run,
            error,
        } => (service, Order::SpawnFailed { run, error }),
        Input::Exited {
            service,
            run,
            status,
            group_alive,
        } => (
            service,
            Order::Exited {
                run,
                status,
                group_alive,
            },
        ),
        Input::GroupEmpty { service, run } => (service, Order::GroupEmpty { run }),
        Input::ProbeResult {
            service,
            run,
            outcome,
        } => (service, Order::ProbeResult { run, outcome }),
        Input::Ready { service, run } => (service, Order::Ready { run }),
        Input::Notify {
            service,
            run,
            msgs,
            alive_at,
        } => (
            service,
            Order::Notify {
                run,
                msgs,
                alive_at,
            },
        ),
        Input::Adopted {
            service,
            run,
            pid,
            alive_at,
        } => (service, Order::Adopted { run, pid, alive_at }),
        Input::Upstream {
            service,
            run,
            report,
        } => (service, Order::Upstream { run, report }),
        Input::TakenOver {
            service,
            run,
            adopted,
        } => (service, Order::TakenOver { run, adopted }),
        Input::UpstreamWatch {
            service,
            run,
            report,
        } => (service, Order::UpstreamWatch { run, report }),
        _ => return None,
    })
}

/// A state as shown in `status` and the API.
pub fn state_name(state: &State) -> ServiceState {
    match state {
        State::Stopped => ServiceState::Stopped,
        State::Waiting => ServiceState::Waiting,
        State::Launching { .. } | State::Starting { .. } => ServiceState::Starting,
        State::Running { .. } => ServiceState::Running,
        State::Stopping { .. } => ServiceState::Stopping,
        State::Backoff { .. } => ServiceState::Backoff,
        State::Failed {
            reason: FailReason::Quarantined(_),
        } => ServiceState::Quarantined,
        State::Failed { .. } => ServiceState::Failed,
        State::Observed(observation) => observation.shown_state(),
    }
}

/// Takes the answer to a control input out of its effects.
pub fn take_reply(effects: &mut Vec<Effect>) -> Option<Result<Answer, ControlError>> {
    let at = effects.iter().position(|e| matches!(e, Effect::Reply(_)))?;
    match effects.remove(at) {
        Effect::Reply(reply) => Some(reply),
        _ => unreachable!("found above"),
    }
}

impl Effect {
    /// An event of service `name`.
    pub(in crate::supervisor) fn emit(name: &ServiceName, kind: EventKind) -> Effect {
        Effect::Emit(Event {
            service: Some(name.clone()),
            kind,
        })
    }
}
