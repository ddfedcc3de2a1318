//! `holdfast status` tells the story: memory and tasks from the cgroup, why the last
//! restart happened, what a waiting service waits for; and `--socket` is optional.

mod support;

use holdfast::control::protocol::RestartReason;
use support::{Daemon, describe, stdout};

#[test]
fn status_shows_memory_and_tasks_from_the_cgroup() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"]
start_secs = "0s"
"#,
    );
    let web = daemon.wait_for_service("web", "both children run", |s| {
        s.state == "running" && s.tasks == Some(3)
    });
    assert!(
        web.memory_bytes.is_some_and(|bytes| bytes > 0),
        "memory is charged to the cgroup: {web:?}"
    );

    let output = daemon.cli_ok(&["status"]);
    let table = stdout(&output);
    let header = table.lines().nth(1).expect("a header line");
    assert!(
        header.contains(" MEM ") && header.contains(" TASKS "),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .expect("a row for web");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[5], "3", "the TASKS column: {table}");
    assert!(
        cells[4].ends_with(['K', 'M', 'G']),
        "the MEM column is a size: {table}"
    );
}

#[test]
fn status_says_why_the_last_restart_happened() {
    let daemon = Daemon::start(
        r#"
[service.flaky]
command = ["/bin/sh", "-c", "if [ -e {DIR}/ran ]; then exec sleep 1000; fi; touch {DIR}/ran; exit 3"]
start_secs = "0s"

[service.hung]
command = ["/bin/sh", "-c", "systemd-notify --ready; exec sleep 1000"]
ready = "notify"
watchdog = "1s"
start_secs = "0s"
"#,
    );
    let flaky = daemon.wait_for_service("flaky", "restarted once and running", |s| {
        s.state == "running" && s.restarts == 1
    });
    assert_eq!(
        flaky.last_restart_reason,
        Some(RestartReason::Exit {
            description: "exited 3".to_owned(),
            code: Some(3),
            signal: None,
            early: false,
        })
    );
    let hung = daemon.wait_for_service("hung", "restarted by the watchdog", |s| {
        s.last_restart_reason.is_some()
    });
    assert_eq!(
        hung.last_restart_reason,
        Some(RestartReason::Watchdog { interval_ms: 1000 })
    );

    // The watchdog-restarted service may be between runs: status exits 0 or 3.
    let table = stdout(&daemon.cli(&["status"]));
    assert!(
        table.contains("flaky: running\n  last restart: exited 3\n"),
        "{table}"
    );
    assert!(
        table.contains("last restart: watchdog: no keep-alive within 1s"),
        "{table}"
    );
    let json = stdout(&daemon.cli(&["status", "--json"]));
    assert!(
        json.contains(r#""kind": "watchdog""#) && json.contains(r#""interval_ms": 1000"#),
        "{json}"
    );
}

#[test]
fn a_waiting_service_says_which_dependency_and_what_it_waits_for() {
    let daemon = Daemon::start(
        r#"
[service.db]
command = ["sleep", "1000"]
ready = "notify"
start_timeout = "infinity"

[service.api]
command = ["sleep", "1000"]
after = ["db"]
"#,
    );
    let api = daemon.wait_for_service("api", "waits", |s| s.state == "waiting");
    assert_eq!(
        api.reason.as_deref(),
        Some("waiting for db (starting: waiting for READY=1 (no timeout))")
    );
    let output = daemon.cli(&["status"]);
    assert_eq!(output.status.code(), Some(3), "waiting is no wanted state");
    let table = stdout(&output);
    assert!(
        table.contains("api: waiting: waiting for db (starting: waiting for READY=1"),
        "{table}"
    );
}

fn status_help(socket_env: Option<&str>) -> String {
    let mut cmd = support::holdfast();
    cmd.args(["status", "--help"]);
    if let Some(socket) = socket_env {
        cmd.env("HOLDFAST_SOCKET", socket);
    }
    let output = support::run(cmd);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    stdout(&output)
}

#[test]
fn socket_is_an_option_with_or_without_holdfast_socket_set() {
    for env in [None, Some("/run/elsewhere.sock")] {
        let help = status_help(env);
        assert!(
            help.contains("Usage: holdfast status [OPTIONS]"),
            "--socket is not a required argument:\n{help}"
        );
        let line = help
            .lines()
            .find(|l| l.contains("--socket <SOCKET>"))
            .unwrap_or_else(|| panic!("--socket is listed:\n{help}"));
        assert!(line.contains("[env: HOLDFAST_SOCKET="), "{line}");
        if let Some(socket) = env {
            assert!(line.contains(socket), "the value in force is shown: {line}");
        }
    }
}
