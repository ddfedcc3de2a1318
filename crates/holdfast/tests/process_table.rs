//! The process table end to end: exits of processes of one service in different roles,
//! all released by one trigger, each attributed to its own role.

mod support;

use std::fs::{File, OpenOptions};
use std::path::Path;

use holdfast::control::protocol::EventRecord;
use serde_json::json;
use support::{Daemon, is_alive};

/// The main process exits 3 (the service restarts), the first exec probe exits 1, the
/// first `started` hook exits 5. Each of them writes its pid and then blocks reading the
/// fifo `go`, whose end of file releases them all at once. (The first probe starts one
/// interval after the spawn; its timeout is long enough to see it waiting.)
const TRIO: &str = r#"
[service.trio]
command = ["/bin/sh", "-c", "mkfifo go 2>/dev/null; if [ -e main.done ]; then exec sleep 1000; fi; touch main.done; echo $$ > main.tmp; mv main.tmp main.pid; read x < go; exit 3"]
working_dir = "{DIR}"
restart = "on-failure"
restart_sec = "100ms"
start_secs = "0s"
[service.trio.health]
exec = ["/bin/sh", "-c", "[ -e probe.done ] && exit 0; touch probe.done; mkfifo go 2>/dev/null; echo $$ > probe.tmp; mv probe.tmp probe.pid; read x < go; exit 1"]
interval = "3s"
timeout = "3s"
grace = "0s"
degraded = { failures = 1, within = "60s" }
unhealthy = { failures = 1000, within = "60s", action = "none" }
[service.trio.on]
started = ["/bin/sh", "-c", "[ -e hook.done ] && exit 0; touch hook.done; mkfifo go 2>/dev/null; echo $$ > hook.tmp; mv hook.tmp hook.pid; read x < go; exit 5"]
"#;

fn pid_in(dir: &Path, file: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` has the fifo open as its stdin (it is blocked reading it).
fn reads_fifo(pid: u32, fifo: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/0")).is_ok_and(|target| target == fifo)
}

fn naming_pid(events: &[EventRecord], pid: u32) -> Vec<&EventRecord> {
    events
        .iter()
        .filter(|e| e.data.get("pid") == Some(&json!(pid)))
        .collect()
}

#[test]
fn a_probe_a_hook_and_the_main_process_exiting_at_once_are_each_attributed_to_their_role() {
    // At debug level holdfast logs whose each reaped process was.
    let d = Daemon::start_with_env(TRIO, &[("HOLDFAST_LOG", "debug")]);
    let fifo = d.dir().join("go");
    d.wait_until("the fifo exists", |_| fifo.exists());
    // Held open for writing, so that the readers' opens return; closing it is the
    // trigger: every reader sees end of file at the same moment.
    let trigger: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open the fifo");
    let mut pids = None;
    d.wait_until("main process, probe and hook all wait on the fifo", |d| {
        let found = ["main.pid", "probe.pid", "hook.pid"].map(|f| pid_in(d.dir(), f));
        pids = match found {
            [Some(main), Some(probe), Some(hook)] => Some((main, probe, hook)),
            _ => None,
        };
        pids.is_some_and(|(m, p, h)| [m, p, h].iter().all(|&pid| reads_fifo(pid, &fifo)))
    });
    let (main, probe, hook) = pids.expect("found above");
    drop(trigger);

    let restarted = d.wait_for_service("trio", "runs again after its main exit", |s| {
        s.state == "running" && s.restarts == 1
    });
    assert_ne!(restarted.pid, Some(main), "a new main process");
    d.wait_until("probe and hook are reaped", |_| {
        !is_alive(probe) && !is_alive(hook)
    });
    let mut events = Vec::new();
    d.wait_until("the hook's end is an event", |d| {
        events = support::event_records(&d.cli_ok(&["events", "--json", "trio"]));
        !naming_pid(&events, hook).is_empty()
    });

    // The main process: its exit, with its code, is the run's end, and only its exit.
    let exits: Vec<&EventRecord> = events.iter().filter(|e| e.kind == "exited").collect();
    assert_eq!(exits.len(), 1, "one exit of a main process: {exits:#?}");
    assert_eq!(exits[0].data["pid"], json!(main));
    assert_eq!(exits[0].data["exit_code"], json!(3));
    // The hook: its exit is the hook's, with its own code.
    let hooks = naming_pid(&events, hook);
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    assert_eq!(hooks[0].kind, "hook_finished");
    assert_eq!(hooks[0].data["hook"], json!("started"));
    assert_eq!(hooks[0].data["exit_code"], json!(5));
    // The probe: its exit is no event of its own; its failure is counted as a probe's
    // when it came before the run's end (after it, the verdict about a finished run is
    // dropped by the core).
    assert!(naming_pid(&events, probe).is_empty(), "{events:#?}");
    // Whatever the order of the three reaps, the table told each one's role.
    // (The probe's reap is logged when the loop handles it, which may be after the
    // hook's event.)
    let run = &exits[0].data["run"];
    for (pid, role, status) in [
        (main, format!("main process of run {run}"), "exited 3"),
        (probe, format!("exec probe of run {run}"), "exited 1"),
        (hook, "started hook".to_owned(), "exited 5"),
    ] {
        let line = format!("trio: reaped pid {pid} ({role}): {status}");
        d.wait_until(&format!("`{line}` in holdfast's log"), |d| {
            d.stderr().contains(&line)
        });
    }
    let exited_at = events.iter().position(|e| e.kind == "exited");
    for (i, e) in events.iter().enumerate() {
        if e.kind == "health_changed" && e.data["run"] == exits[0].data["run"] {
            assert!(Some(i) < exited_at, "counted before the run's end: {e:#?}");
            assert_eq!(e.data["last_error"], json!("probe command exited 1"));
        }
    }
}
