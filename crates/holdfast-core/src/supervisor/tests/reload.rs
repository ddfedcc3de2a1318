//! Reload: the diff and how each kind of change is applied.

use super::*;
use crate::supervisor::reload::diff;

fn changed(spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        command: vec!["/bin/new".to_owned()],
        ..spec
    }
}

/// Running: a (unchanged), b (changed), c (removed); d is added.
fn before() -> [ServiceSpec; 3] {
    [svc("a"), svc("b"), svc("c")]
}

fn after() -> [ServiceSpec; 3] {
    [svc("a"), changed(svc("b")), svc("d")]
}

#[test]
fn reload_starts_added_restarts_changed_stops_removed_and_leaves_the_rest_alone() {
    let mut h = Harness::running(before());
    let a_run = h.run("a");
    let (diff, effects) = h.reload(after());
    assert_eq!(diff.added, [name("d")]);
    assert_eq!(diff.removed, [name("c")]);
    assert_eq!(diff.changed, [name("b")]);
    assert_eq!(diff.unchanged, [name("a")]);
    assert!(diff.ignored.is_empty() && !diff.dry_run);
    assert_eq!(
        labels(&effects),
        [
            "c StopRequested",
            "signal c SIGTERM",
            "signal c SIGCONT",
            "b Reconfigured",
            "b StopRequested",
            "signal b SIGTERM",
            "signal b SIGCONT",
            "spawn d",
            "d Spawned"
        ]
    );
    assert_eq!(
        (h.state("a"), h.run("a")),
        ("running", a_run),
        "a is untouched"
    );

    assert_eq!(
        labels(&h.exit("c", killed(Signal::SIGTERM))),
        ["c Exited", "c Stopped", "c Removed", "remove c"]
    );
    assert!(h.sup.service(&name("c")).is_none(), "c is forgotten");

    let effects = h.exit("b", killed(Signal::SIGTERM));
    assert_eq!(
        labels(&effects),
        ["b Exited", "b Stopped", "spawn b", "b Spawned"]
    );
    assert_eq!(
        spawns(&effects)[0].2.command,
        ["/bin/new"],
        "b runs its new definition"
    );
    assert_eq!(h.sup.plan(), &plan(after()));
}

#[test]
fn a_dry_run_diff_lists_what_the_reload_does() {
    let mut h = Harness::running(before());
    let dry = diff(h.sup.plan(), &plan(after()), true);
    assert!(dry.dry_run);
    let (real, _) = h.reload(after());
    assert_eq!(
        ReloadPlan {
            dry_run: false,
            ..dry
        },
        real
    );
}

#[test]
fn a_changed_service_is_stopped_with_its_old_stop_settings() {
    let mut h = Harness::running([svc("a")]);
    let new = ServiceSpec {
        stop: crate::model::StopSpec {
            signal: Signal::SIGINT,
            timeout: crate::model::Timeout::After(secs(1)),
            dump: None,
        },
        ..svc("a")
    };
    let (_, effects) = h.reload([new.clone()]);
    assert!(labels(&effects).contains(&"signal a SIGTERM".to_owned()));
    let effects = h.exit("a", killed(Signal::SIGTERM));
    assert_eq!(*spawns(&effects)[0].2, new);
}

#[test]
fn a_changed_service_in_backoff_restarts_at_once_with_the_new_definition() {
    // Waiting out the old definition's backoff would make the new one wait for nothing
    // (and a waiting `reload` report the old failure).
    let mut h = Harness::running([svc("a")]);
    h.exit("a", code(1));
    assert_eq!(h.state("a"), "backoff");
    let (diff, effects) = h.reload([changed(svc("a"))]);
    assert_eq!(diff.changed, [name("a")]);
    assert_eq!(labels(&effects), ["a Reconfigured", "spawn a", "a Spawned"]);
    assert_eq!(spawns(&effects)[0].2.command, ["/bin/new"]);
}

#[test]
fn a_changed_service_that_is_stopped_stays_stopped() {
    let mut h = Harness::new([svc("a")]);
    let (_, effects) = h.reload([changed(svc("a"))]);
    assert_eq!(labels(&effects), ["a Reconfigured"]);
    assert_eq!(h.state("a"), "stopped");
}

#[test]
fn a_changed_service_being_stopped_by_hand_stays_stopped() {
    let mut h = Harness::running([svc("a")]);
    h.ok(Command::Stop, "a");
    h.reload([changed(svc("a"))]);
    assert_eq!(
        labels(&h.exit("a", killed(Signal::SIGTERM))),
        ["a Exited", "a Stopped"],
        "a reload does not undo a stop by hand"
    );
}

#[test]
fn a_removed_stopped_service_disappears_at_once() {
    let mut h = Harness::new([svc("a"), svc("b")]);
    let (_, effects) = h.reload([svc("a")]);
    assert_eq!(labels(&effects), ["b Removed", "remove b"]);
    assert!(h.sup.service(&name("b")).is_none());
}

#[test]
fn a_removed_service_in_backoff_or_waiting_disappears() {
    let mut h = Harness::booted([svc("a"), svc("b"), svc_after("w", &["b"])]);
    h.advance(ms(100));
    h.exit("a", code(1));
    assert_eq!((h.state("a"), h.state("w")), ("backoff", "waiting"));
    let (_, effects) = h.reload([svc("b")]);
    assert_eq!(
        labels(&effects),
        [
            "a Stopped",
            "a Removed",
            "remove a",
            "w Stopped",
            "w Removed",
            "remove w"
        ]
    );
    assert!(h.sup.service(&name("a")).is_none());
    assert!(h.sup.service(&name("w")).is_none());
    assert_eq!(labels(&h.advance(secs(60))), ["b Started"]);
}

#[test]
fn inputs_for_a_removed_service_are_ignored() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    let run = h.run("b");
    h.reload([svc("a")]);
    h.exit("b", killed(Signal::SIGTERM));
    assert!(h.exit_run("b", run, code(1), false).is_empty());
    let effects = h.feed(Input::GroupEmpty {
        service: name("b"),
        run,
    });
    assert!(effects.is_empty());
}

#[test]
fn an_added_service_without_autostart_is_not_started() {
    let mut h = Harness::running([svc("a")]);
    let manual = ServiceSpec {
        autostart: false,
        ..svc("b")
    };
    let (_, effects) = h.reload([svc("a"), manual]);
    assert!(effects.is_empty());
    assert_eq!(h.state("b"), "stopped");
}

#[test]
fn added_services_respect_their_ordering() {
    let mut h = Harness::running([svc("a")]);
    let (_, effects) = h.reload([svc("a"), svc_after("b", &["c"]), svc("c")]);
    assert_eq!(spawns(&effects).len(), 1, "{:?}", labels(&effects));
    assert_eq!((h.state("b"), h.state("c")), ("waiting", "starting"));
}

#[test]
fn a_service_readded_while_its_removal_is_stopping_it_starts_after_the_stop() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    h.reload([svc("a")]);
    let (diff, effects) = h.reload([svc("a"), svc("b")]);
    assert_eq!(diff.added, [name("b")]);
    assert!(
        spawns(&effects).is_empty(),
        "the old process is still stopping"
    );
    assert_eq!(h.state("b"), "stopping");
    assert_eq!(
        labels(&h.exit("b", killed(Signal::SIGTERM))),
        ["b Exited", "b Stopped", "spawn b", "b Spawned"]
    );
}

#[test]
fn changed_daemon_settings_are_reported_and_keep_their_running_values() {
    let mut h = Harness::running([svc("a")]);
    let mut new = plan([svc("a")]);
    new.daemon.log_dir = "/elsewhere".into();
    let (diff, effects) = h.reload_plan(new);
    assert_eq!(diff.ignored, ["[holdfast].log_dir"]);
    assert!(effects.is_empty());
    assert_eq!(h.sup.plan().daemon, plan([]).daemon);
}

#[test]
fn a_service_readded_without_autostart_while_stopping_stays_stopped() {
    let mut h = Harness::running([svc("a"), svc("b")]);
    h.reload([svc("a")]);
    let manual = ServiceSpec {
        autostart: false,
        ..svc("b")
    };
    h.reload([svc("a"), manual]);
    assert_eq!(
        labels(&h.exit("b", killed(Signal::SIGTERM))),
        ["b Exited", "b Stopped"]
    );
    assert_eq!(
        h.state("b"),
        "stopped",
        "b is kept: it is in the plan again"
    );
}

#[test]
fn a_changed_dependent_restarts_only_after_its_changed_dependency_is_up_again() {
    // "dependent" sorts before "slow": the reload stops it first, and its old process is
    // also gone first.
    let mut h = Harness::running([svc("slow"), svc_after("dependent", &["slow"])]);
    h.reload([
        changed(svc("slow")),
        changed(svc_after("dependent", &["slow"])),
    ]);
    assert_eq!(
        (h.state("dependent"), h.state("slow")),
        ("stopping", "stopping")
    );

    let effects = h.exit("dependent", killed(Signal::SIGTERM));
    assert!(
        spawns(&effects).is_empty(),
        "slow is still stopping and will start again: {:?}",
        labels(&effects)
    );
    assert_eq!(h.state("dependent"), "waiting");

    let effects = h.exit("slow", killed(Signal::SIGTERM));
    assert_eq!(
        labels(&effects),
        ["slow Exited", "slow Stopped", "spawn slow", "slow Spawned"]
    );
    assert_eq!(h.state("dependent"), "waiting", "slow is only starting");
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["slow Started", "spawn dependent", "dependent Spawned"]
    );
}

#[test]
fn a_changed_dependent_whose_dependency_stops_first_still_waits_for_it_to_be_up() {
    let mut h = Harness::running([svc("slow"), svc_after("dependent", &["slow"])]);
    h.reload([
        changed(svc("slow")),
        changed(svc_after("dependent", &["slow"])),
    ]);
    h.exit("slow", killed(Signal::SIGTERM));
    assert_eq!(h.state("slow"), "starting");
    let effects = h.exit("dependent", killed(Signal::SIGTERM));
    assert!(spawns(&effects).is_empty(), "{:?}", labels(&effects));
    assert_eq!(h.state("dependent"), "waiting");
    assert_eq!(
        labels(&h.advance(secs(1))),
        ["slow Started", "spawn dependent", "dependent Spawned"]
    );
}

#[test]
fn a_service_replacing_removed_instances_starts_once_they_are_gone() {
    // `instances` went from 2 to 1: `web` replaces `web@0` and `web@1`, which must have
    // stopped first (they may hold the port `web` binds).
    let mut h = Harness::running([svc("web@0"), svc("web@1")]);
    let (_, effects) = h.reload([svc("web")]);
    assert!(
        !labels(&effects).contains(&"spawn web".to_owned()),
        "not while the instances stop: {effects:?}"
    );
    assert_eq!(h.state("web"), "stopped");
    let effects = h.exit("web@0", killed(Signal::SIGTERM));
    assert!(!labels(&effects).contains(&"spawn web".to_owned()));
    let effects = h.exit("web@1", killed(Signal::SIGTERM));
    assert!(
        labels(&effects).contains(&"spawn web".to_owned()),
        "started once the last one is gone: {:?}",
        labels(&effects)
    );
}
