//! holdfast killed with SIGKILL, started again: the services it supervised lived on, and
//! the new holdfast adopts them (same pids, the only copies), supervises them again and
//! goes on logging their output, which waited in their pipes meanwhile.

mod support;

use std::collections::BTreeMap;

use support::{Daemon, is_alive, kill_9, tagged_processes};

/// Five services, two of them listening on a port (a second copy could not bind it).
fn five_services(ports: [u16; 2]) -> String {
    format!(
        r#"
[service.web1]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{a}"]
ready = {{ tcp = "127.0.0.1:{a}" }}

[service.web2]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{b}"]
ready = {{ tcp = "127.0.0.1:{b}" }}

[service.ticker]
command = ["/bin/sh", "-c", "trap 'echo ping' USR1; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"]

[service.sleeper]
command = ["sleep", "1000"]
restart = "always"
restart_sec = "100ms"

[service.quiet]
command = ["sleep", "1000"]
"#,
        a = ports[0],
        b = ports[1]
    )
}

const NAMES: [&str; 5] = ["web1", "web2", "ticker", "sleeper", "quiet"];

fn pids(d: &Daemon) -> BTreeMap<&'static str, u32> {
    NAMES.iter().map(|n| (*n, d.running_pid(n))).collect()
}

/// The tick numbers in the ticker's log, in order.
fn ticks(d: &Daemon) -> Vec<u64> {
    d.log("ticker")
        .lines()
        .filter_map(|l| l.split("tick ").nth(1)?.trim().parse().ok())
        .collect()
}

#[test]
fn services_outlive_a_sigkill_of_holdfast_and_are_adopted_with_the_same_pids() {
    let ports = [support::free_port(), support::free_port()];
    let mut d = Daemon::start(&five_services(ports));
    let before = pids(&d);
    d.wait_until("the ticker logged", |d| ticks(d).len() > 3);

    d.kill_9_and_start_again();

    let after = pids(&d);
    assert_eq!(after, before, "the same five processes, adopted");
    // The only instances: the services' processes are the adopted ones and their own
    // children, nothing was started twice.
    let processes = tagged_processes(d.tag());
    let demo_apps = processes
        .iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == support::demo_app())
        })
        .count();
    assert_eq!(demo_apps, 2, "one demo app per web service: {processes:?}");
    assert!(
        !d.stderr().contains("Address already in use"),
        "{}",
        d.stderr()
    );
    // Output went on reaching the log, none of what was written while no holdfast ran
    // is lost: the tick numbers have no gap.
    let seen = ticks(&d).len();
    d.wait_until("the ticker logs again", |d| ticks(d).len() > seen + 5);
    let ticks = ticks(&d);
    for pair in ticks.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no tick lost or repeated: {pair:?}");
    }

    // The adopted processes are its own again: signals reach them, uptime goes on.
    d.cli_ok(&["signal", "ticker", "USR1"]);
    d.wait_until("the ticker got the signal", |d| {
        d.log("ticker").contains("ping")
    });
    assert!(d.log("ticker").contains("adopted pid"), "the log says so");

    // Supervised again: a killed adopted process is restarted.
    kill_9(before["sleeper"]);
    let restarted = d.wait_for_service("sleeper", "runs a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|pid| pid != before["sleeper"])
    });
    assert!(restarted.restarts >= 1, "{restarted:?}");
    // And a stop works on an adopted one.
    d.cli_ok(&["stop", "quiet"]);
    d.wait_until("quiet's process is gone", |_| !is_alive(before["quiet"]));
    assert_eq!(d.service("quiet").state, "stopped");
}

#[test]
fn a_service_changed_by_a_reload_that_holdfast_did_not_finish_is_restarted_not_doubled() {
    let ports = [support::free_port(), support::free_port()];
    let mut d = Daemon::start(&five_services(ports));
    let before = pids(&d);
    // The file changes one service; holdfast is killed before it reloads it (as if
    // killed during the reload): the next holdfast reads the new file.
    let changed = five_services(ports).replace(
        "[service.quiet]\ncommand = [\"sleep\", \"1000\"]",
        "[service.quiet]\ncommand = [\"sleep\", \"2000\"]",
    );
    assert_ne!(changed, five_services(ports));
    d.write_config(&changed);
    d.kill_9_and_start_again();

    let quiet = d.wait_for_service("quiet", "runs the new spec", |s| {
        s.state == "running" && s.pid.is_some_and(|pid| pid != before["quiet"])
    });
    assert!(!is_alive(before["quiet"]), "the old process was stopped");
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", quiet.pid.unwrap()))
        .unwrap_or_default();
    assert!(cmdline.contains("2000"), "{cmdline:?}");
    for name in ["web1", "web2", "ticker", "sleeper"] {
        assert_eq!(
            d.running_pid(name),
            before[name],
            "{name} was adopted as it was"
        );
    }
}

/// A service that ignores SIGTERM, so that stopping it takes its stop timeout: a
/// reload that restarts it is caught in the middle.
fn stubborn(version: u32) -> String {
    format!(
        r#"
[service.stubborn]
command = ["/bin/sh", "-c", "trap '' TERM; echo version {version}; while :; do sleep 0.1; done"]
stop = {{ timeout = "60s" }}
"#
    )
}

/// Waits until holdfast's ledger (written off its loop, a moment after each change)
/// holds `service` in `state`: killed from then on, holdfast has written down where the
/// service was going.
fn ledger_says(d: &Daemon, service: &str, state: &str) {
    d.wait_until(&format!("the ledger has {service} {state}"), |d| {
        let Ok(text) = std::fs::read(d.dir().join("state/running.json")) else {
            return false;
        };
        let Ok(ledger) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return false;
        };
        // A state is `"stopped"`, or `{"backoff": {...}}` with its facts.
        let is = |s: &serde_json::Value| s == state || s.get(state).is_some();
        ledger["services"]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["name"] == service && is(&s["state"])))
    });
}

fn stubborns(d: &Daemon) -> Vec<(u32, String)> {
    support::group_leaders_running(d.tag(), "echo version")
}

#[test]
fn a_sigkill_during_a_reload_leaves_one_copy_of_each_service() {
    let ports = [support::free_port(), support::free_port()];
    let mut d = Daemon::start(&(five_services(ports) + &stubborn(1)));
    let before = pids(&d);
    let old = d.running_pid("stubborn");
    d.write_config(&(five_services(ports) + &stubborn(2)));
    d.cli_ok(&["reload", "--no-block"]);
    d.wait_for_service("stubborn", "is being stopped by the reload", |s| {
        s.state == "stopping"
    });
    // Being restarted: written down as to be started again.
    ledger_says(&d, "stubborn", "backoff");
    d.kill_9_and_start_again();

    let new = d.wait_for_service("stubborn", "runs the new version", |s| {
        s.state == "running" && s.pid.is_some_and(|pid| pid != old)
    });
    d.wait_until("the old version is gone", |_| !is_alive(old));
    let copies = stubborns(&d);
    assert_eq!(copies.len(), 1, "one copy, never two: {copies:?}");
    assert_eq!(Some(copies[0].0), new.pid);
    assert!(copies[0].1.contains("version 2"), "{copies:?}");
    for name in NAMES {
        assert_eq!(
            d.running_pid(name),
            before[name],
            "{name} was adopted as it was"
        );
    }
}

#[test]
fn with_on_restart_stop_the_processes_are_stopped_and_started_afresh() {
    let mut d = Daemon::start(
        r#"
[service.fresh]
command = ["sleep", "1000"]
on_restart = "stop"
"#,
    );
    let before = d.running_pid("fresh");
    d.kill_9_and_start_again();
    let after = d.wait_for_service("fresh", "runs a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|pid| pid != before)
    });
    assert!(!is_alive(before), "the old process was stopped");
    assert_eq!(
        tagged_processes(d.tag())
            .iter()
            .filter(|pid| Some(**pid) == after.pid)
            .count(),
        1
    );
}

#[test]
fn a_reused_pid_in_the_ledger_is_neither_adopted_nor_killed() {
    let mut d = Daemon::start(
        r#"
[service.one]
command = ["sleep", "1000"]
"#,
    );
    let pid = d.running_pid("one");
    d.kill_9_holdfast();
    // The service ends and an unrelated process takes a pid the ledger names. Made
    // exact: the ledger's pid is rewritten to a stranger's (its start time is not).
    kill_9(pid);
    let mut stranger = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("sleep starts");
    let stranger_pid = stranger.id();
    let ledger_path = d.dir().join("state/running.json");
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ledger_path).expect("the ledger was written"))
            .expect("the ledger is JSON");
    let ledger = renumber(ledger, pid, stranger_pid);
    std::fs::write(&ledger_path, ledger.to_string()).expect("ledger rewritten");

    d.start_again();
    let one = d.wait_for_service("one", "runs a process of its own", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != stranger_pid)
    });
    assert_ne!(one.pid, Some(stranger_pid));
    assert!(
        is_alive(stranger_pid),
        "the stranger with a pid named in the ledger lives on"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// `value` with every number `from` (and every key `"from"`) made `to`.
fn renumber(value: serde_json::Value, from: u32, to: u32) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.as_u64() == Some(u64::from(from)) => Value::from(to),
        Value::Array(items) => items.into_iter().map(|v| renumber(v, from, to)).collect(),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = if k == from.to_string() {
                        to.to_string()
                    } else {
                        k
                    };
                    (k, renumber(v, from, to))
                })
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn adopted_processes_stay_supervised_across_an_upgrade_self() {
    let mut d = Daemon::start(
        r#"
[service.one]
command = ["sleep", "1000"]
restart = "always"
restart_sec = "100ms"
"#,
    );
    let pid = d.running_pid("one");
    d.kill_9_and_start_again();
    assert_eq!(d.running_pid("one"), pid, "adopted");
    d.cli_ok(&["upgrade", "--self"]);
    assert_eq!(
        d.running_pid("one"),
        pid,
        "still the same after the re-execution"
    );
    kill_9(pid);
    d.wait_for_service("one", "is restarted by the new image", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });
}

#[test]
fn a_service_being_stopped_when_holdfast_died_stays_stopped() {
    let mut d = Daemon::start(&stubborn(1));
    let pid = d.running_pid("stubborn");
    d.cli_ok(&["stop", "stubborn", "--no-block"]);
    d.wait_for_service("stubborn", "is stopping", |s| s.state == "stopping");
    ledger_says(&d, "stubborn", "stopped");
    d.kill_9_and_start_again();
    d.wait_until("the process being stopped is gone", |_| !is_alive(pid));
    assert_eq!(
        d.service("stubborn").state,
        "stopped",
        "the stop is not undone"
    );
    assert!(stubborns(&d).is_empty(), "{:?}", stubborns(&d));
}

#[test]
fn output_goes_on_being_logged_when_the_service_pointed_one_stream_elsewhere() {
    let mut d = Daemon::start(
        r#"
[service.half]
command = ["/bin/sh", "-c", "exec 2>/dev/null; i=0; while :; do i=$((i+1)); echo line $i; sleep 0.01; done"]
"#,
    );
    let pid = d.running_pid("half");
    d.kill_9_and_start_again();
    assert_eq!(d.running_pid("half"), pid);
    let lines = |d: &Daemon| d.log("half").matches("line ").count();
    let seen = lines(&d);
    d.wait_until("the log grows again", |d| lines(d) > seen + 50);
    assert_eq!(
        d.running_pid("half"),
        pid,
        "never blocked on a full pipe, never restarted"
    );
}
