//! Stopping a service: the stop signal to the whole process group, SIGKILL after the
//! timeout, and `status` naming what holds a stop up.

mod support;

use support::{Daemon, is_alive};

/// A demo-app that ignores SIGTERM and leaves a grandchild behind in its process group.
fn stubborn(timeout: &str) -> String {
    format!(
        r#"
[service.stubborn]
command = ["{{DEMO_APP}}", "--ignore-sigterm", "--fork-grandchild"]
restart = "no"
start_secs = "0s"
stop = {{ signal = "TERM", timeout = "{timeout}" }}
"#
    )
}

/// Waits until the service runs and has reported its grandchild; returns (main, grandchild).
fn running_with_grandchild(daemon: &Daemon) -> (u32, u32) {
    let main = daemon
        .wait_for_service("stubborn", "is running", |s| s.state == "running")
        .pid
        .expect("a running service has a pid");
    let mut grandchild = None;
    daemon.wait_until("stubborn reports its grandchild's pid", |d| {
        grandchild = d.log("stubborn").lines().find_map(|line| {
            let (_, pid) = line.split_once("grandchild pid=")?;
            pid.trim().parse::<u32>().ok()
        });
        grandchild.is_some()
    });
    let grandchild = grandchild.expect("found above");
    assert!(is_alive(main), "main process {main} is alive");
    assert!(is_alive(grandchild), "grandchild {grandchild} is alive");
    (main, grandchild)
}

#[test]
fn stop_kills_the_whole_group_after_the_timeout() {
    let daemon = Daemon::start(&stubborn("1s"));
    let (main, grandchild) = running_with_grandchild(&daemon);

    daemon.cli_ok(&["stop", "stubborn"]);

    let stopped = daemon.wait_for_service("stubborn", "is stopped", |s| s.state == "stopped");
    assert!(!is_alive(main), "main process {main} was killed");
    assert!(!is_alive(grandchild), "grandchild {grandchild} was killed");
    assert_eq!(stopped.pid, None);
    assert!(
        stopped.holding_up.is_empty(),
        "nothing holds up a finished stop: {stopped:?}"
    );
    let exit = stopped.last_exit.expect("the stop is reported as an exit");
    assert_eq!(
        exit.signal.as_deref(),
        Some("SIGKILL"),
        "SIGTERM was ignored, so SIGKILL ended it: {exit:?}"
    );
}

#[test]
fn status_names_the_processes_holding_up_a_stop() {
    let daemon = Daemon::start(&stubborn("3s"));
    let (main, grandchild) = running_with_grandchild(&daemon);

    daemon.cli_ok(&["stop", "stubborn"]);

    // SIGTERM is ignored, so the service stays in `stopping` for the 3 s timeout.
    let stopping = daemon.wait_for_service("stubborn", "is stopping", |s| s.state == "stopping");
    let holding: Vec<u32> = stopping.holding_up.iter().map(|p| p.pid).collect();
    assert!(
        holding.contains(&main),
        "the main process {main} holds up the stop: {stopping:?}"
    );
    assert!(
        holding.contains(&grandchild),
        "the grandchild {grandchild} holds up the stop: {stopping:?}"
    );
    let reason = stopping.reason.unwrap_or_default();
    assert!(
        reason.contains("SIGKILL"),
        "the reason says what comes next: {reason:?}"
    );

    daemon.wait_for_service("stubborn", "is stopped", |s| s.state == "stopped");
    assert!(
        !is_alive(main) && !is_alive(grandchild),
        "the whole group is gone"
    );
}
