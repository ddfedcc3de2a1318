//! holdfast's own log as structured data: native entries in a real journald (a
//! standalone `systemd-journald` in a private mount namespace, read back with
//! `journalctl -o json`), service output forwarded to it, and JSON lines on stderr.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};
use support::{Daemon, describe, kill_9};

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Runs before holdfast, in a new mount namespace: a fresh `/run` and journal directory
/// (tmpfs, so the host's are untouched), a journald of its own, then holdfast once
/// journald's socket is there.
const SANDBOX: &str = r#"set -e
mkdir -p /var/log/journal
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log/journal
(/lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &)
i=0
while [ ! -S /run/systemd/journal/socket ]; do
  i=$((i + 1))
  [ "$i" -lt 600 ] || { echo "journald did not create its socket in 30s" >&2; exit 1; }
  sleep 0.05
done
exec "$@"
"#;

/// Runs holdfast in [`SANDBOX`].
const LAUNCHER: [&str; 8] = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    SANDBOX,
    "sh",
];

/// Why this machine cannot run a private journald, if it cannot.
fn cannot_run_journald() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("mounting a private /run needs root".to_owned());
    }
    if !Path::new(JOURNALD).exists() {
        return Some(format!("{JOURNALD} is missing (Debian package systemd)"));
    }
    for tool in ["journalctl", "unshare", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// Every entry of the namespace's journal (`--all`: long values in full).
fn journal(daemon: &Daemon) -> Vec<Map<String, Value>> {
    let ns = format!("--mount=/proc/{}/ns/mnt", daemon.host_pid());
    let out = Command::new("nsenter")
        .args([ns.as_str(), "--", "journalctl", "-o", "json", "--all"])
        .args(["-D", "/run/log/journal", "--no-pager"])
        .output()
        .expect("failed to run nsenter journalctl");
    assert!(out.status.success(), "journalctl: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(entry)) => Some(entry),
            _ => None,
        })
        .collect()
}

fn field<'a>(entry: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

/// Waits until the journal has an entry matching `pred`, and returns it.
fn wait_entry(
    daemon: &Daemon,
    what: &str,
    pred: impl Fn(&Map<String, Value>) -> bool,
) -> Map<String, Value> {
    let mut found = None;
    daemon.wait_until(what, |d| {
        found = journal(d).into_iter().find(|e| pred(e));
        found.is_some()
    });
    found.expect("found once the wait is over")
}

#[test]
fn events_and_forwarded_service_lines_reach_a_real_journald_with_their_fields() {
    if let Some(why) = cannot_run_journald() {
        eprintln!("skipped: {why}");
        return;
    }
    let launcher = LAUNCHER;
    let daemon = Daemon::start_wrapped(
        r#"
[service.chatty]
command = ["/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo hello-out; echo '<3>hello-err' >&2; echo plain-err >&2; exec sleep 1000"]
working_dir = "{DIR}"
start_secs = "0s"
log.journald = true
"#,
        &launcher,
        &[("HOLDFAST_LOG_TARGET", "journald")],
    );
    let pid = daemon.running_pid("chatty");
    // It prints once holdfast knows its pid, so its lines name it.
    std::fs::write(daemon.dir().join("go"), "").expect("failed to write go");
    let pid_text = pid.to_string();
    let line = |text: &'static str| {
        let pid = pid_text.clone();
        move |e: &Map<String, Value>| {
            field(e, "SYSLOG_IDENTIFIER") == Some("chatty")
                && field(e, "MESSAGE") == Some(text)
                && field(e, "SYSLOG_PID") == Some(&pid)
        }
    };
    let out = wait_entry(
        &daemon,
        "chatty's stdout line in the journal",
        line("hello-out"),
    );
    assert_eq!(field(&out, "PRIORITY"), Some("6"), "{out:?}");
    assert_eq!(field(&out, "HOLDFAST_SERVICE"), Some("chatty"), "{out:?}");
    let err = wait_entry(
        &daemon,
        "chatty's stderr line in the journal",
        line("hello-err"),
    );
    // Its `<3>` prefix (sd-daemon(3)) set the priority and is not part of the message.
    assert_eq!(field(&err, "PRIORITY"), Some("3"), "{err:?}");
    // stderr without a prefix is informational, as systemd takes a unit's stderr.
    let plain = wait_entry(
        &daemon,
        "chatty's plain stderr line in the journal",
        line("plain-err"),
    );
    assert_eq!(field(&plain, "PRIORITY"), Some("6"), "{plain:?}");
    // The log file keeps every line too (written after the whole read went to journald).
    daemon.wait_log("chatty", "hello-err");

    kill_9(pid);
    let pid = pid_text;

    let exited = wait_entry(&daemon, "holdfast's `exited` entry in the journal", |e| {
        field(e, "HOLDFAST_EVENT") == Some("exited") && field(e, "HOLDFAST_PID") == Some(&pid)
    });
    assert_eq!(field(&exited, "HOLDFAST_SERVICE"), Some("chatty"));
    assert_eq!(field(&exited, "SYSLOG_IDENTIFIER"), Some("holdfast"));
    assert_eq!(field(&exited, "HOLDFAST_SIGNAL"), Some("SIGKILL"));
    // The normal course of things is informational, as for a systemd unit.
    assert_eq!(field(&exited, "PRIORITY"), Some("6"), "{exited:?}");
    let file = field(&exited, "CODE_FILE").unwrap_or_default();
    assert!(
        file.ends_with(".rs"),
        "CODE_FILE names a source file: {exited:?}"
    );
    assert!(field(&exited, "CODE_LINE").is_some(), "{exited:?}");
    let message = field(&exited, "MESSAGE").unwrap_or_default();
    assert!(message.contains("killed by SIGKILL"), "{exited:?}");
}

#[test]
fn json_log_lines_each_parse_and_carry_the_event_as_fields() {
    let daemon = Daemon::start_with_env(
        r#"
[service.brief]
command = ["/bin/sh", "-c", "exit 3"]
restart = "no"
"#,
        &[("HOLDFAST_LOG_FORMAT", "json")],
    );
    daemon.wait_until("brief gave up after its exit", |d| {
        d.stderr().contains("\"gave_up\"")
    });
    let lines: Vec<Map<String, Value>> = daemon
        .stderr()
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("a log line that is no JSON object: {l:?} ({other:?})"),
        })
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(line.contains_key(key), "{key} missing in {line:?}");
        }
        assert!(line["fields"].get("message").is_some(), "{line:?}");
    }
    let exited = lines
        .iter()
        .map(|l| &l["fields"])
        .find(|f| f["event"] == "exited")
        .expect("an exited event in the log");
    assert_eq!(exited["service"], "brief");
    assert_eq!(exited["exit_code"], 3, "numbers stay numbers: {exited}");
    assert!(exited["pid"].is_u64(), "{exited}");
}

#[test]
fn a_reload_that_turns_journald_forwarding_on_keeps_the_service_running_and_forwards_its_lines() {
    if let Some(why) = cannot_run_journald() {
        eprintln!("skipped: {why}");
        return;
    }
    // It prints a line each time `go` appears, so a line can be asked for after the reload.
    let config = |forward: &str| {
        format!(
            r#"
[service.chatty]
command = ["/bin/sh", "-c", "while true; do if [ -e go ]; then rm go; echo said-after-reload; fi; sleep 0.05; done"]
working_dir = "{{DIR}}"
start_secs = "0s"
log.journald = {forward}
"#
        )
    };
    let daemon = Daemon::start_wrapped(&config("false"), &LAUNCHER, &[]);
    let pid = daemon.running_pid("chatty");
    daemon.write_config(&config("true"));
    daemon.cli_ok(&["reload"]);
    std::fs::write(daemon.dir().join("go"), "").expect("failed to write go");
    let pid_text = pid.to_string();
    let entry = wait_entry(
        &daemon,
        "chatty's line in the journal after the reload",
        |e| {
            field(e, "SYSLOG_IDENTIFIER") == Some("chatty")
                && field(e, "MESSAGE") == Some("said-after-reload")
        },
    );
    assert_eq!(
        field(&entry, "SYSLOG_PID"),
        Some(pid_text.as_str()),
        "{entry:?}"
    );
    assert_eq!(
        daemon.running_pid("chatty"),
        pid,
        "the reload restarted chatty"
    );
}
