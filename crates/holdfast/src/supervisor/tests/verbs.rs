//! `reset-failed` and `signal`: verbs that act on a service without starting or stopping it.

use super::*;
use crate::model::{ExitAction, ExitKey};
use crate::supervisor::SignalWhom;
use crate::supervisor::answer::ErrorKind;

/// Three restarts within 10 s at most.
fn limited(n: &str) -> ServiceSpec {
    with_limit(3, secs(10), svc(n))
}

/// `n` crashes quickly until it hits its start limit.
fn failed(h: &mut Harness, n: &str) {
    for _ in 0..4 {
        h.crash_after(n, ms(1500));
    }
    assert_eq!(h.state(n), "failed");
}

fn reset(h: &mut Harness, names: &[&str]) -> (Result<String, ControlError>, Vec<Effect>) {
    let names: Vec<ServiceName> = names.iter().map(|n| name(n)).collect();
    let (reply, effects) = h.sup.reset_failed(&names, h.now);
    (reply, h.apply(effects))
}

#[test]
fn reset_failed_stops_a_failed_service_and_gives_it_a_fresh_start_limit() {
    let mut h = Harness::booted([limited("a")]);
    failed(&mut h, "a");
    let (reply, effects) = reset(&mut h, &["a"]);
    assert_eq!(
        reply,
        Ok("a: failed -> stopped, start limit reset".to_owned())
    );
    assert_eq!(labels(&effects), ["a FailureReset"]);
    assert_eq!(h.state("a"), "stopped");
    assert_eq!(
        labels(&h.advance(secs(60))),
        Vec::<String>::new(),
        "stays stopped"
    );
}

#[test]
fn reset_failed_clears_the_start_limit_of_a_service_that_is_not_failed() {
    let mut h = Harness::booted([limited("a")]);
    for _ in 0..3 {
        h.crash_after("a", ms(1500));
    }
    assert_eq!(h.state("a"), "starting", "three restarts used up");
    let (reply, effects) = reset(&mut h, &["a"]);
    assert_eq!(reply, Ok("a: starting, start limit reset".to_owned()));
    assert!(effects.is_empty(), "no transition");
    let effects = h.crash_after("a", ms(1500));
    assert!(
        labels(&effects).contains(&"a RestartScheduled".to_owned()),
        "a fourth quick crash restarts: the limit was cleared"
    );
}

#[test]
fn reset_failed_without_names_resets_every_failed_service_and_leaves_quarantine() {
    let quarantining = ServiceSpec {
        exit_codes: [(ExitKey::Code(201), ExitAction::Quarantine)].into(),
        ..svc("q")
    };
    let mut h = Harness::booted([limited("a"), limited("b"), svc("c"), quarantining]);
    h.advance(secs(2));
    h.exit("q", code(201));
    assert_eq!(h.state("q"), "quarantined");
    failed(&mut h, "a");
    failed(&mut h, "b");
    let (reply, effects) = reset(&mut h, &[]);
    assert_eq!(
        reply,
        Ok(
            "a: failed -> stopped, start limit reset\nb: failed -> stopped, start limit reset"
                .to_owned()
        )
    );
    assert_eq!(labels(&effects), ["a FailureReset", "b FailureReset"]);
    assert_eq!(h.state("c"), "running");
    assert_eq!(h.state("q"), "quarantined", "awaits review");

    let (reply, _) = reset(&mut h, &["q"]);
    assert!(
        reply
            .expect("not an error")
            .contains("quarantined, left for review"),
    );
    assert_eq!(h.state("q"), "quarantined");
    assert_eq!(reset(&mut h, &[]).0, Ok("no failed services".to_owned()));
}

#[test]
fn reset_failed_of_an_unknown_name_changes_nothing() {
    let mut h = Harness::booted([limited("a")]);
    failed(&mut h, "a");
    let (reply, effects) = reset(&mut h, &["a", "ghost"]);
    let error = reply.expect_err("ghost is unknown");
    assert_eq!(error.kind, ErrorKind::UnknownService);
    assert_eq!(error.message, "no service named \"ghost\"");
    assert!(effects.is_empty());
    assert_eq!(h.state("a"), "failed", "a was not reset either");
}

#[test]
fn a_signal_goes_to_the_main_pid_or_with_all_to_the_run() {
    let h = Harness::running([svc("a")]);
    let pid = h.service("a").pid().expect("running has a pid");
    let main = h.sup.signal(&name("a"), Signal::SIGHUP, SignalWhom::Main);
    assert_eq!(
        label(&main.expect("running")),
        format!("signal-main a {pid} SIGHUP")
    );
    let all = h.sup.signal(&name("a"), Signal::SIGUSR1, SignalWhom::All);
    assert_eq!(label(&all.expect("running")), "signal a SIGUSR1");
}

#[test]
fn a_signal_to_a_service_without_processes_is_a_precise_error() {
    let mut h = Harness::booted([with_restart(RestartPolicy::No, svc("a"))]);
    h.advance(secs(2));
    h.exit("a", code(0));
    let error = h
        .sup
        .signal(&name("a"), Signal::SIGHUP, SignalWhom::Main)
        .expect_err("stopped");
    assert_eq!(
        error.message,
        "cannot send SIGHUP to a: it is stopped, no process runs"
    );
    let error = h
        .sup
        .signal(&name("b"), Signal::SIGHUP, SignalWhom::All)
        .expect_err("unknown");
    assert_eq!(error.kind, ErrorKind::UnknownService);
}

#[test]
fn a_signal_after_the_main_process_exited_needs_all_for_the_rest_of_the_run() {
    let mut h = Harness::running([svc("a")]);
    h.exit_leaving_group("a", code(1));
    assert_eq!(h.state("a"), "stopping", "leftovers are being cleaned up");
    let error = h
        .sup
        .signal(&name("a"), Signal::SIGHUP, SignalWhom::Main)
        .expect_err("no main process");
    assert!(error.message.contains("no main process"), "{error:?}");
    assert!(
        h.sup
            .signal(&name("a"), Signal::SIGKILL, SignalWhom::All)
            .is_ok()
    );
}

#[test]
fn a_reload_that_changes_only_the_group_takes_it_without_a_restart() {
    let mut h = Harness::running([svc("a")]);
    let run = h.run("a");
    let grouped = ServiceSpec {
        group: Some("backend".to_owned()),
        ..svc("a")
    };
    let (diff, effects) = h.reload([grouped]);
    assert_eq!(diff.unchanged, [name("a")]);
    assert!(effects.is_empty(), "{:?}", labels(&effects));
    assert_eq!(h.run("a"), run, "same run");
    assert_eq!(h.service("a").spec().group.as_deref(), Some("backend"));
}
