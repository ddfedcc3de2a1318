//! Stopping: signals, escalation, leftover group members, stale inputs.

use super::*;
use crate::supervisor::service::{KILL_WAIT, KillScope};

const STOP_SIGNALS: [&str; 3] = ["a StopRequested", "signal a SIGTERM", "signal a SIGCONT"];

#[test]
fn stop_signals_the_group_with_sigcont_and_reports_stopped_after_the_exit() {
    let mut h = Harness::running([svc("a")]);
    let (reply, effects) = h.command(Command::Stop, "a");
    assert_eq!(reply, Ok("stopping a".to_owned()));
    assert_eq!(labels(&effects), STOP_SIGNALS);
    assert_eq!(h.state("a"), "stopping");
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped"]
    );
    assert_eq!(h.state("a"), "stopped");
    assert_eq!(
        labels(&h.advance(secs(60))),
        Vec::<String>::new(),
        "no restart"
    );
}

#[test]
fn stop_uses_the_configured_signal() {
    let spec = ServiceSpec {
        stop: crate::model::StopSpec {
            signal: Signal::SIGINT,
            timeout: crate::model::Timeout::After(secs(3)),
            dump: None,
        },
        ..svc("a")
    };
    let mut h = Harness::running([spec]);
    let effects = h.ok(Command::Stop, "a");
    assert_eq!(
        labels(&effects),
        ["a StopRequested", "signal a SIGINT", "signal a SIGCONT"]
    );
    assert_eq!(
        events_of(&effects, "a")[0],
        EventKind::StopRequested {
            signal: Signal::SIGINT,
            timeout: crate::model::Timeout::After(secs(3)),
            scope: KillScope::ProcessGroup,
        }
    );
}

#[test]
fn an_unclean_exit_during_a_stop_is_not_restarted() {
    let mut h = Harness::running([with_restart(RestartPolicy::Always, svc("a"))]);
    h.ok(Command::Stop, "a");
    assert_eq!(labels(&h.exit("a", code(1))), ["a Exited", "a Stopped"]);
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let mut h = Harness::running([svc("a")]);
    let stopped_at = h.now;
    h.ok(Command::Stop, "a");
    assert_eq!(h.sup.next_deadline(), Some(stopped_at + secs(10)));
    assert_eq!(labels(&h.advance(secs(10) - ms(1))), Vec::<String>::new());
    assert_eq!(
        labels(&h.advance(ms(1))),
        ["a Escalated", "signal a SIGKILL"]
    );
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGKILL))),
        ["a Exited", "a Stopped"]
    );
}

#[test]
fn a_stop_waits_for_the_group_to_empty_after_the_main_process_exits() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Stop, "a");
    assert_eq!(
        labels(&h.exit_leaving_group("a", killed(Signal::SIGTERM))),
        ["a Exited"]
    );
    assert_eq!(h.state("a"), "stopping");
    assert_eq!(h.service("a").pid(), None, "the main pid was reaped");
    assert_eq!(labels(&h.group_empty("a")), ["a Stopped"]);
}

#[test]
fn leftover_group_members_get_sigkill_after_the_timeout() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Stop, "a");
    h.exit_leaving_group("a", killed(Signal::SIGTERM));
    assert_eq!(
        labels(&h.advance(secs(10))),
        ["a Escalated", "signal a SIGKILL"]
    );
    assert_eq!(labels(&h.group_empty("a")), ["a Stopped"]);
}

#[test]
fn a_group_that_survives_sigkill_is_abandoned_after_kill_wait() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Stop, "a");
    h.advance(secs(10));
    let killed_at = h.now;
    assert_eq!(h.sup.next_deadline(), Some(killed_at + KILL_WAIT));
    assert_eq!(
        labels(&h.advance(KILL_WAIT)),
        ["a StopAbandoned", "a Stopped"]
    );
    assert_eq!(h.state("a"), "stopped");
    assert_eq!(h.sup.next_deadline(), None);
}

#[test]
fn a_crash_with_leftover_group_members_stops_the_group_then_restarts() {
    let mut h = Harness::running([svc("a")]);
    let mut expected = vec!["a Exited"];
    expected.extend(STOP_SIGNALS);
    assert_eq!(labels(&h.exit_leaving_group("a", code(1))), expected);
    assert_eq!(h.state("a"), "stopping");
    assert_eq!(labels(&h.group_empty("a")), ["a RestartScheduled"]);
    assert_eq!(labels(&h.advance(ms(100))), ["spawn a", "a Spawned"]);
}

#[test]
fn a_clean_exit_with_leftover_group_members_stops_for_good_under_on_failure() {
    let mut h = Harness::running([svc("a")]);
    h.exit_leaving_group("a", code(0));
    assert_eq!(labels(&h.group_empty("a")), ["a Stopped"]);
}

#[test]
fn an_early_exit_with_leftover_group_members_is_a_failed_start() {
    let mut h = Harness::booted([svc("a")]);
    h.advance(ms(200));
    h.exit_leaving_group("a", code(0));
    h.advance(secs(10));
    assert_eq!(
        labels(&h.group_empty("a")),
        ["a RestartScheduled"],
        "even after SIGKILL the policy applies to the early exit"
    );
}

#[test]
fn stopping_a_stopped_or_failed_service_changes_nothing() {
    let mut h = Harness::new([svc("a")]);
    let (reply, effects) = h.command(Command::Stop, "a");
    assert_eq!(reply, Ok("a is not running".to_owned()));
    assert!(effects.is_empty());
}

#[test]
fn an_exit_of_an_earlier_run_is_ignored() {
    let mut h = Harness::running([svc("a")]);
    let old = h.run("a");
    h.ok(Command::Restart, "a");
    h.exit_run("a", old, killed(Signal::SIGTERM), false);
    let new = h.run("a");
    assert_ne!(old, new);
    assert_eq!(
        labels(&h.exit_run("a", old, code(1), false)),
        Vec::<String>::new()
    );
    let stale_group = Input::GroupEmpty {
        service: name("a"),
        run: old,
    };
    let stale_spawn = Input::Spawned {
        service: name("a"),
        run: old,
        pid: Pid::from_raw(9999),
    };
    for input in [stale_group, stale_spawn] {
        assert_eq!(labels(&h.feed(input)), Vec::<String>::new());
    }
    assert_eq!(h.run("a"), new);
    assert_eq!(h.state("a"), "starting");
}

#[test]
fn inputs_for_unknown_services_are_ignored() {
    let mut h = Harness::running([svc("a")]);
    let effects = h.feed(Input::Exited {
        service: name("ghost"),
        run: RunId(1),
        status: code(1),
        group_alive: false,
    });
    assert!(effects.is_empty());
    assert_eq!(h.state("a"), "running");
}

/// An abandoned stop followed by a start: the old run's processes drain beside the new
/// run, and their exits and empty group are the old run's, never the new one's.
#[test]
fn the_late_exit_of_an_abandoned_run_is_its_own_and_leaves_the_new_run_alone() {
    let mut h = Harness::running([svc("a")]);
    let old = h.run("a");
    h.ok(Command::Restart, "a");
    h.advance(secs(10));
    assert_eq!(
        labels(&h.advance(KILL_WAIT)),
        ["a StopAbandoned", "a Stopped", "spawn a", "a Spawned"],
        "the restart does not wait for processes that survived SIGKILL"
    );
    let new = h.run("a");
    assert_ne!(new, old);
    assert_eq!(
        h.service("a")
            .draining()
            .iter()
            .map(|d| d.run)
            .collect::<Vec<_>>(),
        [old]
    );
    h.advance(secs(5));
    assert_eq!(h.state("a"), "running");

    let effects = h.exit_run("a", old, killed(Signal::SIGKILL), true);
    assert_eq!(
        events_of(&effects, "a"),
        [EventKind::Exited {
            run: old,
            pid: Pid::from_raw(101),
            status: killed(Signal::SIGKILL),
        }],
        "reported as the old run's exit"
    );
    assert_eq!(h.state("a"), "running", "the new run is untouched");
    assert_eq!(h.run("a"), new);
    assert_eq!(
        h.service("a").draining().len(),
        1,
        "its group is not empty yet"
    );

    let effects = h.feed(Input::GroupEmpty {
        service: name("a"),
        run: old,
    });
    assert_eq!(labels(&effects), Vec::<String>::new());
    assert!(h.service("a").draining().is_empty(), "the old run is gone");
    assert_eq!(h.state("a"), "running");

    // The new run's own exit still ends it as usual.
    assert_eq!(
        labels(&h.exit("a", code(1))),
        ["a Exited", "a RestartScheduled"]
    );
}
