//! Unit tests of the pure supervisor core.
//!
//! A [`Harness`] owns the `Supervisor`, a fake clock and a fake shell: it answers every
//! `Spawn` at once (with a made-up pid, or a failure when the test asks), records every
//! effect, and only feeds `Tick` when `next_deadline()` has come, like the real shell's
//! single timer. Effects are compared as short labels (`"spawn a"`, `"a Exited"`,
//! `"signal a SIGTERM"`) so that each test reads as "given this state and this input,
//! expect these effects".

mod backoff;
mod commands;
mod durations;
mod exit_codes;
mod health;
mod ordering;
mod readiness;
mod reload;
mod restart;
mod shutdown;
mod stop;
mod verbs;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::answer::{ControlError, ReloadPlan};
use super::event::{Event, EventKind};
use super::service::{RunId, Service, SpawnFailure, State};
use super::{Command, Effect, Input, Supervisor, state_name};
use crate::model::{
    Backoff, DaemonSettings, ExitStatus, Plan, RestartPolicy, ServiceName, ServiceSpec, StartLimit,
};

const SEED: u64 = 7;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("test service names are valid")
}

/// A service with holdfast's defaults (on-failure, 100 ms restart, start_secs 1 s).
fn svc(n: &str) -> ServiceSpec {
    ServiceSpec::with_defaults(name(n), vec!["/bin/true".to_owned()])
}

fn svc_after(n: &str, deps: &[&str]) -> ServiceSpec {
    ServiceSpec {
        after: deps.iter().map(|d| name(d)).collect(),
        ..svc(n)
    }
}

fn with_restart(restart: RestartPolicy, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec { restart, ..spec }
}

fn with_limit(burst: u32, interval: Duration, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        start_limit: StartLimit { interval, burst },
        ..spec
    }
}

fn with_fixed_delay(delay: Duration, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        backoff: Backoff::Fixed(delay),
        ..spec
    }
}

fn plan(specs: impl IntoIterator<Item = ServiceSpec>) -> Plan {
    Plan {
        daemon: DaemonSettings {
            control: "/run/holdfast-test/control.sock".into(),
            control_group: None,
            state_dir: "/var/lib/holdfast-test".into(),
            log_dir: "/var/log/holdfast-test".into(),
            pass_env: Vec::new(),
        },
        services: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
    }
}

fn code(c: i32) -> ExitStatus {
    ExitStatus::Exited(c)
}

fn killed(signal: Signal) -> ExitStatus {
    ExitStatus::Signaled {
        signal,
        core_dumped: false,
    }
}

/// One effect as a short label; events by their variant name only.
fn label(effect: &Effect) -> String {
    match effect {
        Effect::Spawn { service, .. } => format!("spawn {service}"),
        Effect::Signal {
            service, signal, ..
        } => format!("signal {service} {}", signal.as_str()),
        Effect::SignalMain {
            service,
            pid,
            signal,
            ..
        } => format!("signal-main {service} {pid} {}", signal.as_str()),
        Effect::Emit(Event { service, kind }) => {
            let debug = format!("{kind:?}");
            let variant = debug
                .split([' ', '{', '('])
                .next()
                .expect("split yields at least one piece");
            match service {
                Some(service) => format!("{service} {variant}"),
                None => variant.to_owned(),
            }
        }
        Effect::StartAgain { service } => format!("start-again {service}"),
        Effect::Remove { service } => format!("remove {service}"),
        Effect::Exit => "exit".to_owned(),
        Effect::MainPid { service, pid, .. } => format!("main-pid {service} {pid}"),
        Effect::ReadPidfile { service, .. } => format!("read-pidfile {service}"),
        Effect::StartProbe { service, .. } => format!("probe {service}"),
        Effect::Quarantine { service, .. } => format!("quarantine {service}"),
    }
}

fn labels(effects: &[Effect]) -> Vec<String> {
    effects.iter().map(label).collect()
}

/// The event kinds emitted for one service, in order.
fn events_of(effects: &[Effect], service: &str) -> Vec<EventKind> {
    let service = name(service);
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(Event {
                service: Some(s),
                kind,
            }) if *s == service => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

fn spawns(effects: &[Effect]) -> Vec<(ServiceName, RunId, Arc<ServiceSpec>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { service, run, spec } => Some((service.clone(), *run, Arc::clone(spec))),
            _ => None,
        })
        .collect()
}

/// The restart delays scheduled, in order.
fn delays(effects: &[Effect]) -> Vec<Duration> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(Event {
                kind: EventKind::RestartScheduled { delay, .. },
                ..
            }) => Some(*delay),
            _ => None,
        })
        .collect()
}

struct Harness {
    sup: Supervisor,
    now: Instant,
    next_pid: i32,
    /// Services whose spawns fail (and how) until `heal_spawns`.
    failing: BTreeMap<ServiceName, SpawnFailure>,
    exit_seen: bool,
}

impl Harness {
    fn new(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        Self::with_seed(specs, SEED)
    }

    fn with_seed(specs: impl IntoIterator<Item = ServiceSpec>, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            sup: Supervisor::new(plan(specs), now, seed),
            now,
            next_pid: 100,
            failing: BTreeMap::new(),
            exit_seen: false,
        }
    }

    /// A harness after `Boot`.
    fn booted(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        let mut h = Self::new(specs);
        h.feed(Input::Boot);
        h
    }

    /// A harness after `Boot` with every service past `start_secs` (so running).
    fn running(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        let mut h = Self::booted(specs);
        h.advance(secs(5));
        h
    }

    fn service(&self, n: &str) -> &Service {
        self.sup
            .service(&name(n))
            .unwrap_or_else(|| panic!("service {n} is known"))
    }

    fn state(&self, n: &str) -> &'static str {
        state_name(self.service(n).state()).as_str()
    }

    fn run(&self, n: &str) -> RunId {
        self.service(n)
            .run()
            .unwrap_or_else(|| panic!("{n} has a current run"))
    }

    fn fail_spawns(&mut self, n: &str) {
        let failure = SpawnFailure::Service("exec: no such file or directory".to_owned());
        self.failing.insert(name(n), failure);
    }

    /// Spawns of `n` fail because holdfast is out of descriptors, until `heal_spawns`.
    fn starve_spawns(&mut self, n: &str) {
        let failure = SpawnFailure::HoldfastResources(
            "create error pipe: EMFILE: Too many open files".to_owned(),
        );
        self.failing.insert(name(n), failure);
    }

    fn heal_spawns(&mut self, n: &str) {
        self.failing.remove(&name(n));
    }

    /// Hands one input to the core and plays the shell for its effects.
    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let effects = self.sup.handle(input, self.now);
        self.apply(effects)
    }

    /// Executes effects like the shell would, answering spawns before anything else.
    fn apply(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut queue = VecDeque::from(effects);
        let mut done = Vec::new();
        while let Some(effect) = queue.pop_front() {
            match &effect {
                Effect::Spawn { service, run, spec } => {
                    assert_eq!(&spec.name, service, "a spawn carries its own spec");
                    let input = if let Some(failure) = self.failing.get(service) {
                        Input::SpawnFailed {
                            service: service.clone(),
                            run: *run,
                            error: failure.clone(),
                        }
                    } else {
                        self.next_pid += 1;
                        Input::Spawned {
                            service: service.clone(),
                            run: *run,
                            pid: Pid::from_raw(self.next_pid),
                        }
                    };
                    queue.extend(self.sup.handle(input, self.now));
                }
                Effect::Signal {
                    service,
                    run,
                    group,
                    ..
                } => {
                    let s = self.sup.service(service).expect("signalled service exists");
                    assert_eq!(s.run(), Some(*run), "signals go to the current run only");
                    assert_eq!(s.group(), Some(*group), "signals go to a live group");
                }
                Effect::SignalMain {
                    service, run, pid, ..
                } => {
                    let s = self.sup.service(service).expect("signalled service exists");
                    assert_eq!(s.run(), Some(*run), "signals go to the current run only");
                    assert_eq!(s.pid(), Some(*pid), "signals go to the current main pid");
                }
                Effect::StartAgain { service } => {
                    panic!("StartAgain for {service} leaked out of the core")
                }
                Effect::Exit => self.exit_seen = true,
                Effect::Emit(_)
                | Effect::Remove { .. }
                | Effect::MainPid { .. }
                | Effect::ReadPidfile { .. } => {}
                Effect::StartProbe { .. } | Effect::Quarantine { .. } => {}
            }
            done.push(effect);
        }
        if let Some(deadline) = self.sup.next_deadline() {
            assert!(
                deadline > self.now,
                "every expired deadline is acted on within the input that passed it"
            );
        }
        done
    }

    /// Lets time pass, ticking exactly at each deadline on the way as the shell's single
    /// timer would (and never otherwise).
    fn advance(&mut self, by: Duration) -> Vec<Effect> {
        let target = self.now + by;
        let mut done = Vec::new();
        while let Some(deadline) = self.sup.next_deadline().filter(|d| *d <= target) {
            self.now = deadline;
            done.extend(self.feed(Input::Tick));
        }
        self.now = target;
        done
    }

    /// Moves the clock without ticking: a shell that handles another ready input before
    /// its (equally ready) timer.
    fn skip(&mut self, by: Duration) {
        self.now += by;
    }

    fn exit(&mut self, n: &str, status: ExitStatus) -> Vec<Effect> {
        self.exit_run(n, self.run(n), status, false)
    }

    /// The main process exits but other members of its process group live on.
    fn exit_leaving_group(&mut self, n: &str, status: ExitStatus) -> Vec<Effect> {
        self.exit_run(n, self.run(n), status, true)
    }

    fn exit_run(&mut self, n: &str, run: RunId, status: ExitStatus, alive: bool) -> Vec<Effect> {
        self.feed(Input::Exited {
            service: name(n),
            run,
            status,
            group_alive: alive,
        })
    }

    fn group_empty(&mut self, n: &str) -> Vec<Effect> {
        let run = self.run(n);
        self.feed(Input::GroupEmpty {
            service: name(n),
            run,
        })
    }

    fn command(
        &mut self,
        command: Command,
        n: &str,
    ) -> (Result<String, ControlError>, Vec<Effect>) {
        let (reply, effects) = self.sup.command(command, &name(n), self.now);
        (reply, self.apply(effects))
    }

    /// A command that must succeed; returns its effects.
    fn ok(&mut self, command: Command, n: &str) -> Vec<Effect> {
        let (reply, effects) = self.command(command, n);
        reply.unwrap_or_else(|e| panic!("{command:?} {n} failed: {e}"));
        effects
    }

    fn reload(
        &mut self,
        specs: impl IntoIterator<Item = ServiceSpec>,
    ) -> (ReloadPlan, Vec<Effect>) {
        self.reload_plan(plan(specs))
    }

    fn reload_plan(&mut self, new: Plan) -> (ReloadPlan, Vec<Effect>) {
        let (diff, effects) = self.sup.reload(new, self.now);
        (diff, self.apply(effects))
    }

    /// Crashes `n` (exit 1) after it has been up for `up`, then waits out the backoff;
    /// returns everything that happened.
    fn crash_after(&mut self, n: &str, up: Duration) -> Vec<Effect> {
        let mut done = self.advance(up);
        done.extend(self.exit(n, code(1)));
        if let Some(deadline) = self.sup.next_deadline() {
            done.extend(self.advance(deadline - self.now));
        }
        done
    }
}

/// The shell's contract, checked once: ticks before a deadline change nothing.
#[test]
fn a_tick_before_any_deadline_has_no_effects() {
    let mut h = Harness::booted([svc("a")]);
    let deadline = h.sup.next_deadline().expect("starting has a deadline");
    h.skip(deadline - h.now - ms(1));
    assert_eq!(labels(&h.feed(Input::Tick)), Vec::<String>::new());
    assert_eq!(h.state("a"), "starting");
    assert_eq!(
        h.sup.next_deadline(),
        Some(deadline),
        "an early tick moves no deadline"
    );
}

#[test]
fn a_state_is_named_for_status() {
    assert_eq!(state_name(&State::Stopped).as_str(), "stopped");
    assert_eq!(
        state_name(&State::Launching { run: RunId(1) }).as_str(),
        "starting"
    );
}
