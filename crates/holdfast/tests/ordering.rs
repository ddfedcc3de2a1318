//! `after` ordering: a dependent starts once its dependency runs, and stops first.

mod support;

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
