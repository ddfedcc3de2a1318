//! `holdfast logs` like `journalctl`: all services (or several) merged by time with a
//! name column, `-n`, `--since`/`--until`, escaped control characters unless `--raw`,
//! and log reads served by the daemon to members of the control group.

mod support;

use support::{Daemon, TAG_VAR, as_nobody, describe, holdfast_for_anyone, stderr, stdout};

/// A service printing `<name> <i>` for i = 1, 2, 3, each once `go-<name>-<i>` exists.
fn stepper(name: &str) -> String {
    format!(
        r#"
[service.{name}]
command = ["/bin/sh", "-c", "for i in 1 2 3; do while [ ! -e go-{name}-$i ]; do sleep 0.02; done; echo {name} $i; done; exec sleep 1000"]
working_dir = "{{DIR}}"
start_secs = "0s"
"#
    )
}

/// The stamp of the line of `name`'s log ending in `text`.
fn stamp_of(daemon: &Daemon, name: &str, text: &str) -> Option<String> {
    daemon
        .log(name)
        .lines()
        .find(|line| line.ends_with(text))
        .map(|line| line[..24].to_owned())
}

/// Two services that wrote, strictly in this order (each line stamped later than the one
/// before): alpha 1, beta 1, alpha 2, beta 2, alpha 3, beta 3. Returns their stamps.
fn interleaved() -> (Daemon, Vec<String>) {
    interleaved_rounds(3)
}

/// Like [`interleaved`], only alpha 1 and beta 1 written.
fn interleaved_first_round() -> (Daemon, Vec<String>) {
    interleaved_rounds(1)
}

fn interleaved_rounds(rounds: u32) -> (Daemon, Vec<String>) {
    let daemon = Daemon::start(&(stepper("alpha") + &stepper("beta")));
    for name in ["alpha", "beta"] {
        daemon.wait_for_service(name, "runs", |s| s.state == "running");
    }
    let mut stamps = Vec::new();
    for i in 1..=rounds {
        for name in ["alpha", "beta"] {
            let text = format!("{name} {i}");
            std::fs::write(daemon.dir().join(format!("go-{name}-{i}")), "")
                .expect("failed to create a go file");
            let mut stamp = None;
            daemon.wait_until(&format!("{text} is captured"), |d| {
                stamp = stamp_of(d, name, &text);
                stamp.is_some()
            });
            let stamp = stamp.expect("seen");
            // Stamps have millisecond resolution: the next line must be stamped later.
            support::wait_until("the clock passes the last line's stamp", || {
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string() > stamp
            });
            stamps.push(stamp);
        }
    }
    (daemon, stamps)
}

/// (service column, text after the stream tag) of each output line.
fn columns(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 4, "stamp, name, tag, text: {line:?}");
            (fields[1].to_owned(), fields[3..].join(" "))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect()
}

#[test]
fn logs_without_a_name_merges_all_services_in_time_order_with_a_name_column() {
    let (daemon, _) = interleaved();

    let output = daemon.cli_ok(&["logs", "-n", "5"]);

    let text = stdout(&output);
    assert_eq!(
        columns(&text),
        pairs(&[
            ("beta", "beta 1"),
            ("alpha", "alpha 2"),
            ("beta", "beta 2"),
            ("alpha", "alpha 3"),
            ("beta", "beta 3"),
        ]),
        "{text}"
    );
    let named = stdout(&daemon.cli_ok(&["logs", "beta", "alpha", "-n", "5"]));
    assert_eq!(named, text, "naming both services is the same");
    let one = stdout(&daemon.cli_ok(&["logs", "alpha", "-n", "2"]));
    assert_eq!(
        columns(&one),
        pairs(&[("alpha", "alpha 2"), ("alpha", "alpha 3")])
    );
    let unknown = daemon.cli(&["logs", "alpha", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(
        stderr(&unknown).contains(r#"no service named "nosuch""#),
        "{}",
        describe(&unknown)
    );
}

#[test]
fn since_and_until_select_lines_by_time_inclusively() {
    let (daemon, stamps) = interleaved();
    // stamps: alpha 1, beta 1, alpha 2, beta 2, alpha 3, beta 3
    let output = daemon.cli_ok(&["logs", "--since", &stamps[2], "--until", &stamps[3]]);
    assert_eq!(
        columns(&stdout(&output)),
        pairs(&[("alpha", "alpha 2"), ("beta", "beta 2")]),
        "{}",
        describe(&output)
    );
    let output = daemon.cli_ok(&["logs", "--since", &stamps[3], "-n", "1"]);
    assert_eq!(columns(&stdout(&output)), pairs(&[("beta", "beta 3")]));

    let recent = stdout(&daemon.cli_ok(&["logs", "--since", "1h ago"]));
    assert!(
        recent.contains("alpha 1") && recent.contains("beta 3"),
        "{recent}"
    );
    let future = daemon.cli_ok(&["logs", "--since", "tomorrow"]);
    assert_eq!(stdout(&future), "", "nothing is logged tomorrow yet");
    let old = daemon.cli_ok(&["logs", "--until", "-1h"]);
    assert_eq!(stdout(&old), "", "nothing was logged an hour ago");

    let bad = daemon.cli(&["logs", "--since", "soon"]);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(
        stderr(&bad).contains(r#"invalid --since "soon""#),
        "{}",
        describe(&bad)
    );
}

#[test]
fn ansi_escapes_in_service_output_are_shown_escaped_unless_raw() {
    let daemon = Daemon::start(
        r#"
[service.colourful]
command = ["/bin/sh", "-c", "printf '\\033[31mred\\033[0m\\tend\\n'; exec sleep 1000"]
"#,
    );
    daemon.wait_until("the coloured line is captured", |d| {
        d.log("colourful").contains("end")
    });

    let shown = stdout(&daemon.cli_ok(&["logs", "colourful"]));
    assert!(
        shown.contains("\\x1b[31mred\\x1b[0m\tend"),
        "escapes are shown as text, the tab is kept:\n{shown:?}"
    );
    assert!(!shown.contains('\x1b'), "{shown:?}");
    let raw = stdout(&daemon.cli_ok(&["logs", "colourful", "--raw"]));
    assert!(raw.contains("\x1b[31mred\x1b[0m\tend"), "{raw:?}");
}

#[test]
fn a_control_group_member_reads_logs_through_the_daemon() {
    let daemon = Daemon::start(
        r#"
control_group = "nogroup"

[service.private]
command = ["/bin/sh", "-c", "echo only for the control group; exec sleep 1000"]
"#,
    );
    daemon.wait_until("the line is captured", |d| {
        d.log("private").contains("only for the control group")
    });
    let log = daemon.dir().join("logs").join("private.log");
    let direct = as_nobody(
        &daemon,
        std::path::Path::new("/bin/cat"),
        &[log.to_str().unwrap()],
    );
    assert!(
        !direct.status.success(),
        "the log file itself stays closed to the group: {}",
        describe(&direct)
    );

    let bin = holdfast_for_anyone(&daemon);
    let socket = daemon.socket();
    let output = as_nobody(
        &daemon,
        &bin,
        &["logs", "private", "-s", socket.to_str().unwrap()],
    );

    let _ = std::fs::remove_dir_all(bin.parent().expect("a directory"));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stdout(&output).contains("private      stdout   only for the control group"),
        "{}",
        describe(&output)
    );
}

#[test]
fn logs_follow_prints_the_last_lines_then_new_lines_of_every_service_until_shutdown() {
    let (daemon, _) = interleaved_first_round();
    let mut cmd = support::holdfast();
    cmd.args(["logs", "-f", "-n", "2", "-s"])
        .arg(daemon.socket())
        .env(TAG_VAR, daemon.tag())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("holdfast logs -f starts");
    let out = child.stdout.take().expect("stdout is piped");
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
    let backlog = [next(), next()].join("\n");
    assert_eq!(
        columns(&backlog),
        pairs(&[("alpha", "alpha 1"), ("beta", "beta 1")])
    );
    // The backlog was read after following started: no later line can be missed.
    for name in ["beta", "alpha"] {
        std::fs::write(daemon.dir().join(format!("go-{name}-2")), "").expect("go file");
        let line = next();
        assert_eq!(
            columns(&line),
            pairs(&[(name, &format!("{name} 2"))]),
            "{line}"
        );
    }

    daemon.cli_ok(&["shutdown"]);
    let mut ended = None;
    support::wait_until("logs -f ends with the daemon", || {
        ended = child.try_wait().expect("the follower is waitable");
        ended.is_some()
    });
    assert!(
        ended.is_some_and(|status| status.success()),
        "the end of the daemon is no error for a follower: {ended:?}"
    );
}
