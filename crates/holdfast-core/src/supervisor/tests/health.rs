//! Health probes in the core: scheduling, decay events, the unhealthy action.

use super::*;
use crate::health::{HealthState, ProbeFailure, ProbeOutcome};
use crate::model::{DecaySpec, HealthSpec, Probe, Threshold, UnhealthyAction};

fn healthy(n: &str, action: UnhealthyAction) -> ServiceSpec {
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
                    failures: 2,
                    within: secs(10),
                },
                unhealthy: Threshold {
                    failures: 4,
                    within: secs(10),
                },
                recover_successes: 3,
            },
            unhealthy_action: action,
        }),
        ..svc(n)
    }
}

/// `a` with probes, running from its spawn on (start_secs 0), no probe yet.
fn up(action: UnhealthyAction) -> Harness {
    let spec = ServiceSpec {
        start_secs: Duration::ZERO,
        ..healthy("a", action)
    };
    Harness::booted([spec])
}

fn probes(effects: &[Effect]) -> Vec<RunId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::StartProbe { run, .. } => Some(*run),
            _ => None,
        })
        .collect()
}

fn health_changes(effects: &[Effect], n: &str) -> Vec<(HealthState, HealthState, u32)> {
    events_of(effects, n)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::HealthChanged {
                from, to, failures, ..
            } => Some((from, to, failures)),
            _ => None,
        })
        .collect()
}

impl Harness {
    /// Lets the next probe of `n` start and answers it with `outcome`.
    fn probe(&mut self, n: &str, outcome: ProbeOutcome) -> Vec<Effect> {
        let due = self.service(n).wakeup().expect("a probe is scheduled");
        let mut done = self.advance(due - self.now);
        let started = probes(&done);
        assert_eq!(started, vec![self.run(n)], "one probe of the current run");
        let run = self.run(n);
        done.extend(self.feed(Input::ProbeResult {
            service: name(n),
            run,
            outcome,
        }));
        done
    }
}

fn failure() -> ProbeOutcome {
    ProbeOutcome::Failure(ProbeFailure::Status {
        code: 503,
        expected: 200..=399,
    })
}

#[test]
fn the_first_probe_runs_one_interval_after_the_spawn_and_then_every_interval() {
    let mut h = Harness::booted([healthy("a", UnhealthyAction::Restart)]);
    let t0 = h.now;
    assert_eq!(h.sup.next_deadline(), Some(t0 + secs(1)), "first probe");
    let started = h.advance(secs(1));
    assert_eq!(probes(&started).len(), 1);
    // In flight: no second probe, however long it takes (the shell's timeout answers).
    assert_eq!(probes(&h.advance(ms(900))).len(), 0, "one probe at a time");
    let run = h.run("a");
    h.feed(Input::ProbeResult {
        service: name("a"),
        run,
        outcome: ProbeOutcome::Success,
    });
    assert_eq!(
        h.sup.next_deadline(),
        Some(t0 + secs(2)),
        "next probe one interval after the previous one started"
    );
}

#[test]
fn failures_degrade_then_make_unhealthy_and_the_restart_action_restarts_once() {
    let mut h = up(UnhealthyAction::Restart);
    let first_run = h.run("a");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(h.probe("a", failure()));
    }
    assert_eq!(
        health_changes(&seen, "a"),
        [(HealthState::Ok, HealthState::Degraded, 2)]
    );
    assert_eq!(h.state("a"), "running", "degraded is reported only");

    let fourth = h.probe("a", failure());
    assert_eq!(
        health_changes(&fourth, "a"),
        [(HealthState::Degraded, HealthState::Unhealthy, 4)]
    );
    assert!(
        labels(&fourth).contains(&"signal a SIGTERM".to_owned()),
        "the normal stop: {:?}",
        labels(&fourth)
    );
    assert_eq!(h.state("a"), "stopping");
    assert_eq!(
        probes(&h.advance(secs(3))),
        Vec::new(),
        "no probes while stopping"
    );

    let exit = h.exit("a", killed(Signal::SIGTERM));
    assert_eq!(h.state("a"), "backoff", "{:?}", labels(&exit));
    h.advance(secs(1));
    assert_eq!(h.service("a").restarts(), 1, "counted as a restart");
    assert_ne!(h.run("a"), first_run);
    assert_eq!(
        h.service("a").health().map(|m| m.decay().state()),
        Some(HealthState::Ok),
        "the new run starts healthy"
    );
}

#[test]
fn an_unhealthy_service_with_action_none_keeps_running_and_recovers_after_the_successes() {
    let mut h = up(UnhealthyAction::None);
    for _ in 0..4 {
        h.probe("a", failure());
    }
    assert_eq!(h.state("a"), "running");
    let state = |h: &Harness| h.service("a").health().map(|m| m.decay().state());
    assert_eq!(state(&h), Some(HealthState::Unhealthy));
    h.probe("a", ProbeOutcome::Success);
    h.probe("a", ProbeOutcome::Success);
    assert_eq!(
        state(&h),
        Some(HealthState::Unhealthy),
        "two successes are not enough"
    );
    let third = h.probe("a", ProbeOutcome::Success);
    assert_eq!(
        health_changes(&third, "a"),
        [(HealthState::Unhealthy, HealthState::Ok, 4)]
    );
}

#[test]
fn probe_results_of_an_earlier_run_are_dropped() {
    let mut h = up(UnhealthyAction::Restart);
    let old = h.run("a");
    h.advance(secs(1)); // a probe of the old run starts
    h.ok(Command::Restart, "a");
    h.exit("a", killed(Signal::SIGTERM));
    assert_ne!(h.run("a"), old, "restarted");
    for _ in 0..10 {
        let effects = h.feed(Input::ProbeResult {
            service: name("a"),
            run: old,
            outcome: failure(),
        });
        assert_eq!(labels(&effects), Vec::<String>::new());
    }
    assert_eq!(
        h.service("a").health().map(|m| m.decay().probes()),
        Some(0),
        "the new run saw none of them"
    );
}

#[test]
fn ready_health_makes_the_run_ready_at_the_first_passing_probe() {
    let spec = ServiceSpec {
        start_secs: Duration::ZERO,
        ready: crate::model::Readiness::Health,
        ..healthy("a", UnhealthyAction::None)
    };
    let mut h = Harness::booted([spec]);
    assert_eq!(h.state("a"), "starting", "not ready before a probe passed");
    h.probe("a", failure());
    assert_eq!(
        h.state("a"),
        "starting",
        "a failing probe does not make it ready"
    );
    let passed = h.probe("a", ProbeOutcome::Success);
    assert!(
        labels(&passed).contains(&"a BecameReady".to_owned()),
        "{:?}",
        labels(&passed)
    );
    assert_eq!(h.state("a"), "running");
}
