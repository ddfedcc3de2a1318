//! Rollouts in the core: the new build beside the old, drain, bake, rollback, canary.

use std::path::PathBuf;

use super::*;
use crate::health::{HealthState, ProbeFailure, ProbeOutcome};
use crate::model::{
    DecaySpec, HealthSpec, Probe, Readiness, Threshold, UnhealthyAction, UpgradeMode, UpgradeSpec,
};
use crate::notify::NotifyMsg;
use crate::supervisor::answer::ErrorKind;

const A: &str = "/opt/api/builds/a/server";
const B: &str = "/opt/api/builds/b/server";

/// A notify-ready service pinned to build A: a 10 s ready timeout, 5 s drain, 30 s bake.
fn api(n: &str) -> ServiceSpec {
    let mut upgrade = UpgradeSpec::new(UpgradeMode::Handover, A.into());
    upgrade.ready_timeout = secs(10);
    upgrade.drain = secs(5);
    upgrade.bake = secs(30);
    ServiceSpec {
        command: vec!["/opt/api/current/server".to_owned()],
        ready: Readiness::Notify,
        start_secs: Duration::ZERO,
        upgrade: Some(upgrade),
        ..svc(n)
    }
}

/// `api` with a tcp probe every second: unhealthy after 2 failures.
fn probed(n: &str) -> ServiceSpec {
    ServiceSpec {
        health: Some(HealthSpec {
            probe: Probe::Tcp {
                address: "127.0.0.1:1".to_owned(),
            },
            interval: secs(1),
            timeout: ms(500),
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
            unhealthy_action: UnhealthyAction::Restart,
        }),
        ..api(n)
    }
}

fn program(spec: &ServiceSpec) -> &str {
    &spec.command[0]
}

/// Every named service booted and ready.
fn serving(specs: impl IntoIterator<Item = ServiceSpec>) -> Harness {
    let specs: Vec<ServiceSpec> = specs.into_iter().collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.to_string()).collect();
    let mut h = Harness::booted(specs);
    for n in &names {
        h.notify(n, vec![NotifyMsg::Ready]);
        assert_eq!(h.state(n), "running");
    }
    h
}

impl Harness {
    fn upgrade(&mut self, n: &str, to: &str) -> (Result<Answer, ControlError>, Vec<Effect>) {
        self.control(Input::Upgrade {
            service: name(n),
            to: PathBuf::from(to),
        })
    }

    /// An upgrade that must be accepted; returns its effects.
    fn upgrading(&mut self, n: &str, to: &str) -> Vec<Effect> {
        let (reply, effects) = self.upgrade(n, to);
        reply.unwrap_or_else(|e| panic!("upgrade of {n} refused: {e}"));
        effects
    }

    fn ready(&mut self, n: &str) -> Vec<Effect> {
        self.notify(n, vec![NotifyMsg::Ready])
    }

    /// The old run of `n`'s rollout exits and its group is empty.
    fn old_gone(&mut self, n: &str, old: RunId) -> Vec<Effect> {
        self.exit_run(n, old, killed(Signal::SIGTERM), false)
    }

    /// The next `n` probes of `run` fail (connection refused).
    fn fail_probes(&mut self, service: &str, run: RunId, n: usize) -> Vec<Effect> {
        let failed = ProbeOutcome::Failure(ProbeFailure::Connect {
            address: "127.0.0.1:1".to_owned(),
            error: "refused".to_owned(),
        });
        let mut effects = Vec::new();
        for _ in 0..n {
            let due = self.service(service).wakeup().expect("a probe is due");
            effects.extend(self.advance(due - self.now));
            effects.extend(self.feed(Input::ProbeResult {
                service: name(service),
                run,
                outcome: failed.clone(),
            }));
        }
        effects
    }

    fn phase(&self, n: &str) -> Option<&'static str> {
        self.service(n).rollout().map(|r| r.phase.as_str())
    }
}

fn rolled_back(effects: &[Effect], n: &str) -> Vec<(PathBuf, String)> {
    events_of(effects, n)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::RolledBack { build, reason, .. } => Some((build, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_upgrade_starts_the_new_build_beside_the_old_one_which_drains_once_the_new_is_up() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    let effects = h.upgrading("api", B);
    let spawned = spawns(&effects);
    assert_eq!(spawned.len(), 1, "{:?}", labels(&effects));
    assert_eq!(program(&spawned[0].2), B, "the new run execs the new build");
    assert_ne!(h.run("api"), old);
    assert_eq!(h.phase("api"), Some("starting"));
    assert!(
        h.service("api").live_runs().any(|r| r == old),
        "old serves on"
    );
    assert!(
        !labels(&effects).iter().any(|l| l.starts_with("signal")),
        "nothing is stopped before the new run is up: {:?}",
        labels(&effects)
    );

    let effects = h.ready("api");
    assert_eq!(
        labels(&effects),
        [
            "api BecameReady",
            "api Started",
            "api Draining",
            "signal api SIGTERM",
            "signal api SIGCONT"
        ]
    );
    assert_eq!(h.phase("api"), Some("draining"));

    let effects = h.old_gone("api", old);
    assert_eq!(labels(&effects), ["api Exited", "api Baking"]);
    let effects = h.advance(secs(30));
    assert_eq!(
        events_of(&effects, "api"),
        [EventKind::Upgraded { build: B.into() }]
    );
    assert_eq!(h.service("api").rollout(), None);
    assert_eq!(h.service("api").build(), Some(std::path::Path::new(B)));

    // From now on every run executes the new build.
    h.exit("api", code(1));
    let effects = h.advance(secs(1));
    assert_eq!(program(&spawns(&effects)[0].2), B);
}

#[test]
fn a_new_build_that_exits_before_it_is_ready_leaves_the_old_run_serving() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    let old_pid = h.service("api").pid();
    h.upgrading("api", B);
    let effects = h.exit("api", code(2));
    assert_eq!(
        rolled_back(&effects, "api"),
        [(
            A.into(),
            "exited 2 after 0s (before it was running)".to_owned()
        )]
    );
    assert!(spawns(&effects).is_empty(), "the old run never stopped");
    assert_eq!(h.state("api"), "running");
    assert_eq!(h.run("api"), old);
    assert_eq!(h.service("api").pid(), old_pid);
    assert_eq!(h.service("api").build(), Some(std::path::Path::new(A)));
    assert_eq!(h.service("api").rollout(), None);
}

#[test]
fn a_new_build_not_ready_within_ready_timeout_is_stopped_and_the_old_run_serves_on() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    let effects = h.advance(secs(10));
    assert!(
        labels(&effects).contains(&"api StartTimedOut".to_owned()),
        "{:?}",
        labels(&effects)
    );
    assert_eq!(h.state("api"), "stopping", "the new run is being stopped");
    let effects = h.exit("api", killed(Signal::SIGTERM));
    assert_eq!(rolled_back(&effects, "api").len(), 1);
    assert_eq!(h.run("api"), old);
    assert_eq!(h.state("api"), "running");
}

#[test]
fn a_new_build_that_crashes_during_its_bake_brings_the_old_build_back_at_once() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.old_gone("api", old);
    h.advance(secs(3));
    let effects = h.exit("api", code(1));
    let spawned = spawns(&effects);
    assert_eq!(spawned.len(), 1, "{:?}", labels(&effects));
    assert_eq!(program(&spawned[0].2), A, "the old build starts again");
    assert!(delays(&effects).is_empty(), "no backoff before a rollback");
    let effects = h.ready("api");
    assert_eq!(
        rolled_back(&effects, "api"),
        [(A.into(), "exited 1".to_owned())]
    );
    assert_eq!(h.service("api").rollout(), None);
    assert_eq!(h.service("api").build(), Some(std::path::Path::new(A)));
}

#[test]
fn a_new_build_that_turns_unhealthy_during_bake_serves_until_the_old_build_is_back_up() {
    let mut h = serving([probed("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.old_gone("api", old);
    let bad = h.run("api");
    let effects = h.fail_probes("api", bad, 2);
    let spawned = spawns(&effects);
    assert_eq!(spawned.len(), 1, "{:?}", labels(&effects));
    assert_eq!(program(&spawned[0].2), A);
    assert!(
        !labels(&effects).iter().any(|l| l.starts_with("signal")),
        "the unhealthy run serves until the old build is up: {:?}",
        labels(&effects)
    );
    let effects = h.ready("api");
    assert!(labels(&effects).contains(&"signal api SIGTERM".to_owned()));
    let back = rolled_back(&effects, "api");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, PathBuf::from(A));
    assert!(back[0].1.contains("unhealthy"), "{}", back[0].1);
    assert_eq!(
        h.service("api").health().map(|m| m.decay().state()),
        Some(HealthState::Ok)
    );
}

#[test]
fn an_old_run_that_outlasts_its_drain_is_killed() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    let effects = h.advance(secs(5));
    assert_eq!(labels(&effects), ["api Escalated", "signal api SIGKILL"]);
    let effects = h.old_gone("api", old);
    assert_eq!(labels(&effects), ["api Exited", "api Baking"]);
}

#[test]
fn upgrades_that_cannot_be_done_say_why_and_change_nothing() {
    let plain = ServiceSpec {
        ready: Readiness::Notify,
        start_secs: Duration::ZERO,
        ..svc("plain")
    };
    let mut h = serving([api("api"), plain]);
    let (reply, effects) = h.upgrade("plain", B);
    assert!(effects.is_empty());
    let error = reply.expect_err("no upgrade section");
    assert!(error.message.contains("[service.plain.upgrade]"), "{error}");

    let (reply, _) = h.upgrade("nope", B);
    assert_eq!(reply.expect_err("unknown").kind, ErrorKind::UnknownService);

    let (reply, effects) = h.upgrade("api", A);
    assert_eq!(reply, Ok(Answer::Accepted(format!("api already runs {A}"))));
    assert!(effects.is_empty());

    h.upgrading("api", B);
    let (reply, effects) = h.upgrade("api", "/opt/api/builds/c/server");
    assert_eq!(reply.expect_err("under way").kind, ErrorKind::Conflict);
    assert!(effects.is_empty());
}

#[test]
fn a_stop_during_a_rollout_stops_both_runs_and_keeps_the_old_build() {
    let mut h = serving([api("api")]);
    h.upgrading("api", B);
    let effects = h.ok(Command::Stop, "api");
    assert_eq!(rolled_back(&effects, "api").len(), 1);
    let sigterms = labels(&effects)
        .iter()
        .filter(|l| *l == "signal api SIGTERM")
        .count();
    assert_eq!(
        sigterms,
        2,
        "the new and the old run: {:?}",
        labels(&effects)
    );
    assert_eq!(h.service("api").build(), Some(std::path::Path::new(A)));
}

#[test]
fn shutdown_waits_for_the_draining_old_run() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.feed(Input::Shutdown);
    h.exit("api", killed(Signal::SIGTERM));
    assert!(!h.exit_seen, "the old run still drains");
    h.old_gone("api", old);
    assert!(h.exit_seen);
}

#[test]
fn a_reload_keeps_the_build_an_upgrade_moved_to() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.old_gone("api", old);
    h.advance(secs(30));
    let changed = ServiceSpec {
        env: [("X".to_owned(), "1".to_owned())].into(),
        ..api("api")
    };
    h.reload([changed]);
    let effects = h.exit("api", killed(Signal::SIGTERM));
    let spawned = spawns(&effects);
    assert_eq!(spawned.len(), 1, "{:?}", labels(&effects));
    assert_eq!(program(&spawned[0].2), B);
}

fn instances(base: &str, n: u32) -> Vec<ServiceSpec> {
    (0..n)
        .map(|index| {
            let mut spec = api(&format!("{base}@{index}"));
            spec.instance = Some(crate::model::Instance {
                base: name(base),
                index,
            });
            spec
        })
        .collect()
}

#[test]
fn instances_are_upgraded_one_at_a_time_the_first_as_canary() {
    let mut h = serving(instances("web", 3));
    let (reply, effects) = h.upgrade("web", B);
    let message = match reply {
        Ok(Answer::Accepted(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(message.contains("web@0 first"), "{message}");
    assert_eq!(spawns(&effects).len(), 1);
    assert_eq!(spawns(&effects)[0].0, name("web@0"));
    for (i, next) in [(0, Some("web@1")), (1, Some("web@2")), (2, None)] {
        let n = format!("web@{i}");
        let old = h.service(&n).draining().first().map(|d| d.run);
        let effects = h.ready(&n);
        let old = old.or_else(|| h.service(&n).draining().first().map(|d| d.run));
        assert!(
            spawns(&effects).is_empty(),
            "no second instance while one starts"
        );
        h.old_gone(&n, old.expect("the old run drains"));
        let effects = h.advance(secs(30));
        let started: Vec<ServiceName> = spawns(&effects).into_iter().map(|s| s.0).collect();
        assert_eq!(started, next.map(name).into_iter().collect::<Vec<_>>());
        assert_eq!(h.service(&n).build(), Some(std::path::Path::new(B)));
    }
    assert_eq!(h.sup.canary(&name("web")), None);
}

#[test]
fn a_failed_instance_halts_the_roll_and_takes_the_upgraded_ones_back() {
    let mut h = serving(instances("web", 3));
    h.upgrading("web", B);
    let old = h.service("web@0").draining().first().map(|d| d.run);
    h.ready("web@0");
    let old = old.or_else(|| h.service("web@0").draining().first().map(|d| d.run));
    h.old_gone("web@0", old.expect("draining"));
    h.advance(secs(30));
    // web@1's new build crashes before it is ready.
    let effects = h.exit("web@1", code(3));
    assert_eq!(rolled_back(&effects, "web@1").len(), 1);
    let spawned = spawns(&effects);
    assert_eq!(spawned.len(), 1, "web@0 goes back: {:?}", labels(&effects));
    assert_eq!(spawned[0].0, name("web@0"));
    assert_eq!(program(&spawned[0].2), A);
    let effects = h.ready("web@0");
    let back = rolled_back(&effects, "web@0");
    assert_eq!(back.len(), 1);
    assert!(back[0].1.contains("web@1"), "{}", back[0].1);
    assert_eq!(h.sup.canary(&name("web")), None);
    assert_eq!(h.service("web@2").build(), Some(std::path::Path::new(A)));
}

/// The runs signalled by `effects`, with the signal.
fn signalled(effects: &[Effect]) -> Vec<(RunId, Signal)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { run, signal, .. } => Some((*run, *signal)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_build_still_being_stopped_when_its_bake_ends_is_rolled_back_not_upgraded() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.old_gone("api", old);
    h.advance(secs(29));
    h.exit_leaving_group("api", code(1));
    let effects = h.advance(secs(1));
    assert!(
        !events_of(&effects, "api").contains(&EventKind::Upgraded { build: B.into() }),
        "{:?}",
        labels(&effects)
    );
    let effects = h.group_empty("api");
    assert_eq!(program(&spawns(&effects)[0].2), A, "{:?}", labels(&effects));
    let effects = h.ready("api");
    assert_eq!(rolled_back(&effects, "api").len(), 1);
}

#[test]
fn shutdown_while_the_new_run_is_being_stopped_stops_the_old_run_too() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    let new = h.run("api");
    h.exit_leaving_group("api", code(1));
    let effects = h.feed(Input::Shutdown);
    assert!(
        signalled(&effects).contains(&(old, Signal::SIGTERM)),
        "{:?}",
        labels(&effects)
    );
    h.feed(Input::GroupEmpty {
        service: name("api"),
        run: new,
    });
    assert!(!h.exit_seen, "the old run is still being stopped");
    h.old_gone("api", old);
    assert!(h.exit_seen);
}

#[test]
fn leftovers_of_an_old_run_that_exits_during_the_rollout_are_stopped() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    let effects = h.exit_run("api", old, code(0), true);
    assert!(
        signalled(&effects).contains(&(old, Signal::SIGTERM)),
        "{:?}",
        labels(&effects)
    );
}

#[test]
fn a_rollback_whose_old_build_fails_too_says_so_and_the_policy_restarts_the_old_build() {
    let mut h = serving([api("api")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    h.old_gone("api", old);
    h.advance(secs(3));
    h.exit("api", code(1));
    let effects = h.exit("api", code(1));
    let back = rolled_back(&effects, "api");
    assert_eq!(back.len(), 1, "{:?}", labels(&effects));
    assert!(back[0].1.contains("failed too"), "{}", back[0].1);
    assert_eq!(
        delays(&effects).len(),
        1,
        "the policy decides: {:?}",
        labels(&effects)
    );
    assert_eq!(h.service("api").build(), Some(std::path::Path::new(A)));
    assert_eq!(h.service("api").rollout(), None);
}

#[test]
fn a_reload_that_removes_an_instance_during_a_roll_skips_it() {
    let mut h = serving(instances("web", 3));
    h.upgrading("web", B);
    let old = h.service("web@0").draining().first().map(|d| d.run);
    h.ready("web@0");
    let old = old.or_else(|| h.service("web@0").draining().first().map(|d| d.run));
    h.old_gone("web@0", old.expect("draining"));
    h.advance(secs(30));
    h.reload(instances("web", 2));
    let old = h.service("web@1").draining().first().map(|d| d.run);
    h.ready("web@1");
    let old = old.or_else(|| h.service("web@1").draining().first().map(|d| d.run));
    h.old_gone("web@1", old.expect("draining"));
    h.advance(secs(30));
    assert_eq!(h.sup.canary(&name("web")), None, "the roll is over");
}

#[test]
fn a_service_removed_while_its_old_run_drains_is_forgotten_once_that_is_gone() {
    let mut h = serving([api("api"), api("other")]);
    let old = h.run("api");
    h.upgrading("api", B);
    h.ready("api");
    let new = h.run("api");
    h.reload([api("other")]);
    h.feed(Input::Exited {
        service: name("api"),
        run: new,
        status: killed(Signal::SIGTERM),
        group_alive: false,
    });
    assert!(h.sup.service(&name("api")).is_some(), "the old run drains");
    let effects = h.advance(secs(5));
    assert!(
        signalled(&effects).contains(&(old, Signal::SIGKILL)),
        "{:?}",
        labels(&effects)
    );
    let effects = h.old_gone("api", old);
    assert!(labels(&effects).contains(&"remove api".to_owned()));
    assert!(h.sup.service(&name("api")).is_none());
}

#[test]
fn a_new_build_already_unhealthy_when_it_comes_up_never_takes_over() {
    let mut spec = probed("api");
    spec.health.as_mut().expect("probed").unhealthy_action = UnhealthyAction::None;
    let mut h = serving([spec]);
    let old = h.run("api");
    h.upgrading("api", B);
    let new = h.run("api");
    h.fail_probes("api", new, 2);
    let effects = h.ready("api");
    assert_eq!(
        rolled_back(&effects, "api").len(),
        1,
        "{:?}",
        labels(&effects)
    );
    assert!(signalled(&effects).contains(&(new, Signal::SIGTERM)));
    assert_eq!(h.run("api"), old, "the old run serves on");
}

#[test]
fn a_roll_waits_for_an_upgraded_instance_that_is_not_healthy_yet() {
    let specs: Vec<ServiceSpec> = instances("web", 2)
        .into_iter()
        .map(|spec| ServiceSpec {
            health: probed("x").health,
            ..spec
        })
        .collect();
    let mut h = serving(specs);
    h.upgrading("web", B);
    let old = h.service("web@0").draining().first().map(|d| d.run);
    h.ready("web@0");
    let old = old.or_else(|| h.service("web@0").draining().first().map(|d| d.run));
    h.old_gone("web@0", old.expect("draining"));
    let canary = h.run("web@0");
    // One failed probe: DEGRADED, not yet UNHEALTHY (that takes two).
    h.fail_probes("web@0", canary, 1);
    let effects = h.advance(secs(30));
    assert!(
        events_of(&effects, "web@0").contains(&EventKind::Upgraded { build: B.into() }),
        "{:?}",
        labels(&effects)
    );
    assert!(
        spawns(&effects).is_empty(),
        "web@1 waits: {:?}",
        labels(&effects)
    );
    assert!(h.sup.canary(&name("web")).is_some_and(|c| c.paused));
    let effects = h.feed(Input::ProbeResult {
        service: name("web@0"),
        run: canary,
        outcome: ProbeOutcome::Success,
    });
    let started: Vec<ServiceName> = spawns(&effects).into_iter().map(|s| s.0).collect();
    assert_eq!(started, [name("web@1")], "{:?}", labels(&effects));
}
