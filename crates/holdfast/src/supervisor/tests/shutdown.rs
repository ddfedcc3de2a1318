//! Shutdown: dependents first, no restarts, commands refused, exit once.

use super::*;
use crate::supervisor::answer::ErrorKind;
use crate::supervisor::service::KILL_WAIT;

fn stop_signals(n: &str) -> Vec<String> {
    vec![
        format!("{n} StopRequested"),
        format!("signal {n} SIGTERM"),
        format!("signal {n} SIGCONT"),
    ]
}

fn chain() -> [ServiceSpec; 3] {
    [svc("a"), svc_after("b", &["a"]), svc_after("c", &["b"])]
}

fn concat(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter().map(|s| (*s).to_owned()))
        .collect()
}

#[test]
fn shutdown_stops_dependents_before_their_dependencies() {
    let mut h = Harness::booted(chain());
    h.advance(secs(5));
    let mut expected = vec!["ShutdownStarted".to_owned()];
    expected.extend(stop_signals("c"));
    assert_eq!(labels(&h.feed(Input::Shutdown)), expected);
    assert_eq!(h.state("b"), "running", "b waits for c to stop");

    let mut expected = concat(&[&["c Exited", "c Stopped"]]);
    expected.extend(stop_signals("b"));
    assert_eq!(labels(&h.exit("c", killed(Signal::SIGTERM))), expected);

    // b's stop is only complete once its whole group is gone.
    assert_eq!(
        labels(&h.exit_leaving_group("b", killed(Signal::SIGTERM))),
        ["b Exited"]
    );
    let mut expected = vec!["b Stopped".to_owned()];
    expected.extend(stop_signals("a"));
    assert_eq!(labels(&h.group_empty("b")), expected);
    assert!(!h.exit_seen);

    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped", "ShutdownCompleted", "exit"]
    );
    assert!(h.sup.is_shutting_down());
}

#[test]
fn independent_services_are_stopped_together() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    let effects = h.feed(Input::Shutdown);
    let mut expected = vec!["ShutdownStarted".to_owned()];
    expected.extend(stop_signals("a"));
    expected.extend(stop_signals("b"));
    assert_eq!(labels(&effects), expected);
}

#[test]
fn shutdown_with_nothing_running_exits_at_once() {
    let mut h = Harness::new([svc("a")]);
    assert_eq!(
        labels(&h.feed(Input::Shutdown)),
        ["ShutdownStarted", "ShutdownCompleted", "exit"]
    );
}

#[test]
fn shutdown_completes_only_once() {
    let mut h = Harness::new([svc("a")]);
    h.feed(Input::Shutdown);
    assert_eq!(labels(&h.feed(Input::Shutdown)), Vec::<String>::new());
    assert_eq!(labels(&h.feed(Input::Tick)), Vec::<String>::new());
}

#[test]
fn services_waiting_or_in_backoff_are_stopped_at_once() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"])]);
    h.advance(ms(100));
    h.exit("a", code(1));
    assert_eq!((h.state("a"), h.state("b")), ("backoff", "waiting"));
    assert_eq!(
        labels(&h.feed(Input::Shutdown)),
        [
            "ShutdownStarted",
            "a Stopped",
            "b Stopped",
            "ShutdownCompleted",
            "exit"
        ]
    );
    assert_eq!(h.sup.next_deadline(), None);
}

#[test]
fn a_crash_during_shutdown_is_not_restarted() {
    let mut h = Harness::running([
        with_restart(RestartPolicy::Always, svc("a")),
        svc_after("b", &["a"]),
    ]);
    h.feed(Input::Shutdown);
    // a is still running while b stops; it crashes meanwhile.
    assert_eq!(labels(&h.exit("a", code(1))), ["a Exited", "a Stopped"]);
    assert_eq!(
        labels(&h.exit("b", killed(Signal::SIGTERM))),
        ["b Exited", "b Stopped", "ShutdownCompleted", "exit"]
    );
}

#[test]
fn a_crash_with_leftovers_during_shutdown_is_not_restarted() {
    let mut h = Harness::running([svc("a"), svc_after("b", &["a"])]);
    h.feed(Input::Shutdown);
    h.exit_leaving_group("a", code(1));
    assert_eq!(labels(&h.group_empty("a")), ["a Stopped"]);
}

#[test]
fn a_restart_in_progress_is_not_completed_during_shutdown() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Restart, "a");
    h.feed(Input::Shutdown);
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped", "ShutdownCompleted", "exit"]
    );
}

#[test]
fn an_unkillable_group_does_not_block_shutdown_and_is_not_restarted() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Restart, "a");
    h.feed(Input::Shutdown);
    let effects = h.advance(secs(10) + KILL_WAIT);
    assert_eq!(
        labels(&effects),
        [
            "a Escalated",
            "signal a SIGKILL",
            "a StopAbandoned",
            "a Stopped",
            "ShutdownCompleted",
            "exit"
        ]
    );
}

#[test]
fn commands_during_shutdown_are_refused() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    h.feed(Input::Shutdown);
    for command in [Command::Start, Command::Stop, Command::Restart] {
        for n in ["a", "ghost"] {
            let (reply, effects) = h.command(command, n);
            assert_eq!(
                reply.expect_err("refused").kind,
                ErrorKind::ShuttingDown,
                "{command:?} {n}"
            );
            assert!(effects.is_empty());
        }
    }
}
