//! Restart policies: when an exited service comes back, and when it does not.

mod support;

use support::Daemon;

#[test]
fn crashed_service_restarts_after_restart_sec() {
    // Crashes once with code 3 (recording its pid), then stays up on the restart.
    let daemon = Daemon::start(
        r#"
[service.crashy]
command = ["/bin/sh", "-c", "if [ -e crashed ]; then exec sleep 1000; fi; echo $$ > first.pid; touch crashed; sleep 0.2; exit 3"]
working_dir = "{DIR}"
restart = "on-failure"
restart_sec = "1s"
start_secs = "0s"
"#,
    );

    let restarted = daemon.wait_for_service("crashy", "runs again after its crash", |s| {
        s.state == "running" && s.restarts == 1 && s.pid.is_some()
    });

    let first: u32 = std::fs::read_to_string(daemon.dir().join("first.pid"))
        .expect("the first run wrote its pid")
        .trim()
        .parse()
        .expect("first.pid holds a pid");
    assert_ne!(restarted.pid, Some(first), "the restart is a new process");
    let exit = restarted
        .last_exit
        .as_ref()
        .expect("the crash is reported as the last exit");
    assert_eq!(exit.code, Some(3), "last exit: {exit:?}");
    // Both durations come from the daemon's clock in the same answer: the exit happened
    // `ago_ms` ago and the new run started `since_ms` ago, so their difference is how long
    // holdfast waited before restarting.
    let waited_ms = exit.ago_ms.saturating_sub(restarted.since_ms);
    assert!(
        waited_ms >= 1000,
        "the restart came {waited_ms} ms after the crash, before restart_sec (1s)"
    );
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    let daemon = Daemon::start(
        r#"
[service.oneshot]
command = ["/bin/sh", "-c", "sleep 0.2; exit 0"]
restart = "on-failure"
restart_sec = "50ms"
start_secs = "0s"
"#,
    );

    daemon.wait_for_service("oneshot", "has exited cleanly", |s| {
        s.last_exit.as_ref().is_some_and(|e| e.code == Some(0))
    });
    // A restart would come 50 ms after the exit. Watch until the daemon itself reports
    // the exit as 20 restart delays old, checking on every answer that none happened.
    let settled = daemon.wait_for_service("oneshot", "exited a second ago", |s| {
        assert_eq!(s.state, "stopped", "a clean exit is not restarted: {s:?}");
        assert_eq!(s.restarts, 0, "a clean exit is not restarted: {s:?}");
        assert_eq!(s.pid, None, "nothing runs: {s:?}");
        s.last_exit.as_ref().is_some_and(|e| e.ago_ms >= 1000)
    });
    assert_eq!(
        settled.last_exit.as_ref().and_then(|e| e.code),
        Some(0),
        "the last exit stays the clean one"
    );
}

#[test]
fn always_restarts_a_clean_exit() {
    // Exits cleanly once, then stays up on the restart.
    let daemon = Daemon::start(
        r#"
[service.worker]
command = ["/bin/sh", "-c", "if [ -e exited ]; then exec sleep 1000; fi; touch exited; sleep 0.2; exit 0"]
working_dir = "{DIR}"
restart = "always"
restart_sec = "100ms"
start_secs = "0s"
"#,
    );

    let restarted = daemon.wait_for_service("worker", "runs again after its clean exit", |s| {
        s.state == "running" && s.restarts == 1
    });
    assert_eq!(
        restarted.last_exit.as_ref().and_then(|e| e.code),
        Some(0),
        "the exit that was restarted was clean: {restarted:?}"
    );
}

#[test]
fn restart_by_hand_replaces_the_process_without_counting_an_automatic_restart() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let before = daemon.running_pid("web");

    daemon.cli_ok(&["restart", "web"]);

    let after = daemon.wait_for_service("web", "runs a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|pid| pid != before)
    });
    assert_eq!(after.restarts, 0, "restarts counts automatic restarts only");
    assert!(
        !support::is_alive(before),
        "the old process {before} is gone"
    );
    assert_eq!(
        after.last_exit.and_then(|e| e.signal),
        Some("SIGTERM".to_owned()),
        "the old process was stopped with the stop signal"
    );
}

#[test]
fn a_clean_exit_with_restart_no_is_stopped_not_failed() {
    // Exits 0 at once, well within the default start_secs: a one-shot job that is done.
    let daemon = Daemon::start(
        r#"
[service.job]
command = ["/bin/sh", "-c", "exit 0"]
restart = "no"
"#,
    );
    let job = daemon.wait_for_service("job", "has exited", |s| s.last_exit.is_some());
    assert_eq!(job.state, "stopped", "a clean exit is no failure: {job:?}");
    assert_eq!(job.last_exit.as_ref().and_then(|e| e.code), Some(0));
    let status = daemon.cli(&["status"]);
    let text = support::stdout(&status);
    assert!(
        text.contains("stopped") && !text.contains("failed"),
        "status shows the job stopped:\n{text}"
    );
}
