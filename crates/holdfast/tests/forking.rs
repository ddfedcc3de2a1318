//! `type = "forking"` services end to end, with the demo app detaching like a real
//! daemon (`--daemonize`): the readiness condition and the pidfile are both awaited.

mod support;

use support::{Daemon, is_alive};

/// The pid the daemon wrote to its pidfile.
fn pidfile_pid(daemon: &Daemon, name: &str) -> u32 {
    std::fs::read_to_string(daemon.dir().join(name))
        .expect("the daemon wrote its pidfile")
        .trim()
        .parse()
        .expect("the pidfile holds a pid")
}

/// Runs a forking demo app with `ready` and checks that it gets to `running` with the
/// daemon named by its pidfile as main process.
fn forking_daemon_becomes_running(ready: &str, port: u16) {
    let daemon = Daemon::start(&format!(
        r#"
[service.daemon]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{port}", "--daemonize", "{{DIR}}/daemon.pid"]
type = "forking"
pidfile = "{{DIR}}/daemon.pid"
ready = {ready}
start_timeout = "20s"
start_secs = "0s"
"#
    ));
    let running = daemon.wait_for_service("daemon", "is running", |s| s.state == "running");
    let pid = running.pid.expect("a running service has a pid");
    assert_eq!(
        pid,
        pidfile_pid(&daemon, "daemon.pid"),
        "the main pid is the daemon named by the pidfile"
    );
    assert!(is_alive(pid));
    assert_eq!(running.restarts, 0, "it started once: {running:?}");
}

#[test]
fn forking_daemon_with_tcp_readiness_becomes_running() {
    let port = support::free_port();
    forking_daemon_becomes_running(&format!(r#"{{ tcp = "127.0.0.1:{port}" }}"#), port);
}

#[test]
fn forking_daemon_with_http_readiness_becomes_running() {
    let port = support::free_port();
    forking_daemon_becomes_running(
        &format!(r#"{{ http = "http://127.0.0.1:{port}/health" }}"#),
        port,
    );
}

#[test]
fn pidfile_written_after_the_forker_exited_is_adopted() {
    // The classic double fork: the daemon leads neither its session nor its group (both
    // belong to the intermediate process, which is gone), and writes the pidfile well
    // after the process holdfast started has exited.
    let daemon = Daemon::start(
        r#"
[service.daemon]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--daemonize", "{DIR}/daemon.pid", "--forks", "twice", "--slow-start", "300ms"]
type = "forking"
pidfile = "{DIR}/daemon.pid"
start_timeout = "20s"
start_secs = "0s"
"#,
    );
    let running = daemon.wait_for_service("daemon", "is running", |s| s.state == "running");
    let pid = running.pid.expect("a running service has a pid");
    assert_eq!(
        pid,
        pidfile_pid(&daemon, "daemon.pid"),
        "the main pid is the daemon named by the pidfile"
    );
    assert_eq!(running.restarts, 0, "it started once: {running:?}");

    // It is supervised like any main process: stopping it ends the daemon.
    daemon.cli_ok(&["stop", "daemon"]);
    daemon.wait_for_service("daemon", "is stopped", |s| s.state == "stopped");
    support::wait_until("the daemon is gone", || !is_alive(pid));
}

/// A demo app listening on `port` that double-forks and writes its pidfile from the
/// daemon, as a forking service with `extra` keys.
fn double_forking(port: u16, extra: &str) -> String {
    format!(
        r#"
[service.daemon]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{port}", "--daemonize", "{{DIR}}/daemon.pid", "--forks", "twice"]
type = "forking"
pidfile = "{{DIR}}/daemon.pid"
{extra}
"#
    )
}

#[test]
fn a_waited_restart_of_a_forking_service_reports_it_running() {
    let port = support::free_port();
    let daemon = Daemon::start(&double_forking(
        port,
        &format!(r#"ready = {{ tcp = "127.0.0.1:{port}" }}"#),
    ));
    daemon.wait_for_service("daemon", "is running", |s| s.state == "running");
    // The launcher's exit 0 is the double fork going as planned, not a failed start.
    let output = daemon.cli(&["restart", "daemon"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::describe(&output)
    );
    let pid = pidfile_pid(&daemon, "daemon.pid");
    assert!(
        support::stdout(&output).contains(&format!("daemon: running (pid {pid})")),
        "{}",
        support::describe(&output)
    );
}

#[test]
fn a_forking_daemon_that_notifies_ready_before_its_pidfile_is_read_becomes_running() {
    let port = support::free_port();
    // demo-app sends READY=1 once it listens, and writes its pidfile after that: the
    // notification comes from a process that holdfast knows only through the cgroup.
    let daemon = Daemon::start(&double_forking(
        port,
        "ready = \"notify\"\nstart_timeout = \"20s\"",
    ));
    let running = daemon.wait_for_service("daemon", "is running", |s| s.state == "running");
    assert_eq!(running.restarts, 0, "ready at the first start: {running:?}");
    assert_eq!(running.pid, Some(pidfile_pid(&daemon, "daemon.pid")));
}

#[test]
fn a_forking_service_still_awaiting_its_pidfile_can_be_stopped() {
    let daemon = Daemon::start(
        r#"
[service.daemon]
command = ["sh", "-c", "setsid sleep 300 & exit 0"]
type = "forking"
pidfile = "{DIR}/never.pid"
start_timeout = "infinity"
"#,
    );
    daemon.wait_for_service("daemon", "awaits its pidfile", |s| {
        s.state == "starting"
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("waiting for pidfile"))
    });
    let output = daemon.cli(&["stop", "daemon"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::describe(&output)
    );
    let stopped = daemon.service("daemon");
    assert_eq!(stopped.state, "stopped", "{stopped:?}");
    assert_eq!(stopped.tasks.unwrap_or(0), 0, "the leftover sleep is gone");
}
