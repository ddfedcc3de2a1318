//! Observer mode (`managed_by`): the upstream runs the service, holdfast follows its
//! state, probes it and asks the upstream to restart it; it never spawns it unless it
//! takes it over.

use super::*;
use crate::health::{ProbeFailure, ProbeOutcome};
use crate::model::{
    DecaySpec, HealthSpec, ManagedBy, Probe, Takeover, Threshold, UnhealthyAction, Upstream,
};
use crate::supervisor::core::Attempt;
use crate::supervisor::service::{Arbitration, UpstreamReport, UpstreamState, UpstreamView};
use crate::unix::Pid;

/// `web` observed with `takeover = true`: its `command` is what holdfast runs once the
/// upstream is gone.
fn may_take_over() -> ServiceSpec {
    ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        ..observed(Takeover::Allowed)
    }
}

fn observed(takeover: Takeover) -> ServiceSpec {
    ServiceSpec {
        command: Vec::new(),
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
        managed_by: Some(ManagedBy {
            upstream: Upstream::Supervisord {
                program: "web".to_owned(),
            },
            takeover,
            arbiter_timeout: secs(5),
            health_grace_period: secs(3),
            sync_interval: secs(1),
        }),
        ..svc("web")
    }
}

/// What supervisord (pid 9) says of web: RUNNING as `pid`, started at `start`.
fn running(pid: i32, start: u64) -> UpstreamReport {
    UpstreamReport::Seen(UpstreamView {
        start: Some(start),
        proc_start: Some(start * 100),
        upstream_pid: Some((Pid::from_raw(9), 900)),
        ..view(UpstreamState::Running, "RUNNING", Some(pid))
    })
}

/// What the upstream says of web: `state` (`detail` in its words), its process.
fn seen(state: UpstreamState, detail: &str, pid: Option<i32>) -> UpstreamReport {
    UpstreamReport::Seen(view(state, detail, pid))
}

fn view(state: UpstreamState, detail: &str, pid: Option<i32>) -> UpstreamView {
    UpstreamView {
        state,
        detail: detail.to_owned(),
        pid: pid.map(Pid::from_raw),
        start: pid.map(|_| 7),
        uptime: None,
        proc_start: pid.map(|_| 700),
        upstream_pid: None,
    }
}

fn count(effects: &[Effect], prefix: &str) -> usize {
    labels(effects)
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

impl Harness {
    fn report(&mut self, report: UpstreamReport) -> Vec<Effect> {
        let run = self.observed_run();
        self.feed(Input::Upstream {
            service: name("web"),
            run,
            report: Box::new(report),
        })
    }

    /// The upstream fails every sync (one a second) for `seconds`.
    fn unreachable_for(&mut self, seconds: u64) -> Vec<Effect> {
        let gone = || UpstreamReport::Unreachable("connection refused".to_owned());
        let mut effects = self.report(gone());
        for _ in 0..seconds {
            effects.extend(self.advance(secs(1)));
            effects.extend(self.report(gone()));
        }
        effects
    }

    fn observed_run(&self) -> RunId {
        self.service("web")
            .observation()
            .expect("web is observed")
            .run
    }

    /// Advances to the next probe of web and answers it.
    fn probe_web(&mut self, outcome: ProbeOutcome) -> Vec<Effect> {
        let due = self.sup.next_deadline().unwrap_or_else(|| {
            panic!(
                "nothing scheduled: {:?} {:?}",
                self.service("web").state(),
                self.service("web").health()
            )
        });
        let mut done = self.advance(due - self.now);
        if count(&done, "probe web") == 1 {
            let run = self.observed_run();
            done.extend(self.feed(Input::ProbeResult {
                service: name("web"),
                run,
                outcome,
            }));
        }
        done
    }
}

fn refused() -> ProbeOutcome {
    ProbeOutcome::Failure(ProbeFailure::Connect {
        address: "127.0.0.1:1".to_owned(),
        error: "refused".to_owned(),
    })
}

#[test]
fn an_observed_service_is_never_spawned_and_follows_the_upstream() {
    let mut h = Harness::new([observed(Takeover::Never)]);
    let boot = h.feed(Input::Boot);
    assert_eq!(count(&boot, "spawn"), 0, "holdfast spawns nothing");
    assert_eq!(
        count(&boot, "sync-upstream web"),
        1,
        "the first sync is at once"
    );
    assert_eq!(h.state("web"), "unknown");
    let first = h.report(running(42, 7));
    assert_eq!(labels(&first), ["web UpstreamState"]);
    assert_eq!(h.state("web"), "running");
    // The next sync comes at the sync interval, never sooner.
    let later = h.advance(secs(1));
    assert_eq!(count(&later, "sync-upstream web"), 1);
    let stopped = h.report(seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(labels(&stopped), ["web UpstreamState"]);
    assert_eq!(h.state("web"), "stopped");
    // No probes of a service its upstream does not run, and no spin.
    let quiet = h.advance(secs(10));
    assert_eq!(count(&quiet, "probe"), 0);
    assert_eq!(count(&quiet, "spawn"), 0);
}

#[test]
fn an_unhealthy_observed_service_is_restarted_by_its_upstream_once() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    // Failures in the grace period after the start it saw do not count.
    let mut effects = Vec::new();
    // The grace is 3 s: well past it, a probe must have counted.
    let give_up = h.now + secs(10);
    while effects.is_empty() {
        assert!(h.now < give_up, "no probe counted after the grace period");
        let probed = h.probe_web(refused());
        if h.service("web")
            .health()
            .is_some_and(|m| m.decay().in_grace(h.now))
        {
            assert_eq!(count(&probed, "web HealthChanged"), 0);
            continue;
        }
        effects = probed;
    }
    let effects = [effects, h.probe_web(refused())].concat();
    assert_eq!(
        count(&effects, "restart-upstream web"),
        1,
        "{:?}",
        labels(&effects)
    );
    assert_eq!(count(&effects, "web UpstreamRestartRequested"), 1);
    // Still unhealthy: no second request while one is pending.
    let more = h.probe_web(refused());
    assert_eq!(count(&more, "restart-upstream"), 0);
    // The upstream restarts it: a new pid, health starts afresh.
    h.report(running(43, 9));
    assert_eq!(
        h.service("web").arbitrated().map(ToString::to_string),
        Some("restarted by upstream (pid 43)".to_owned())
    );
    assert_eq!(
        h.service("web").health().map(|m| m.decay().state()),
        Some(crate::health::HealthState::Ok)
    );
    assert_eq!(count(&h.advance(secs(30)), "spawn"), 0);
}

#[test]
fn a_restart_the_upstream_never_shows_times_out_and_may_be_asked_again() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    let mut asked = Vec::new();
    for _ in 0..10 {
        asked.extend(h.probe_web(refused()));
        if count(&asked, "restart-upstream") > 0 {
            break;
        }
    }
    assert_eq!(count(&asked, "restart-upstream"), 1);
    // The upstream keeps reporting the same process; the probes keep failing.
    let mut waited = Vec::new();
    for _ in 0..7 {
        waited.extend(h.probe_web(refused()));
        waited.extend(h.report(running(42, 7)));
    }
    let order: Vec<String> = labels(&waited)
        .into_iter()
        .filter(|l| l.contains("Restart") || l.starts_with("restart"))
        .collect();
    assert_eq!(
        order,
        [
            "web UpstreamRestartTimedOut",
            "web UpstreamRestartRequested",
            "restart-upstream web"
        ],
        "asked again, once, only after the timeout"
    );
}

#[test]
fn an_unreachable_upstream_without_takeover_is_only_reported() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    h.advance(secs(1));
    h.report(UpstreamReport::Unreachable("connection refused".to_owned()));
    assert_eq!(h.state("web"), "unknown");
    let mut effects = Vec::new();
    for _ in 0..10 {
        effects.extend(h.advance(secs(1)));
        effects.extend(h.report(UpstreamReport::Unreachable("refused".to_owned())));
    }
    assert_eq!(count(&effects, "web UpstreamUnreachable"), 1);
    assert_eq!(count(&effects, "take-over"), 0);
    assert_eq!(count(&effects, "spawn"), 0);
}

#[test]
fn one_failed_sync_is_not_a_gone_upstream_and_a_doubt_is_checked_soon() {
    let mut spec = may_take_over();
    if let Some(m) = spec.managed_by.as_mut() {
        m.sync_interval = secs(10);
    }
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    let mut effects = Vec::new();
    for _ in 0..5 {
        effects.extend(h.advance(secs(10)));
        effects.extend(h.report(UpstreamReport::Unreachable("timeout".to_owned())));
        // In doubt, the next sync comes within arbiter_timeout / 3, not sync_interval.
        let soon = h.advance(ms(1700));
        assert_eq!(count(&soon, "sync-upstream web"), 1, "{:?}", labels(&soon));
        effects.extend(soon);
        effects.extend(h.report(running(42, 7)));
    }
    // A lone failure with no answer after it decides nothing either.
    effects.extend(h.report(UpstreamReport::Unreachable("timeout".to_owned())));
    effects.extend(h.advance(secs(20)));
    assert_eq!(count(&effects, "web UpstreamUnreachable"), 0);
    assert_eq!(count(&effects, "take-over"), 0, "{:?}", labels(&effects));
}

#[test]
fn a_busy_supervisord_is_not_gone() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    let mut effects = Vec::new();
    for _ in 0..20 {
        effects.extend(h.advance(secs(1)));
        effects.extend(h.report(UpstreamReport::Busy("supervisord is RESTARTING".to_owned())));
    }
    assert_eq!(count(&effects, "take-over"), 0, "{:?}", labels(&effects));
    assert_eq!(count(&effects, "web UpstreamUnreachable"), 0);
    assert_eq!(h.state("web"), "running");
}

#[test]
fn a_takeover_the_shell_finds_the_upstream_alive_for_is_called_off() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    let effects = h.unreachable_for(6);
    assert_eq!(count(&effects, "take-over web Some(42)"), 1);
    // supervisord's own process still lives: the shell answers "busy", not taken over.
    let busy = h.report(UpstreamReport::Busy("alive".to_owned()));
    assert_eq!(count(&busy, "spawn"), 0);
    assert_eq!(h.state("web"), "running");
    let run = h.observed_run();
    let late = h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: None,
    });
    assert_eq!(count(&late, "spawn"), 0, "a stale answer starts nothing");
    // Still silent after that: decided again, once.
    let again = h.unreachable_for(6);
    assert_eq!(count(&again, "take-over web"), 1, "{:?}", labels(&again));
    let attempts: Vec<_> = effects
        .iter()
        .chain(&again)
        .filter_map(|e| match e {
            Effect::TakeOver { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [Attempt::First, Attempt::Again], "said once");
}

#[test]
fn a_report_for_an_earlier_observation_is_dropped() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    let run = h.observed_run();
    let stale = h.feed(Input::Upstream {
        service: name("web"),
        run: RunId(run.0.wrapping_add(1000)),
        report: Box::new(running(99, 8)),
    });
    assert!(stale.is_empty(), "{:?}", labels(&stale));
    let seen = h.service("web").observation().and_then(|o| o.view.as_ref());
    assert_eq!(seen.and_then(|v| v.pid), Some(Pid::from_raw(42)));
}

#[test]
fn a_takeover_adopts_the_live_process_then_restarts_it_with_command() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    h.advance(secs(1));
    let effects = h.unreachable_for(6);
    assert_eq!(
        count(&effects, "take-over web Some(42)"),
        1,
        "{:?}",
        labels(&effects)
    );
    let run = h.observed_run();
    let taken = h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: Some(Pid::from_raw(42)),
    });
    assert_eq!(labels(&taken), ["web TakenOver"]);
    assert_eq!(h.state("web"), "running");
    assert_eq!(h.service("web").pid(), Some(Pid::from_raw(42)));
    // Its exit is an exit of holdfast's run: the restart policy starts `command`.
    let exited = h.exit("web", code(1));
    let restarted = [exited, h.advance(secs(1))].concat();
    assert_eq!(
        count(&restarted, "spawn web"),
        1,
        "{:?}",
        labels(&restarted)
    );
    assert_eq!(count(&h.advance(secs(10)), "sync-upstream"), 0);
}

#[test]
fn a_takeover_without_a_live_process_starts_command() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec]);
    let effects = h.unreachable_for(6);
    assert_eq!(
        count(&effects, "take-over web None"),
        1,
        "{:?}",
        labels(&effects)
    );
    let run = h.observed_run();
    let taken = h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: None,
    });
    assert_eq!(count(&taken, "spawn web"), 1);
    assert_eq!(count(&taken, "web TakenOver"), 1);
}

#[test]
fn shutdown_stops_observing_without_touching_the_upstream() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    let effects = h.feed(Input::Shutdown);
    assert!(h.exit_seen, "{:?}", labels(&effects));
    assert_eq!(count(&effects, "signal"), 0);
}

#[test]
fn a_reload_moves_a_service_between_holdfast_and_an_upstream() {
    let own = ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        managed_by: None,
        ..observed(Takeover::Never)
    };
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    // While supervisord still runs its copy, holdfast starting one would be a second.
    let (reply, effects) = h.control(Input::Reload(plan([own.clone()])));
    let error = reply.expect_err("refused while the upstream runs it");
    assert!(
        error.message.contains("supervisorctl stop web"),
        "{error:?}"
    );
    assert_eq!(count(&effects, "spawn"), 0, "{:?}", labels(&effects));
    assert_eq!(h.state("web"), "running");
    h.report(seen(UpstreamState::Stopped, "STOPPED", None));
    // Stopped there: holdfast runs it now, it starts it.
    let (_, effects) = h.reload([own.clone()]);
    assert_eq!(count(&effects, "spawn web"), 1, "{:?}", labels(&effects));
    // And back: holdfast stops its copy, then observes the upstream's.
    let (_, effects) = h.reload([observed(Takeover::Never)]);
    assert_eq!(
        count(&effects, "signal web SIGTERM"),
        1,
        "{:?}",
        labels(&effects)
    );
    let stopped = h.exit("web", killed(crate::unix::Signal::SIGTERM));
    assert_eq!(
        count(&stopped, "sync-upstream web"),
        1,
        "{:?}",
        labels(&stopped)
    );
    assert_eq!(count(&stopped, "spawn"), 0);
    // A changed health check of the same upstream changes nothing that runs.
    let mut probed = observed(Takeover::Never);
    probed.health.as_mut().expect("has health").interval = secs(2);
    h.report(running(42, 7));
    let (_, effects) = h.reload([probed]);
    assert_eq!(count(&effects, "spawn"), 0);
    assert_eq!(count(&effects, "sync-upstream"), 0);
    assert_eq!(h.state("web"), "running");
}

#[test]
fn across_a_reexec_an_observed_service_is_observed_again_and_a_taken_over_one_stays_holdfasts() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec.clone()]);
    h.report(running(42, 7));
    let resume = |h: &Harness| {
        let snapshot = h.sup.snapshot(h.now).expect("nothing in transit");
        let mut new = Harness::new([spec.clone()]);
        new.now = h.now;
        new.sup = Supervisor::new(h.sup.plan().clone(), new.now, 7);
        let effects = new.feed(Input::Resume(snapshot));
        (new, effects)
    };
    let (_, effects) = resume(&h);
    assert_eq!(
        count(&effects, "sync-upstream web"),
        1,
        "{:?}",
        labels(&effects)
    );
    assert_eq!(count(&effects, "spawn"), 0);
    // Taken over (the upstream went away, its process was adopted).
    h.unreachable_for(6);
    let run = h.observed_run();
    h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: Some(Pid::from_raw(42)),
    });
    let (mut new, effects) = resume(&h);
    assert_eq!(
        count(&effects, "sync-upstream"),
        0,
        "{:?}",
        labels(&effects)
    );
    assert_eq!(new.state("web"), "running");
    let restarted = [new.exit("web", code(1)), new.advance(secs(1))].concat();
    assert_eq!(
        count(&restarted, "spawn web"),
        1,
        "{:?}",
        labels(&restarted)
    );
}

#[test]
fn a_restart_by_hand_says_why_when_it_cannot_reach_the_upstream() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    let asked = h.ok(Command::Restart, "web");
    assert_eq!(count(&asked, "restart-upstream web"), 1);
    // One is under way: a second is refused with the reason, nothing is asked.
    let (reply, effects) = h.command(Command::Restart, "web");
    let error = reply.expect_err("refused while one is pending");
    assert_eq!(error.kind, crate::supervisor::answer::ErrorKind::Conflict);
    assert!(
        error.message.contains("still under way"),
        "{}",
        error.message
    );
    assert_eq!(count(&effects, "restart-upstream"), 0);
}

#[test]
fn a_dependent_of_an_observed_service_starts_once_the_upstream_shows_it_running() {
    let mut h = Harness::new([observed(Takeover::Never), svc_after("api", &["web"])]);
    let boot = h.feed(Input::Boot);
    assert_eq!(count(&boot, "spawn api"), 0, "{:?}", labels(&boot));
    assert_eq!(h.state("api"), "waiting", "no answer from supervisord yet");
    // STARTING (within its startsecs) is not up yet.
    let starting = h.report(seen(UpstreamState::Starting, "STARTING", Some(42)));
    assert_eq!(count(&starting, "spawn api"), 0);
    assert_eq!(h.state("api"), "waiting");
    h.advance(secs(1));
    let up = h.report(running(42, 7));
    assert_eq!(count(&up, "spawn api"), 1, "{:?}", labels(&up));
}

#[test]
fn a_dependent_of_an_observed_service_the_upstream_does_not_run_is_not_held_up() {
    let mut h = Harness::new([observed(Takeover::Never), svc_after("api", &["web"])]);
    h.feed(Input::Boot);
    let stopped = h.report(seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(count(&stopped, "spawn api"), 1, "{:?}", labels(&stopped));
    // An upstream that never answers holds it up only until holdfast gives up on it.
    let mut h = Harness::new([observed(Takeover::Never), svc_after("api", &["web"])]);
    h.feed(Input::Boot);
    let effects = labels(&h.unreachable_for(6));
    let at = |l: &str| effects.iter().position(|e| e == l);
    let given_up = at("web UpstreamUnreachable").expect("given up on");
    assert_eq!(at("spawn api"), Some(given_up + 1), "{effects:?}");
}

#[test]
fn a_dependent_started_while_an_upstream_restart_is_pending_waits_for_the_new_start() {
    let mut h = Harness::booted([observed(Takeover::Never), svc_after("api", &["web"])]);
    h.report(running(42, 7));
    h.ok(Command::Stop, "api");
    h.exit("api", killed(crate::unix::Signal::SIGTERM));
    h.ok(Command::Restart, "web");
    h.ok(Command::Start, "api");
    assert_eq!(h.state("api"), "waiting", "web is being restarted");
    let restarted = h.report(running(43, 9));
    assert_eq!(
        count(&restarted, "spawn api"),
        1,
        "{:?}",
        labels(&restarted)
    );
}

#[test]
fn a_reload_of_an_observed_services_health_check_applies_at_once_without_a_restart() {
    // Unhealthy after `failures` failures, no grace after the upstream's start.
    let check = |failures: u32, interval: Duration| {
        let mut spec = observed(Takeover::Never);
        let health = spec.health.as_mut().expect("has health");
        health.decay.unhealthy.failures = failures;
        health.interval = interval;
        if let Some(m) = spec.managed_by.as_mut() {
            m.health_grace_period = Duration::ZERO;
        }
        spec
    };
    let mut h = Harness::booted([check(5, secs(1))]);
    h.report(running(42, 7));
    let mut effects = Vec::new();
    for _ in 0..10 {
        if count(&effects, "probe web") == 2 {
            break;
        }
        effects.extend(h.probe_web(refused()));
    }
    let state = |h: &Harness| h.service("web").health().map(|m| m.decay().state());
    assert_eq!(state(&h), Some(crate::health::HealthState::Degraded));
    assert_eq!(count(&effects, "restart-upstream"), 0, "2 of 5 failures");
    let last_probe = h.now;
    // Tighter: 3 failures, every 3 s.
    let (_, reloaded) = h.reload([check(3, secs(3))]);
    for nothing in ["spawn", "signal", "restart-upstream", "sync-upstream"] {
        assert_eq!(count(&reloaded, nothing), 0, "{:?}", labels(&reloaded));
    }
    let monitor = h.service("web").health().expect("still monitored");
    assert_eq!(monitor.decay().probes(), 2, "its history is kept");
    assert_eq!(
        monitor.due(),
        Some(last_probe + secs(3)),
        "the new interval"
    );
    let third = h.probe_web(refused());
    assert_eq!(h.now, last_probe + secs(3));
    assert_eq!(
        count(&third, "restart-upstream web"),
        1,
        "{:?}",
        labels(&third)
    );
    let seen = h.service("web").observation().and_then(|o| o.view.as_ref());
    assert_eq!(seen.and_then(|v| v.pid), Some(Pid::from_raw(42)));
}

#[test]
fn a_restart_timeout_is_judged_on_a_sync_asked_after_its_deadline() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    h.report(running(42, 7));
    let asked = h.ok(Command::Restart, "web");
    assert_eq!(count(&asked, "restart-upstream web"), 1);
    // A slow upstream: the sync asked a second later is still out at the deadline (5 s).
    let waited = h.advance(secs(6));
    assert_eq!(
        count(&waited, "sync-upstream web"),
        1,
        "{:?}",
        labels(&waited)
    );
    assert_eq!(
        count(&waited, "web UpstreamRestartTimedOut"),
        0,
        "no fresh view yet"
    );
    // Its answer shows the old process, but it was asked before the deadline: ask again.
    let stale = h.report(running(42, 7));
    assert_eq!(count(&stale, "web UpstreamRestartTimedOut"), 0);
    assert_eq!(
        count(&stale, "sync-upstream web"),
        1,
        "{:?}",
        labels(&stale)
    );
    // The fresh answer shows the restart the upstream made meanwhile: no timeout.
    let fresh = h.report(running(43, 9));
    assert_eq!(count(&fresh, "web UpstreamRestartTimedOut"), 0);
    assert_eq!(
        h.service("web").arbitrated().map(ToString::to_string),
        Some("restarted by upstream (pid 43)".to_owned())
    );
    // Next time nothing restarts: the first answer to a sync asked at or after the
    // deadline decides, never a tick.
    h.ok(Command::Restart, "web");
    let deadline = h.now + secs(5);
    let mut decided = Vec::new();
    for _ in 0..10 {
        let ticked = h.advance(secs(1));
        assert_eq!(count(&ticked, "web UpstreamRestartTimedOut"), 0);
        if count(&ticked, "sync-upstream web") > 0 {
            decided = h.report(running(43, 9));
            if !decided.is_empty() {
                break;
            }
        }
    }
    assert_eq!(labels(&decided), ["web UpstreamRestartTimedOut"]);
    assert_eq!(h.now, deadline, "asked at the deadline, answered at once");
}

#[test]
fn after_a_takeover_an_upstream_back_with_its_own_copy_is_reported_and_left_alone() {
    let spec = may_take_over();
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    h.unreachable_for(6);
    let run = h.observed_run();
    h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: Some(Pid::from_raw(42)),
    });
    let watch = |h: &mut Harness, report: UpstreamReport| {
        let asked = h.advance(secs(1));
        assert_eq!(
            count(&asked, "watch-upstream web"),
            1,
            "{:?}",
            labels(&asked)
        );
        h.feed(Input::UpstreamWatch {
            service: name("web"),
            run,
            report: Box::new(report),
        })
    };
    // Still gone, or back without the program running: nothing to say.
    let gone = watch(&mut h, UpstreamReport::Unreachable("refused".to_owned()));
    assert!(gone.is_empty(), "{:?}", labels(&gone));
    let stopped = watch(&mut h, seen(UpstreamState::Stopped, "STOPPED", None));
    assert!(stopped.is_empty(), "{:?}", labels(&stopped));
    // Back with a copy of its own: reported once, and left alone.
    let mut effects = watch(&mut h, running(43, 9));
    assert_eq!(labels(&effects), ["web UpstreamDuplicate"]);
    effects.extend(watch(&mut h, running(43, 9)));
    assert_eq!(count(&effects, "web UpstreamDuplicate"), 1, "once");
    assert_eq!(count(&effects, "signal"), 0);
    let duplicate = h.service("web").duplicate().map(|d| d.pid);
    assert_eq!(duplicate, Some(Pid::from_raw(43)));
    assert_eq!(
        h.service("web").pid(),
        Some(Pid::from_raw(42)),
        "holdfast's own"
    );
    assert_eq!(h.state("web"), "running");
    // Its copy gone: so is the duplicate.
    watch(&mut h, seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(h.service("web").duplicate(), None);
}

/// web as `observed`, with no grace after the upstream's starts and unhealthy after
/// `failures` failures.
fn unhealthy_after(failures: u32, takeover: Takeover) -> ServiceSpec {
    let mut spec = ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        ..observed(takeover)
    };
    if let Some(health) = spec.health.as_mut() {
        health.decay.unhealthy.failures = failures;
    }
    if let Some(m) = spec.managed_by.as_mut() {
        m.health_grace_period = Duration::ZERO;
    }
    spec
}

#[test]
fn loosening_the_check_of_an_unhealthy_observed_service_steps_it_down_at_once() {
    let mut h = Harness::booted([unhealthy_after(2, Takeover::Never)]);
    h.report(running(42, 7));
    // Unhealthy, a restart asked, and it times out: the upstream keeps the old process.
    let mut effects = Vec::new();
    for _ in 0..20 {
        effects.extend(h.probe_web(refused()));
        effects.extend(h.report(running(42, 7)));
        if count(&effects, "web UpstreamRestartTimedOut") > 0 {
            break;
        }
    }
    assert_eq!(count(&effects, "restart-upstream web"), 1);
    assert_eq!(count(&effects, "web UpstreamRestartTimedOut"), 1);
    let state = |h: &Harness| h.service("web").health().map(|m| m.decay().state());
    assert_eq!(state(&h), Some(crate::health::HealthState::Unhealthy));
    // The operator loosens the check: it applies now, not at the next probe.
    let (_, reloaded) = h.reload([unhealthy_after(1000, Takeover::Never)]);
    assert_eq!(
        count(&reloaded, "web HealthChanged"),
        1,
        "{:?}",
        labels(&reloaded)
    );
    assert_eq!(state(&h), Some(crate::health::HealthState::Degraded));
    let next = h.probe_web(refused());
    assert_eq!(count(&next, "probe web"), 1, "{:?}", labels(&next));
    assert_eq!(count(&next, "restart-upstream"), 0, "{:?}", labels(&next));
}

#[test]
fn a_hung_supervisord_a_takeover_cannot_replace_holds_no_dependent_back() {
    let spec = ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        ..observed(Takeover::Allowed)
    };
    let mut h = Harness::new([spec, svc_after("api", &["web"])]);
    h.feed(Input::Boot);
    // supervisord never answers; its process lives (the takeover's answer says so).
    let effects = h.unreachable_for(6);
    assert_eq!(count(&effects, "take-over web None"), 1);
    assert_eq!(count(&effects, "spawn api"), 0, "while taking over");
    assert!(h.service("web").is_coming_up(), "taking it over");
    let busy = h.report(UpstreamReport::Busy("supervisord still runs".to_owned()));
    assert_eq!(count(&busy, "spawn api"), 1, "{:?}", labels(&busy));
    assert!(!h.service("web").is_coming_up());
    // Still silent: the takeover is tried again (answered at once, as the shell
    // does), not reported again, and web stays given up on meanwhile.
    let mut again = Vec::new();
    for _ in 0..6 {
        let step = [h.unreachable_for(0), h.advance(secs(1))].concat();
        if count(&step, "take-over web") > 0 {
            h.report(UpstreamReport::Busy("supervisord still runs".to_owned()));
        }
        again.extend(step);
        assert!(!h.service("web").is_coming_up(), "{:?}", labels(&again));
    }
    assert_eq!(count(&again, "take-over web"), 1, "{:?}", labels(&again));
    assert_eq!(count(&again, "web UpstreamUnreachable"), 0);
    // A sync's answer shows it back: its STARTING holds dependents up again.
    h.report(UpstreamReport::Busy("alive".to_owned()));
    h.advance(secs(1));
    h.report(seen(UpstreamState::Starting, "STARTING", Some(42)));
    assert!(h.service("web").is_coming_up());
}

#[test]
fn an_observed_service_coming_up_does_not_hold_holdfasts_own_readiness() {
    let mut h = Harness::new([observed(Takeover::Never)]);
    h.feed(Input::Boot);
    assert!(h.service("web").is_coming_up(), "no answer yet");
    assert!(h.sup.settled(), "holdfast does not start it");
    h.report(seen(UpstreamState::Starting, "STARTING", Some(42)));
    assert!(
        h.sup.settled(),
        "a unit stuck activating keeps nothing un-ready"
    );
    // A dependent waiting for it is one of holdfast's own: that one does.
    let mut h = Harness::new([observed(Takeover::Never), svc_after("api", &["web"])]);
    h.feed(Input::Boot);
    assert_eq!(h.state("api"), "waiting");
    assert!(!h.sup.settled());
    let up = h.report(running(42, 7));
    assert_eq!(count(&up, "spawn api"), 1);
    // Waiting for a dependency of its own, before its observation begins: the same.
    let web = ServiceSpec {
        after: vec![name("db")],
        ..observed(Takeover::Never)
    };
    let mut h = Harness::new([svc("db"), web]);
    h.feed(Input::Boot);
    assert_eq!(h.state("web"), "waiting");
    assert!(!h.service("web").holds_start_up());
    assert!(h.service("db").holds_start_up());
}

/// web taken over, its process (pid 42) adopted; the run its watch's answers carry.
fn taken_over_web() -> (Harness, RunId) {
    let spec = ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        ..observed(Takeover::Allowed)
    };
    let mut h = Harness::booted([spec]);
    h.report(running(42, 7));
    h.unreachable_for(6);
    let run = h.observed_run();
    h.feed(Input::TakenOver {
        service: name("web"),
        run,
        adopted: Some(Pid::from_raw(42)),
    });
    (h, run)
}

impl Harness {
    /// The old upstream's answer to watch `run` of taken-over web.
    fn watched(&mut self, run: RunId, report: UpstreamReport) -> Vec<Effect> {
        self.feed(Input::UpstreamWatch {
            service: name("web"),
            run,
            report: Box::new(report),
        })
    }
}

#[test]
fn a_start_after_a_takeover_observes_the_upstreams_own_copy_instead_of_spawning_a_second() {
    let (mut h, run) = taken_over_web();
    assert_eq!(
        labels(&h.watched(run, running(43, 9))),
        ["web UpstreamDuplicate"]
    );
    h.ok(Command::Stop, "web");
    h.exit("web", killed(crate::unix::Signal::SIGTERM));
    let started = h.ok(Command::Start, "web");
    assert_eq!(count(&started, "spawn"), 0, "{:?}", labels(&started));
    assert_eq!(count(&started, "web BackToUpstream"), 1);
    assert_eq!(count(&started, "sync-upstream web"), 1);
    let seen = h.report(running(43, 9));
    assert!(
        seen.is_empty(),
        "as its last answer said: {:?}",
        labels(&seen)
    );
    assert_eq!(h.state("web"), "running");
    let seen = h.service("web").observation().and_then(|o| o.view.as_ref());
    assert_eq!(seen.and_then(|v| v.pid), Some(Pid::from_raw(43)));
    // Stopped before the upstream's copy showed (holdfast ran none): the same.
    let (mut h, run) = taken_over_web();
    h.ok(Command::Stop, "web");
    h.exit("web", killed(crate::unix::Signal::SIGTERM));
    // The upstream still names the process holdfast adopted and stopped: not a copy.
    h.watched(run, running(42, 7));
    let started = h.ok(Command::Start, "web");
    assert_eq!(count(&started, "spawn web"), 1, "{:?}", labels(&started));
    h.ok(Command::Stop, "web");
    h.exit("web", killed(crate::unix::Signal::SIGTERM));
    assert!(
        h.watched(run, running(43, 9)).is_empty(),
        "holdfast runs none"
    );
    let started = h.ok(Command::Start, "web");
    assert_eq!(count(&started, "spawn"), 0, "{:?}", labels(&started));
    assert_eq!(count(&started, "web BackToUpstream"), 1);
}

#[test]
fn a_start_on_an_old_answer_spawns_command_when_the_upstreams_copy_is_gone_since() {
    // The last answer shows the copy: the start observes it, and says what it waits for.
    let mut h = gone_back_to_the_upstream();
    assert!(h.service("web").is_coming_up());
    // It stopped since: the first answer says so, and holdfast runs web again.
    let answer = h.report(seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(count(&answer, "spawn web"), 1, "{:?}", labels(&answer));
    assert_eq!(count(&answer, "web TakenOver"), 1);
    assert_eq!(h.state("web"), "starting");
}

/// taken-over web stopped by hand while the upstream showed its own copy (pid 43), then
/// started again: holdfast goes back to observing that copy.
fn gone_back_to_the_upstream() -> Harness {
    let (mut h, run) = taken_over_web();
    h.watched(run, running(43, 9));
    h.ok(Command::Stop, "web");
    h.exit("web", killed(crate::unix::Signal::SIGTERM));
    let started = h.ok(Command::Start, "web");
    assert_eq!(count(&started, "web BackToUpstream"), 1);
    h
}

#[test]
fn going_back_to_an_upstream_busy_with_its_copy_spawns_nothing_beside_it() {
    // supervisord's BACKOFF (starting again, no pid): its copy is on its way.
    let mut h = gone_back_to_the_upstream();
    let answer = h.report(seen(UpstreamState::Starting, "BACKOFF", None));
    assert_eq!(count(&answer, "spawn"), 0, "{:?}", labels(&answer));
    assert_eq!(labels(&answer), ["web UpstreamState"]);
    assert_eq!(h.state("web"), "starting");
    // Stopping: the next answer decides, gone this time.
    let mut h = gone_back_to_the_upstream();
    let answer = h.report(seen(UpstreamState::Stopping, "STOPPING", Some(43)));
    assert_eq!(count(&answer, "spawn"), 0, "{:?}", labels(&answer));
    assert!(h.service("web").is_coming_up(), "still deciding");
    h.advance(secs(1));
    let again = h.report(seen(UpstreamState::Stopping, "STOPPING", Some(43)));
    assert!(again.is_empty(), "said once: {:?}", labels(&again));
    h.advance(secs(1));
    let answer = h.report(seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(
        labels(&answer)[..2],
        ["web UpstreamState", "web TakenOver"],
        "the state it saw first"
    );
    assert_eq!(count(&answer, "spawn web"), 1, "{:?}", labels(&answer));
}

#[test]
fn going_back_to_an_upstream_that_falls_silent_holds_no_dependent_and_can_take_over_the_copy() {
    // No takeover any more (a reload said so): silent, it holds nothing up, and a
    // restart by hand says why it is refused, not that an answer is awaited.
    let mut h = gone_back_to_the_upstream();
    h.reload([ServiceSpec {
        command: vec!["/bin/web".to_owned()],
        ..observed(Takeover::Never)
    }]);
    h.unreachable_for(6);
    assert!(!h.service("web").is_coming_up());
    let why = h
        .service("web")
        .observation()
        .and_then(|o| o.why_no_restart());
    assert!(
        why.as_ref().is_some_and(|w| w.contains("does not answer")),
        "{why:?}"
    );
    // Takeover allowed: the copy the last answer showed is adopted, and the shell may
    // ask whether supervisord itself still lives.
    let mut h = gone_back_to_the_upstream();
    let effects = h.unreachable_for(6);
    let takeover = effects.iter().find_map(|e| match e {
        Effect::TakeOver {
            process, upstream, ..
        } => Some((*process, *upstream)),
        _ => None,
    });
    assert_eq!(
        takeover,
        Some((
            Some((Pid::from_raw(43), 900)),
            Some((Pid::from_raw(9), 900))
        )),
        "{:?}",
        labels(&effects)
    );
}

#[test]
fn going_back_to_an_upstream_that_stays_busy_is_observed_after_arbiter_timeout() {
    let mut h = gone_back_to_the_upstream();
    for _ in 0..4 {
        h.advance(secs(1));
        h.report(UpstreamReport::Busy("supervisord is SHUTDOWN".to_owned()));
    }
    assert!(h.service("web").is_coming_up(), "within arbiter_timeout");
    let effects = h.advance(secs(2));
    assert_eq!(count(&effects, "spawn"), 0, "{:?}", labels(&effects));
    assert!(
        !h.service("web").is_coming_up(),
        "a dependent no longer waits"
    );
    let why = h
        .service("web")
        .observation()
        .and_then(|o| o.why_no_restart());
    assert_eq!(why, None, "a restart goes to the upstream");
}

#[test]
fn going_back_to_the_upstream_clears_taken_over_and_checks_the_copys_health() {
    let mut h = gone_back_to_the_upstream();
    assert_eq!(
        h.service("web").arbitrated(),
        None,
        "not holdfast's any more"
    );
    h.report(running(43, 9));
    assert!(h.service("web").health().is_some(), "the copy is probed");
    h.ok(Command::Stop, "web");
    assert_eq!(h.service("web").arbitrated(), None);
}

#[test]
fn a_duplicate_is_reported_once_while_holdfasts_own_copy_restarts() {
    let (mut h, run) = taken_over_web();
    assert_eq!(
        labels(&h.watched(run, running(43, 9))),
        ["web UpstreamDuplicate"]
    );
    // holdfast's copy ends; while it is in its backoff the upstream still runs 43.
    h.exit("web", code(1));
    assert_eq!(h.service("web").pid(), None);
    let again = h.watched(run, running(43, 9));
    assert_eq!(
        count(&again, "web UpstreamDuplicate"),
        0,
        "{:?}",
        labels(&again)
    );
    assert_eq!(
        h.service("web").duplicate().map(|d| d.pid),
        Some(Pid::from_raw(43))
    );
    // Only an answer without the copy clears it.
    h.watched(run, UpstreamReport::Unreachable("refused".to_owned()));
    assert!(h.service("web").duplicate().is_some());
    h.watched(run, seen(UpstreamState::Stopped, "STOPPED", None));
    assert_eq!(h.service("web").duplicate(), None);
}

#[test]
fn an_answer_to_an_earlier_watch_is_dropped() {
    let (mut h, run) = taken_over_web();
    let asked = h.advance(secs(1));
    assert_eq!(count(&asked, "watch-upstream web"), 1);
    // Stopped, then back to observing the upstream's copy, taken over again: a new
    // watch, while the first one's sync is still out.
    h.watched(run, running(43, 9));
    h.ok(Command::Stop, "web");
    h.exit("web", killed(crate::unix::Signal::SIGTERM));
    h.ok(Command::Start, "web");
    let again = h.observed_run();
    h.unreachable_for(6);
    h.feed(Input::TakenOver {
        service: name("web"),
        run: again,
        adopted: None,
    });
    assert!(h.service("web").pid().is_some(), "command started");
    // The new watch's first sync is out when the old one's answer comes.
    let asked = h.advance(secs(1));
    assert_eq!(
        count(&asked, "watch-upstream web"),
        1,
        "{:?}",
        labels(&asked)
    );
    let stale = h.watched(run, running(44, 11));
    assert!(stale.is_empty(), "{:?}", labels(&stale));
    assert_eq!(h.service("web").duplicate(), None, "not applied");
    // Nor did it start a second chain of syncs beside the one in flight.
    assert_eq!(count(&h.advance(secs(3)), "watch-upstream web"), 0);
    let fresh = h.watched(again, running(44, 11));
    assert_eq!(labels(&fresh), ["web UpstreamDuplicate"]);
}

#[test]
fn an_observed_service_says_what_it_waits_for_from_its_upstream() {
    let mut h = Harness::booted([observed(Takeover::Never)]);
    let reason = |h: &Harness| {
        let observation = h.service("web").observation().expect("observed");
        let upstream = Upstream::Supervisord {
            program: "web".to_owned(),
        };
        observation.reason(&upstream)
    };
    assert_eq!(
        reason(&h).as_deref(),
        Some("no answer from supervisord yet")
    );
    h.report(seen(UpstreamState::Starting, "STARTING", Some(42)));
    assert_eq!(reason(&h).as_deref(), Some("supervisord says STARTING"));
    h.advance(secs(1));
    h.report(running(42, 7));
    h.ok(Command::Restart, "web");
    assert_eq!(
        reason(&h).as_deref(),
        Some("restart asked of supervisord:web")
    );
    h.report(running(43, 9));
    assert_eq!(reason(&h), None, "running: nothing to wait for");
    h.advance(secs(1));
    h.report(UpstreamReport::Unreachable("connection refused".to_owned()));
    assert_eq!(
        reason(&h).as_deref(),
        Some("supervisord does not answer: connection refused")
    );
}

#[test]
fn a_dependent_started_while_an_overdue_restart_awaits_a_fresh_answer_waits_for_it() {
    let mut h = Harness::booted([observed(Takeover::Never), svc_after("api", &["web"])]);
    h.report(running(42, 7));
    h.ok(Command::Stop, "api");
    h.exit("api", killed(crate::unix::Signal::SIGTERM));
    h.ok(Command::Restart, "web");
    // A slow upstream: the sync asked a second later is still out at the deadline.
    h.advance(secs(6));
    let overdue = h.service("web").observation().map(|o| o.arbitration);
    assert!(
        matches!(overdue, Some(Arbitration::Overdue { .. })),
        "{overdue:?}"
    );
    h.ok(Command::Start, "api");
    assert_eq!(h.state("api"), "waiting", "the restart is not judged yet");
    // The answer asked before the deadline decides nothing: still waiting.
    let stale = h.report(running(42, 7));
    assert_eq!(count(&stale, "spawn api"), 0, "{:?}", labels(&stale));
    // The fresh one times the restart out: web runs, api starts.
    let fresh = h.report(running(42, 7));
    assert_eq!(count(&fresh, "web UpstreamRestartTimedOut"), 1);
    assert_eq!(count(&fresh, "spawn api"), 1, "{:?}", labels(&fresh));
}
