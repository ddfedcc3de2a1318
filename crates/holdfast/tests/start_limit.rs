//! The start limit: too many automatic restarts in an interval put a service in `failed`
//! until it is started by hand.

mod support;

use support::{Daemon, describe, stdout};

const FLAPPY: &str = r#"
[service.flappy]
command = ["/bin/sh", "-c", "exit 1"]
restart = "on-failure"
restart_sec = "50ms"
start_secs = "0s"
start_limit = { interval = "10s", burst = 3 }
"#;

#[test]
fn a_service_crashing_past_the_burst_fails_and_says_why() {
    let daemon = Daemon::start(FLAPPY);

    let failed = daemon.wait_for_service("flappy", "has failed", |s| s.state == "failed");
    assert_eq!(
        failed.restarts, 3,
        "three restarts, then the 4th crash gives up"
    );
    assert_eq!(failed.pid, None, "nothing runs: {failed:?}");
    assert_eq!(failed.last_exit.as_ref().and_then(|e| e.code), Some(1));
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("start limit"),
        "the reason names the start limit: {reason:?}"
    );

    let output = daemon.cli(&["status"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "status exits 3 with a failed service: {}",
        describe(&output)
    );
    let table = stdout(&output);
    let row = table
        .lines()
        .find(|line| line.contains("flappy"))
        .unwrap_or_else(|| panic!("status table has a row for flappy:\n{table}"));
    assert!(row.contains("failed"), "the row shows the state: {table}");
    assert!(
        table.contains("start limit"),
        "the table says why it failed:\n{table}"
    );
}

#[test]
fn start_revives_a_failed_service_with_a_fresh_limit() {
    let daemon = Daemon::start(FLAPPY);
    daemon.wait_for_service("flappy", "has failed", |s| s.state == "failed");

    daemon.cli_ok(&["start", "flappy"]);

    // The start by hand is not an automatic restart; the limit begins anew, so the
    // service fails again after three more restarts.
    let again = daemon.wait_for_service("flappy", "has failed again after 3 more restarts", |s| {
        s.state == "failed" && s.restarts == 6
    });
    let reason = again.reason.unwrap_or_default();
    assert!(reason.contains("start limit"), "reason: {reason:?}");
}
