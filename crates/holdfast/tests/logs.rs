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

/// Index of every line of `log` for which `pred` holds.
fn line_indices(log: &str, pred: impl Fn(&str) -> bool) -> Vec<usize> {
    log.lines()
        .enumerate()
        .filter(|(_, line)| pred(line))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn an_unfinished_last_line_is_logged_as_its_own_record_before_the_next_run() {
    let daemon = Daemon::start(
        r#"
[service.crashy]
command = ["/bin/sh", "-c", "echo one; printf 'FATAL: x'; exit 3"]
restart = "always"
restart_sec = "0s"
start_limit = { interval = "120s", burst = 1000 }
"#,
    );
    daemon.wait_until("crashy has been spawned four times", |d| {
        d.log("crashy").matches("spawned pid").count() >= 4
    });

    let log = daemon.log("crashy");
    assert!(!log.contains("FATAL: xone"), "runs are glued:\n{log}");
    let spawns = line_indices(&log, |l| l.contains(" holdfast crashy: spawned pid"));
    let fatals = line_indices(&log, |l| l.ends_with(" stdout   FATAL: x [no newline]"));
    for run in 0..3 {
        let (spawned, next) = (spawns[run], spawns[run + 1]);
        assert!(
            fatals.iter().any(|&f| spawned < f && f < next),
            "run {run}'s unfinished line is a record of its own, marked, before the next \
             run's spawn:\n{log}"
        );
    }
}

#[test]
fn the_tail_of_a_long_line_without_newline_is_logged_while_the_service_runs() {
    let daemon = Daemon::start(
        r#"
[service.long]
command = ["/bin/sh", "-c", "head -c 20000 /dev/zero | tr '\\0' x; exec sleep 1000"]
"#,
    );
    let head = format!(
        " stdout   {} [no newline]",
        "x".repeat(holdfast::logs::MAX_LINE)
    );
    let tail = format!(
        " stdout   {} [no newline]",
        "x".repeat(20_000 - holdfast::logs::MAX_LINE)
    );

    daemon.wait_until("the tail of the long line is in the log", |d| {
        d.log("long").lines().any(|l| l.ends_with(&tail))
    });

    let log = daemon.log("long");
    let pieces = line_indices(&log, |l| l.contains(" stdout "));
    assert_eq!(pieces.len(), 2, "one record per piece:\n{log}");
    assert!(
        log.lines()
            .nth(pieces[0])
            .is_some_and(|l| l.ends_with(&head))
    );
    assert_eq!(
        daemon.service("long").state,
        "running",
        "the service still runs: only the idle line was flushed"
    );
}

#[test]
fn the_last_note_of_a_shutdown_is_in_the_log_once_the_daemon_has_exited() {
    // Notes are written by each capture's own task, off the supervisor's: the daemon
    // waits for them before it exits.
    let mut daemon = Daemon::start("[service.web]\ncommand = [\"sleep\", \"1000\"]\n");
    daemon.wait_for_service("web", "is running", |s| s.state == "running");

    daemon.cli_ok(&["shutdown"]);
    let status = daemon.wait_exit();

    assert!(status.success(), "holdfast exits cleanly: {status}");
    let log = daemon.log("web");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" holdfast web: stopped"),
        "the stop is the last line:\n{log}"
    );
}

#[test]
fn a_service_that_has_not_printed_has_no_log_file_and_its_logs_are_empty_until_it_prints() {
    let daemon = Daemon::start(
        r#"
[service.quiet]
command = ["/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo at last; exec sleep 1000"]
working_dir = "{DIR}"
start_secs = "0s"

[service.marker]
command = ["/bin/sh", "-c", "echo marker up; exec sleep 1000"]
start_secs = "0s"
"#,
    );
    daemon.wait_for_service("quiet", "is running", |s| s.state == "running");
    daemon.wait_until("marker has printed", |d| {
        d.log("marker").contains("marker up")
    });
    let path = daemon.dir().join("logs").join("quiet.log");
    assert!(
        !path.exists(),
        "holdfast's notes about a spawn alone create no file"
    );
    for args in [&["logs", "quiet"][..], &["logs", "quiet", "-n", "5"]] {
        let output = daemon.cli_ok(args);
        assert_eq!(stdout(&output), "", "{args:?}: {}", describe(&output));
    }

    let mut cmd = holdfast();
    cmd.args(["logs", "-f", "-n", "1", "quiet", "marker", "-s"])
        .arg(daemon.socket())
        .env(support::TAG_VAR, daemon.tag())
        .stdout(std::process::Stdio::piped());
    let mut follower = cmd.spawn().expect("holdfast logs -f starts");
    let out = follower.stdout.take().expect("stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(support::DEADLINE)
            .expect("logs -f prints a line within the deadline")
    };
    // The backlog is read once following has started: quiet's first line cannot be missed.
    let backlog = next();
    assert!(backlog.contains(" marker "), "{backlog}");
    std::fs::write(daemon.dir().join("go"), "").expect("failed to create go");
    loop {
        let line = next();
        if line.ends_with(" stdout   at last") {
            break;
        }
        assert!(
            line.contains(" holdfast quiet: "),
            "only quiet's notes before it: {line}"
        );
    }
    assert!(
        daemon.log("quiet").contains(" holdfast quiet: spawned pid"),
        "the notes about the spawn are written with the first output"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}
