//! The control socket under abuse.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

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

/// Sends a following `events` request on a new connection to `socket`.
fn follow_events(socket: &std::path::Path) -> BufReader<UnixStream> {
    let mut stream = UnixStream::connect(socket).expect("the daemon listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("failed to set a read timeout");
    stream
        .write_all(b"{\"v\":1,\"request\":{\"cmd\":\"events\",\"follow\":true}}\n")
        .expect("failed to send the request");
    BufReader::new(stream)
}

/// The next line of a follower, parsed.
fn next_line(follower: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    follower.read_line(&mut line).expect("a line comes");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a response line ({e}): {line:?}"))
}

#[test]
fn followers_cannot_take_the_connections_one_shot_requests_of_their_uid_need() {
    // 256 fds: at most 64 connections per uid, of which 56 may follow.
    let daemon = Daemon::start_with_nofile(
        r#"
[service.idle]
command = ["/bin/sleep", "1000"]
"#,
        256,
    );
    daemon.wait_for_service("idle", "is running", |s| s.state == "running");
    // Each follower has its history line before the next connects: it holds its slot.
    let held: Vec<_> = (0..56)
        .map(|_| {
            let mut follower = follow_events(&daemon.socket());
            let first = next_line(&mut follower);
            assert!(first.get("ok").is_some(), "a follower streams: {first}");
            follower
        })
        .collect();

    let mut refused = follow_events(&daemon.socket());
    let answer = next_line(&mut refused);
    assert_eq!(
        answer["error"]["kind"], "busy",
        "one follower more: {answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("too many following control connections from uid 0 (at most 56"),
        "the refusal names the followers' limit: {message}"
    );

    let output = daemon.cli(&["status"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "status answers beside the followers: {}",
        support::describe(&output)
    );
    drop(held);
}
