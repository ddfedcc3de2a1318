//! `after` ordering: a dependent starts once its dependency runs, and stops first.

mod support;

use holdfast::control::protocol::EventRecord;
use support::{Daemon, line_index};

#[test]
fn after_dependency_starts_first_and_stops_last() {
    let mut daemon = Daemon::start(
        r#"
[service.db]
command = ["sleep", "1000"]
start_secs = "500ms"

[service.api]
command = ["sleep", "1000"]
after = ["db"]
start_secs = "0s"
"#,
    );
    daemon.wait_for("both services run", |status| {
        status
            .services
            .iter()
            .all(|s| s.state == "running")
            .then_some(())
    });

    // holdfast logs every event on stderr, in the order it applied them.
    let log = daemon.stderr();
    let find = |needle: &str| {
        line_index(&log, needle)
            .unwrap_or_else(|| daemon.fail(&format!("no {needle:?} in holdfast's log")))
    };
    let db_started = find(" db: started");
    let api_spawned = find(" api: spawned");
    assert!(
        db_started < api_spawned,
        "api is spawned only once db is up (start_secs passed):\n{log}"
    );

    daemon.cli_ok(&["shutdown"]);
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "holdfast exits cleanly after shutdown: {status}"
    );

    let log = daemon.stderr();
    let find = |needle: &str| {
        line_index(&log, needle)
            .unwrap_or_else(|| panic!("no {needle:?} in holdfast's log:\n{log}"))
    };
    let api_stopped = find(" api: stopped");
    let db_stopping = find(" db: stopping");
    let db_stopped = find(" db: stopped");
    assert!(
        api_stopped < db_stopping && db_stopping < db_stopped,
        "db is asked to stop only after api has stopped:\n{log}"
    );
}

/// `slow` takes a second to stop (it ignores SIGTERM until SIGKILL) and a second to be
/// ready again; `dependent` stops at once. `{VERSION}` is what a reload changes.
const SLOW_AND_DEPENDENT: &str = r#"
[service.slow]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--ignore-sigterm", "--slow-start", "1s"]
ready = "notify"
start_secs = "0s"
stop = { signal = "TERM", timeout = "1s" }
env = { VERSION = "{VERSION}" }

[service.dependent]
command = ["sleep", "1000"]
after = ["slow"]
start_secs = "0s"
env = { VERSION = "{VERSION}" }
"#;

#[test]
fn reload_restarts_a_dependent_only_after_its_changed_dependency_is_ready() {
    let daemon = Daemon::start(&SLOW_AND_DEPENDENT.replace("{VERSION}", "1"));
    daemon.wait_for("both services run", |status| {
        status
            .services
            .iter()
            .all(|s| s.state == "running")
            .then_some(())
    });
    let before = support::event_records(&daemon.cli_ok(&["events", "--json"]))
        .last()
        .map_or(0, |e| e.seq);

    daemon.write_config(&SLOW_AND_DEPENDENT.replace("{VERSION}", "2"));
    daemon.cli_ok(&["reload"]);
    let since_reload = |d: &Daemon| -> Vec<EventRecord> {
        support::event_records(&d.cli_ok(&["events", "--json"]))
            .into_iter()
            .filter(|e| e.seq > before)
            .collect()
    };
    daemon.wait_until("dependent is spawned again and both run", |d| {
        since_reload(d)
            .iter()
            .any(|e| is(e, "dependent", "spawned"))
            && d.status().services.iter().all(|s| s.state == "running")
    });

    let events = since_reload(&daemon);
    let seq = |service: &str, kind: &str| {
        events
            .iter()
            .find(|e| is(e, service, kind))
            .map(|e| e.seq)
            .unwrap_or_else(|| {
                daemon.fail(&format!(
                    "no {service} {kind} after the reload: {events:#?}"
                ))
            })
    };
    assert!(
        seq("dependent", "stopped") < seq("slow", "stopped"),
        "the scenario: dependent's stop ends first, while slow is still stopping"
    );
    assert!(
        seq("slow", "became_ready") < seq("dependent", "spawned"),
        "dependent is spawned only once slow is ready again: {events:#?}"
    );
}

fn is(event: &EventRecord, service: &str, kind: &str) -> bool {
    event
        .service
        .as_ref()
        .is_some_and(|s| s.as_str() == service)
        && event.kind == kind
}
