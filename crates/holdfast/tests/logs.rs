//! Captured output through the daemon, and how the CLI reports control errors.

mod support;

use support::{Daemon, describe, holdfast, run, stderr, stdout};

#[test]
fn logs_shows_the_last_lines_a_service_wrote() {
    // stdout and stderr are captured through separate pipes, so their relative order is
    // not preserved: the service writes each phase only once told to, so that holdfast's
    // notes about its start come first, then the stderr line, then the stdout lines.
    let daemon = Daemon::start(
        r#"
[service.chatty]
command = ["/bin/sh", "-c", "while [ ! -e go1 ]; do sleep 0.02; done; echo a warning >&2; while [ ! -e go2 ]; do sleep 0.02; done; echo first line; echo second line; echo third line; exec sleep 1000"]
working_dir = "{DIR}"
start_secs = "0s"
"#,
    );
    daemon.wait_for_service("chatty", "is running", |s| s.state == "running");
    std::fs::write(daemon.dir().join("go1"), "").expect("failed to create go1");
    daemon.wait_until("chatty's stderr is captured", |d| {
        d.log("chatty").contains("a warning")
    });
    std::fs::write(daemon.dir().join("go2"), "").expect("failed to create go2");
    daemon.wait_until("chatty's stdout is captured", |d| {
        d.log("chatty").contains("third line")
    });

    let output = daemon.cli_ok(&["logs", "chatty", "-n", "2"]);

    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "exactly the last two lines:\n{text}");
    assert!(lines[0].contains("second line"), "{text}");
    assert!(lines[1].contains("third line"), "{text}");

    let output = daemon.cli_ok(&["logs", "chatty", "-n", "4"]);
    let text = stdout(&output);
    assert!(
        text.lines().next().is_some_and(|l| l.contains("a warning")),
        "stderr is captured in the same log, in the order it arrived:\n{text}"
    );
}

#[test]
fn stopping_an_unknown_service_fails_and_names_it() {
    let daemon = Daemon::start(
        r#"
[service.real]
command = ["sleep", "1000"]
"#,
    );

    let output = daemon.cli(&["stop", "nosuch"]);

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains(r#"no service named "nosuch""#),
        "{}",
        describe(&output)
    );
    assert_eq!(
        daemon.service("real").restarts,
        0,
        "other services are untouched"
    );
}

#[test]
fn status_without_a_daemon_exits_4() {
    let mut cmd = holdfast();
    cmd.args(["status", "-s", "/nonexistent/holdfast.sock"]);

    let output = run(cmd);

    assert_eq!(output.status.code(), Some(4), "{}", describe(&output));
    assert!(
        stderr(&output).contains("/nonexistent/holdfast.sock"),
        "the error names the socket it tried: {}",
        describe(&output)
    );
}
