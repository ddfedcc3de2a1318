//! Many services at once (names, `all`, `@group`) and the verbs `signal` and
//! `reset-failed`, driven through the real CLI: output and exit code.

mod support;

use std::collections::BTreeMap;
use std::fs;

use support::{Daemon, stderr, stdout};

/// Two services in group `backend`, one without a group.
const THREE: &str = r#"
[service.api]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0"]
service_group = "backend"

[service.worker]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0"]
service_group = "backend"

[service.web]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0"]
"#;

/// Every service running; their pids by name.
fn all_running(d: &Daemon) -> BTreeMap<String, u32> {
    d.wait_for("every service runs", |status| {
        let running = status.services.iter().all(|s| s.state == "running");
        running.then(|| {
            status
                .services
                .iter()
                .map(|s| (s.name.to_string(), s.pid.expect("running has a pid")))
                .collect()
        })
    })
}

#[test]
fn restart_of_a_group_restarts_exactly_the_services_of_the_group() {
    let d = Daemon::start(THREE);
    let before = all_running(&d);
    assert_eq!(d.service("api").group.as_deref(), Some("backend"));
    assert_eq!(d.service("web").group, None);

    let output = d.cli_ok(&["restart", "@backend"]);
    let text = stdout(&output);
    assert!(
        text.contains("api: running") && text.contains("worker: running"),
        "{text}"
    );
    assert!(!text.contains("web"), "web is not in the group: {text}");

    let after = d.wait_for("api and worker run new processes", |status| {
        let pids: BTreeMap<String, u32> = status
            .services
            .iter()
            .filter(|s| s.state == "running")
            .filter_map(|s| Some((s.name.to_string(), s.pid?)))
            .collect();
        let restarted = ["api", "worker"]
            .iter()
            .all(|n| pids.get(*n).is_some_and(|p| *p != before[*n]));
        (restarted && pids.len() == 3).then_some(pids)
    });
    assert_eq!(after["web"], before["web"], "web kept its process");
}

#[test]
fn stop_all_stops_every_service() {
    let d = Daemon::start(THREE);
    let before = all_running(&d);

    let output = d.cli_ok(&["stop", "all"]);
    let text = stdout(&output);
    for name in ["api", "web", "worker"] {
        assert!(text.contains(&format!("{name}: stopped")), "{text}");
    }
    d.wait_until("every service is stopped", |d| {
        d.status().services.iter().all(|s| s.state == "stopped")
    });
    for (name, pid) in before {
        assert!(!support::is_alive(pid), "{name}'s pid {pid} is gone");
    }
}

#[test]
fn an_unknown_name_or_group_is_an_error_and_touches_no_service() {
    let d = Daemon::start(THREE);
    let before = all_running(&d);

    let output = d.cli(&["stop", "web", "wev2"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        support::describe(&output)
    );
    assert!(
        stderr(&output).contains("no service named \"wev2\""),
        "{}",
        support::describe(&output)
    );
    assert!(stdout(&output).is_empty(), "nothing was sent");

    let output = d.cli(&["restart", "@backnd"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        support::describe(&output)
    );
    let err = stderr(&output);
    assert!(
        err.contains("no group named \"backnd\"") && err.contains("did you mean \"@backend\"?"),
        "{err}"
    );

    assert_eq!(all_running(&d), before, "no service was touched");
}

#[test]
fn signal_hup_reaches_the_main_process_of_the_service() {
    let d = Daemon::start(
        r#"
[service.web]
command = ["sh", "-c", "trap 'echo got SIGHUP' HUP; echo trap set; while :; do sleep 60 & wait $!; done"]

[service.idle]
command = ["sleep", "600"]
autostart = false
"#,
    );
    let web = d.wait_for_service("web", "runs", |s| s.state == "running");
    d.wait_until("the trap is set", |d| d.log("web").contains("trap set"));

    let output = d.cli_ok(&["signal", "web", "HUP"]);
    let pid = web.pid.expect("running");
    assert_eq!(
        stdout(&output).trim(),
        format!("sent SIGHUP to web (main pid {pid})")
    );
    d.wait_until("the service logs the HUP", |d| {
        d.log("web").contains("got SIGHUP")
    });
    assert_eq!(d.service("web").pid, Some(pid), "HUP did not end it");

    let output = d.cli(&["signal", "idle", "SIGHUP"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        support::describe(&output)
    );
    assert!(
        stderr(&output).contains("cannot send SIGHUP to idle: it is stopped, no process runs"),
        "{}",
        support::describe(&output)
    );

    let output = d.cli(&["signal", "web", "HUPP"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        support::describe(&output)
    );
    assert!(
        stderr(&output).contains("unknown signal \"HUPP\""),
        "{}",
        support::describe(&output)
    );
}

#[test]
fn signal_all_reaches_every_process_of_the_service() {
    let d = Daemon::start(
        r#"
[service.web]
command = ["sh", "-c", "sh -c 'trap \"echo child got SIGUSR1\" USR1; echo child ready; while :; do sleep 60 & wait $!; done' & trap 'echo main got SIGUSR1' USR1; while :; do sleep 60 & wait $!; done"]
"#,
    );
    d.wait_for_service("web", "runs", |s| s.state == "running");
    d.wait_until("the child's trap is set", |d| {
        d.log("web").contains("child ready")
    });

    let output = d.cli_ok(&["signal", "--all", "web", "USR1"]);
    assert_eq!(
        stdout(&output).trim(),
        "sent SIGUSR1 to every process of web"
    );
    d.wait_until("both processes log the signal", |d| {
        let log = d.log("web");
        log.contains("main got SIGUSR1") && log.contains("child got SIGUSR1")
    });
}

#[test]
fn reset_failed_turns_a_failed_service_into_stopped_with_a_fresh_start_limit() {
    let d = Daemon::start(
        r#"
[service.flappy]
command = ["/bin/sh", "-c", "exit 1"]
restart_sec = "50ms"
start_secs = "0s"
start_limit = { interval = "60s", burst = 3 }

[service.steady]
command = ["sleep", "600"]
"#,
    );
    d.wait_for_service("flappy", "has failed", |s| s.state == "failed");
    d.wait_for_service("steady", "runs", |s| s.state == "running");

    let output = d.cli_ok(&["reset-failed"]);
    assert_eq!(
        stdout(&output).trim(),
        "flappy: failed -> stopped, start limit reset"
    );
    let flappy = d.service("flappy");
    assert_eq!(flappy.state, "stopped", "{flappy:?}");
    assert_eq!(
        flappy.reason, None,
        "no failure left to explain: {flappy:?}"
    );
    assert_eq!(d.service("steady").state, "running", "untouched");
    let events = stdout(&d.cli_ok(&["events", "flappy"]));
    assert!(events.contains("failure reset"), "{events}");

    let again = d.cli_ok(&["reset-failed", "flappy"]);
    assert_eq!(stdout(&again).trim(), "flappy: stopped, start limit reset");
    let output = d.cli(&["reset-failed", "ghost"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        support::describe(&output)
    );
    assert!(stderr(&output).contains("no service named \"ghost\""));

    // A fresh limit: three restarts again before it fails.
    d.cli_ok(&["start", "flappy"]);
    let failed = d.wait_for_service("flappy", "fails again after 3 more restarts", |s| {
        s.state == "failed" && s.restarts == 6
    });
    assert!(
        failed.reason.unwrap_or_default().contains("start limit"),
        "fails for the start limit"
    );
}

/// A job quarantined by its exit 201, healed, then brought back with `verb`: the answer
/// says it was released, and it runs again.
fn quarantined_job_released_by(verb: &str) -> Daemon {
    let d = Daemon::start(
        r#"
[service.job]
command = ["sh", "-c", "if [ -e {DIR}/healed ]; then exec {DEMO_APP} --listen 127.0.0.1:0; else exec {DEMO_APP} --listen 127.0.0.1:0 --crash-after 300ms --exit-code 201; fi"]

[service.job.exit_codes]
201 = { action = "quarantine" }
"#,
    );
    d.wait_for_service("job", "is quarantined", |s| s.state == "quarantined");
    fs::write(d.dir().join("healed"), "").expect("marker is written");

    // The verb waits for the outcome; `--no-block` prints what the daemon did.
    let output = d.cli_ok(&[verb, "--no-block", "job"]);
    assert_eq!(
        stdout(&output).trim(),
        "released job from quarantine; starting job"
    );
    d.wait_for_service("job", "runs again", |s| s.state == "running");
    d
}

#[test]
fn start_of_a_quarantined_service_releases_it_and_records_the_release() {
    let d = quarantined_job_released_by("start");

    let queue =
        fs::read_to_string(d.dir().join("state/quarantine.jsonl")).expect("the queue file exists");
    let events: Vec<String> = queue
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            format!(
                "{} {}",
                record["event"].as_str().unwrap_or("?"),
                record["service"]
            )
        })
        .collect();
    assert_eq!(
        events,
        ["quarantined \"job\"", "released \"job\""],
        "{queue}"
    );
    let list = stdout(&d.cli_ok(&["quarantine", "list"]));
    assert!(list.contains("job  released"), "{list}");
}

#[test]
fn a_reload_that_changes_only_the_group_restarts_nothing() {
    let d = Daemon::start(THREE);
    let before = all_running(&d);
    d.write_config(&THREE.replace("service_group = \"backend\"", "service_group = \"jobs\""));

    let output = d.cli_ok(&["reload"]);
    let text = stdout(&output);
    assert!(!text.contains("changed (restart)"), "{text}");
    assert_eq!(d.service("api").group.as_deref(), Some("jobs"));
    assert_eq!(all_running(&d), before, "every service kept its process");

    let output = d.cli_ok(&["stop", "@jobs"]);
    assert!(stdout(&output).contains("worker: stopped"));
}

#[test]
fn restart_of_a_quarantined_service_releases_it_like_start() {
    let d = quarantined_job_released_by("restart");
    let list = stdout(&d.cli_ok(&["quarantine", "list"]));
    assert!(
        list.contains("job  released"),
        "no record stays pending: {list}"
    );
}
