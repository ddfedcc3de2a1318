//! Stopping a service: the stop signal to the whole process group, SIGKILL after the
//! timeout, and `status` naming what holds a stop up.

mod support;

use nix::sys::signal::Signal;
use support::{Daemon, is_alive};

/// A demo-app that ignores SIGTERM and leaves a grandchild behind in its process group.
fn stubborn(timeout: &str) -> String {
    format!(
        r#"
[service.stubborn]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:0", "--ignore-sigterm", "--fork-grandchild"]
restart = "no"
start_secs = "0s"
stop = {{ signal = "TERM", timeout = "{timeout}" }}
"#
    )
}

/// Waits until the service runs and has reported its grandchild; returns (main, grandchild).
fn running_with_grandchild(daemon: &Daemon) -> (u32, u32) {
    let main = daemon.running_pid("stubborn");
    let mut grandchild = None;
    daemon.wait_until("stubborn reports its grandchild's pid", |d| {
        grandchild = d.log("stubborn").lines().find_map(|line| {
            let (_, rest) = line.split_once("grandchild pid=")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        grandchild.is_some()
    });
    let grandchild = grandchild.expect("found above");
    // Both must have their SIGTERM handler in place (to ignore it) before the stop, or
    // the test would race their startup.
    daemon.wait_until("both processes catch SIGTERM", |_| {
        catches_sigterm(main) && catches_sigterm(grandchild)
    });
    assert!(is_alive(main), "main process {main} is alive");
    assert!(is_alive(grandchild), "grandchild {grandchild} is alive");
    (main, grandchild)
}

/// Whether `pid` has a handler installed for SIGTERM (`SigCgt` in /proc/PID/status).
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (Signal::SIGTERM as u64 - 1)) != 0)
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
    assert!(
        daemon
            .stderr()
            .contains("stubborn: stop timed out: SIGKILL"),
        "holdfast escalated to SIGKILL after the timeout"
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

    // --no-block: the test looks at the service while it is stopping.
    daemon.cli_ok(&["stop", "--no-block", "stubborn"]);

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

#[test]
fn the_sigkill_line_names_the_cgroup_when_the_kill_went_through_it() {
    let daemon = Daemon::start(&stubborn("300ms"));
    running_with_grandchild(&daemon);
    daemon.cli_ok(&["stop", "stubborn"]);
    daemon.wait_for_service("stubborn", "is stopped", |s| s.state == "stopped");
    // cgroups are in use when holdfast found them at start (it runs as root here); the
    // process groups are the fallback without them.
    let via_cgroup = daemon.stderr().contains("cgroup v");
    let line = daemon
        .stderr()
        .lines()
        .find(|l| l.contains("stubborn: stop timed out: SIGKILL"))
        .map(str::to_owned)
        .expect("the escalation is logged");
    if via_cgroup {
        assert!(
            line.contains("SIGKILL to the cgroup") && !line.contains("process group"),
            "the kill went through the cgroup: {line}"
        );
    } else {
        assert!(line.contains("process group"), "{line}");
    }
}

#[test]
fn uptime_keeps_counting_while_a_service_is_stopping() {
    let daemon = Daemon::start(&stubborn("30s"));
    running_with_grandchild(&daemon);
    let before = daemon.wait_for("stubborn up for a second", |status| {
        let s = support::find_service(status, "stubborn")?;
        s.uptime_ms.filter(|&up| up >= 1000)
    });
    // --no-block: the test looks at the service while it is stopping.
    daemon.cli_ok(&["stop", "--no-block", "stubborn"]);
    let stopping = daemon.wait_for_service("stubborn", "is stopping", |s| s.state == "stopping");
    let uptime = stopping
        .uptime_ms
        .expect("a stopping service has an uptime");
    assert!(
        uptime >= before,
        "uptime {uptime} ms while stopping counts from the spawn (it was {before} ms)"
    );
    let output = daemon.cli(&["status"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "a stopping service is not in its wanted state yet: {}",
        support::describe(&output)
    );
    let table = support::stdout(&output);
    let row = table
        .lines()
        .find(|l| l.starts_with("stubborn"))
        .expect("a row for stubborn");
    assert!(
        !row.split_whitespace().any(|cell| cell == "0s"),
        "UPTIME is not reset by the stop: {row}"
    );
}

#[test]
fn stop_timeout_infinity_never_escalates_to_sigkill() {
    let daemon = Daemon::start(&stubborn("infinity"));
    let (main, grandchild) = running_with_grandchild(&daemon);

    // --no-block: the test looks at the service while it is stopping.
    daemon.cli_ok(&["stop", "--no-block", "stubborn"]);

    let stopping = daemon.wait_for_service("stubborn", "is stopping", |s| s.state == "stopping");
    let reason = stopping.reason.unwrap_or_default();
    assert!(
        reason.contains("no SIGKILL"),
        "the reason says no SIGKILL will come: {reason:?}"
    );
    assert!(
        is_alive(main) && is_alive(grandchild),
        "SIGTERM was ignored"
    );
    // Only the operator ends it.
    for pid in [main, grandchild] {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits i32"));
        nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill the stubborn processes");
    }
    daemon.wait_for_service("stubborn", "is stopped", |s| s.state == "stopped");
}
