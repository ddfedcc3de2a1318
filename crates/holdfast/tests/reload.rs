//! `holdfast reload`: apply a changed config, restarting only what changed; an invalid
//! file changes nothing.

mod support;

use std::collections::BTreeMap;

use holdfast::control::protocol::Status;
use support::{Daemon, describe, service, stdout};

const BEFORE: &str = r#"
[service.keep]
command = ["sleep", "1000"]
start_secs = "0s"

[service.change]
command = ["sleep", "1000"]
start_secs = "0s"
env = { MODE = "old" }

[service.gone]
command = ["sleep", "1000"]
start_secs = "0s"
"#;

const AFTER: &str = r#"
[service.keep]
command = ["sleep", "1000"]
start_secs = "0s"

[service.change]
command = ["sleep", "1000"]
start_secs = "0s"
env = { MODE = "new" }

[service.added]
command = ["sleep", "1000"]
start_secs = "0s"
"#;

/// Starts `BEFORE` and waits until all its services run; returns their pids by name.
fn running_before() -> (Daemon, BTreeMap<String, u32>) {
    let daemon = Daemon::start(BEFORE);
    let pids = daemon.wait_for("all three services run", |status| {
        let all_running =
            status.services.len() == 3 && status.services.iter().all(|s| s.state == "running");
        all_running.then(|| pids(status))
    });
    (daemon, pids)
}

fn pids(status: &Status) -> BTreeMap<String, u32> {
    status
        .services
        .iter()
        .filter_map(|s| Some((s.name.to_string(), s.pid?)))
        .collect()
}

fn environ(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

#[test]
fn reload_with_a_broken_file_changes_nothing_and_keeps_pids() {
    let (daemon, before) = running_before();
    // A type error: restart_sec must be a duration string.
    let broken = daemon
        .read_config()
        .replace(r#"env = { MODE = "old" }"#, "restart_sec = 5");
    daemon.write_raw_config(&broken);
    let line = broken
        .lines()
        .position(|l| l.starts_with("restart_sec = 5"))
        .expect("the broken line is in the file")
        + 1;

    let output = daemon.cli(&["reload"]);

    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(
        text.contains(&format!("holdfast.toml:{line}:")),
        "the diagnostic points at line {line} as file:line:column:\n{text}"
    );
    let status = daemon.status();
    assert_eq!(pids(&status), before, "no service was touched");
    assert!(
        status.services.iter().all(|s| s.state == "running"),
        "{status:?}"
    );
}

#[test]
fn reload_restarts_only_changed_services() {
    let (daemon, before) = running_before();
    daemon.write_config(AFTER);

    let output = daemon.cli_ok(&["reload"]);
    let plan = stdout(&output);
    for name in ["change", "gone", "added"] {
        assert!(plan.contains(name), "the reload reports {name}:\n{plan}");
    }

    let status = daemon.wait_for("the new config is in effect", |status| {
        let names: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
        let settled = names == ["added", "change", "keep"]
            && status.services.iter().all(|s| s.state == "running");
        settled.then(|| status.clone())
    });
    let after = pids(&status);
    assert_eq!(
        after["keep"], before["keep"],
        "the unchanged service kept its pid"
    );
    assert_ne!(
        after["change"], before["change"],
        "the changed service restarted"
    );
    assert!(
        environ(after["change"]).lines().any(|l| l == "MODE=new"),
        "the changed service runs with its new environment"
    );
    assert!(
        !support::is_alive(before["gone"]),
        "the removed service's process is gone"
    );
    assert_eq!(service(&status, "keep").restarts, 0);
}

#[test]
fn reload_dry_run_changes_nothing_and_lists_the_plan() {
    let (daemon, before) = running_before();
    daemon.write_config(AFTER);

    let output = daemon.cli_ok(&["reload", "--dry-run"]);
    let plan = stdout(&output);
    assert_eq!(
        plan.lines().next(),
        Some("dry run: reload would apply this plan (nothing applied yet):"),
        "the plan comes under a heading that says it is what a reload would do:\n{plan}"
    );
    assert!(
        !plan.contains("nothing changed"),
        "no \"nothing changed\" above a list of changes:\n{plan}"
    );
    for name in ["change", "gone", "added"] {
        assert!(plan.contains(name), "the plan lists {name}:\n{plan}");
    }

    // A real reload applies its changes before it answers, so the status right after the
    // answer would already show them.
    let status = daemon.status();
    assert_eq!(pids(&status), before, "no service was touched");
    assert!(
        status.services.iter().all(|s| s.state == "running"),
        "{status:?}"
    );
    assert!(
        support::find_service(&status, "added").is_none(),
        "nothing was added"
    );
    assert!(
        environ(before["change"]).lines().any(|l| l == "MODE=old"),
        "the changed service still runs its old definition"
    );
}

#[test]
fn a_reload_on_sighup_logs_a_readable_summary() {
    let (daemon, _) = running_before();
    let mut config = daemon.read_config();
    config.push_str("\n[service.added]\ncommand = [\"/bin/sleep\", \"1000\"]\n");
    daemon.write_raw_config(&config);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.host_pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP to holdfast");
    daemon.wait_until("the reload is logged", |d| {
        d.stderr().contains("reloaded on SIGHUP")
    });
    let stderr = daemon.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("reloaded on SIGHUP"))
        .expect("found above");
    assert!(
        line.contains("added: added") && !line.contains("ReloadPlan"),
        "one readable line, no debug dump: {line}"
    );
}

#[test]
fn huge_duration_in_reload_is_rejected_and_daemon_keeps_running() {
    let (daemon, before) = running_before();
    // Once accepted, this overflowed the clock at the next spawn and killed the daemon.
    let huge = daemon.read_config().replace(
        r#"env = { MODE = "old" }"#,
        r#"start_timeout = "18446744073709551615s""#,
    );
    daemon.write_raw_config(&huge);
    let line = huge
        .lines()
        .position(|l| l.starts_with("start_timeout ="))
        .expect("the huge line is in the file")
        + 1;

    let output = daemon.cli(&["reload"]);

    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(
        text.contains(&format!("holdfast.toml:{line}:")) && text.contains("start_timeout"),
        "the diagnostic names the key at line {line} as file:line:column:\n{text}"
    );
    assert!(
        text.contains("infinity"),
        "the hint offers \"infinity\" for no limit:\n{text}"
    );
    let status = daemon.status();
    assert_eq!(pids(&status), before, "no service was touched");
    assert!(
        status.services.iter().all(|s| s.state == "running"),
        "{status:?}"
    );
    assert!(!daemon.has_exited(), "the daemon is still up");
}

#[test]
fn a_service_removed_by_a_reload_says_so_in_its_events() {
    let daemon = Daemon::start(
        "[service.keep]\ncommand = [\"sleep\", \"1000\"]\n[service.gone]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    daemon.wait_for_service("gone", "runs", |s| s.state == "running");
    daemon.write_config("[service.keep]\ncommand = [\"sleep\", \"1000\"]\n");
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", describe(&reload));
    let mut kinds = Vec::new();
    daemon.wait_until("its stop is over", |d| {
        let events = support::event_records(&d.cli(&["events", "--json", "gone"]));
        kinds = events.into_iter().map(|e| e.kind).collect::<Vec<String>>();
        kinds.iter().any(|k| k == "stopped")
    });
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["stopped", "removed"],
        "{kinds:?}"
    );
}
