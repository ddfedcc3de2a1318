//! The control socket under abuse.

mod support;

use std::fs::File;
use std::process::Command;

use support::{Daemon, TAG_VAR, demo_app};

#[test]
fn a_control_connection_flood_is_capped_and_services_keep_restarting() {
    // With 256 fds for holdfast, a few hundred idle connections would exhaust them. The
    // flood comes from uid 65534, let in through the control group.
    let daemon = Daemon::start_with_nofile(
        r#"
control_group = "nogroup"

[service.crashy]
command = ["/bin/sh", "-c", "sleep 0.2; exit 1"]
restart = "always"
restart_sec = "0s"
start_limit = { interval = "1s", burst = 20 }
"#,
        256,
    );
    daemon.wait_for_service("crashy", "has restarted", |s| s.restarts >= 1);
    let flood_out = daemon.dir().join("flood.out");
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(demo_app())
        .arg("--flood-control")
        .arg(daemon.socket())
        .args(["--flood-connections", "300"])
        .env(TAG_VAR, daemon.tag())
        .stdout(File::create(&flood_out).expect("failed to create flood.out"))
        .spawn()
        .expect("failed to start the flood");
    let flood_said = || std::fs::read_to_string(&flood_out).unwrap_or_default();
    daemon.wait_until("the daemon has answered the flood", |_| {
        !flood_said().is_empty()
    });

    let restarts = daemon.service("crashy").restarts;
    daemon.wait_for("crashy keeps being respawned during the flood", |status| {
        let crashy = support::service(status, "crashy");
        if crashy.state == "failed" {
            daemon.fail(&format!("crashy failed: {}", support::pretty(crashy)));
        }
        (crashy.restarts >= restarts + 5).then_some(())
    });
    // Answered: 0, or 3 while crashy is between two runs (not unreachable, not busy).
    let output = daemon.cli(&["status"]);
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "status answers during the flood: {}",
        support::describe(&output)
    );
    daemon.wait_until("the excess connections are refused, saying why", |_| {
        flood_said().contains("too many control connections from uid 65534")
    });

    flood.kill().expect("failed to stop the flood");
    flood.wait().expect("failed to reap the flood");
    let restarts = daemon.service("crashy").restarts;
    daemon.wait_for("crashy keeps being respawned after the flood", |status| {
        let crashy = support::service(status, "crashy");
        if crashy.state == "failed" {
            daemon.fail(&format!("crashy failed: {}", support::pretty(crashy)));
        }
        (crashy.restarts >= restarts + 3).then_some(())
    });
}
