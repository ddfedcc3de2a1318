//! `after` ordering: a dependent starts once its dependencies are up (ordering only).

use super::*;

#[test]
fn a_service_after_another_waits_until_it_is_running() {
    let mut h = Harness::new([svc("a"), svc_after("b", &["a"])]);
    assert_eq!(
        labels(&h.feed(Input::Boot)),
        ["spawn a", "b Waiting", "a Spawned"]
    );
    assert_eq!(h.state("b"), "waiting");
    assert_eq!(labels(&h.advance(ms(999))), Vec::<String>::new());
    assert_eq!(
        labels(&h.advance(ms(1))),
        ["a Started", "spawn b", "b Spawned"]
    );
}

#[test]
fn a_dependent_named_before_its_dependency_still_waits_at_boot() {
    // Services are kept in name order: "app" comes before "zdb".
    let mut h = Harness::new([svc_after("app", &["zdb"]), svc("zdb")]);
    let effects = h.feed(Input::Boot);
    assert_eq!(spawns(&effects).len(), 1, "{:?}", labels(&effects));
    assert_eq!(h.state("app"), "waiting");
    assert_eq!(h.state("zdb"), "starting");
    assert_eq!(spawns(&h.advance(secs(1))).len(), 1, "app follows zdb");
    assert_eq!(h.state("app"), "starting");
}

#[test]
fn a_chain_starts_one_after_the_other() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"]), svc_after("c", &["b"])]);
    assert_eq!(h.state("c"), "waiting");
    h.advance(secs(1));
    assert_eq!((h.state("b"), h.state("c")), ("starting", "waiting"));
    h.advance(secs(1));
    assert_eq!(h.state("c"), "starting");
}

#[test]
fn a_failed_dependency_releases_its_dependent() {
    let mut h = Harness::booted([
        with_restart(RestartPolicy::No, svc("a")),
        svc_after("b", &["a"]),
    ]);
    h.advance(ms(100));
    assert_eq!(
        labels(&h.exit("a", code(1))),
        ["a Exited", "a GaveUp", "spawn b", "b Spawned"]
    );
}

#[test]
fn a_dependency_in_backoff_keeps_its_dependent_waiting() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"])]);
    h.advance(ms(100));
    h.exit("a", code(1));
    assert_eq!(h.state("b"), "waiting");
    h.advance(ms(100));
    assert_eq!(h.state("b"), "waiting", "a is starting again");
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["a Started", "spawn b", "b Spawned"]
    );
}

#[test]
fn a_dependency_that_is_not_started_does_not_block() {
    let mut h = Harness::new([
        ServiceSpec {
            autostart: false,
            ..svc("a")
        },
        svc_after("b", &["a"]),
    ]);
    assert_eq!(labels(&h.feed(Input::Boot)), ["spawn b", "b Spawned"]);
}

#[test]
fn stopping_a_dependency_releases_its_waiting_dependent() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"])]);
    let effects = h.ok(Command::Stop, "a");
    assert_eq!(spawns(&effects).len(), 1);
    assert_eq!(h.state("b"), "starting");
}

#[test]
fn a_waiting_service_can_be_stopped() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"])]);
    assert_eq!(labels(&h.ok(Command::Stop, "b")), ["b Stopped"]);
    assert_eq!(labels(&h.advance(secs(1))), ["a Started"]);
}

#[test]
fn a_dependent_started_while_its_dependency_restarts_waits_for_it() {
    let mut h = Harness::running([svc("a"), svc_after("b", &["a"])]);
    h.ok(Command::Restart, "a");
    assert_eq!(h.state("a"), "stopping");
    let effects = h.ok(Command::Restart, "b");
    assert!(spawns(&effects).is_empty());
    let effects = h.exit("b", killed(Signal::SIGTERM));
    assert!(
        spawns(&effects).is_empty(),
        "a will start again: {:?}",
        labels(&effects)
    );
    assert_eq!(h.state("b"), "waiting");
    h.exit("a", killed(Signal::SIGTERM));
    assert_eq!((h.state("a"), h.state("b")), ("starting", "waiting"));
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["a Started", "spawn b", "b Spawned"]
    );
}

#[test]
fn a_waiting_dependent_keeps_waiting_when_its_dependency_is_restarted() {
    let mut h = Harness::booted([svc("a"), svc_after("b", &["a"])]);
    assert_eq!(h.state("b"), "waiting");
    let effects = h.ok(Command::Restart, "a");
    assert!(spawns(&effects).is_empty(), "{:?}", labels(&effects));
    assert_eq!(h.state("b"), "waiting");
    h.exit("a", killed(Signal::SIGTERM));
    assert_eq!(h.state("b"), "waiting");
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["a Started", "spawn b", "b Spawned"]
    );
}

#[test]
fn a_dependency_cleaning_up_after_a_crash_keeps_its_dependent_waiting() {
    // a crashed and leftover processes of its group are being stopped; the restart
    // policy (a restart after backoff) only applies once they are gone.
    let mut h = Harness::running([svc("a"), svc_after("b", &["a"])]);
    h.exit_leaving_group("a", code(1));
    assert_eq!(h.state("a"), "stopping");
    h.ok(Command::Restart, "b");
    let effects = h.exit("b", killed(Signal::SIGTERM));
    assert!(spawns(&effects).is_empty(), "{:?}", labels(&effects));
    assert_eq!(h.state("b"), "waiting");
    h.group_empty("a");
    assert_eq!((h.state("a"), h.state("b")), ("backoff", "waiting"));
    h.advance(ms(100));
    assert_eq!((h.state("a"), h.state("b")), ("starting", "waiting"));
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["a Started", "spawn b", "b Spawned"]
    );
}
