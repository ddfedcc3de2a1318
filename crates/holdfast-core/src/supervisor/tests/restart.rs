//! Restart policy, start_secs and the start limit.

use super::*;
use crate::supervisor::service::{Cause, FailReason};

fn gave_up(effects: &[Effect], n: &str) -> FailReason {
    events_of(effects, n)
        .into_iter()
        .find_map(|k| match k {
            EventKind::GaveUp { reason } => Some(reason),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{n} gave up"))
}

#[test]
fn boot_spawns_autostart_services_only() {
    let mut h = Harness::new([
        svc("a"),
        ServiceSpec {
            autostart: false,
            ..svc("b")
        },
    ]);
    assert_eq!(labels(&h.feed(Input::Boot)), ["spawn a", "a Spawned"]);
    assert_eq!(h.state("b"), "stopped");
}

#[test]
fn a_process_up_for_start_secs_is_running_and_emits_started() {
    let mut h = Harness::new([svc("a")]);
    let t0 = h.now;
    h.feed(Input::Boot);
    assert_eq!(h.state("a"), "starting");
    assert_eq!(
        h.sup.next_deadline(),
        Some(t0 + secs(1)),
        "start_secs after spawn"
    );
    assert_eq!(labels(&h.advance(ms(999))), Vec::<String>::new());
    assert_eq!(labels(&h.advance(ms(1))), ["a Started"]);
    assert_eq!(h.state("a"), "running");
    assert_eq!(
        h.sup.next_deadline(),
        None,
        "a running service waits for nothing"
    );
}

#[test]
fn zero_start_secs_counts_as_started_at_spawn() {
    let spec = ServiceSpec {
        start_secs: Duration::ZERO,
        ..svc("a")
    };
    let mut h = Harness::new([spec]);
    assert_eq!(
        labels(&h.feed(Input::Boot)),
        ["spawn a", "a Spawned", "a Started"]
    );
    assert_eq!(h.state("a"), "running");
}

#[test]
fn crashed_service_restarts_after_restart_sec_and_not_before() {
    let mut h = Harness::running([with_fixed_delay(secs(2), svc("a"))]);
    let first = h.run("a");
    let crashed_at = h.now;
    assert_eq!(
        labels(&h.exit("a", code(1))),
        ["a Exited", "a RestartScheduled"]
    );
    assert_eq!(h.state("a"), "backoff");
    assert_eq!(h.sup.next_deadline(), Some(crashed_at + secs(2)));
    assert_eq!(labels(&h.advance(ms(1999))), Vec::<String>::new());
    assert_eq!(labels(&h.advance(ms(1))), ["spawn a", "a Spawned"]);
    assert_ne!(h.run("a"), first, "every spawn gets a fresh run id");
    assert_eq!(h.service("a").restarts(), 1);
    assert_eq!(h.service("a").last_exit(), Some((code(1), crashed_at)));
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    let clean = [
        code(0),
        killed(Signal::SIGTERM),
        killed(Signal::SIGHUP),
        killed(Signal::SIGINT),
        killed(Signal::SIGPIPE),
    ];
    for status in clean {
        let mut h = Harness::running([svc("a")]);
        assert_eq!(
            labels(&h.exit("a", status)),
            ["a Exited", "a Stopped"],
            "{status} is clean"
        );
        assert_eq!(h.state("a"), "stopped");
        assert_eq!(labels(&h.advance(secs(60))), Vec::<String>::new());
    }
}

#[test]
fn on_failure_restarts_an_unclean_exit() {
    for status in [
        code(1),
        code(255),
        killed(Signal::SIGKILL),
        killed(Signal::SIGSEGV),
    ] {
        let mut h = Harness::running([svc("a")]);
        assert_eq!(
            labels(&h.exit("a", status)),
            ["a Exited", "a RestartScheduled"],
            "{status} is unclean"
        );
        assert_eq!(
            labels(&h.advance(secs(2))),
            ["spawn a", "a Spawned", "a Started"]
        );
    }
}

#[test]
fn always_restarts_a_clean_exit() {
    for status in [code(0), killed(Signal::SIGTERM), code(3)] {
        let mut h = Harness::running([with_restart(RestartPolicy::Always, svc("a"))]);
        assert_eq!(
            labels(&h.exit("a", status)),
            ["a Exited", "a RestartScheduled"]
        );
        assert_eq!(h.state("a"), "backoff");
    }
}

#[test]
fn no_never_restarts_and_a_clean_exit_stops() {
    let mut h = Harness::running([with_restart(RestartPolicy::No, svc("a"))]);
    assert_eq!(labels(&h.exit("a", code(0))), ["a Exited", "a Stopped"]);
    assert_eq!(h.state("a"), "stopped");
    assert_eq!(labels(&h.advance(secs(60))), Vec::<String>::new());
}

#[test]
fn an_unclean_exit_with_restart_no_fails_with_the_exit_as_reason() {
    let mut h = Harness::running([with_restart(RestartPolicy::No, svc("a"))]);
    let effects = h.exit("a", code(3));
    assert_eq!(labels(&effects), ["a Exited", "a GaveUp"]);
    let reason = gave_up(&effects, "a");
    assert_eq!(reason, FailReason::NoRestart(Cause::Exited(code(3))));
    assert_eq!(reason.to_string(), "exited 3 (restart disabled)");
    assert!(matches!(h.service("a").state(), State::Failed { reason: r } if *r == reason));
}

#[test]
fn an_exit_before_start_secs_is_a_failed_start_even_with_code_0() {
    let mut h = Harness::booted([svc("a")]);
    h.advance(ms(500));
    assert_eq!(
        labels(&h.exit("a", code(0))),
        ["a Exited", "a RestartScheduled"],
        "on-failure restarts an early clean exit"
    );

    let mut h = Harness::booted([with_restart(RestartPolicy::No, svc("a"))]);
    h.advance(ms(500));
    let effects = h.exit("a", code(3));
    assert_eq!(
        gave_up(&effects, "a"),
        FailReason::NoRestart(Cause::ExitedEarly {
            status: code(3),
            after: ms(500),
        })
    );
    assert!(
        !events_of(&effects, "a")
            .iter()
            .any(|k| matches!(k, EventKind::Started { .. })),
        "a failed start never counts as started"
    );
}

#[test]
fn an_early_clean_exit_with_restart_no_is_stopped_not_failed() {
    let mut h = Harness::booted([with_restart(RestartPolicy::No, svc("a"))]);
    h.advance(ms(500));
    let effects = h.exit("a", code(0));
    assert_eq!(labels(&effects), ["a Exited", "a Stopped"]);
    assert_eq!(h.state("a"), "stopped");
    assert_eq!(
        h.service("a").last_exit().map(|(status, _)| status),
        Some(code(0))
    );
}

#[test]
fn an_exit_handled_before_the_start_secs_timer_still_counts_as_started() {
    // The exit and the timer are ready together; the shell happens to take the exit.
    let mut h = Harness::booted([with_restart(RestartPolicy::No, svc("a"))]);
    h.skip(ms(1500));
    let effects = h.exit("a", code(0));
    assert_eq!(
        h.state("a"),
        "stopped",
        "up for 1.5 s of start_secs 1 s: a clean stop"
    );
    assert!(!labels(&effects).contains(&"a GaveUp".to_owned()));
}

#[test]
fn spawn_failures_are_failed_starts() {
    let mut h = Harness::new([with_restart(RestartPolicy::No, svc("a"))]);
    h.fail_spawns("a");
    let effects = h.feed(Input::Boot);
    assert_eq!(labels(&effects), ["spawn a", "a SpawnFailed", "a GaveUp"]);
    assert!(matches!(
        gave_up(&effects, "a"),
        FailReason::NoRestart(Cause::SpawnFailed(_))
    ));

    let mut h = Harness::new([svc("a")]);
    h.fail_spawns("a");
    assert_eq!(
        labels(&h.feed(Input::Boot)),
        ["spawn a", "a SpawnFailed", "a RestartScheduled"]
    );
    h.heal_spawns("a");
    assert_eq!(labels(&h.advance(ms(100))), ["spawn a", "a Spawned"]);
}

fn limited() -> ServiceSpec {
    with_limit(3, secs(10), svc("a"))
}

#[test]
fn the_fourth_quick_crash_hits_a_start_limit_of_three() {
    let mut h = Harness::booted([limited()]);
    for crash in 1..=3 {
        let effects = h.crash_after("a", ms(1500));
        assert_eq!(
            labels(&effects),
            [
                "a Started",
                "a Exited",
                "a RestartScheduled",
                "spawn a",
                "a Spawned"
            ],
            "crash {crash} is restarted"
        );
    }
    h.advance(ms(1500));
    let effects = h.exit("a", code(1));
    assert_eq!(labels(&effects), ["a Exited", "a GaveUp"]);
    assert_eq!(
        gave_up(&effects, "a"),
        FailReason::StartLimitHit {
            restarts: 3,
            interval: secs(10),
            last: Cause::Exited(code(1)),
        }
    );
    assert_eq!(h.state("a"), "failed");
    assert_eq!(h.service("a").restarts(), 3);
    assert_eq!(
        labels(&h.advance(secs(60))),
        Vec::<String>::new(),
        "failed stays failed"
    );
}

#[test]
fn a_start_command_revives_a_service_that_hit_the_start_limit() {
    let mut h = Harness::booted([limited()]);
    for _ in 0..4 {
        h.crash_after("a", ms(1500));
    }
    assert_eq!(h.state("a"), "failed");
    assert_eq!(labels(&h.ok(Command::Start, "a")), ["spawn a", "a Spawned"]);
    let effects = h.crash_after("a", ms(1500));
    assert!(
        labels(&effects).contains(&"a RestartScheduled".to_owned()),
        "a start by hand gives the service a fresh start limit"
    );
}

#[test]
fn spawn_failures_count_towards_the_start_limit() {
    let mut h = Harness::new([limited()]);
    h.fail_spawns("a");
    h.feed(Input::Boot);
    let effects = h.advance(secs(1));
    assert_eq!(spawns(&effects).len(), 3, "three restarts");
    assert_eq!(h.state("a"), "failed");
}

#[test]
fn spawns_failing_for_holdfasts_own_resources_are_retried_without_counting() {
    let mut h = Harness::new([with_restart(RestartPolicy::No, limited())]);
    h.starve_spawns("a");
    assert_eq!(
        labels(&h.feed(Input::Boot)),
        ["spawn a", "a SpawnFailed", "a RestartScheduled"],
        "not the service's fault: retried even with restart = \"no\""
    );
    let effects = h.advance(ms(999));
    assert!(spawns(&effects).is_empty(), "not before RESOURCE_RETRY");
    // A minute of EMFILE: one retry per second, far past a start limit of 3 in 10 s.
    let effects = h.advance(secs(60));
    assert_eq!(spawns(&effects).len(), 60, "one retry per RESOURCE_RETRY");
    assert_eq!(h.state("a"), "backoff", "never failed");

    h.heal_spawns("a");
    assert_eq!(labels(&h.advance(secs(1))), ["spawn a", "a Spawned"]);
    let effects = h.crash_after("a", ms(1500));
    assert_eq!(
        labels(&effects),
        ["a Started", "a Exited", "a GaveUp"],
        "the service's own policy applies again once it ran"
    );
}

#[test]
fn crashes_spread_over_more_than_the_interval_never_hit_the_limit() {
    let mut h = Harness::booted([limited()]);
    for crash in 1..=20 {
        let effects = h.crash_after("a", secs(6));
        assert_eq!(spawns(&effects).len(), 1, "crash {crash} is restarted");
    }
    assert_eq!(h.service("a").restarts(), 20);
}

#[test]
fn the_cause_of_the_last_restart_is_kept_across_runs() {
    let mut h = Harness::running([with_restart(RestartPolicy::Always, svc("a"))]);
    assert_eq!(h.service("a").last_restart(), None, "never restarted");
    h.exit("a", code(3));
    assert_eq!(h.state("a"), "backoff");
    assert_eq!(
        h.service("a").last_restart(),
        Some(&Cause::Exited(code(3))),
        "the pending restart already has its cause"
    );
    h.advance(secs(5));
    assert_eq!(h.state("a"), "running");
    assert_eq!(
        h.service("a").last_restart(),
        Some(&Cause::Exited(code(3))),
        "the new run still tells why it was started"
    );
    h.fail_spawns("a");
    h.exit("a", code(0));
    h.advance(ms(150));
    assert!(
        matches!(h.service("a").last_restart(), Some(Cause::SpawnFailed(_))),
        "{:?}",
        h.service("a").last_restart()
    );
}
