//! Readiness (notify, probes), start_timeout, the watchdog, MAINPID and forking adoption.

use super::*;
use crate::model::{Readiness, ServiceKind};
use crate::notify::NotifyMsg;
use crate::supervisor::service::Cause;
use crate::unix::ReapSeq;

fn notify_svc(n: &str) -> ServiceSpec {
    ServiceSpec {
        ready: Readiness::Notify,
        start_timeout: crate::model::Timeout::After(secs(2)),
        ..svc(n)
    }
}

fn watched(n: &str, interval: Duration) -> ServiceSpec {
    ServiceSpec {
        watchdog: Some(interval),
        ..svc(n)
    }
}

fn forking(n: &str) -> ServiceSpec {
    ServiceSpec {
        kind: ServiceKind::Forking {
            pidfile: "/run/test.pid".into(),
        },
        start_timeout: crate::model::Timeout::After(secs(5)),
        ..svc(n)
    }
}

impl Harness {
    /// Booted and just past `start_secs`, so running with a freshly armed watchdog.
    fn just_running(specs: impl IntoIterator<Item = ServiceSpec>) -> Self {
        let mut h = Self::booted(specs);
        h.advance(secs(1));
        h
    }

    fn adopt(&mut self, n: &str, pid: i32) -> Vec<Effect> {
        let run = self.run(n);
        self.feed(Input::Adopted {
            service: name(n),
            run,
            pid: Pid::from_raw(pid),
            alive_at: ReapSeq::default(),
        })
    }
}

#[test]
fn a_notify_service_stays_starting_past_start_secs_until_ready() {
    let mut h = Harness::booted([notify_svc("a")]);
    assert_eq!(labels(&h.advance(ms(1500))), Vec::<String>::new());
    assert_eq!(h.state("a"), "starting", "start_secs alone is not enough");
    assert_eq!(
        labels(&h.notify("a", vec![NotifyMsg::Ready])),
        ["a BecameReady", "a Started"],
        "ready after start_secs: running at once"
    );
    assert_eq!(h.state("a"), "running");
}

#[test]
fn ready_before_start_secs_still_waits_for_start_secs() {
    let mut h = Harness::booted([notify_svc("a")]);
    h.advance(ms(200));
    assert_eq!(
        labels(&h.notify("a", vec![NotifyMsg::Ready])),
        ["a BecameReady"]
    );
    assert_eq!(h.state("a"), "starting");
    assert_eq!(labels(&h.advance(ms(800))), ["a Started"]);
}

#[test]
fn a_service_never_ready_fails_its_start_after_start_timeout() {
    let mut h = Harness::booted([notify_svc("a")]);
    assert_eq!(labels(&h.advance(ms(1999))), Vec::<String>::new());
    let effects = h.advance(ms(1));
    assert_eq!(
        labels(&effects),
        [
            "a StartTimedOut",
            "a StopRequested",
            "signal a SIGTERM",
            "signal a SIGCONT"
        ]
    );
    assert_eq!(h.state("a"), "stopping");
    let effects = h.exit("a", killed(Signal::SIGTERM));
    assert_eq!(labels(&effects), ["a Exited", "a RestartScheduled"]);
    assert_eq!(
        h.service("a").last_cause(),
        Some(&Cause::NotReady { timeout: secs(2) }),
        "status can say why it restarts"
    );
    assert_eq!(
        Cause::NotReady { timeout: secs(2) }.to_string(),
        "not ready within 2s"
    );
}

#[test]
fn a_timed_out_start_with_restart_no_gives_up() {
    let mut h = Harness::booted([with_restart(RestartPolicy::No, notify_svc("a"))]);
    h.advance(secs(2));
    let effects = h.exit("a", killed(Signal::SIGTERM));
    assert_eq!(labels(&effects), ["a Exited", "a GaveUp"]);
    assert_eq!(h.state("a"), "failed");
}

#[test]
fn extend_timeout_usec_moves_the_start_deadline() {
    let mut h = Harness::booted([notify_svc("a")]);
    h.advance(ms(1500));
    h.notify("a", vec![NotifyMsg::ExtendTimeout(secs(3))]);
    assert_eq!(labels(&h.advance(ms(2999))), Vec::<String>::new());
    assert_eq!(h.state("a"), "starting");
    assert_eq!(labels(&h.advance(ms(1)))[0], "a StartTimedOut");
}

#[test]
fn a_dependent_waits_until_its_dependency_is_ready() {
    let mut h = Harness::booted([notify_svc("db"), svc_after("api", &["db"])]);
    h.advance(ms(1500));
    assert_eq!(h.state("api"), "waiting", "db is spawned but not ready");
    let effects = h.notify("db", vec![NotifyMsg::Ready]);
    assert_eq!(
        labels(&effects),
        ["db BecameReady", "db Started", "spawn api", "api Spawned"]
    );
}

#[test]
fn a_probe_ready_input_readies_a_tcp_service_and_stale_runs_are_ignored() {
    let spec = ServiceSpec {
        ready: Readiness::Tcp("127.0.0.1:1".parse().expect("address")),
        ..svc("a")
    };
    let mut h = Harness::booted([spec]);
    let stale = RunId(h.run("a").0 + 100);
    h.feed(Input::Ready {
        service: name("a"),
        run: stale,
    });
    h.advance(secs(2));
    assert_eq!(h.state("a"), "starting");
    let run = h.run("a");
    let effects = h.feed(Input::Ready {
        service: name("a"),
        run,
    });
    assert_eq!(labels(&effects), ["a BecameReady", "a Started"]);
}

#[test]
fn ready_from_a_service_not_configured_for_notify_is_ignored_but_status_is_kept() {
    let mut h = Harness::booted([svc("a")]);
    let effects = h.notify(
        "a",
        vec![NotifyMsg::Ready, NotifyMsg::Status("warming up".to_owned())],
    );
    assert_eq!(labels(&effects), Vec::<String>::new());
    assert_eq!(h.service("a").status_text(), Some("warming up"));
    h.advance(secs(1));
    assert_eq!(h.state("a"), "running");
}

#[test]
fn a_missed_keep_alive_aborts_the_service_and_restarts_it() {
    let mut h = Harness::just_running([watched("a", secs(2))]);
    assert_eq!(h.state("a"), "running");
    assert_eq!(
        h.sup.next_deadline(),
        Some(h.now + secs(2)),
        "armed when running"
    );
    // Keep-alives keep it alive...
    h.notify("a", vec![NotifyMsg::Watchdog]);
    assert_eq!(labels(&h.advance(ms(1999))), Vec::<String>::new());
    h.notify("a", vec![NotifyMsg::Watchdog]);
    assert_eq!(labels(&h.advance(ms(1999))), Vec::<String>::new());
    // ...until one is missing.
    let effects = h.advance(ms(1));
    assert_eq!(
        labels(&effects),
        [
            "a WatchdogTimeout",
            "a StopRequested",
            "signal a SIGABRT",
            "signal a SIGCONT"
        ]
    );
    let effects = h.exit("a", killed(Signal::SIGABRT));
    assert_eq!(labels(&effects), ["a Exited", "a RestartScheduled"]);
    assert_eq!(
        h.service("a")
            .last_cause()
            .map(ToString::to_string)
            .as_deref(),
        Some("watchdog timeout (no keep-alive within 2s)")
    );
}

#[test]
fn a_hung_service_that_ignores_sigabrt_is_killed_after_the_stop_timeout() {
    let mut h = Harness::just_running([watched("a", secs(2))]);
    h.advance(secs(2));
    assert_eq!(h.state("a"), "stopping");
    let effects = h.advance(secs(10));
    assert_eq!(labels(&effects), ["a Escalated", "signal a SIGKILL"]);
}

#[test]
fn watchdog_usec_from_the_service_changes_the_interval() {
    let mut h = Harness::just_running([watched("a", secs(2))]);
    h.notify("a", vec![NotifyMsg::WatchdogUsec(secs(10))]);
    assert_eq!(labels(&h.advance(ms(9999))), Vec::<String>::new());
    assert_eq!(labels(&h.advance(ms(1)))[0], "a WatchdogTimeout");
}

#[test]
fn watchdog_trigger_is_an_immediate_timeout() {
    let mut h = Harness::just_running([watched("a", secs(20))]);
    let effects = h.notify("a", vec![NotifyMsg::WatchdogTrigger]);
    assert_eq!(labels(&effects)[0], "a WatchdogTimeout");
}

#[test]
fn the_watchdog_is_armed_only_once_running() {
    let spec = ServiceSpec {
        watchdog: Some(ms(500)),
        ..notify_svc("a")
    };
    let mut h = Harness::booted([spec]);
    assert_eq!(labels(&h.advance(ms(1500))), Vec::<String>::new());
    h.notify("a", vec![NotifyMsg::Ready]);
    assert_eq!(h.state("a"), "running");
    assert_eq!(h.sup.next_deadline(), Some(h.now + ms(500)));
}

#[test]
fn mainpid_moves_the_main_process_and_its_exit_ends_the_run() {
    let mut h = Harness::running([svc("a")]);
    let leader = h.service("a").pid().expect("running has a pid");
    let effects = h.notify("a", vec![NotifyMsg::MainPid(Pid::from_raw(4242))]);
    assert_eq!(labels(&effects), ["a MainPidChanged", "main-pid a 4242"]);
    assert_eq!(h.service("a").pid(), Some(Pid::from_raw(4242)));
    assert_eq!(
        h.service("a").group(),
        Some(leader),
        "signals still go to the group"
    );
    let effects = h.exit("a", code(3));
    assert!(
        matches!(
            events_of(&effects, "a")[0],
            EventKind::Exited { pid, status, .. } if pid == Pid::from_raw(4242) && status == code(3)
        ),
        "the exit is reported for the new main pid: {effects:?}"
    );
    assert_eq!(h.state("a"), "backoff");
}

#[test]
fn a_forking_service_waits_for_its_pidfile_and_adopts_the_daemon() {
    let mut h = Harness::booted([forking("d")]);
    h.advance(ms(100));
    let effects = h.exit("d", code(0));
    assert_eq!(
        labels(&effects),
        ["d Exited", "d AwaitingPidfile", "read-pidfile d"]
    );
    assert_eq!(h.state("d"), "starting");
    assert_eq!(h.service("d").pid(), None, "no main process until adoption");
    assert_eq!(
        labels(&h.advance(secs(2))),
        Vec::<String>::new(),
        "not up yet"
    );
    let effects = h.adopt("d", 777);
    assert_eq!(
        labels(&effects),
        [
            "d MainPidChanged",
            "main-pid d 777",
            "d BecameReady",
            "d Started"
        ]
    );
    assert_eq!(h.state("d"), "running");
    assert_eq!(h.service("d").pid(), Some(Pid::from_raw(777)));
    // The daemon dies: the restart policy applies.
    let effects = h.exit("d", killed(Signal::SIGKILL));
    assert_eq!(labels(&effects), ["d Exited", "d RestartScheduled"]);
}

#[test]
fn a_forking_service_whose_first_process_fails_is_a_failed_start() {
    let mut h = Harness::booted([forking("d")]);
    let effects = h.exit("d", code(1));
    assert_eq!(labels(&effects), ["d Exited", "d RestartScheduled"]);
}

#[test]
fn a_forking_service_without_a_pidfile_times_out_without_signals() {
    let mut h = Harness::booted([forking("d")]);
    h.exit("d", code(0));
    let effects = h.advance(secs(5));
    assert_eq!(labels(&effects), ["d StartTimedOut", "d RestartScheduled"]);
}

#[test]
fn a_forking_timeout_stops_leftovers_of_the_first_process_first() {
    let mut h = Harness::booted([forking("d")]);
    h.exit_leaving_group("d", code(0));
    let effects = h.advance(secs(5));
    assert_eq!(
        labels(&effects),
        [
            "d StartTimedOut",
            "d StopRequested",
            "signal d SIGTERM",
            "signal d SIGCONT"
        ]
    );
    let effects = h.group_empty("d");
    assert_eq!(labels(&effects), ["d RestartScheduled"]);
}

#[test]
fn an_adoption_for_a_stale_run_is_ignored() {
    let mut h = Harness::booted([forking("d")]);
    let run = h.run("d");
    h.exit("d", code(0));
    h.advance(secs(5));
    let effects = h.feed(Input::Adopted {
        service: name("d"),
        run,
        pid: Pid::from_raw(5),
        alive_at: ReapSeq::default(),
    });
    assert_eq!(labels(&effects), Vec::<String>::new());
    assert_eq!(h.state("d"), "backoff");
}

#[test]
fn stopping_a_forking_service_awaiting_its_pidfile_finishes_once_its_leftovers_are_gone() {
    // Found in review: the stop waited for an exit of a launcher that had already exited.
    let mut h = Harness::booted([forking("d")]);
    h.exit_leaving_group("d", code(0));
    let effects = h.ok(Command::Stop, "d");
    assert_eq!(
        labels(&effects),
        ["d StopRequested", "signal d SIGTERM", "signal d SIGCONT"]
    );
    let effects = h.group_empty("d");
    assert_eq!(labels(&effects), ["d Stopped"]);
    assert_eq!(h.state("d"), "stopped");

    let mut h = Harness::booted([forking("d")]);
    h.exit("d", code(0));
    let effects = h.ok(Command::Stop, "d");
    assert_eq!(
        labels(&effects),
        ["d Stopped"],
        "nothing is left to signal: stopped at once"
    );
}

fn dumped(spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        stop: crate::model::StopSpec {
            dump: Some(crate::model::DumpSpec {
                signal: Signal::SIGQUIT,
                wait: secs(2),
            }),
            ..spec.stop
        },
        ..spec
    }
}

#[test]
fn a_hung_service_with_a_dump_signal_gets_it_first_and_the_stop_signal_after_the_wait() {
    let mut h = Harness::just_running([dumped(watched("a", secs(2)))]);
    assert_eq!(
        labels(&h.advance(secs(2))),
        [
            "a WatchdogTimeout",
            "a DumpRequested",
            "signal a SIGQUIT",
            "signal a SIGCONT"
        ]
    );
    assert_eq!(labels(&h.advance(secs(2) - ms(1))), Vec::<String>::new());
    assert_eq!(
        labels(&h.advance(ms(1))),
        ["a StopRequested", "signal a SIGABRT", "signal a SIGCONT"]
    );
    // It was dumped once: the stop timeout goes straight to SIGKILL.
    assert_eq!(
        labels(&h.advance(secs(10))),
        ["a Escalated", "signal a SIGKILL"]
    );
}

#[test]
fn a_run_that_prints_its_stacks_and_exits_on_the_dump_signal_is_restarted_as_a_hang() {
    let mut h = Harness::just_running([dumped(watched("a", secs(2)))]);
    h.advance(secs(2));
    let effects = h.exit("a", code(2));
    assert_eq!(labels(&effects), ["a Exited", "a RestartScheduled"]);
    assert_eq!(
        h.service("a")
            .last_cause()
            .map(ToString::to_string)
            .as_deref(),
        Some("watchdog timeout (no keep-alive within 2s)")
    );
}

#[test]
fn a_stop_by_hand_that_times_out_dumps_before_sigkill() {
    let mut h = Harness::running([dumped(svc("a"))]);
    h.ok(Command::Stop, "a");
    assert_eq!(
        labels(&h.advance(secs(10))),
        ["a DumpRequested", "signal a SIGQUIT", "signal a SIGCONT"]
    );
    assert_eq!(
        labels(&h.advance(secs(2))),
        ["a Escalated", "signal a SIGKILL"]
    );
}
