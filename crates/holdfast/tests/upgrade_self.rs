//! `holdfast upgrade --self`: holdfast re-executes itself in place (same pid), and every
//! service keeps running as its child, supervised and logged as before.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use support::deploy::Deploy;
use support::{Daemon, children, describe, kill_9, stderr, stdout};

const SERVICES: &str = r#"
[service.talk]
command = ["/bin/sh", "-c", "trap 'echo ping' USR1; echo up; while :; do sleep 0.1; done"]

[service.idle]
command = ["sleep", "1000"]
"#;

#[test]
fn upgrade_self_keeps_every_service_pid_and_supervises_them_again() {
    let d = Daemon::start(SERVICES);
    let talk = d.running_pid("talk");
    let idle = d.running_pid("idle");
    let daemon = d.host_pid();
    let events_before = support::event_records(&d.cli_ok(&["events", "--json"]));

    let out = d.cli_ok(&["upgrade", "--self"]);
    assert!(
        stdout(&out).contains("re-execution 1"),
        "the CLI waited for the new image: {}",
        describe(&out)
    );
    let status = d.status();
    assert_eq!(status.daemon.pid, daemon, "the same pid");
    assert_eq!(status.daemon.execs, 1, "one re-execution");
    for (name, pid) in [("talk", talk), ("idle", idle)] {
        let service = support::service(&status, name);
        assert_eq!(service.state, "running", "{name}");
        assert_eq!(service.pid, Some(pid), "{name} kept its process");
        assert_eq!(service.restarts, 0, "{name} was not restarted");
    }
    let kids = children(daemon);
    assert!(
        kids.contains(&talk) && kids.contains(&idle),
        "still holdfast's children: {kids:?}"
    );

    // The event history goes on, numbered after the old image's.
    let events_after = support::event_records(&d.cli_ok(&["events", "--json"]));
    assert_eq!(
        events_after[..events_before.len()],
        events_before[..],
        "the history is kept"
    );

    // Its output still reaches its log, through the pipes handed over.
    d.cli_ok(&["signal", "talk", "USR1"]);
    d.wait_until("talk's answer to SIGUSR1 is in its log", |d| {
        d.log("talk").contains("ping")
    });

    // Its exit is still seen, and restarted.
    kill_9(idle);
    let again = d.wait_for_service("idle", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != idle)
    });
    assert_eq!(again.restarts, 1, "restarted once: {again:?}");
    assert!(children(daemon).contains(&again.pid.expect("running")));

    // And a second upgrade finds the first one's state, restart count included.
    d.cli_ok(&["upgrade", "--self"]);
    let status = d.status();
    assert_eq!(status.daemon.execs, 2);
    assert_eq!(support::service(&status, "idle").restarts, 1);
    assert_eq!(support::service(&status, "talk").pid, Some(talk));
}

#[test]
fn upgrade_self_with_a_broken_config_changes_nothing() {
    let d = Daemon::start(SERVICES);
    let talk = d.running_pid("talk");
    let good = d.read_config();

    d.write_raw_config("[service.talk\ncommand = [");
    let out = d.cli(&["upgrade", "--self"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "invalid config: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("holdfast.toml"),
        "the diagnostic names the file: {}",
        describe(&out)
    );

    // A valid config that differs from the running one is refused too: the new image
    // would read it, not what runs.
    d.write_raw_config(&good.replace("sleep\", \"1000", "sleep\", \"999"));
    let out = d.cli(&["upgrade", "--self"]);
    assert!(!out.status.success(), "refused: {}", describe(&out));
    assert!(
        stderr(&out).contains("reload"),
        "says to reload first: {}",
        describe(&out)
    );

    let status = d.status();
    assert_eq!(status.daemon.execs, 0, "no re-execution");
    assert_eq!(support::service(&status, "talk").pid, Some(talk));
    assert!(!d.stderr().contains("re-executing"), "{}", d.stderr());
}

/// How many requests the demo app on `port` has answered (its `/` says).
fn requests(port: u16) -> u64 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return 0;
    }
    response
        .split("requests=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `wrk` against `port` for a bounded time; `close`: a new connection per request.
fn wrk(port: u16, close: bool) -> std::process::Child {
    let mut cmd = Command::new("/usr/bin/wrk");
    cmd.args(["-t", "2", "-c", "16", "-d", "4s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk runs (scripts/install-deps installs it)")
}

/// Two `upgrade --self` while `loads` run; then every request of each load succeeded.
fn upgrade_self_twice_failing_no_request(d: &Daemon, loads: [std::process::Child; 2]) {
    for n in 1..=2 {
        let out = d.cli_ok(&["upgrade", "--self"]);
        assert!(
            stdout(&out).contains(&format!("re-execution {n}")),
            "{}",
            describe(&out)
        );
    }
    for load in loads {
        let out = load.wait_with_output().expect("wrk finishes");
        let report = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "wrk ran: {report}");
        assert!(report.contains("requests in"), "wrk counted: {report}");
        assert!(
            !report.contains("Socket errors"),
            "no failed request: {report}"
        );
        assert!(!report.contains("Non-2xx"), "no failed request: {report}");
    }
}

#[test]
fn upgrade_self_under_http_load_fails_no_request_and_keeps_every_pid() {
    let (keep, fresh) = (support::free_port(), support::free_port());
    let d = Daemon::start(&format!(
        r#"
[service.keep]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{keep}"]
ready = {{ tcp = "127.0.0.1:{keep}" }}

[service.fresh]
command = ["{{DEMO_APP}}"]
listen = ["tcp://127.0.0.1:{fresh}"]
ready = "notify"

[service.fresh.health]
http = "http://127.0.0.1:{fresh}/health"
interval = "100ms"
timeout = "90ms"
"#
    ));
    let pids = [d.running_pid("keep"), d.running_pid("fresh")];
    let daemon = d.host_pid();
    let loads = [wrk(keep, false), wrk(fresh, true)];
    d.wait_until("both services are under load", |_| {
        requests(keep) > 100 && requests(fresh) > 100
    });

    upgrade_self_twice_failing_no_request(&d, loads);
    let status = d.status();
    assert_eq!(status.daemon.pid, daemon);
    assert_eq!(status.daemon.execs, 2);
    for (name, pid) in ["keep", "fresh"].into_iter().zip(pids) {
        let service = support::service(&status, name);
        assert_eq!(
            service.pid,
            Some(pid),
            "{name} kept its process: {service:?}"
        );
        assert_eq!(service.restarts, 0, "{name}");
    }
}

/// Replaces `path` the way a deploy does: `from` makes the new file beside it, which
/// is then renamed over it.
fn deploy(path: &std::path::Path, from: impl FnOnce(&std::path::Path)) {
    let staged = path.with_extension("new");
    from(&staged);
    std::fs::rename(&staged, path).expect("rename over the old binary");
}

#[test]
fn upgrade_self_that_cannot_exec_leaves_holdfast_running_and_a_deploy_renamed_into_place_then_runs()
{
    use std::os::unix::fs::PermissionsExt;

    let bin_dir = std::env::temp_dir().join(format!("holdfast-bin-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let bin = bin_dir.join("holdfast");
    let _ = std::fs::remove_file(&bin);
    std::fs::hard_link(support::holdfast_bin(), &bin).expect("link the binary");
    let d = Daemon::start_from(&bin, SERVICES);
    let idle = d.running_pid("idle");

    // An executable file that execve refuses (its interpreter does not exist): the
    // checks pass, the exec fails, holdfast goes on.
    deploy(&bin, |staged| {
        std::fs::write(staged, "#!/nonexistent/interpreter\n").expect("write");
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    });
    let out = d.cli(&["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("failed"), "{}", describe(&out));
    let status = d.status();
    assert_eq!(status.daemon.execs, 0);
    assert!(status.daemon.reexec_error.is_some(), "{:?}", status.daemon);
    assert_eq!(support::service(&status, "idle").pid, Some(idle));
    kill_9(idle);
    d.wait_for_service("idle", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != idle)
    });

    // The real build renamed into place: holdfast execs what is at its path now.
    deploy(&bin, |staged| {
        std::fs::hard_link(support::holdfast_bin(), staged).expect("link");
    });
    d.cli_ok(&["upgrade", "--self"]);
    let status = d.status();
    assert_eq!(status.daemon.execs, 1);
    assert_eq!(
        status.daemon.reexec_error, None,
        "cleared by the new attempt"
    );
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.host_pid())).expect("exe");
    assert_eq!(exe, bin, "runs the binary at its path, not a deleted one");
    let _ = std::fs::remove_dir_all(&bin_dir);
}

#[test]
fn upgrade_self_under_systemd_reports_a_reload_then_ready_and_the_notify_socket_serves_on() {
    use std::os::unix::net::UnixDatagram;

    let manager_dir = std::env::temp_dir().join(format!("holdfast-sd-{}", std::process::id()));
    std::fs::create_dir_all(&manager_dir).expect("manager dir");
    let socket_path = manager_dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let manager = UnixDatagram::bind(&socket_path).expect("bind the manager's socket");
    manager
        .set_read_timeout(Some(support::DEADLINE))
        .expect("read timeout");
    let d = Daemon::start_with_env(
        r#"
[service.notifier]
command = ["/bin/sh", "-c", "trap 'systemd-notify --status=again' USR1; systemd-notify --ready --status=up; while :; do sleep 0.1; done"]
ready = "notify"
start_secs = "0s"
"#,
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path"))],
    );
    let next = || {
        let mut buf = [0u8; 4096];
        let n = manager
            .recv(&mut buf)
            .unwrap_or_else(|e| d.fail(&format!("no notification from holdfast: {e}")));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while !next().lines().any(|l| l == "READY=1") {}

    let notifier = d.running_pid("notifier");
    d.cli_ok(&["upgrade", "--self"]);
    let reload = loop {
        let message = next();
        if message.contains("RELOADING=1") {
            break message;
        }
    };
    assert!(reload.contains("MONOTONIC_USEC="), "{reload}");
    while !next().lines().any(|l| l == "READY=1") {}

    d.cli_ok(&["signal", "notifier", "USR1"]);
    let again = d.wait_for_service("notifier", "says STATUS=again", |s| {
        s.status_text.as_deref() == Some("again")
    });
    assert_eq!(again.pid, Some(notifier));
    let _ = std::fs::remove_dir_all(&manager_dir);
}

#[test]
fn services_that_die_while_holdfast_re_executes_are_restarted_by_the_new_image() {
    let d = Daemon::start(
        r#"
[service.a]
command = ["sleep", "1000"]

[service.b]
command = ["sleep", "1000"]

[service.c]
command = ["sleep", "1000"]
"#,
    );
    let pids: Vec<u32> = ["a", "b", "c"].map(|n| d.running_pid(n)).into();
    let daemon = d.host_pid();
    // Each dies before, during or after the handover: whichever image reaps it, its
    // exit is seen once and the service restarted once.
    let mut upgrade = support::holdfast();
    upgrade
        .args(["upgrade", "--self", "-s"])
        .arg(d.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let upgrading = upgrade.spawn().expect("upgrade --self runs");
    for pid in &pids {
        kill_9(*pid);
    }
    let out = upgrading
        .wait_with_output()
        .expect("upgrade --self finishes");
    assert!(out.status.success(), "{}", describe(&out));
    for (name, pid) in ["a", "b", "c"].into_iter().zip(pids) {
        let again = d.wait_for_service(name, "runs again", |s| {
            s.state == "running" && s.pid.is_some_and(|p| p != pid)
        });
        assert_eq!(again.restarts, 1, "{name} restarted once: {again:?}");
        assert!(children(daemon).contains(&again.pid.expect("running")));
    }
    assert_eq!(d.status().daemon.execs, 1);
}

#[test]
fn upgrade_self_to_a_holdfast_that_refuses_the_config_goes_back_to_the_running_one() {
    use std::os::unix::fs::PermissionsExt;

    let bin_dir = std::env::temp_dir().join(format!("holdfast-back-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let bin = bin_dir.join("holdfast");
    let _ = std::fs::remove_file(&bin);
    std::fs::hard_link(support::holdfast_bin(), &bin).expect("link the binary");
    let d = Daemon::start_from(&bin, SERVICES);
    let idle = d.running_pid("idle");
    let daemon = d.host_pid();

    // A "new build" whose reading of the config fails where the running one's passes:
    // here, it reads another, broken file.
    let broken = bin_dir.join("broken.toml");
    std::fs::write(&broken, "[service.x\n").expect("write");
    deploy(&bin, |staged| {
        let script = format!(
            "#!/bin/sh\nexec {} up -c {}\n",
            support::holdfast_bin().display(),
            broken.display()
        );
        std::fs::write(staged, script).expect("write");
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    });
    let out = d.cli(&["upgrade", "--self"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("did not take over"),
        "says why: {}",
        describe(&out)
    );
    let status = d.status();
    assert_eq!(
        status.daemon.pid, daemon,
        "the same process, back to its binary"
    );
    assert_eq!(status.daemon.execs, 0);
    assert_eq!(support::service(&status, "idle").pid, Some(idle));
    kill_9(idle);
    d.wait_for_service("idle", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != idle)
    });
    let _ = std::fs::remove_dir_all(&bin_dir);
}

#[test]
fn output_written_while_holdfast_re_executes_reaches_the_log_whole_and_in_order() {
    let d = Daemon::start(
        r#"
[service.counter]
command = ["/bin/sh", "-c", "i=0; while :; do printf 'line-'; sleep 0.001; echo $i; i=$((i+1)); done"]
"#,
    );
    let count = |d: &Daemon| {
        d.log("counter")
            .lines()
            .filter(|l| l.contains("stdout"))
            .count()
    };
    d.wait_until("the counter wrote 200 lines", |d| count(d) >= 200);
    for _ in 0..3 {
        d.cli_ok(&["upgrade", "--self"]);
    }
    let after = count(&d) + 500;
    d.wait_until("the counter wrote 500 lines more", |d| count(d) >= after);
    d.cli_ok(&["stop", "counter"]);

    let log = d.log("counter");
    let numbers: Vec<u64> = log
        .lines()
        .filter(|l| l.contains(" stdout ") && !l.contains("[no newline]"))
        .map(|l| {
            let text = l.rsplit("stdout   ").next().unwrap_or_default();
            text.strip_prefix("line-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a whole line: {l:?}\n{log}"))
        })
        .collect();
    assert!(numbers.len() >= after, "{} lines", numbers.len());
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i as u64, "no line lost, split or out of order");
    }
    assert_eq!(d.status().daemon.execs, 3);
}

/// The sockets holdfast holds (`socket:[inode]`).
fn sockets_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.display().to_string())
                .filter(|t| t.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn upgrade_self_keeps_the_listen_sockets_and_the_next_run_gets_the_same_one() {
    let port = support::free_port();
    let d = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}"]
listen = ["tcp://127.0.0.1:{port}"]
ready = "notify"
"#
    ));
    let web = d.running_pid("web");
    let socket = std::fs::read_link(format!("/proc/{web}/fd/3"))
        .expect("the service got fd 3")
        .display()
        .to_string();
    let daemon = d.host_pid();
    assert!(sockets_of(daemon).contains(&socket), "holdfast holds it");

    d.cli_ok(&["upgrade", "--self"]);
    assert!(
        sockets_of(daemon).contains(&socket),
        "the new image holds the same socket"
    );
    assert!(requests(port) > 0, "served");
    kill_9(web);
    let again = d.wait_for_service("web", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != web)
    });
    let fd3 = std::fs::read_link(format!("/proc/{}/fd/3", again.pid.expect("running")))
        .expect("the new run got fd 3");
    assert_eq!(
        fd3.display().to_string(),
        socket,
        "not bound again: the same socket"
    );
    assert!(requests(port) > 0, "served by the new run");
}

#[test]
fn a_link_flipped_while_holdfast_re_executes_is_rolled_out_by_one_image_or_the_other() {
    let deploy = Deploy::new();
    let build = |name: &str| {
        let server = deploy.build(name, "#!/bin/sh\nexec sleep 1000\n", 0o755);
        std::fs::canonicalize(server).expect("exists")
    };
    build("a");
    deploy.flip("builds/a");
    let d = Daemon::start(&format!(
        r#"
[service.api]
command = ["{link}/server"]
start_secs = "0s"

[service.api.upgrade]
mode = "reuseport"
watch = "{link}"
drain = "5s"
bake = "1s"
"#,
        link = deploy.current().display()
    ));
    d.running_pid("api");
    let b = build("b");
    deploy.flip("builds/b");
    // Whichever image sees the flip rolls it out; meanwhile the upgrade is refused as in
    // flight, and asked again.
    d.wait_until("holdfast re-executed", |d| {
        d.cli(&["upgrade", "--self"]).status.success()
    });
    d.wait_for_service("api", "runs build b", |s| {
        s.upgrade
            .as_ref()
            .is_some_and(|u| u.build == b.display().to_string() && u.rollout.is_none())
    });
}

#[test]
fn upgrade_self_under_load_through_the_proxy_fails_no_request_and_keeps_the_runs() {
    let (http, tcp) = (support::free_port(), support::free_port());
    let d = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}"]
listen = ["tcp://127.0.0.1:{http}"]
ready = {{ tcp = "127.0.0.1:{{port}}" }}

[service.web.upgrade]
mode = "proxy"

[service.raw]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}"]
listen = ["tcp://127.0.0.1:{tcp}"]
ready = {{ tcp = "127.0.0.1:{{port}}" }}

[service.raw.upgrade]
mode = "proxy"
proxy = "tcp"
"#
    ));
    let pids = [d.running_pid("web"), d.running_pid("raw")];
    // Keep-alive through the HTTP proxy; a connection per request through the TCP one
    // (an opaque stream ends only when a side closes it).
    let loads = [wrk(http, false), wrk(tcp, true)];
    d.wait_until("both proxies are under load", |_| {
        requests(http) > 100 && requests(tcp) > 100
    });

    upgrade_self_twice_failing_no_request(&d, loads);
    let status = d.status();
    assert_eq!(status.daemon.execs, 2);
    for (name, pid) in ["web", "raw"].into_iter().zip(pids) {
        let service = support::service(&status, name);
        assert_eq!(service.pid, Some(pid), "{name} kept its run: {service:?}");
        assert_eq!(service.restarts, 0, "{name}");
    }
    // The new image routes as the old one did, and follows the next run.
    let served = requests(http);
    assert!(served > 0, "the proxy serves on");
    d.cli_ok(&["restart", "web"]);
    let web = d.running_pid("web");
    assert_ne!(web, pids[0]);
    d.wait_until("the new run is routed", |_| {
        let n = requests(http);
        n > 0 && n < served
    });
}

#[test]
fn a_proxied_run_still_starting_across_upgrade_self_gets_ready_on_its_private_port() {
    let public = support::free_port();
    let d = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}", "--slow-start", "3s"]
listen = ["tcp://127.0.0.1:{public}"]
ready = {{ tcp = "127.0.0.1:{{port}}" }}
autostart = false

[service.web.upgrade]
mode = "proxy"
"#
    ));
    d.cli_ok(&["start", "--no-block", "web"]);
    d.wait_for_service("web", "starting", |s| s.state == "starting");
    let pid = d.status().services[0].pid;
    d.cli_ok(&["upgrade", "--self"]);
    d.wait_for_service("web", "running after its slow start", |s| {
        s.state == "running"
    });
    let status = d.status();
    assert_eq!(status.daemon.execs, 1);
    assert_eq!(support::service(&status, "web").pid, pid, "the same run");
    assert!(requests(public) > 0, "routed through the new image's proxy");
}

#[test]
fn a_request_waiting_for_a_restarting_run_behind_the_proxy_across_upgrade_self_is_answered() {
    let public = support::free_port();
    let d = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}"]
listen = ["tcp://127.0.0.1:{public}"]
ready = {{ tcp = "127.0.0.1:{{port}}" }}
restart = "always"
restart_sec = "2s"

[service.web.upgrade]
mode = "proxy"
"#
    ));
    let first = d.running_pid("web");
    support::kill_9(first);
    d.wait_for_service("web", "waiting to restart", |s| {
        s.pid != Some(first) && s.state != "running"
    });
    // Accepted by the old image and held for a route, or waiting in the backlog for
    // the new one: answered either way, by the run that comes next.
    let waiting = std::thread::spawn(move || requests(public));
    let out = d.cli_ok(&["upgrade", "--self"]);
    assert!(
        stdout(&out).contains("re-execution 1"),
        "{}",
        describe(&out)
    );
    assert!(waiting.join().expect("the client") > 0, "answered with 200");
    assert_ne!(d.running_pid("web"), first);
}
