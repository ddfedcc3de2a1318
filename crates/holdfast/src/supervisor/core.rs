//! The supervisor core: all services, their ordering, shutdown and reload.
//!
//! Pure and synchronous: `handle(input, now) -> effects`. The runtime task is its only
//! owner; nothing else mutates service state. Time only moves when the caller says so,
//! which is what lets unit tests run a 10-minute scenario in microseconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::answer::{ControlError, ErrorKind, ReloadPlan, ServiceState};
use super::event::{Event, EventKind};
use super::reload;
use super::service::{
    AfterStop, FailReason, KillScope, RunId, Service, SpawnFailure, StartDue, State,
};
use crate::health::ProbeOutcome;
use crate::model::{ExitStatus, Plan, ServiceName, ServiceSpec};
use crate::notify::NotifyMsg;
use crate::process::reap::ReapSeq;

/// Something that happened outside the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start every autostart service (once, at boot).
    Boot,
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
    /// Internal: a stop finished and the service should start again. Consumed by the
    /// core itself, never seen by the shell.
    StartAgain {
        service: ServiceName,
    },
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
    /// Append a record of this exit to the quarantine queue (`<state_dir>/quarantine.jsonl`).
    Quarantine {
        service: ServiceName,
        status: ExitStatus,
        /// The cause as shown to people.
        reason: String,
    },
}

pub struct Supervisor {
    plan: Plan,
    services: BTreeMap<ServiceName, Service>,
    next_run: u64,
    seed: u64,
    shutting_down: bool,
    /// `Exit` was emitted; it is emitted once.
    shutdown_completed: bool,
    kill_scope: KillScope,
}

impl Supervisor {
    /// `seed` feeds the backoff jitter; tests pass a fixed one.
    pub fn new(plan: Plan, now: Instant, seed: u64) -> Self {
        let mut sup = Self {
            plan: plan.clone(),
            services: BTreeMap::new(),
            next_run: 1,
            seed,
            shutting_down: false,
            shutdown_completed: false,
            kill_scope: KillScope::default(),
        };
        for spec in plan.services.into_values() {
            sup.insert(spec, now);
        }
        sup
    }

    /// How the shell's stop signals reach services' processes (default: process groups).
    pub fn with_kill_scope(mut self, scope: KillScope) -> Self {
        self.kill_scope = scope;
        for service in self.services.values_mut() {
            service.set_kill_scope(scope);
        }
        self
    }

    fn insert(&mut self, spec: ServiceSpec, now: Instant) {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut service = Service::new(Arc::new(spec), now, self.seed);
        service.set_kill_scope(self.kill_scope);
        self.services.insert(service.name().clone(), service);
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
        self.services.values().filter_map(Service::wakeup).min()
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let sd = self.shutting_down;
        let mut effects = match input {
            Input::Boot => {
                let names: Vec<ServiceName> = self
                    .services
                    .values()
                    .filter(|s| s.spec().autostart)
                    .map(|s| s.name().clone())
                    .collect();
                self.start_all(names, now)
            }
            Input::Spawned { service, run, pid } => {
                self.with(&service, |s| s.spawned(run, pid, now))
            }
            Input::SpawnFailed {
                service,
                run,
                error,
            } => self.with(&service, |s| s.spawn_failed(run, error, now)),
            Input::Exited {
                service,
                run,
                status,
                group_alive,
            } => self.with(&service, |s| s.exited(run, status, group_alive, now, sd)),
            Input::GroupEmpty { service, run } => {
                self.with(&service, |s| s.group_empty(run, now, sd))
            }
            Input::ProbeResult {
                service,
                run,
                outcome,
            } => self.with(&service, |s| s.probe_result(run, outcome, now)),
            Input::Tick => Vec::new(),
            Input::Shutdown => self.begin_shutdown(now),
            Input::Ready { service, run } => self.with(&service, |s| s.ready(run)),
            Input::Notify {
                service,
                run,
                msgs,
                alive_at,
            } => self.with(&service, |s| s.notify(run, msgs, alive_at, now)),
            Input::Adopted {
                service,
                run,
                pid,
                alive_at,
            } => self.with(&service, |s| s.adopted(run, pid, alive_at)),
        };
        self.settle(&mut effects, now);
        effects
    }

    /// A control request. The reply says what happens next; errors change nothing.
    pub fn command(
        &mut self,
        command: Command,
        name: &ServiceName,
        now: Instant,
    ) -> (Result<String, ControlError>, Vec<Effect>) {
        if self.shutting_down {
            return (Err(shutting_down()), Vec::new());
        }
        let Some(service) = self.services.get_mut(name) else {
            return (Err(unknown_service(name)), Vec::new());
        };
        // Every command x state pair is decided here, s6-style.
        let (message, mut effects) = match (command, service.state()) {
            (
                Command::Start | Command::Restart,
                State::Stopping {
                    then: AfterStop::Remove,
                    ..
                },
            ) => {
                let error = ControlError {
                    kind: ErrorKind::UnknownService,
                    message: format!("{name} was removed from the config and is stopping"),
                };
                return (Err(error), Vec::new());
            }
            (Command::Start, State::Stopping { .. })
            | (Command::Restart, State::Stopping { .. }) => {
                let effects = service.stop(AfterStop::Start, now).unwrap_or_default();
                (
                    format!("{name} is stopping; it will start again once stopped"),
                    effects,
                )
            }
            (Command::Start | Command::Restart, State::Waiting | State::Launching { .. })
            | (Command::Start, State::Starting { .. } | State::Running { .. }) => {
                let state = state_name(service.state());
                (format!("{name} is already {state}"), Vec::new())
            }
            (
                Command::Start | Command::Restart,
                State::Stopped | State::Failed { .. } | State::Backoff { .. },
            ) => {
                service.reset_failures();
                (format!("starting {name}"), self.start(name, now))
            }
            (Command::Restart, State::Starting { .. } | State::Running { .. }) => {
                service.reset_failures();
                let effects = service.stop(AfterStop::Start, now).unwrap_or_default();
                (format!("restarting {name}"), effects)
            }
            (Command::Stop, _) => match service.stop(AfterStop::Stay, now) {
                Some(effects) => (format!("stopping {name}"), effects),
                None => (format!("{name} is not running"), Vec::new()),
            },
        };
        self.settle(&mut effects, now);
        (Ok(message), effects)
    }

    /// `holdfast signal`: the signal for the current run's main process (or all its
    /// processes). Only a run with processes can be signalled; the error says why not.
    pub fn signal(
        &self,
        name: &ServiceName,
        signal: Signal,
        whom: SignalWhom,
    ) -> Result<Effect, ControlError> {
        let service = self
            .services
            .get(name)
            .ok_or_else(|| unknown_service(name))?;
        let not_running = |why: String| ControlError {
            kind: ErrorKind::BadRequest,
            message: format!("cannot send {} to {name}: {why}", signal.as_str()),
        };
        let (Some(run), Some(group)) = (service.run(), service.group()) else {
            let state = state_name(service.state());
            return Err(not_running(format!("it is {state}, no process runs")));
        };
        match whom {
            SignalWhom::All => Ok(Effect::Signal {
                service: name.clone(),
                run,
                group,
                signal,
            }),
            SignalWhom::Main => match service.pid() {
                Some(pid) => Ok(Effect::SignalMain {
                    service: name.clone(),
                    run,
                    pid,
                    signal,
                }),
                None => Err(not_running(
                    "it has no main process now (exited, or not yet named by its pidfile); --all signals its other processes".to_owned(),
                )),
            },
        }
    }

    /// `holdfast reset-failed`: the named services (all failed ones without names) get a
    /// fresh start limit, and the failed ones among them are stopped again. A quarantined
    /// service stays so: it awaits review (`quarantine release`). An unknown name is an
    /// error and changes nothing.
    pub fn reset_failed(
        &mut self,
        names: &[ServiceName],
        now: Instant,
    ) -> (Result<String, ControlError>, Vec<Effect>) {
        let names: Vec<ServiceName> = if names.is_empty() {
            self.services
                .values()
                .filter(|s| is_plain_failed(s.state()))
                .map(|s| s.name().clone())
                .collect()
        } else {
            names.to_vec()
        };
        if let Some(name) = names.iter().find(|n| !self.services.contains_key(*n)) {
            return (Err(unknown_service(name)), Vec::new());
        }
        let mut effects = Vec::new();
        let mut lines = Vec::new();
        for name in &names {
            let service = self.services.get_mut(name).expect("checked above");
            let was_failed = is_plain_failed(service.state());
            effects.extend(service.reset_failed(now));
            let quarantined = matches!(
                service.state(),
                State::Failed {
                    reason: FailReason::Quarantined(_)
                }
            );
            lines.push(if was_failed {
                format!("{name}: failed -> stopped, start limit reset")
            } else if quarantined {
                format!(
                    "{name}: quarantined, left for review (`holdfast quarantine release {name}` or `holdfast start {name}`)"
                )
            } else {
                let state = state_name(service.state());
                format!("{name}: {state}, start limit reset")
            });
        }
        if lines.is_empty() {
            lines.push("no failed services".to_owned());
        }
        self.settle(&mut effects, now);
        (Ok(lines.join("\n")), effects)
    }

    /// Applies a new plan: added services start (if autostart), removed ones stop and are
    /// forgotten, changed ones restart with the new definition, others are untouched.
    pub fn reload(&mut self, new: Plan, now: Instant) -> (ReloadPlan, Vec<Effect>) {
        let diff = reload::diff(&self.plan, &new, false);
        let mut effects = Vec::new();
        for name in &diff.removed {
            let service = self.services.get_mut(name).expect("removed services exist");
            effects.extend(service.stop(AfterStop::Remove, now).unwrap_or_default());
            // Waiting and backoff stop at once (without acting on `then`): remove those
            // here, like services that were not running at all.
            if service.is_inactive() {
                self.services.remove(name);
                effects.push(Effect::Remove {
                    service: name.clone(),
                });
            }
        }
        let mut restart_now = Vec::new();
        for name in &diff.changed {
            let spec = Arc::new(new.services[name].clone());
            let service = self.services.get_mut(name).expect("changed services exist");
            effects.push(emit(name, EventKind::Reconfigured));
            // The stop uses the old definition (its signal and timeout); the next spawn
            // the new one.
            // A stop by hand (or for shutdown) in progress stays a stop.
            let stopping_for_good = matches!(
                service.state(),
                State::Stopping {
                    then: AfterStop::Stay,
                    ..
                }
            );
            let restart = if service.is_active() && !stopping_for_good {
                service.stop(AfterStop::Start, now)
            } else {
                None
            };
            // Waiting out a backoff with the old definition would make the changed one
            // wait for nothing: it starts now, with a fresh start limit (the failures
            // were the old definition's).
            if matches!(service.state(), State::Backoff { .. }) {
                service.reset_failures();
                restart_now.push(name.clone());
            }
            service.set_spec(spec);
            effects.extend(restart.unwrap_or_default());
        }
        // Unchanged services may have new labels (group, hooks): take them without a
        // restart, so that status shows what the file says.
        for name in &diff.unchanged {
            let spec = &new.services[name];
            let service = self
                .services
                .get_mut(name)
                .expect("unchanged services exist");
            if **service.spec() != *spec {
                service.set_spec(Arc::new(spec.clone()));
            }
        }
        let mut to_start = restart_now;
        for name in &diff.added {
            let spec = new.services[name].clone();
            let autostart = spec.autostart && !self.shutting_down;
            match self.services.get_mut(name) {
                // Removed by an earlier reload and still stopping: let that stop finish
                // (its process group is still there), then run the new definition.
                Some(service) => {
                    service.set_spec(Arc::new(spec));
                    service.cancel_removal(if autostart {
                        AfterStop::Start
                    } else {
                        AfterStop::Stay
                    });
                }
                None => {
                    self.insert(spec, now);
                    if autostart {
                        to_start.push(name.clone());
                    }
                }
            }
        }
        effects.extend(self.start_all(to_start, now));
        // Daemon settings that need a restart keep their running values.
        let daemon = self.plan.daemon.clone();
        self.plan = Plan { daemon, ..new };
        self.settle(&mut effects, now);
        (diff, effects)
    }

    /// Starts a service, or parks it in `waiting` while an `after` dependency is coming up.
    fn start(&mut self, name: &ServiceName, now: Instant) -> Vec<Effect> {
        let blockers = self.blockers(name);
        if !blockers.is_empty() {
            let service = self
                .services
                .get_mut(name)
                .expect("caller checked the name");
            return service.wait_for(blockers, now);
        }
        let run = RunId(self.next_run);
        self.next_run += 1;
        let service = self
            .services
            .get_mut(name)
            .expect("caller checked the name");
        service.launch(run, now)
    }

    /// Dependencies a waiting service waits for.
    pub fn waiting_on(&self, name: &ServiceName) -> Vec<ServiceName> {
        self.blockers(name)
    }

    /// Starts several services, dependencies first. `start` only sees a dependency as
    /// coming up once it was started itself, so in name order a dependent named before
    /// its dependency would start at once instead of waiting.
    fn start_all(&mut self, mut pending: Vec<ServiceName>, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        while !pending.is_empty() {
            let next = pending
                .iter()
                .position(|n| {
                    !self.services[n]
                        .spec()
                        .after
                        .iter()
                        .any(|d| pending.contains(d))
                })
                .expect("validation rules out `after` cycles");
            let name = pending.remove(next);
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
            .filter(|dep| self.services.get(*dep).is_some_and(Service::is_coming_up))
            .cloned()
            .collect()
    }

    fn with(
        &mut self,
        name: &ServiceName,
        f: impl FnOnce(&mut Service) -> Vec<Effect>,
    ) -> Vec<Effect> {
        // Inputs for a service removed meanwhile are stale: drop them.
        self.services.get_mut(name).map(f).unwrap_or_default()
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
        for service in self.services.values_mut() {
            if matches!(service.state(), State::Waiting | State::Backoff { .. }) {
                effects.extend(service.stop(AfterStop::Stay, now).unwrap_or_default());
            }
        }
        effects
    }

    /// Follows up on the effects of one input until nothing more is due: expired
    /// deadlines, waiting services whose dependencies are up, internal restarts, and the
    /// next step of a shutdown.
    fn settle(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let mut i = 0;
        loop {
            while i < effects.len() {
                match &effects[i] {
                    Effect::StartAgain { service } => {
                        let name = service.clone();
                        effects.remove(i);
                        let more = self.start(&name, now);
                        effects.extend(more);
                        continue;
                    }
                    Effect::Remove { service } => {
                        self.services.remove(service);
                    }
                    _ => {}
                }
                i += 1;
            }
            let before = effects.len();
            self.step(effects, now);
            if effects.len() == before {
                break;
            }
        }
    }

    /// One round of time-driven and dependency-driven transitions.
    fn step(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let names: Vec<ServiceName> = self.services.keys().cloned().collect();
        for name in &names {
            let Some(service) = self.services.get_mut(name) else {
                continue;
            };
            let (more, due) = service.tick(now, self.shutting_down);
            effects.extend(more);
            if let Some(probe) = service.probe_if_due(now) {
                effects.push(probe);
            }
            if let Some(StartDue) = due {
                effects.extend(self.start(name, now));
            }
        }
        if self.shutting_down {
            self.shutdown_step(effects, now);
            return;
        }
        for name in &names {
            let waiting = self
                .services
                .get(name)
                .is_some_and(|s| *s.state() == State::Waiting);
            if waiting && self.blockers(name).is_empty() {
                effects.extend(self.start(name, now));
            }
        }
    }

    /// Stops every active service that no active service depends on (dependents first),
    /// and reports the end of the shutdown once all are inactive.
    fn shutdown_step(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let stoppable: Vec<ServiceName> = self
            .services
            .values()
            .filter(|s| matches!(s.state(), State::Starting { .. } | State::Running { .. }))
            .filter(|s| !self.has_active_dependent(s.name()))
            .map(|s| s.name().clone())
            .collect();
        for name in stoppable {
            let service = self.services.get_mut(&name).expect("listed above");
            effects.extend(service.stop(AfterStop::Stay, now).unwrap_or_default());
        }
        let done = self.services.values().all(Service::is_inactive);
        if done && !self.shutdown_completed {
            self.shutdown_completed = true;
            effects.push(Effect::Emit(Event {
                service: None,
                kind: EventKind::ShutdownCompleted,
            }));
            effects.push(Effect::Exit);
        }
    }

    fn has_active_dependent(&self, name: &ServiceName) -> bool {
        self.services
            .values()
            .any(|s| s.is_active() && s.spec().after.contains(name))
    }
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
    }
}

/// Failed for a cause `reset-failed` clears (not quarantined: that awaits review).
fn is_plain_failed(state: &State) -> bool {
    matches!(state, State::Failed { reason } if !matches!(reason, FailReason::Quarantined(_)))
}

fn emit(name: &ServiceName, kind: EventKind) -> Effect {
    Effect::Emit(Event {
        service: Some(name.clone()),
        kind,
    })
}

pub fn unknown_service(name: &ServiceName) -> ControlError {
    ControlError {
        kind: ErrorKind::UnknownService,
        message: format!("no service named \"{name}\""),
    }
}

fn shutting_down() -> ControlError {
    ControlError {
        kind: ErrorKind::ShuttingDown,
        message: "holdfast is shutting down".to_owned(),
    }
}
