//! The daily verbs as scripts use them: exit codes that report state (`status`,
//! `is-active`, `is-failed`), verbs that wait for their outcome (`start`, `stop`,
//! `restart`, `reload`, `shutdown`) unless `--no-block`, `--timeout`, and several
//! names per verb.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use support::{Daemon, describe, is_alive, stderr, stdout};

/// `web` runs; `broken` (not started on its own) names a program that is removed once
/// the daemon has loaded the config (`check` refuses a program that is missing), so
/// every start of `broken` fails at exec. Returns the daemon and the vanished program.
fn start_web_and_broken() -> (Daemon, PathBuf) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "holdfast-verbs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create the program's directory");
    let program = dir.join("vanishing");
    fs::write(&program, "#!/bin/sh\nexit 0\n").expect("write the program");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).expect("chmod");
    let daemon = Daemon::start(&format!(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"

[service.broken]
command = ["{}"]
autostart = false
restart = "no"
"#,
        program.display()
    ));
    fs::remove_dir_all(&dir).expect("remove the program");
    (daemon, program)
}

/// A service that ignores SIGTERM, so a stop lasts until the SIGKILL at `timeout`.
fn stubborn(timeout: &str) -> String {
    format!(
        r#"
[service.stubborn]
# Ready (a line on fd 3) only once SIGTERM is ignored: "running" means stubborn.
command = ["sh", "-c", "trap '' TERM; echo >&3; exec sleep 1000 3>&-"]
ready = "fd"
restart = "no"
start_secs = "0s"
stop = {{ signal = "TERM", timeout = "{timeout}" }}
"#
    )
}

#[test]
fn status_exits_0_when_every_service_is_where_it_should_be_and_3_with_a_failed_one() {
    let (daemon, _) = start_web_and_broken();
    daemon.running_pid("web");

    let output = daemon.cli(&["status"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "web runs and broken was never started: {}",
        describe(&output)
    );

    daemon.cli(&["start", "broken"]);
    daemon.wait_for_service("broken", "has failed", |s| s.state == "failed");
    let output = daemon.cli(&["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(
        stdout(&output).contains("broken: failed"),
        "{}",
        describe(&output)
    );

    // `status NAME...` shows only those, and its exit code is about them only.
    let output = daemon.cli(&["status", "web"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stdout(&output).contains("web") && !stdout(&output).contains("broken"),
        "{}",
        describe(&output)
    );
    let output = daemon.cli(&["status", "broken", "web"]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
}

#[test]
fn status_of_an_unknown_name_fails_and_names_it() {
    let (daemon, _) = start_web_and_broken();
    let output = daemon.cli(&["status", "web", "nosuch"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains(r#"no service named "nosuch""#),
        "{}",
        describe(&output)
    );
}

#[test]
fn start_of_a_service_whose_command_does_not_exist_exits_1_and_says_why() {
    let (daemon, program) = start_web_and_broken();

    let output = daemon.cli(&["start", "broken"]);

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!(r#"broken: failed: exec "{}""#, program.display()))
            && err.contains("No such file or directory"),
        "the reason is printed: {}",
        describe(&output)
    );
}

#[test]
fn start_waits_until_the_service_runs() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
autostart = false
start_secs = "300ms"
"#,
    );

    let output = daemon.cli_ok(&["start", "web"]);

    let web = daemon.service("web");
    assert_eq!(web.state, "running", "running when start returns: {web:?}");
    let pid = web.pid.expect("a running service has a pid");
    assert_eq!(stdout(&output), format!("web: running (pid {pid})\n"));
}

#[test]
fn stop_returns_only_after_the_services_processes_are_gone() {
    let daemon = Daemon::start(&stubborn("500ms"));
    let pid = daemon.running_pid("stubborn");

    let output = daemon.cli_ok(&["stop", "stubborn"]);

    assert_eq!(stdout(&output), "stubborn: stopped\n");
    assert!(!is_alive(pid), "pid {pid} is gone when stop returns");
    let stubborn = daemon.service("stubborn");
    assert_eq!(stubborn.state, "stopped", "{stubborn:?}");
}

#[test]
fn restart_returns_once_the_new_run_is_up() {
    let (daemon, _) = start_web_and_broken();
    let old = daemon.running_pid("web");

    let output = daemon.cli_ok(&["restart", "web"]);

    let web = daemon.service("web");
    let new = web.pid.expect("web runs again");
    assert_eq!(web.state, "running", "{web:?}");
    assert_ne!(new, old, "a new run");
    assert!(is_alive(new) && !is_alive(old));
    assert_eq!(stdout(&output), format!("web: running (pid {new})\n"));
}

#[test]
fn no_block_returns_at_once_with_what_happens_next() {
    let daemon = Daemon::start(&stubborn("30s"));
    let pid = daemon.running_pid("stubborn");

    let output = daemon.cli_ok(&["stop", "--no-block", "stubborn"]);

    assert_eq!(stdout(&output), "stopping stubborn\n");
    let stubborn = daemon.service("stubborn");
    assert_eq!(
        stubborn.state, "stopping",
        "the 30 s stop is still under way: {stubborn:?}"
    );
    assert!(is_alive(pid));
}

#[test]
fn a_timeout_that_passes_exits_5_and_says_where_the_service_is() {
    let daemon = Daemon::start(&stubborn("30s"));
    daemon.running_pid("stubborn");

    let output = daemon.cli(&["stop", "--timeout", "300ms", "stubborn"]);

    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        stderr(&output).contains("stubborn: timed out after 300ms: still stopping"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_bad_timeout_is_a_usage_error_and_changes_nothing() {
    let (daemon, _) = start_web_and_broken();
    let pid = daemon.running_pid("web");
    let output = daemon.cli(&["stop", "--timeout", "soon", "web"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("invalid duration"),
        "{}",
        describe(&output)
    );
    assert_eq!(daemon.service("web").pid, Some(pid), "web still runs");
}

#[test]
fn several_names_are_stopped_together_and_an_unknown_one_changes_nothing() {
    let daemon = Daemon::start(
        r#"
[service.a]
command = ["sleep", "1000"]
start_secs = "0s"

[service.b]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let (a, b) = (daemon.running_pid("a"), daemon.running_pid("b"));

    let output = daemon.cli(&["stop", "a", "nosuch"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains(r#"no service named "nosuch""#),
        "{}",
        describe(&output)
    );
    assert_eq!(daemon.service("a").pid, Some(a), "a was not stopped");

    let output = daemon.cli_ok(&["stop", "a", "b"]);
    assert_eq!(stdout(&output), "a: stopped\nb: stopped\n");
    assert!(!is_alive(a) && !is_alive(b));
}

#[test]
fn reload_waits_until_a_changed_service_runs_again() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
env = { MODE = "before" }
"#,
    );
    let old = daemon.running_pid("web");
    let config = daemon
        .read_config()
        .replace(r#"MODE = "before""#, r#"MODE = "after""#);
    daemon.write_raw_config(&config);

    let output = daemon.cli_ok(&["reload"]);

    let web = daemon.service("web");
    let new = web.pid.expect("web runs again");
    assert_ne!(new, old);
    assert_eq!(web.state, "running", "{web:?}");
    assert!(
        stdout(&output).ends_with(&format!("web: running (pid {new})\n")),
        "{}",
        describe(&output)
    );
}

#[test]
fn is_active_and_is_failed_answer_with_their_exit_codes() {
    let (daemon, _) = start_web_and_broken();
    daemon.running_pid("web");
    daemon.cli(&["start", "broken"]);
    daemon.wait_for_service("broken", "has failed", |s| s.state == "failed");

    let check = |args: &[&str], code: i32, printed: &str| {
        let output = daemon.cli(args);
        assert_eq!(output.status.code(), Some(code), "{}", describe(&output));
        assert_eq!(stdout(&output), format!("{printed}\n"));
    };
    check(&["is-active", "web"], 0, "running");
    check(&["is-failed", "web"], 1, "running");
    check(&["is-active", "broken"], 3, "failed");
    check(&["is-failed", "broken"], 0, "failed");
}

#[test]
fn shutdown_and_up_in_one_shell_line_brings_up_the_second_daemon() {
    let mut daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    daemon.running_pid("web");
    let first = daemon.status().daemon.pid;
    let bin = support::holdfast_bin();
    let line = format!(
        "'{bin}' shutdown -s control.sock && exec '{bin}' up -c holdfast.toml",
        bin = bin.display()
    );
    let second_err = daemon.dir().join("second.stderr");

    // Tagged like the daemon: the harness kills it when the test ends.
    let mut shell = std::process::Command::new("sh")
        .args(["-c", &line])
        .env(support::TAG_VAR, daemon.tag())
        .env_remove("HOLDFAST_SOCKET")
        .current_dir(daemon.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&second_err).expect("create the second daemon's stderr"))
        .spawn()
        .expect("spawn sh");

    assert!(
        daemon.wait_exit().success(),
        "the first daemon exited cleanly"
    );
    daemon.wait_until("the second daemon answers", |d| {
        d.try_status().is_ok_and(|s| s.daemon.pid != first)
    });
    assert!(
        shell.try_wait().expect("wait for sh").is_none(),
        "the second daemon keeps running: {}",
        fs::read_to_string(&second_err).unwrap_or_default()
    );
    daemon.running_pid("web");
    let _ = shell.kill();
    let _ = shell.wait();
}

#[test]
fn a_waited_start_of_a_job_that_exits_0_without_restart_succeeds() {
    let daemon = Daemon::start(
        r#"
[service.job]
command = ["/bin/true"]
restart = "no"
autostart = false
"#,
    );
    let output = daemon.cli(&["start", "job"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stdout(&output).contains("job: stopped (exited 0)"),
        "{}",
        describe(&output)
    );
}
