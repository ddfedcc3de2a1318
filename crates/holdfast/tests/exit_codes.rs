//! `[service.X.exit_codes]` end to end: the demo app exits with chosen codes.
//!
//! Where a test needs the *next* process to behave differently, the command is a small
//! `sh -c` that `exec`s the demo app (so the pid is the app's) with or without its crash
//! flags depending on the environment or a marker file.

mod support;

use std::fs;

use support::Daemon;

fn environ(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect(),
    )
}

#[test]
fn exit_101_restarts_after_the_mapped_two_second_delay() {
    let d = Daemon::start(
        r#"
[service.app]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--crash-after", "300ms", "--exit-code", "101"]

[service.app.exit_codes]
101 = { action = "restart", delay = "2s" }
"#,
    );
    let backoff = d.wait_for_service("app", "waits to restart after exit 101", |s| {
        s.state == "backoff"
    });
    assert_eq!(
        backoff.last_exit.as_ref().and_then(|e| e.code),
        Some(101),
        "{backoff:?}"
    );
    d.wait_for_service("app", "was restarted", |s| s.restarts >= 1);
    let log = d.wait_log("app", "exit code 101 is mapped to restart after 2s");
    assert!(
        log.contains("restarting in 2s (attempt 1)"),
        "the reported delay is the mapped one, not restart_sec:\n{log}"
    );
}

#[test]
fn exit_102_restarts_with_db_host_overridden_in_the_new_process() {
    let d = Daemon::start(
        r#"
[service.db]
command = ["sh", "-c", "if [ \"$DB_HOST\" = db-standby ]; then exec {DEMO_APP} --listen 127.0.0.1:0; else exec {DEMO_APP} --listen 127.0.0.1:0 --crash-after 300ms --exit-code 102; fi"]
env = { DB_HOST = "db-primary" }

[service.db.exit_codes]
102 = { action = "restart", env = { DB_HOST = "db-standby" } }
"#,
    );
    let db = d.wait_for_service("db", "runs on the standby", |s| {
        s.state == "running" && s.restarts == 1
    });
    let pid = db.pid.expect("running");
    let env = environ(pid).expect("the new process is alive");
    assert!(
        env.iter().any(|e| e == "DB_HOST=db-standby"),
        "override in /proc/{pid}/environ: {env:?}"
    );
    assert_eq!(
        db.env_overrides.get("DB_HOST").map(String::as_str),
        Some("db-standby"),
        "status shows the active override"
    );
    let status = d.cli_ok(&["status"]);
    assert!(
        support::stdout(&status).contains("env overrides: DB_HOST=db-standby"),
        "{}",
        support::describe(&status)
    );
}

#[test]
fn exit_201_is_quarantined_recorded_and_released_by_hand() {
    let d = Daemon::start(
        r#"
[service.job]
command = ["sh", "-c", "if [ -e {DIR}/healed ]; then exec {DEMO_APP} --listen 127.0.0.1:0; else exec {DEMO_APP} --listen 127.0.0.1:0 --crash-after 300ms --exit-code 201; fi"]

[service.job.exit_codes]
201 = { action = "quarantine" }
"#,
    );
    let job = d.wait_for_service("job", "is quarantined", |s| s.state == "quarantined");
    assert_eq!(job.restarts, 0, "not restarted");
    assert_eq!(job.pid, None);

    let queue =
        fs::read_to_string(d.dir().join("state/quarantine.jsonl")).expect("the queue file exists");
    let lines: Vec<serde_json::Value> = queue
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1, "{queue}");
    assert_eq!(lines[0]["event"], "quarantined");
    assert_eq!(lines[0]["service"], "job");
    assert_eq!(lines[0]["code"], 201);
    assert!(
        lines[0]["log"]
            .as_array()
            .is_some_and(|log| log.iter().any(|l| l.to_string().contains("spawned pid"))),
        "the record carries the last log lines: {queue}"
    );

    let list = d.cli_ok(&["quarantine", "list"]);
    let text = support::stdout(&list);
    assert!(
        text.contains("job  PENDING") && text.contains("exited 201"),
        "{text}"
    );
    // Still quarantined: nothing restarts it on its own.
    assert_eq!(d.service("job").state, "quarantined");

    fs::write(d.dir().join("healed"), "").expect("marker is written");
    let release = d.cli_ok(&["quarantine", "release", "job"]);
    assert!(
        support::stdout(&release).contains("released job from quarantine"),
        "{}",
        support::describe(&release)
    );
    d.wait_for_service("job", "runs again", |s| s.state == "running");
    let list = support::stdout(&d.cli_ok(&["quarantine", "list"]));
    assert!(list.contains("job  released"), "{list}");
    let again = d.cli(&["quarantine", "release", "job"]);
    assert!(!again.status.success(), "nothing left to release");
}
