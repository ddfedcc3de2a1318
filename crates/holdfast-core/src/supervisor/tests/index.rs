//! The indexed core against the walk it replaced (`core/reference.rs`): on random plans
//! driven by random scripts (exits, readiness, probes, commands, reloads, shutdown, the
//! fake clock jumping to deadlines or past several at once), both cores must return the
//! same effects, reach the same service states and want the same next deadline after
//! every input, and the index must say what walking every service says.
//!
//! Plans and scripts come from fixed seeds, so a failure reproduces.

use super::*;
use crate::health::{ProbeFailure, ProbeOutcome};
use crate::model::{DecaySpec, HealthSpec, Probe, Readiness, Threshold, Timeout, UnhealthyAction};

const PLANS: u64 = 120;
const STEPS: usize = 150;

/// Names the plans draw from: `w` and its instances exercise a reload that replaces
/// instances still stopping.
const NAMES: [&str; 9] = ["a", "b", "c", "d", "e", "f", "w", "w@0", "w@1"];

#[test]
fn the_indexed_core_does_exactly_what_walking_every_service_does() {
    for seed in 0..PLANS {
        let mut twin = Twin::new(seed);
        for step in 0..STEPS {
            let input = twin.next_input();
            twin.feed(input, seed, step);
        }
        twin.feed(Input::Shutdown, seed, STEPS);
        for step in 0..40 {
            if twin.exit_seen {
                break;
            }
            let input = twin.end_input();
            twin.feed(input, seed, STEPS + 1 + step);
        }
    }
}

/// Both cores, fed the same inputs at the same instants.
struct Twin {
    indexed: Supervisor,
    walking: Supervisor,
    now: Instant,
    rng: fastrand::Rng,
    next_pid: i32,
    /// Probes asked for and not yet answered.
    probes: Vec<(ServiceName, RunId)>,
    exit_seen: bool,
}

impl Twin {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = Instant::now();
        let plan = random_plan(&mut rng);
        let mut twin = Self {
            indexed: Supervisor::new(plan.clone(), now, seed),
            walking: Supervisor::new(plan, now, seed),
            now,
            rng,
            next_pid: 100,
            probes: Vec::new(),
            exit_seen: false,
        };
        twin.feed(Input::Boot, seed, 0);
        twin
    }

    /// Feeds `input` to both, then the answers to their spawns like the shell would;
    /// panics (naming the seed) at the first difference.
    fn feed(&mut self, input: Input, seed: u64, step: usize) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let what = format!("seed {seed}, step {step}, input {input:?}");
            let effects = self.indexed.handle(input.clone(), self.now);
            let expected = self.walking.handle_walking_all(input, self.now);
            assert_eq!(effects, expected, "{what}: effects");
            self.indexed.check_index(self.now);
            let states = |sup: &Supervisor| -> Vec<String> {
                sup.services().map(|s| format!("{s:?}")).collect()
            };
            assert_eq!(states(&self.indexed), states(&self.walking), "{what}");
            let deadline = self.indexed.next_deadline();
            assert_eq!(deadline, self.walking.next_deadline_walking_all(), "{what}");
            for effect in effects {
                queue.extend(self.answer(effect));
            }
        }
    }

    /// What the shell feeds back for `effect`: a spawn's result at once.
    fn answer(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Spawn { service, run, .. } if self.rng.u8(0..10) == 0 => {
                Some(Input::SpawnFailed {
                    service,
                    run,
                    error: SpawnFailure::Service(crate::model::SpawnCause::new(
                        crate::model::SpawnErrorKind::NotFound,
                        "exec: no such file or directory",
                    )),
                })
            }
            Effect::Spawn { service, run, .. } => {
                self.next_pid += 1;
                let pid = Pid::from_raw(self.next_pid);
                Some(Input::Spawned { service, run, pid })
            }
            Effect::StartProbe { service, run, .. } => {
                self.probes.push((service, run));
                None
            }
            Effect::Exit => {
                self.exit_seen = true;
                None
            }
            _ => None,
        }
    }

    /// A random service name, present in the plan or not.
    fn any_name(&mut self) -> ServiceName {
        name(NAMES[self.rng.usize(..NAMES.len())])
    }

    /// A random service with a current run, and that run.
    fn any_run(&mut self) -> Option<(ServiceName, RunId)> {
        let runs: Vec<(ServiceName, RunId)> = (self.indexed.services())
            .filter_map(|s| Some((s.name().clone(), s.run()?)))
            .collect();
        (!runs.is_empty()).then(|| runs[self.rng.usize(..runs.len())].clone())
    }

    fn next_input(&mut self) -> Input {
        if !self.probes.is_empty() && self.rng.bool() {
            let (service, run) = self.probes.remove(0);
            let outcome = if self.rng.bool() {
                ProbeOutcome::Success
            } else {
                ProbeOutcome::Failure(ProbeFailure::Connect {
                    address: "127.0.0.1:1".to_owned(),
                    error: "connection refused".to_owned(),
                })
            };
            return Input::ProbeResult {
                service,
                run,
                outcome,
            };
        }
        match self.rng.u8(0..20) {
            0..=5 => self.run_input(),
            6..=9 => self.time_passes(),
            10..=12 => Input::Command {
                command: [Command::Start, Command::Stop, Command::Restart][self.rng.usize(..3)],
                service: self.any_name(),
            },
            13 => Input::ResetFailed {
                services: if self.rng.bool() {
                    Vec::new()
                } else {
                    vec![self.any_name()]
                },
            },
            14 => Input::Reload(random_plan(&mut self.rng)),
            15 if self.rng.u8(0..8) == 0 => Input::Shutdown,
            _ => self.run_input(),
        }
    }

    /// An input about a current run: an exit, readiness, a notify message.
    fn run_input(&mut self) -> Input {
        let Some((service, run)) = self.any_run() else {
            return self.time_passes();
        };
        match self.rng.u8(0..6) {
            0 | 1 => Input::Exited {
                service,
                run,
                status: [code(0), code(1), killed(Signal::SIGTERM)][self.rng.usize(..3)],
                group_alive: self.rng.u8(0..4) == 0,
            },
            2 => Input::GroupEmpty { service, run },
            3 => Input::Ready { service, run },
            _ => Input::Notify {
                service,
                run,
                msgs: vec![if self.rng.bool() {
                    NotifyMsg::Ready
                } else {
                    NotifyMsg::Watchdog
                }],
                alive_at: ReapSeq::default(),
            },
        }
    }

    /// The clock moves: to the next deadline, past it (several may come due at once), or
    /// a little, and the shell ticks (or handles another input first).
    fn time_passes(&mut self) -> Input {
        match (self.indexed.next_deadline(), self.rng.u8(0..4)) {
            (Some(deadline), 0 | 1) => self.now = self.now.max(deadline),
            (Some(deadline), 2) => self.now = self.now.max(deadline) + ms(self.rng.u64(1..3000)),
            _ => self.now += ms(self.rng.u64(0..500)),
        }
        Input::Tick
    }

    /// After the shutdown: the stopped runs' exits, or time until their stop timeouts.
    fn end_input(&mut self) -> Input {
        match self.any_run() {
            Some((service, run)) if self.rng.bool() => Input::Exited {
                service,
                run,
                status: killed(Signal::SIGTERM),
                group_alive: false,
            },
            _ => self.time_passes(),
        }
    }
}

/// Some of `NAMES` with random definitions; `after` only names services earlier in the
/// plan, so there is no cycle (like validation ensures).
fn random_plan(rng: &mut fastrand::Rng) -> Plan {
    let mut names: Vec<&str> = match rng.u8(0..3) {
        0 => vec!["w"],
        1 => vec!["w@0", "w@1"],
        _ => vec![],
    };
    names.extend(NAMES[..6].iter().filter(|_| rng.u8(0..4) != 0));
    rng.shuffle(&mut names);
    let mut specs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let after: Vec<&str> = names[..i]
            .iter()
            .filter(|_| rng.u8(0..3) == 0)
            .copied()
            .collect();
        specs.push(random_spec(rng, n, &after));
    }
    plan(specs)
}

fn random_spec(rng: &mut fastrand::Rng, n: &str, after: &[&str]) -> ServiceSpec {
    let ready = match rng.u8(0..3) {
        0 => Readiness::Notify,
        _ => Readiness::None,
    };
    let spec = ServiceSpec {
        autostart: rng.u8(0..5) != 0,
        restart: [
            RestartPolicy::No,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ][rng.usize(..3)],
        backoff: Backoff::Fixed(ms(rng.u64(0..300))),
        start_limit: StartLimit {
            interval: secs(10),
            burst: rng.u32(1..6),
        },
        start_secs: ms([0, 100, 1000][rng.usize(..3)]),
        watchdog: (ready == Readiness::Notify && rng.bool()).then(|| ms(rng.u64(100..2000))),
        start_timeout: Timeout::After(ms(rng.u64(200..3000))),
        ready,
        health: rng.u8(0..3).eq(&0).then(|| health(rng)),
        ..svc_after(n, after)
    };
    let mut spec = spec;
    spec.stop.timeout = Timeout::After(ms(rng.u64(1..2000)));
    spec
}

fn health(rng: &mut fastrand::Rng) -> HealthSpec {
    HealthSpec {
        probe: Probe::Tcp {
            address: "127.0.0.1:1".to_owned(),
        },
        interval: ms(rng.u64(100..1000)),
        timeout: ms(50),
        decay: DecaySpec {
            grace: Duration::ZERO,
            degraded: Threshold {
                failures: 1,
                within: secs(10),
            },
            unhealthy: Threshold {
                failures: 2,
                within: secs(10),
            },
            recover_successes: 1,
        },
        unhealthy_action: [UnhealthyAction::Restart, UnhealthyAction::None][rng.usize(..2)],
    }
}
