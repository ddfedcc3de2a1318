//! A test harness for the core: the `Supervisor` with a fake clock and a fake shell.
//!
//! A [`Harness`] owns the `Supervisor`, a fake clock and a fake shell: it answers every
//! `Spawn` at once (with a made-up pid, or a failure when the test asks), records every
//! effect, and only feeds `Tick` when `next_deadline()` has come, like the real shell's
//! single timer. Effects are compared as short labels (`"spawn a"`, `"a Exited"`,
//! `"signal a SIGTERM"`) so that each test reads as "given this state and this input,
//! expect these effects".
//!
//! The core's own tests use it, and so do the `holdfast` crate's tests that build their
//! services through the real config parser (feature `testkit`).

#![allow(clippy::missing_panics_doc, missing_docs)]

pub use std::collections::{BTreeMap, BTreeSet, VecDeque};
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub use crate::notify::NotifyMsg;
pub use crate::unix::Signal;
pub use crate::unix::{Pid, ReapSeq};

pub use super::event::{Event, EventKind};
pub use super::service::{RunId, Service, SpawnFailure, State};
pub use super::{Answer, Command, Effect, Input, SignalWhom, Supervisor, state_name, take_reply};
pub use crate::model::{
    Backoff, DaemonSettings, ExitStatus, Plan, RestartPolicy, ServiceName, ServiceSpec, SpawnCause,
    SpawnErrorKind, StartLimit,
};
pub use crate::supervisor::answer::{ControlError, ReloadPlan};

pub const SEED: u64 = 7;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("test service names are valid")
}

/// A service with holdfast's defaults (on-failure, 100 ms restart, start_secs 1 s).
pub fn svc(n: &str) -> ServiceSpec {
    ServiceSpec::with_defaults(name(n), vec!["/bin/true".to_owned()])
}

pub fn svc_after(n: &str, deps: &[&str]) -> ServiceSpec {
    ServiceSpec {
        after: deps.iter().map(|d| name(d)).collect(),
        ..svc(n)
    }
}

pub fn with_restart(restart: RestartPolicy, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec { restart, ..spec }
}

pub fn with_limit(burst: u32, interval: Duration, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        start_limit: StartLimit { interval, burst },
        ..spec
    }
}

pub fn with_fixed_delay(delay: Duration, spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        backoff: Backoff::Fixed(delay),
        ..spec
    }
}

pub fn plan(specs: impl IntoIterator<Item = ServiceSpec>) -> Plan {
    Plan {
        daemon: DaemonSettings {
            control: "/run/holdfast-test/control.sock".into(),
            control_group: None,
            admin_group: None,
            state_dir: "/var/lib/holdfast-test".into(),
            log_dir: "/var/log/holdfast-test".into(),
            pass_env: Vec::new(),
            http: None,
            supervisord: None,
        },
        services: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
    }
}

pub fn code(c: i32) -> ExitStatus {
    ExitStatus::Exited(c)
}

pub fn killed(signal: Signal) -> ExitStatus {
    ExitStatus::Signaled {
        signal,
        core_dumped: false,
    }
}

/// One effect as a short label; events by their variant name only.
pub fn label(effect: &Effect) -> String {
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
        Effect::Reply(reply) => format!("reply {reply:?}"),
        Effect::Remove { service } => format!("remove {service}"),
        Effect::Exit => "exit".to_owned(),
        Effect::MainPid { service, pid, .. } => format!("main-pid {service} {pid}"),
        Effect::ReadPidfile { service, .. } => format!("read-pidfile {service}"),
        Effect::StartProbe { service, .. } => format!("probe {service}"),
        Effect::Quarantine { service, .. } => format!("quarantine {service}"),
        Effect::SyncUpstream { service, .. } => format!("sync-upstream {service}"),
        Effect::WatchUpstream { service, .. } => format!("watch-upstream {service}"),
        Effect::RestartUpstream { service, .. } => format!("restart-upstream {service}"),
        Effect::TakeOver {
            service, process, ..
        } => format!(
            "take-over {service} {:?}",
            process.map(|(pid, _)| pid.as_raw())
        ),
    }
}

pub fn labels(effects: &[Effect]) -> Vec<String> {
    effects.iter().map(label).collect()
}

/// The event kinds emitted for one service, in order.
pub fn events_of(effects: &[Effect], service: &str) -> Vec<EventKind> {
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

pub fn spawns(effects: &[Effect]) -> Vec<(ServiceName, RunId, Arc<ServiceSpec>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { service, run, spec } => Some((service.clone(), *run, Arc::clone(spec))),
            _ => None,
        })
        .collect()
}

/// The restart delays scheduled, in order.
pub fn delays(effects: &[Effect]) -> Vec<Duration> {
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

pub struct Harness {
    pub sup: Supervisor,
    pub now: Instant,
    pub next_pid: i32,
    /// Services whose spawns fail (and how) until `heal_spawns`.
    pub failing: BTreeMap<ServiceName, SpawnFailure>,
    pub exit_seen: bool,
}

impl Harness {
    /// Messages on the notify socket from the current run of `n`.
    pub fn notify(&mut self, n: &str, msgs: Vec<NotifyMsg>) -> Vec<Effect> {
        let run = self.run(n);
        self.feed(Input::Notify {
            service: name(n),
            run,
            msgs,
            alive_at: ReapSeq::default(),
        })
    }

    pub fn new(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        Self::with_seed(specs, SEED)
    }

    pub fn with_seed(specs: impl IntoIterator<Item = ServiceSpec>, seed: u64) -> Self {
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
    pub fn booted(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        let mut h = Self::new(specs);
        h.feed(Input::Boot);
        h
    }

    /// A harness after `Boot` with every service past `start_secs` (so running).
    pub fn running(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        let mut h = Self::booted(specs);
        h.advance(secs(5));
        h
    }

    pub fn service(&self, n: &str) -> &Service {
        self.sup
            .service(&name(n))
            .unwrap_or_else(|| panic!("service {n} is known"))
    }

    pub fn state(&self, n: &str) -> &'static str {
        state_name(self.service(n).state()).as_str()
    }

    pub fn run(&self, n: &str) -> RunId {
        self.service(n)
            .run()
            .unwrap_or_else(|| panic!("{n} has a current run"))
    }

    pub fn fail_spawns(&mut self, n: &str) {
        let failure = SpawnFailure::Service(SpawnCause::new(
            SpawnErrorKind::NotFound,
            "exec: no such file or directory",
        ));
        self.failing.insert(name(n), failure);
    }

    /// Spawns of `n` fail because holdfast is out of descriptors, until `heal_spawns`.
    pub fn starve_spawns(&mut self, n: &str) {
        let failure = SpawnFailure::HoldfastResources(SpawnCause::new(
            SpawnErrorKind::Other,
            "create error pipe: EMFILE: Too many open files",
        ));
        self.failing.insert(name(n), failure);
    }

    pub fn heal_spawns(&mut self, n: &str) {
        self.failing.remove(&name(n));
    }

    /// Hands one input to the core and plays the shell for its effects.
    pub fn feed(&mut self, input: Input) -> Vec<Effect> {
        let effects = self.sup.handle(input, self.now);
        self.apply(effects)
    }

    /// Executes effects like the shell would, answering spawns before anything else.
    pub fn apply(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
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
                    if s.run() == Some(*run) {
                        assert_eq!(s.group(), Some(*group), "signals go to a live group");
                    } else {
                        let draining = s.draining().iter().any(|d| d.run == *run);
                        assert!(draining, "signals go to a live run: {run} is not");
                    }
                }
                Effect::SignalMain {
                    service, run, pid, ..
                } => {
                    let s = self.sup.service(service).expect("signalled service exists");
                    assert_eq!(s.run(), Some(*run), "signals go to the current run only");
                    assert_eq!(s.pid(), Some(*pid), "signals go to the current main pid");
                }
                Effect::Reply(reply) => {
                    panic!("a reply is taken out by whoever fed the control input: {reply:?}")
                }
                Effect::Exit => self.exit_seen = true,
                Effect::Emit(_)
                | Effect::Remove { .. }
                | Effect::MainPid { .. }
                | Effect::ReadPidfile { .. } => {}
                Effect::StartProbe { .. } | Effect::Quarantine { .. } => {}
                // The observer tests answer these themselves.
                Effect::SyncUpstream { .. }
                | Effect::WatchUpstream { .. }
                | Effect::RestartUpstream { .. }
                | Effect::TakeOver { .. } => {}
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
    pub fn advance(&mut self, by: Duration) -> Vec<Effect> {
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
    pub fn skip(&mut self, by: Duration) {
        self.now += by;
    }

    pub fn exit(&mut self, n: &str, status: ExitStatus) -> Vec<Effect> {
        self.exit_run(n, self.run(n), status, false)
    }

    /// The main process exits but other members of its process group live on.
    pub fn exit_leaving_group(&mut self, n: &str, status: ExitStatus) -> Vec<Effect> {
        self.exit_run(n, self.run(n), status, true)
    }

    pub fn exit_run(
        &mut self,
        n: &str,
        run: RunId,
        status: ExitStatus,
        alive: bool,
    ) -> Vec<Effect> {
        self.feed(Input::Exited {
            service: name(n),
            run,
            status,
            group_alive: alive,
        })
    }

    pub fn group_empty(&mut self, n: &str) -> Vec<Effect> {
        let run = self.run(n);
        self.feed(Input::GroupEmpty {
            service: name(n),
            run,
        })
    }

    pub fn command(
        &mut self,
        command: Command,
        n: &str,
    ) -> (Result<String, ControlError>, Vec<Effect>) {
        let service = name(n);
        let (reply, effects) = self.control(Input::Command { command, service });
        let reply = reply.map(|answer| match answer {
            Answer::Accepted(message) => message,
            Answer::Reload(_) => panic!("a command answers with a message"),
        });
        (reply, effects)
    }

    /// A command that must succeed; returns its effects.
    pub fn ok(&mut self, command: Command, n: &str) -> Vec<Effect> {
        let (reply, effects) = self.command(command, n);
        reply.unwrap_or_else(|e| panic!("{command:?} {n} failed: {e}"));
        effects
    }

    pub fn reload(
        &mut self,
        specs: impl IntoIterator<Item = ServiceSpec>,
    ) -> (ReloadPlan, Vec<Effect>) {
        self.reload_plan(plan(specs))
    }

    pub fn reload_plan(&mut self, new: Plan) -> (ReloadPlan, Vec<Effect>) {
        let (reply, effects) = self.control(Input::Reload(new));
        match reply {
            Ok(Answer::Reload(diff)) => (diff, effects),
            other => panic!("a reload answers with its plan, not {other:?}"),
        }
    }

    /// `holdfast signal`: the one signal effect of the answer, or its error.
    pub fn signal(
        &mut self,
        n: &str,
        signal: Signal,
        whom: SignalWhom,
    ) -> Result<Effect, ControlError> {
        let input = Input::Signal {
            service: name(n),
            signal,
            whom,
        };
        let (reply, effects) = self.control(input);
        reply.map(|_| {
            assert_eq!(effects.len(), 1, "one signal: {:?}", labels(&effects));
            effects[0].clone()
        })
    }

    /// Feeds a control input: its one answer, and the other effects played by the shell.
    pub fn control(&mut self, input: Input) -> (Result<Answer, ControlError>, Vec<Effect>) {
        let mut effects = self.sup.handle(input, self.now);
        let reply = take_reply(&mut effects).expect("a control input is answered");
        assert!(
            take_reply(&mut effects).is_none(),
            "a control input is answered once"
        );
        (reply, self.apply(effects))
    }

    /// Crashes `n` (exit 1) after it has been up for `up`, then waits out the backoff;
    /// returns everything that happened.
    pub fn crash_after(&mut self, n: &str, up: Duration) -> Vec<Effect> {
        let mut done = self.advance(up);
        done.extend(self.exit(n, code(1)));
        if let Some(deadline) = self.sup.next_deadline() {
            done.extend(self.advance(deadline - self.now));
        }
        done
    }
}
