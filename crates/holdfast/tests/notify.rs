//! Readiness, the notify socket, the watchdog, forking daemons and holdfast as a
//! `Type=notify` service, end to end with the real binary, the real `systemd-notify`
//! and the demo app.

mod support;

use std::os::unix::net::UnixDatagram;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Daemon, is_alive};

#[test]
fn systemd_notify_ready_makes_a_service_running_with_its_status_text() {
    let d = Daemon::start(
        r#"
[service.web]
command = ["/bin/sh", "-c", "sleep 0.2; systemd-notify --ready --status=up; exec sleep 1000"]
ready = "notify"
start_secs = "0s"
"#,
    );
    let web = d.wait_for_service("web", "is running", |s| s.state == "running");
    assert_eq!(
        web.status_text.as_deref(),
        Some("up"),
        "STATUS= shows in status"
    );
    assert_eq!(web.restarts, 0);
}

#[test]
fn a_service_that_never_notifies_fails_its_start_after_start_timeout() {
    let d = Daemon::start(
        r#"
[service.mute]
command = ["sleep", "1000"]
ready = "notify"
start_timeout = "2s"
restart = "no"
"#,
    );
    let starting = d.service("mute");
    assert_eq!(starting.state, "starting", "not ready, so not running");
    assert!(
        starting
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("waiting for READY=1")),
        "status says what it waits for: {starting:?}"
    );
    let pid = starting.pid.expect("a starting service has a pid");
    let failed = d.wait_for_service("mute", "has failed", |s| s.state == "failed");
    assert!(
        failed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not ready within 2s")),
        "the reason names the timeout: {failed:?}"
    );
    assert!(!is_alive(pid), "the never-ready process was stopped");
}

#[test]
fn a_never_ready_service_is_restarted_by_its_policy() {
    let d = Daemon::start(
        r#"
[service.mute]
command = ["sleep", "1000"]
ready = "notify"
start_timeout = "1s"
restart_sec = "1s"
"#,
    );
    let backoff = d.wait_for_service("mute", "is in backoff", |s| s.state == "backoff");
    assert!(
        backoff
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("after not ready within 1s")),
        "{backoff:?}"
    );
    d.wait_for_service("mute", "was restarted", |s| s.restarts >= 1);
}

#[test]
fn the_demo_app_with_ready_notify_becomes_running_and_dependents_wait_for_it() {
    let d = Daemon::start(
        r#"
[service.app]
# A slow start that lasts until the test says so: the app starts once `go` exists.
command = ["/bin/sh", "-c", "while [ ! -e '{DIR}/go' ]; do sleep 0.05; done; exec \"$0\" --listen 127.0.0.1:0", "{DEMO_APP}"]
ready = "notify"
start_secs = "0s"

[service.client]
command = ["sleep", "1000"]
after = ["app"]
start_secs = "0s"
"#,
    );
    let status = d.status();
    let app = support::service(&status, "app");
    let client = support::service(&status, "client");
    assert_eq!(app.state, "starting", "slow start: not ready yet");
    assert_eq!(client.state, "waiting", "after = [app] waits for readiness");
    std::fs::write(d.dir().join("go"), "").expect("the gate opens");
    let app = d.wait_for_service("app", "is running", |s| s.state == "running");
    assert!(
        app.status_text
            .as_deref()
            .is_some_and(|t| t.starts_with("serving on 127.0.0.1:")),
        "{app:?}"
    );
    d.wait_for_service("client", "is running", |s| s.state == "running");
}

#[test]
fn a_double_forking_daemon_is_adopted_restarted_when_killed_and_stopped() {
    let d = Daemon::start(
        r#"
[service.daemon]
command = ["/bin/sh", "-c", "( setsid sh -c 'echo $$ > {DIR}/daemon.pid; exec sleep 1000' & ); exit 0"]
type = "forking"
pidfile = "{DIR}/daemon.pid"
start_timeout = "10s"
restart_sec = "200ms"
"#,
    );
    let first = d.wait_for_service("daemon", "is running", |s| s.state == "running");
    let pid = first.pid.expect("a running daemon has a pid");
    let written: u32 = std::fs::read_to_string(d.dir().join("daemon.pid"))
        .expect("the daemon wrote its pidfile")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(
        pid, written,
        "the main pid is the daemon named by the pidfile"
    );
    assert!(is_alive(pid));

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the daemon");
    let second = d.wait_for_service("daemon", "is running again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });
    assert_eq!(
        second.restarts, 1,
        "the daemon's death was seen and it restarted"
    );
    assert!(
        second
            .last_exit
            .as_ref()
            .is_some_and(|e| e.signal.as_deref() == Some("SIGKILL")),
        "{second:?}"
    );

    let new_pid = second.pid.expect("running has a pid");
    d.cli_ok(&["stop", "daemon"]);
    d.wait_for_service("daemon", "is stopped", |s| s.state == "stopped");
    support::wait_until("the daemon process is gone", || !is_alive(new_pid));
}

#[test]
fn a_hung_process_misses_its_watchdog_and_is_replaced() {
    let d = Daemon::start(
        r#"
[service.app]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--hang-after", "1s"]
ready = "notify"
watchdog = "2s"
start_secs = "0s"
restart_sec = "100ms"
"#,
    );
    let first = d.wait_for_service("app", "is running", |s| s.state == "running");
    let pid = first.pid.expect("running has a pid");
    let replaced = d.wait_for_service("app", "is replaced by a new process", |s| {
        s.restarts >= 1 && s.pid.is_some_and(|p| p != pid)
    });
    assert!(
        replaced
            .last_exit
            .as_ref()
            .is_some_and(|e| e.signal.as_deref() == Some("SIGABRT")),
        "the hung process got SIGABRT: {replaced:?}"
    );
    assert!(
        d.stderr().contains("watchdog timeout"),
        "the timeout is reported as an event"
    );
    support::wait_until("the hung process is gone", || !is_alive(pid));
}

#[test]
fn holdfast_under_a_service_manager_reports_ready_after_its_services_and_pings_its_watchdog() {
    let manager_dir = std::env::temp_dir().join(format!("holdfast-manager-{}", std::process::id()));
    std::fs::create_dir_all(&manager_dir).expect("manager dir");
    let socket_path = manager_dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let manager = UnixDatagram::bind(&socket_path).expect("bind the manager's socket");
    manager
        .set_read_timeout(Some(support::DEADLINE))
        .expect("read timeout");

    let d = Daemon::start_with_env(
        r#"
[service.slow]
command = ["/bin/sh", "-c", "sleep 1; systemd-notify --ready; exec sleep 1000"]
ready = "notify"
start_secs = "0s"
"#,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );

    let mut buf = [0u8; 4096];
    let mut watchdogs = 0;
    let mut ready_seen = false;
    let mut statuses = Vec::new();
    let mut extends = Vec::new();
    while !(ready_seen && watchdogs >= 3) {
        let n = manager
            .recv(&mut buf)
            .unwrap_or_else(|e| d.fail(&format!("no notification from holdfast: {e}")));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        for line in text.lines() {
            match line {
                "READY=1" => {
                    assert_eq!(
                        d.service("slow").state,
                        "running",
                        "READY=1 only once the autostart services are ready"
                    );
                    ready_seen = true;
                }
                "WATCHDOG=1" => watchdogs += 1,
                other => {
                    if let Some(status) = other.strip_prefix("STATUS=") {
                        statuses.push(status.to_owned());
                    }
                    if let Some(usec) = other.strip_prefix("EXTEND_TIMEOUT_USEC=") {
                        extends.push((usec.to_owned(), ready_seen));
                    }
                }
            }
        }
    }
    // While its services start, each ping extends the manager's start timeout by one
    // watchdog interval; once ready, none does.
    assert!(
        extends.first() == Some(&("1000000".to_owned(), false)),
        "{extends:?}"
    );
    assert!(
        extends
            .iter()
            .all(|(usec, after_ready)| usec == "1000000" && !after_ready),
        "{extends:?}"
    );
    assert!(
        statuses.iter().any(|s| s == "1 services: 1 starting"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s == "1 services: 1 running"),
        "{statuses:?}"
    );
    let service_env = std::fs::read(format!(
        "/proc/{}/environ",
        d.service("slow").pid.expect("running")
    ))
    .expect("the service's environment");
    let service_env = String::from_utf8_lossy(&service_env);
    assert!(
        !service_env.contains(socket_path.to_str().expect("utf-8")),
        "holdfast's own NOTIFY_SOCKET is not passed on"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&manager_dir);
}

#[test]
fn a_newline_on_the_notification_fd_makes_a_service_ready() {
    let d = Daemon::start(
        r#"
[service.s6]
command = ["/bin/sh", "-c", "while [ ! -e '{DIR}/go' ]; do sleep 0.05; done; [ -e /proc/self/fd/4 ] && exit 9; echo >&5; exec sleep 1000"]
ready = { fd = 5 }
start_secs = "0s"
start_timeout = "20s"
"#,
    );
    let starting = d.service("s6");
    assert_eq!(starting.state, "starting");
    std::fs::write(d.dir().join("go"), "").expect("the gate opens");
    let running = d.wait_for_service("s6", "is running", |s| s.state == "running");
    assert_eq!(
        running.restarts, 0,
        "fd 4 (a gap below the target) was not leaked"
    );
}

#[test]
fn a_tcp_connect_makes_a_service_ready() {
    // Both probes are held until both ports are known, so the two differ (each service
    // waits for its own port: a shared one is a config error).
    let probes: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    let [port, web_port] = [0, 1].map(|i| probes[i].local_addr().expect("address").port());
    drop(probes);
    let d = Daemon::start(&format!(
        r#"
[service.app]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{port}", "--slow-start", "1s"]
ready = {{ tcp = "127.0.0.1:{port}" }}
start_secs = "0s"

[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{web_port}"]
ready = {{ http = "http://127.0.0.1:{web_port}/health" }}
start_secs = "0s"
"#
    ));
    d.wait_for_service("app", "is running", |s| s.state == "running");
    d.wait_for_service("web", "is running", |s| s.state == "running");
}

#[test]
fn a_stopped_service_no_longer_shows_its_last_status_text() {
    let d = Daemon::start(
        r#"
[service.web]
command = ["/bin/sh", "-c", "systemd-notify --ready --status=serving; exec sleep 1000"]
ready = "notify"
start_secs = "0s"
"#,
    );
    d.wait_for_service("web", "is running and says so", |s| {
        s.state == "running" && s.status_text.as_deref() == Some("serving")
    });
    d.cli_ok(&["stop", "web"]);
    let web = d.wait_for_service("web", "is stopped", |s| s.state == "stopped");
    assert_eq!(
        web.status_text, None,
        "a run that ended says nothing any more: {web:?}"
    );
}

#[test]
fn start_timeout_infinity_leaves_a_never_ready_service_starting_with_no_deadline() {
    let d = Daemon::start(
        r#"
[service.mute]
command = ["sleep", "1000"]
ready = "notify"
start_timeout = "infinity"
restart = "no"
"#,
    );
    let mute = d.wait_for_service("mute", "is starting", |s| s.state == "starting");
    let reason = mute.reason.unwrap_or_default();
    assert!(
        reason.contains("waiting for READY=1") && reason.contains("no timeout"),
        "status says it waits with no deadline: {reason:?}"
    );
    let pid = mute.pid.expect("a starting service has a pid");
    d.cli_ok(&["stop", "mute"]);
    d.wait_for_service("mute", "is stopped", |s| s.state == "stopped");
    assert!(
        !is_alive(pid),
        "a start without a deadline can still be stopped"
    );
}

#[test]
fn huge_watchdog_usec_and_extend_timeout_usec_do_not_panic_the_daemon() {
    // The largest values the protocol can carry, sent while starting and while running.
    let d = Daemon::start(
        r#"
[service.greedy]
command = ["/bin/sh", "-c", "systemd-notify --pid=$$ EXTEND_TIMEOUT_USEC=18446744073709551615; systemd-notify --pid=$$ --ready; systemd-notify --pid=$$ WATCHDOG_USEC=18446744073709551615; systemd-notify --pid=$$ EXTEND_TIMEOUT_USEC=18446744073709551615; systemd-notify --pid=$$ --status=done; exec sleep 1000"]
ready = "notify"
start_timeout = "30s"
watchdog = "30s"
start_secs = "0s"
"#,
    );
    let greedy = d.wait_for_service("greedy", "has sent all its messages", |s| {
        s.status_text.as_deref() == Some("done")
    });
    assert_eq!(greedy.state, "running", "{greedy:?}");
    assert_eq!(greedy.restarts, 0, "no watchdog timeout: {greedy:?}");
    d.cli_ok(&["restart", "greedy"]);
    d.wait_for_service("greedy", "runs again after a restart", |s| {
        s.state == "running" && s.pid != greedy.pid && s.status_text.as_deref() == Some("done")
    });
    assert!(!d.has_exited(), "the daemon is still up");
}

#[test]
fn a_notify_socket_flood_from_another_user_does_not_starve_the_supervisor() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let (uid, gid) = support::test_user();
    let d = Daemon::start_with_env(
        r#"
[service.notifier]
command = ["/bin/sh", "-c", "systemd-notify --ready --status=up; exec sleep 1000"]
ready = "notify"
start_secs = "0s"
"#,
        &[("HOLDFAST_LOG", "debug")],
    );
    let first = d.wait_for_service("notifier", "is running", |s| s.state == "running");

    // The attacker runs the demo app as another user, from a directory that user can
    // reach (the checkout may sit under a 0700 home).
    let bin_dir = std::env::temp_dir().join(format!("holdfast-flood-{}", d.tag()));
    std::fs::create_dir_all(&bin_dir).expect("flood directory");
    let flooder = bin_dir.join("demo-app");
    std::fs::copy(support::demo_app(), &flooder).expect("copy the demo app");
    for (path, mode) in [(&bin_dir, 0o755), (&flooder, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("make the flooder reachable");
    }
    for dir in [d.dir().to_path_buf(), d.dir().join("state")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("make the notify socket reachable");
    }
    let socket = d.dir().join("state").join("notify.sock");
    let mut flood = std::process::Command::new(&flooder)
        .arg("--flood-notify")
        .arg(&socket)
        .env(support::TAG_VAR, d.tag())
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the flood");

    // The flood reached holdfast (pre-fix, its supervisor task logs every junk datagram).
    d.wait_until("junk datagrams reach holdfast", |d| {
        let log = d.stderr();
        log.contains("dropped") || log.contains("from a process of no service")
    });
    // While it lasts, holdfast answers and honours the real service's READY=1.
    let mut pid = first.pid;
    for _ in 0..3 {
        d.cli_ok(&["restart", "notifier"]);
        let again = d.wait_for_service("notifier", "is running again", |s| {
            s.state == "running" && s.pid != pid
        });
        pid = again.pid;
        assert_eq!(again.status_text.as_deref(), Some("up"), "{again:?}");
    }
    assert!(
        flood.try_wait().expect("poll the flooder").is_none(),
        "the flood lasted the whole test"
    );
    let _ = flood.kill();
    let _ = flood.wait();
    let _ = std::fs::remove_dir_all(&bin_dir);

    let log = d.stderr();
    assert!(
        !log.contains("from a process of no service"),
        "junk reached the supervisor task instead of being dropped at the socket"
    );
    let summaries = log.lines().filter(|l| l.contains("dropped")).count();
    assert!(summaries >= 1, "holdfast reports the dropped junk");
}
