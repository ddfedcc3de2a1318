//! "Readiness means running": a service with `ready` is `running` as soon as it is ready
//! (its `start_secs` defaults to 0), so a dependent `after` it is spawned right then. An
//! explicit `start_secs` still applies. Driven through the real daemon and CLI.

mod support;

use holdfast::control::protocol::EventRecord;
use support::{Daemon, stdout};

/// `db` waits for the file `go` in the test directory, then sends READY=1; `api` starts
/// after it.
fn config(db_extra: &str) -> String {
    format!(
        r#"
[service.db]
command = ["/bin/sh", "-c", "while [ ! -e {{DIR}}/go ]; do sleep 0.05; done; systemd-notify --ready; exec sleep 1000"]
ready = "notify"
{db_extra}

[service.api]
command = ["sleep", "1000"]
after = ["db"]
"#
    )
}

fn events(daemon: &Daemon) -> Vec<EventRecord> {
    stdout(&daemon.cli_ok(&["events", "--json"]))
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event record per line"))
        .collect()
}

/// `(service, kind)` of each service event from `db`'s `became_ready` on.
fn since_ready(events: &[EventRecord]) -> Vec<(String, String)> {
    let labelled: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| Some((e.service.as_ref()?.to_string(), e.kind.clone())))
        .collect();
    let ready = labelled
        .iter()
        .position(|(s, k)| s == "db" && k == "became_ready")
        .expect("db became ready");
    labelled[ready..].to_vec()
}

/// Lets `db` send READY=1 once both services are where the test expects them.
fn release_db(daemon: &Daemon) {
    daemon.wait_for_service("db", "is starting", |s| s.state == "starting");
    daemon.wait_for_service("api", "waits for db", |s| s.state == "waiting");
    std::fs::write(daemon.dir().join("go"), "").expect("create the go file");
}

fn wait_ready(daemon: &Daemon) {
    daemon.wait_until("db became ready", |d| {
        events(d).iter().any(|e| e.kind == "became_ready")
    });
}

fn label(service: &str, kind: &str) -> (String, String) {
    (service.to_owned(), kind.to_owned())
}

#[test]
fn a_notify_service_is_running_at_ready_and_its_dependent_is_spawned_right_after() {
    let daemon = Daemon::start(&config(""));
    release_db(&daemon);
    wait_ready(&daemon);
    // Started comes with readiness (the same step of the daemon), so once the event is
    // out the status already says running.
    assert_eq!(daemon.service("db").state, "running");
    let api = daemon.wait_for_service("api", "is spawned", |s| s.pid.is_some());
    assert_ne!(api.state, "waiting");
    let after_ready = since_ready(&events(&daemon));
    assert_eq!(
        after_ready[..3],
        [
            label("db", "became_ready"),
            label("db", "started"),
            label("api", "spawned"),
        ],
        "db is started at its readiness and api spawned right after: {after_ready:?}"
    );
}

#[test]
fn an_explicit_start_secs_keeps_a_ready_service_starting_and_its_dependent_waiting() {
    let daemon = Daemon::start(&config("start_secs = \"1h\""));
    release_db(&daemon);
    wait_ready(&daemon);
    assert_eq!(
        daemon.service("db").state,
        "starting",
        "ready, but not up for start_secs yet"
    );
    assert_eq!(daemon.service("api").state, "waiting");
    let after_ready = since_ready(&events(&daemon));
    assert_eq!(after_ready, [label("db", "became_ready")]);
}
