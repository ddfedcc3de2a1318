//! `upgrade --self`: a snapshot of the core, fed to a fresh core as `Input::Resume`,
//! puts every service back as it was, without a spawn.

use super::*;
use crate::model::Readiness;
use crate::supervisor::core::Snapshot;
use crate::supervisor::service::{LivePhase, ResumedState};

/// A fresh core of the same plan, resumed from `h`'s snapshot taken now (the new image
/// of holdfast), with its clock where `h`'s is.
fn reexec(h: &Harness, specs: impl IntoIterator<Item = ServiceSpec>) -> (Harness, Vec<Effect>) {
    let snapshot = h.sup.snapshot(h.now).expect("nothing in transit");
    let mut new = Harness::with_seed(specs, SEED + 1);
    new.now = h.now;
    new.sup = Supervisor::new(plan_of(h), new.now, SEED + 1);
    new.next_pid = h.next_pid;
    let effects = new.feed(Input::Resume(snapshot));
    (new, effects)
}

fn plan_of(h: &Harness) -> Plan {
    h.sup.plan().clone()
}

fn specs() -> Vec<ServiceSpec> {
    vec![
        svc("run"),
        svc("byhand"),
        with_restart(RestartPolicy::No, svc("broken")),
        with_fixed_delay(secs(10), svc("waits")),
    ]
}

#[test]
fn a_resumed_core_has_every_service_as_it_was_and_spawns_nothing() {
    let mut h = Harness::running(specs());
    h.ok(Command::Stop, "byhand");
    h.exit("byhand", killed(Signal::SIGTERM));
    h.exit("broken", code(3));
    h.exit("waits", code(1));
    h.advance(secs(4));
    let (new, effects) = reexec(&h, specs());
    assert_eq!(labels(&effects), Vec::<String>::new(), "no spawn, no event");
    for n in ["run", "byhand", "broken", "waits"] {
        assert_eq!(new.state(n), h.state(n), "{n}");
        assert_eq!(new.service(n).pid(), h.service(n).pid(), "{n}");
        assert_eq!(new.service(n).run(), h.service(n).run(), "{n}");
        assert_eq!(new.service(n).restarts(), h.service(n).restarts(), "{n}");
        assert_eq!(new.service(n).last_exit(), h.service(n).last_exit(), "{n}");
    }
    assert_eq!(
        new.service("broken").state(),
        h.service("broken").state(),
        "the failed reason is carried"
    );
    assert_eq!(
        new.service("run").spawned_at(),
        h.service("run").spawned_at()
    );
}

#[test]
fn a_backoff_restarts_after_what_was_left_of_its_delay() {
    let mut h = Harness::running(specs());
    h.exit("waits", code(1));
    h.advance(secs(4));
    let (mut new, _) = reexec(&h, specs());
    assert!(new.advance(secs(5)).is_empty(), "6 s are still to go");
    let restart = new.advance(secs(1));
    assert_eq!(labels(&restart)[0], "spawn waits");
}

#[test]
fn runs_after_a_resume_never_repeat_an_earlier_run_id() {
    let h = Harness::running(specs());
    let before = h.run("run");
    let (mut new, _) = reexec(&h, specs());
    new.exit("run", code(1));
    new.advance(secs(1));
    assert!(
        new.run("run") > before,
        "{:?} after {before:?}",
        new.run("run")
    );
    let earlier: Vec<RunId> = ["byhand", "broken", "waits"].map(|n| h.run(n)).into();
    assert!(!earlier.contains(&new.run("run")));
}

#[test]
fn a_resumed_running_service_is_supervised_again() {
    let h = Harness::running(specs());
    let (mut new, _) = reexec(&h, specs());
    let crash = new.exit("run", code(1));
    assert!(
        labels(&crash).contains(&"run RestartScheduled".to_owned()),
        "{:?}",
        labels(&crash)
    );
    let stop = new.ok(Command::Stop, "byhand");
    assert!(
        labels(&stop).contains(&"signal byhand SIGTERM".to_owned()),
        "{:?}",
        labels(&stop)
    );
}

#[test]
fn a_starting_run_keeps_its_readiness_and_start_deadline() {
    let notify = ServiceSpec {
        ready: Readiness::Notify,
        ..svc("n")
    };
    let mut h = Harness::booted([notify.clone()]);
    h.advance(secs(2));
    let deadline = h.sup.next_deadline();
    let snapshot = h.sup.snapshot(h.now).expect("resumable");
    let ResumedState::Live(live) = &snapshot.services[0].state else {
        panic!("a live run: {snapshot:?}");
    };
    assert_eq!(live.phase, LivePhase::Starting { ready: false });
    let (new, _) = reexec(&h, [notify]);
    assert_eq!(new.state("n"), "starting");
    assert_eq!(
        new.sup.next_deadline(),
        deadline,
        "the start timeout goes on"
    );
}

#[test]
fn an_autostart_service_the_snapshot_does_not_name_starts_as_at_boot() {
    let h = Harness::running([svc("old")]);
    let snapshot = h.sup.snapshot(h.now).expect("resumable");
    let mut new = Harness::new([svc("old"), svc("new")]);
    new.now = h.now;
    let effects = new.feed(Input::Resume(snapshot));
    assert_eq!(labels(&effects)[0], "spawn new");
    assert_eq!(new.state("old"), "running");
}

#[test]
fn a_service_in_transit_refuses_the_snapshot_and_names_itself() {
    let mut h = Harness::running(specs());
    h.ok(Command::Stop, "run");
    assert_eq!(
        h.sup.snapshot(h.now).map(|s: Snapshot| s.next_run),
        Err("run is stopping".to_owned())
    );
    h.feed(Input::Shutdown);
    assert_eq!(
        h.sup.snapshot(h.now).map(|s| s.next_run),
        Err("holdfast is shutting down".to_owned())
    );
}

#[test]
fn an_upgrade_under_way_refuses_the_snapshot_and_a_finished_one_hands_over_its_build() {
    use crate::model::{UpgradeMode, UpgradeSpec};
    use crate::notify::NotifyMsg;

    let mut upgrade = UpgradeSpec::new(UpgradeMode::Handover, "/opt/api/a".into());
    upgrade.bake = secs(30);
    let api = ServiceSpec {
        ready: Readiness::Notify,
        start_secs: Duration::ZERO,
        upgrade: Some(upgrade),
        ..svc("api")
    };
    let mut h = Harness::booted([api.clone()]);
    h.notify("api", vec![NotifyMsg::Ready]);
    let old = h.run("api");
    let (reply, _) = h.control(Input::Upgrade {
        service: name("api"),
        to: "/opt/api/b".into(),
    });
    reply.expect("upgrade accepted");
    assert_eq!(
        h.sup.snapshot(h.now).map(|s| s.next_run),
        Err("an upgrade of api is under way".to_owned())
    );
    h.notify("api", vec![NotifyMsg::Ready]);
    h.exit_run("api", old, killed(Signal::SIGTERM), false);
    h.advance(secs(31));
    assert!(h.service("api").rollout().is_none(), "baked");
    let (new, _) = reexec(&h, [api]);
    assert_eq!(
        new.service("api").build(),
        Some(std::path::Path::new("/opt/api/b")),
        "the new image runs on with the upgraded build"
    );
}

#[test]
fn a_start_the_shell_watches_for_refuses_the_snapshot() {
    use crate::model::ServiceKind;

    let forking = ServiceSpec {
        kind: ServiceKind::Forking {
            pidfile: "/run/test.pid".into(),
        },
        ..svc("daemon")
    };
    let h = Harness::booted([forking]);
    assert_eq!(
        h.sup.snapshot(h.now).map(|s| s.next_run),
        Err("daemon is starting its daemon (forking)".to_owned())
    );
    let fd = ServiceSpec {
        ready: Readiness::Fd(3),
        ..svc("piped")
    };
    let h = Harness::booted([fd]);
    assert_eq!(
        h.sup.snapshot(h.now).map(|s| s.next_run),
        Err("piped is starting (waits for its readiness fd)".to_owned())
    );
}
