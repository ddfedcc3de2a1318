//! Health probes end to end: the real binary probing the demo app over HTTP.
//!
//! The demo app switches its `/health` with `GET /health/fail` and `GET /health/ok`; the
//! tests watch the decay through `status` and the events holdfast notes in the service
//! log, never through wall-clock timing.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;

use holdfast::control::protocol::ServiceStatus;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::Daemon;

/// A minimal HTTP GET (no curl on the test machine needed); returns the raw response.
fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("demo app accepts");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("response is read");
    response
}

fn config(port: u16, action: &str) -> String {
    format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{port}"]

[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "200ms"
timeout = "150ms"
degraded = {{ failures = 2, within = "10s" }}
unhealthy = {{ failures = 4, within = "10s", action = "{action}" }}
recover = {{ successes = 3 }}
"#
    )
}

fn health_state(s: &ServiceStatus) -> Option<&str> {
    s.health.as_ref().map(|h| h.state.as_str())
}

/// Waits until web runs with a healthy probe behind it; returns its pid.
fn healthy_pid(d: &Daemon) -> u32 {
    let web = d.wait_for_service("web", "runs and has passed a probe", |s| {
        s.state == "running"
            && s.health
                .as_ref()
                .is_some_and(|h| h.state == "ok" && h.successes >= 1)
    });
    web.pid.expect("a running service has a pid")
}

#[test]
fn a_failing_health_endpoint_degrades_then_makes_unhealthy_and_restarts_the_service_once() {
    let port = support::free_port();
    let d = Daemon::start(&config(port, "restart"));
    let first = healthy_pid(&d);

    assert!(get(port, "/health/fail").contains("200 OK"));
    let degraded = d.wait_for_service("web", "is degraded", |s| {
        health_state(s) == Some("degraded")
    });
    let h = degraded.health.expect("health is reported");
    assert!(
        (2..4).contains(&h.failures_degraded_window),
        "degraded after 2 failures, not yet unhealthy: {h:?}"
    );
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{h:?}"
    );

    let restarted = d.wait_for_service("web", "runs again in a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first)
    });
    assert_eq!(restarted.restarts, 1, "restarted once");

    // UNHEALTHY at the configured count, after DEGRADED at its own.
    let log = d.wait_log(
        "web",
        "health degraded -> unhealthy after 4 failed probes, last: HTTP 503",
    );
    assert!(
        log.contains("health ok -> degraded after 2 failed probes"),
        "DEGRADED at the configured count:\n{log}"
    );
    let second = restarted.pid.expect("running");
    // The fresh process serves a healthy /health: three passing probes, still one restart.
    d.wait_for_service("web", "passes probes in its new process", |s| {
        s.pid == Some(second) && s.health.as_ref().is_some_and(|h| h.successes >= 3)
    });
    let web = d.service("web");
    assert_eq!(web.restarts, 1, "no further restart: {web:?}");
    assert_eq!(health_state(&web), Some("ok"));
}

#[test]
fn an_unhealthy_service_comes_back_to_ok_only_after_the_configured_successes() {
    let port = support::free_port();
    let d = Daemon::start(&config(port, "none"));
    let pid = healthy_pid(&d);

    get(port, "/health/fail");
    d.wait_for_service("web", "is unhealthy", |s| {
        health_state(s) == Some("unhealthy")
    });
    get(port, "/health/ok");

    // Until the third consecutive success the state stays UNHEALTHY.
    let mut seen_partial = false;
    d.wait_for_service("web", "is ok again", |s| {
        let h = s.health.as_ref().expect("health is reported while running");
        if h.state == "unhealthy" && (1..3).contains(&h.successes) {
            seen_partial = true;
        }
        assert!(
            h.state == "unhealthy" || h.successes >= 3,
            "left UNHEALTHY before 3 successes: {h:?}"
        );
        h.state == "ok"
    });
    assert!(
        seen_partial,
        "UNHEALTHY was observed persisting through the first successes"
    );
    let web = d.service("web");
    assert_eq!(web.pid, Some(pid), "action none: the same process");
    assert_eq!(web.restarts, 0);
    d.wait_log("web", "health unhealthy -> ok (recovered)");
}

#[test]
fn a_hung_process_is_detected_through_probe_timeouts_and_replaced() {
    let port = support::free_port();
    let d = Daemon::start(&config(port, "restart"));
    let hung = healthy_pid(&d);

    kill(Pid::from_raw(hung as i32), Signal::SIGSTOP).expect("SIGSTOP the demo app");
    let replaced = d.wait_for_service("web", "runs in a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != hung)
    });
    assert_eq!(replaced.restarts, 1);
    // Detected by timeouts.
    d.wait_log(
        "web",
        "unhealthy after 4 failed probes, last: timed out after 150ms",
    );
    assert!(
        !support::is_alive(hung),
        "the stopped process was stopped for good (SIGCONT lets it act on SIGTERM)"
    );
}

#[test]
fn exec_probes_are_reaped_by_holdfast_and_killed_when_they_time_out() {
    let d = Daemon::start(
        r#"
[service.worker]
command = ["sleep", "3600"]

[service.worker.health]
exec = ["sh", "-c", "[ -e {DIR}/ok ] || exec sleep 3600"]
interval = "200ms"
timeout = "150ms"
degraded = { failures = 2, within = "10s" }
unhealthy = { failures = 4, within = "10s", action = "none" }
recover = { successes = 3 }
"#,
    );
    let degraded = d.wait_for_service("worker", "is degraded by hanging probes", |s| {
        health_state(s) == Some("degraded")
    });
    let h = degraded.health.expect("health is reported");
    assert_eq!(
        h.last_error.as_deref(),
        Some("timed out after 150ms"),
        "{h:?}"
    );
    fs::write(d.dir().join("ok"), "").expect("marker is written");
    d.wait_for_service("worker", "is ok again", |s| health_state(s) == Some("ok"));
    // Timed-out probes were killed: no `sleep 3600` is left besides the service itself.
    let worker = d.service("worker").pid.expect("running");
    let sleepers: Vec<u32> = support::tagged_processes(d.tag())
        .into_iter()
        .filter(|&p| p != worker)
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with("sleep"))
        })
        .filter(|&p| support::is_alive(p))
        .collect();
    assert!(
        sleepers.is_empty(),
        "leftover probe processes: {sleepers:?}"
    );
}

#[test]
fn an_exec_probe_exiting_at_its_timeout_is_judged_by_its_exit_and_not_signalled_after_reaping() {
    // holdfast is stopped while each probe runs past its timeout and exits 0, so the
    // probe's exit and its timeout reach holdfast together, in either order. The probe
    // ended on its own (no SIGKILL of ours ended it): its result is its exit. It must
    // not be signalled once reaped, and its exit must not be left over as nobody's.
    let d = Daemon::start_with_env(
        r#"
[service.worker]
command = ["sleep", "3600"]

[service.worker.health]
exec = ["sleep", "1.3"]
interval = "1s"
timeout = "1s"
unhealthy = { failures = 1000, within = "1s", action = "none" }
"#,
        &[("HOLDFAST_LOG", "debug")],
    );
    let holdfast = d.host_pid();
    let worker = d
        .wait_for_service("worker", "is running", |s| s.state == "running")
        .pid
        .expect("a running service has a pid");
    let mut last_probe = None;
    const ROUNDS: u64 = 6;
    for round in 1..=ROUNDS {
        let mut probe = None;
        d.wait_until("a probe runs", |_| {
            probe = support::children(holdfast)
                .into_iter()
                .find(|&p| p != worker && Some(p) != last_probe && !support::is_zombie(p));
            probe.is_some()
        });
        let probe = probe.expect("found above");
        last_probe = Some(probe);
        let pid = Pid::from_raw(holdfast as i32);
        kill(pid, Signal::SIGSTOP).expect("stop holdfast");
        support::wait_until("the probe exits while holdfast is stopped", || {
            support::is_zombie(probe)
        });
        kill(pid, Signal::SIGCONT).expect("continue holdfast");
        d.wait_for_service("worker", "has the probe's result", |s| {
            s.health.as_ref().is_some_and(|h| h.probes >= round)
        });
    }
    let h = d.service("worker").health.expect("health is reported");
    assert_eq!(h.last_error, None, "no probe was judged timed out: {h:?}");
    assert_eq!(u64::from(h.successes), h.probes, "{h:?}");
    let log = d.stderr();
    for line in log.lines() {
        assert!(
            !line.contains("failed to kill timed-out probe"),
            "a probe was signalled after it was reaped: {line}"
        );
        assert!(
            !line.contains("claimed by nothing"),
            "a probe's exit was left over as nobody's: {line}"
        );
    }
}

#[test]
fn an_exec_probe_still_running_at_shutdown_is_killed_with_the_daemon() {
    // The first probe starts one interval after the spawn and runs until its timeout;
    // the daemon is shut down while it runs.
    let d = Daemon::start(
        r#"
[service.b]
command = ["sleep", "1000"]
[service.b.health]
exec = ["/bin/sh", "-c", "echo $$ > {DIR}/probe.pid; exec sleep 1000"]
interval = "5s"
timeout = "5s"
"#,
    );
    let pid_file = d.dir().join("probe.pid");
    let mut probe = None;
    d.wait_until("the probe runs", |_| {
        probe = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        probe.is_some_and(support::is_alive)
    });
    let probe = probe.expect("found above");
    let shutdown = d.cli(&["shutdown"]);
    assert!(
        shutdown.status.success(),
        "{}",
        support::describe(&shutdown)
    );
    support::wait_until("the probe is gone", || !support::is_alive(probe));
}
