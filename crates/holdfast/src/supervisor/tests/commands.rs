//! Control commands against each state.

use super::*;
use crate::supervisor::answer::ErrorKind;

#[test]
fn restart_of_a_running_service_stops_then_starts_with_a_new_run_id() {
    let mut h = Harness::running([svc("a")]);
    let old = h.run("a");
    let (reply, effects) = h.command(Command::Restart, "a");
    assert_eq!(reply, Ok("restarting a".to_owned()));
    assert_eq!(
        labels(&effects),
        ["a StopRequested", "signal a SIGTERM", "signal a SIGCONT"]
    );
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped", "spawn a", "a Spawned"]
    );
    assert_ne!(h.run("a"), old);
    assert_eq!(
        h.service("a").restarts(),
        0,
        "a restart by hand is not counted"
    );
}

#[test]
fn start_of_a_stopping_service_starts_it_after_the_stop() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Stop, "a");
    let (reply, effects) = h.command(Command::Start, "a");
    assert_eq!(
        reply,
        Ok("a is stopping; it will start again once stopped".to_owned())
    );
    assert!(effects.is_empty(), "the signals already went out");
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped", "spawn a", "a Spawned"]
    );
}

#[test]
fn stop_of_a_restarting_service_cancels_the_start() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Restart, "a");
    h.ok(Command::Stop, "a");
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped"]
    );
}

#[test]
fn stop_of_a_service_in_backoff_cancels_the_restart() {
    let mut h = Harness::running([svc("a")]);
    h.exit("a", code(1));
    assert_eq!(h.state("a"), "backoff");
    assert_eq!(labels(&h.ok(Command::Stop, "a")), ["a Stopped"]);
    assert_eq!(h.sup.next_deadline(), None);
    assert_eq!(labels(&h.advance(secs(60))), Vec::<String>::new());
}

#[test]
fn stop_during_crash_cleanup_cancels_the_restart() {
    let mut h = Harness::running([svc("a")]);
    h.exit_leaving_group("a", code(1));
    assert_eq!(labels(&h.ok(Command::Stop, "a")), Vec::<String>::new());
    assert_eq!(labels(&h.group_empty("a")), ["a Stopped"]);
}

#[test]
fn start_of_a_service_in_backoff_starts_it_at_once() {
    let mut h = Harness::running([with_fixed_delay(secs(30), svc("a"))]);
    h.exit("a", code(1));
    assert_eq!(labels(&h.ok(Command::Start, "a")), ["spawn a", "a Spawned"]);
}

#[test]
fn start_of_a_starting_or_running_service_changes_nothing() {
    let mut h = Harness::booted([svc("a")]);
    assert_eq!(
        h.command(Command::Start, "a"),
        (Ok("a is already starting".to_owned()), Vec::new())
    );
    h.advance(secs(1));
    assert_eq!(
        h.command(Command::Start, "a"),
        (Ok("a is already running".to_owned()), Vec::new())
    );
}

#[test]
fn restart_of_a_stopped_service_starts_it() {
    let mut h = Harness::new([svc("a")]);
    let (reply, effects) = h.command(Command::Restart, "a");
    assert_eq!(reply, Ok("starting a".to_owned()));
    assert_eq!(labels(&effects), ["spawn a", "a Spawned"]);
}

#[test]
fn commands_for_an_unknown_service_fail_without_effects() {
    for command in [Command::Start, Command::Stop, Command::Restart] {
        let mut h = Harness::running([svc("a")]);
        let (reply, effects) = h.command(command, "ghost");
        let error = reply.expect_err("ghost is not a service");
        assert_eq!(error.kind, ErrorKind::UnknownService, "{command:?}");
        assert_eq!(error.message, "no service named \"ghost\"");
        assert!(effects.is_empty());
        assert_eq!(h.state("a"), "running");
    }
}

#[test]
fn start_of_a_service_being_removed_is_refused() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    h.reload([svc("a")]);
    assert_eq!(h.state("b"), "stopping");
    let (result, effects) = h.command(Command::Start, "b");
    let error = result.expect_err("a service leaving the config cannot be started");
    assert_eq!(error.kind, ErrorKind::UnknownService);
    assert!(effects.is_empty(), "a refused command changes nothing");
}
