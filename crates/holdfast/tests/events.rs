//! Events and hooks end to end: `holdfast events [-f] [--json]` on the real daemon, and
//! `[service.X.on]` hooks running real commands.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use holdfast::control::protocol::EventRecord;
use serde_json::json;
use support::{DEADLINE, Daemon, describe, is_alive, stdout, tagged_processes};

fn kinds(events: &[EventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Reads a file's `KEY=VALUE` lines.
fn env_file(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn events_after_a_crash_show_spawned_exited_and_restart_scheduled_in_order() {
    let daemon = Daemon::start(
        r#"
[service.crashy]
command = ["/bin/sh", "-c", "if [ -e crashed ]; then exec sleep 1000; fi; touch crashed; exit 3"]
working_dir = "{DIR}"
restart = "on-failure"
restart_sec = "200ms"
start_secs = "0s"
"#,
    );
    daemon.wait_for_service("crashy", "runs again after its crash", |s| {
        s.state == "running" && s.restarts == 1
    });

    let events = support::event_records(&daemon.cli_ok(&["events", "--json", "crashy"]));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase: {seqs:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.service.as_ref().is_some_and(|s| s.as_str() == "crashy"))
    );
    let kinds = kinds(&events);
    let at = |kind: &str, from: usize| {
        kinds[from..]
            .iter()
            .position(|k| *k == kind)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {kind} after index {from} in {kinds:?}"))
    };
    let spawned = at("spawned", 0);
    let exited = at("exited", spawned);
    let scheduled = at("restart_scheduled", exited);
    let respawned = at("spawned", scheduled);

    let first_pid = &events[spawned].data["pid"];
    assert_eq!(
        &events[exited].data["pid"], first_pid,
        "the exit is the first run's"
    );
    assert_eq!(events[exited].data["exit_code"], json!(3));
    assert_eq!(events[exited].message, format!("pid {first_pid} exited 3"));
    assert_eq!(events[scheduled].data["delay_ms"], json!(200));
    assert_eq!(events[scheduled].data["attempt"], json!(1));
    assert_ne!(
        &events[respawned].data["pid"], first_pid,
        "the restart is a new process"
    );
    assert!(
        events[exited].time.ends_with('Z') && events[exited].time.len() == 24,
        "RFC 3339 UTC with milliseconds: {}",
        events[exited].time
    );

    // Only what came after a given event.
    let after = support::event_records(&daemon.cli_ok(&[
        "events",
        "--json",
        "--since",
        &events[exited].seq.to_string(),
        "crashy",
    ]));
    assert_eq!(
        after.first().map(|e| e.seq),
        Some(events[exited].seq + 1),
        "--since starts right after the given seq"
    );

    // The same events for people, one aligned line each.
    let human = stdout(&daemon.cli_ok(&["events", "crashy"]));
    let line = human
        .lines()
        .find(|l| l.contains(" exited "))
        .unwrap_or_else(|| panic!("an exited line: {human}"));
    assert!(
        line.contains("crashy       exited ")
            && line.ends_with(&format!(" pid {first_pid} exited 3")),
        "{line:?}"
    );
}

#[test]
fn events_of_an_unknown_service_are_an_error() {
    let daemon = Daemon::start("[service.a]\ncommand = [\"sleep\", \"1000\"]\n");
    let output = daemon.cli(&["events", "ghost"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        support::stderr(&output).contains("no service named \"ghost\""),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_closed_stdout_ends_events_quietly() {
    let daemon = Daemon::start("[service.a]\ncommand = [\"sleep\", \"1000\"]\n");
    daemon.wait_for_service("a", "runs", |s| s.state == "running");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg("set -o pipefail; \"$0\" events -s \"$1\" | head -n 1")
        .arg(support::holdfast_bin())
        .arg(daemon.socket())
        .env(support::TAG_VAR, daemon.tag());
    let output = support::run(cmd);
    // Like `ls | head -n 1` under pipefail: it either wrote everything before `head`
    // left (0) or was ended by SIGPIPE at its next write (128 + 13); quietly either way.
    let code = output.status.code();
    assert!(
        code == Some(0) || code == Some(128 + libc::SIGPIPE),
        "{}",
        describe(&output)
    );
    assert!(output.stderr.is_empty(), "{}", describe(&output));
    assert_eq!(stdout(&output).lines().count(), 1);
}

/// Live processes of the test in process group `pgid`.
fn group_members(daemon: &Daemon, pgid: u32) -> Vec<u32> {
    tagged_processes(daemon.tag())
        .into_iter()
        .filter(|&p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            // After `(comm)`: state, ppid, pgrp.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 1..]
                .split_whitespace()
                .collect();
            fields.get(2) == Some(&pgid.to_string().as_str()) && is_alive(p)
        })
        .collect()
}

/// `holdfast events -f --json` running in the background, its lines on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(daemon: &Daemon, args: &[&str]) -> Follower {
        let mut cmd = support::holdfast();
        cmd.args(["events", "-f", "--json"])
            .args(args)
            .arg("-s")
            .arg(daemon.socket())
            .env(support::TAG_VAR, daemon.tag())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("holdfast events -f starts");
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event; panics after `DEADLINE`.
    fn next(&self) -> EventRecord {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .expect("the follower prints an event within the deadline");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a record: {line:?}: {e}"))
    }

    /// Events until one satisfies `f`, which is returned.
    fn until(&self, what: &str, f: impl Fn(&EventRecord) -> bool) -> EventRecord {
        let mut seen = Vec::new();
        loop {
            let event = self.next();
            if f(&event) {
                return event;
            }
            seen.push(event.kind);
            assert!(seen.len() < 1000, "no {what} among {seen:?}");
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_follow_receives_a_later_restart_live() {
    let daemon = Daemon::start(
        r#"
[service.steady]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let running = daemon.wait_for_service("steady", "runs", |s| s.state == "running");
    let old_pid = running.pid.expect("a running service has a pid");

    let follower = Follower::start(&daemon, &["steady", "-n", "100"]);
    let history = follower.until("spawned in the history", |e| e.kind == "spawned");
    assert_eq!(history.data["pid"], json!(old_pid));

    daemon.cli_ok(&["restart", "steady"]);
    let stop = follower.until("stop_requested", |e| e.kind == "stop_requested");
    assert!(stop.seq > history.seq);
    assert_eq!(stop.data["signal"], json!("SIGTERM"));
    let exited = follower.until("the old process exiting", |e| e.kind == "exited");
    assert_eq!(exited.data["pid"], json!(old_pid));
    assert_eq!(exited.data["signal"], json!("SIGTERM"));
    let spawned = follower.until("the new process", |e| e.kind == "spawned");
    assert_ne!(spawned.data["pid"], json!(old_pid));
    let now = daemon.service("steady");
    assert_eq!(spawned.data["pid"], json!(now.pid.expect("runs again")));
}

#[test]
fn a_follower_sees_the_shutdown_and_ends_with_the_daemon() {
    let mut daemon = Daemon::start("[service.a]\ncommand = [\"sleep\", \"1000\"]\n");
    daemon.wait_for_service("a", "runs", |s| s.state == "running");
    let mut follower = Follower::start(&daemon, &["-n", "100"]);
    follower.until("a's spawn in the history", |e| e.kind == "spawned");
    daemon.cli_ok(&["shutdown"]);
    follower.until("the end of the shutdown", |e| {
        e.kind == "shutdown_completed"
    });
    let status = daemon.wait_exit();
    assert!(status.success(), "holdfast exits cleanly: {status}");
    let start = std::time::Instant::now();
    let ended = loop {
        if let Some(status) = follower.child.try_wait().expect("follower is waitable") {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the follower ends with the daemon"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        ended.success(),
        "the end of the stream is no error: {ended}"
    );
}

#[test]
fn a_hook_on_exited_gets_the_event_in_its_environment() {
    let daemon = Daemon::start(
        r#"
[service.failing]
command = ["/bin/sh", "-c", "echo $$ > main.pid; exit 7"]
working_dir = "{DIR}"
restart = "no"
start_secs = "0s"
[service.failing.on]
exited = ["/bin/sh", "-c", "echo hook-output-line; env > hook.tmp && mv hook.tmp hook.env"]
"#,
    );
    let env_path = daemon.dir().join("hook.env");
    daemon.wait_until("the hook wrote its environment", |_| env_path.exists());
    let env = env_file(&env_path);
    let main_pid = std::fs::read_to_string(daemon.dir().join("main.pid"))
        .expect("the service wrote its pid")
        .trim()
        .to_owned();
    assert_eq!(
        env.get("HOLDFAST_EVENT").map(String::as_str),
        Some("exited")
    );
    assert_eq!(
        env.get("HOLDFAST_SERVICE").map(String::as_str),
        Some("failing")
    );
    assert_eq!(env.get("HOLDFAST_EXIT_CODE").map(String::as_str), Some("7"));
    assert_eq!(env.get("HOLDFAST_PID"), Some(&main_pid));
    assert_eq!(
        env.get("HOLDFAST_MESSAGE"),
        Some(&format!("pid {main_pid} exited 7"))
    );
    assert!(env.contains_key("HOLDFAST_SEQ") && env.contains_key("HOLDFAST_TIME"));

    daemon.wait_until("the hook's end is logged in the service's log", |d| {
        d.log("failing").contains("failing: hook \"exited\" (pid ")
    });
    let finished = support::event_records(&daemon.cli_ok(&["events", "--json", "failing"]))
        .into_iter()
        .find(|e| e.kind == "hook_finished")
        .expect("the hook's end is an event");
    assert_eq!(finished.data["hook"], json!("exited"));
    assert_eq!(finished.data["exit_code"], json!(0));
    assert_eq!(finished.data["timed_out"], json!(false));
    // The hook's output reaches the log through the capture pipe, maybe after the note.
    daemon.wait_log("failing", "stdout   hook-output-line");
}

#[test]
fn a_reload_that_only_changes_hooks_applies_them_without_a_restart() {
    let daemon = Daemon::start(
        r#"
[service.a]
command = ["sleep", "1000"]
working_dir = "{DIR}"
start_secs = "0s"
"#,
    );
    let before = daemon.wait_for_service("a", "runs", |s| s.state == "running");
    daemon.write_config(
        r#"
[service.a]
command = ["sleep", "1000"]
working_dir = "{DIR}"
start_secs = "0s"
[service.a.on]
stop_requested = ["/bin/sh", "-c", "echo $HOLDFAST_SIGNAL > hooked.tmp && mv hooked.tmp hooked"]
"#,
    );
    let reload = stdout(&daemon.cli_ok(&["reload"]));
    assert!(reload.contains("unchanged: 1 service"), "{reload}");
    let after = daemon.service("a");
    assert_eq!(after.pid, before.pid, "the service was not restarted");
    daemon.cli_ok(&["stop", "a"]);
    let hooked = daemon.dir().join("hooked");
    daemon.wait_until("the new hook ran", |_| hooked.exists());
    assert_eq!(
        std::fs::read_to_string(&hooked).expect("hook wrote").trim(),
        "SIGTERM"
    );
}

#[test]
fn a_hook_that_never_ends_is_killed_after_hook_timeout_and_holdfast_keeps_serving() {
    let daemon = Daemon::start(
        r#"
[service.api]
command = ["sleep", "1000"]
working_dir = "{DIR}"
start_secs = "0s"
hook_timeout = "1s"
[service.api.on]
spawned = ["/bin/sh", "-c", "echo $$ > hook.pid; sleep 1000 & exec sleep 1000"]
"#,
    );
    let pid_path = daemon.dir().join("hook.pid");
    daemon.wait_until("the hook runs", |_| {
        std::fs::read_to_string(&pid_path).is_ok_and(|p| p.ends_with('\n'))
    });
    let hook: u32 = std::fs::read_to_string(&pid_path)
        .expect("hook.pid exists")
        .trim()
        .parse()
        .expect("hook.pid holds a pid");
    // While the hook hangs, holdfast answers.
    if is_alive(hook) {
        let status = daemon.status();
        assert_eq!(status.services[0].state, "running");
    }
    daemon.wait_until("the hook is killed and that is logged", |d| {
        d.log("api")
            .contains("api: hook \"spawned\" timed out after 1s, killed")
    });
    let finished = support::event_records(&daemon.cli_ok(&["events", "--json", "api"]))
        .into_iter()
        .find(|e| e.kind == "hook_finished")
        .expect("the kill is an event");
    assert_eq!(finished.data["timed_out"], json!(true));
    assert_eq!(finished.data["signal"], json!("SIGKILL"));
    assert_eq!(finished.data["pid"], json!(hook));
    daemon.wait_until("the hook's whole process group is gone", |_| {
        !is_alive(hook) && group_members(&daemon, hook).is_empty()
    });
    let api = daemon.service("api");
    assert_eq!(api.state, "running", "the service is not affected: {api:?}");
    assert_eq!(api.restarts, 0);
    assert!(
        daemon.stderr().contains("timed out after 1s, killed"),
        "holdfast's own log says it too"
    );
}

#[test]
fn a_hook_storm_is_bounded_per_service() {
    let daemon = Daemon::start(
        r#"
[service.flappy]
command = ["/bin/sh", "-c", "exit 1"]
restart = "always"
restart_sec = "20ms"
start_secs = "0s"
start_limit = { interval = "60s", burst = 1000 }
hook_timeout = "60s"
[service.flappy.on]
spawned = ["sleep", "1000"]
"#,
    );
    daemon.wait_until("extra hooks are dropped with a warning", |d| {
        d.log("flappy")
            .contains("hook \"spawned\" not run: 4 hooks of flappy are still running")
    });
    let hooks = || {
        tagged_processes(daemon.tag())
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
            })
            .count()
    };
    assert_eq!(hooks(), 4, "at most 4 hooks of a service run at once");
    assert!(daemon.try_status().is_ok(), "holdfast keeps answering");
}

#[test]
fn shutdown_waits_for_hooks_of_the_last_events_and_kills_those_past_their_timeout() {
    let mut daemon = Daemon::start(
        r#"
[service.paged]
command = ["sleep", "1000"]
on = { stopped = ["/bin/sh", "-c", "sleep 0.3; echo paged > {DIR}/paged"] }

[service.stuck]
command = ["sleep", "1000"]
hook_timeout = "1s"
on = { stopped = ["sleep", "1000"] }
"#,
    );
    daemon.wait_for_service("paged", "runs", |s| s.state == "running");
    daemon.wait_for_service("stuck", "runs", |s| s.state == "running");
    daemon.cli_ok(&["shutdown"]);
    let status = daemon.wait_exit();
    assert!(status.success(), "holdfast exits cleanly: {status}");
    let paged = std::fs::read_to_string(daemon.dir().join("paged")).unwrap_or_default();
    assert_eq!(
        paged.trim(),
        "paged",
        "the hook on `stopped` ran to its end"
    );
    assert!(
        tagged_processes(daemon.tag()).is_empty(),
        "no hook outlives holdfast: {:?}",
        tagged_processes(daemon.tag())
    );
}

/// The events `events --json` prints now (the daemon's whole recent history).
fn history(daemon: &Daemon) -> Vec<EventRecord> {
    support::event_records(&daemon.cli_ok(&["events", "--json"]))
}

#[test]
fn events_follow_starts_at_now_and_with_n_shows_the_last_n_first() {
    let daemon = Daemon::start(
        r#"
[service.steady]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let first_run = daemon.wait_for_service("steady", "runs", |s| s.state == "running");
    // A restart, for a history longer than three events.
    daemon.cli_ok(&["restart", "steady"]);
    daemon.wait_for_service("steady", "runs again", |s| {
        s.state == "running" && s.pid != first_run.pid
    });
    let before = history(&daemon);
    let newest = before.last().expect("the start left events").seq;

    let with_history = Follower::start(&daemon, &["-n", "3"]);
    let first: Vec<EventRecord> = (0..3).map(|_| with_history.next()).collect();
    let last_three: Vec<u64> = before[before.len() - 3..].iter().map(|e| e.seq).collect();
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        last_three,
        "-n 3 -f prints the last 3 events first"
    );

    // Without -n nothing is printed until something happens; when the follower is
    // subscribed is unknown, so restart until it has seen something.
    let live = Follower::start(&daemon, &[]);
    let mut seen = None;
    support::wait_until("the follower prints a new event", || {
        daemon.cli_ok(&["restart", "steady"]);
        seen = live
            .lines
            .recv_timeout(std::time::Duration::from_millis(500))
            .ok();
        seen.is_some()
    });
    let line = seen.expect("a line was seen");
    let event: EventRecord = serde_json::from_str(&line).expect("a record");
    assert!(
        event.seq > newest,
        "events -f prints only events after it started, not {line}"
    );
    let later = with_history.until("the restart", |e| e.kind == "stop_requested");
    assert!(later.seq > newest, "and then follows");
}
