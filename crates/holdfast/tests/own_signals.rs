//! Signals to holdfast itself: SIGHUP reloads, SIGUSR1 reopens the log files, a second
//! SIGINT during a shutdown kills everything at once.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Daemon, is_alive};

const ONE: &str = r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
"#;

fn signal_holdfast(daemon: &Daemon, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(daemon.host_pid()).expect("a pid fits i32"));
    kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to holdfast: {e}"));
}

#[test]
fn sighup_reloads_the_config() {
    let daemon = Daemon::start(ONE);
    let web = daemon.running_pid("web");
    let mut config = daemon.read_config();
    config.push_str("\n[service.added]\ncommand = [\"sleep\", \"1000\"]\nstart_secs = \"0s\"\n");
    daemon.write_raw_config(&config);
    signal_holdfast(&daemon, Signal::SIGHUP);
    daemon.wait_for_service("added", "the added service runs", |s| s.state == "running");
    assert_eq!(
        daemon.running_pid("web"),
        web,
        "the unchanged service kept running"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let daemon = Daemon::start(ONE);
    let web = daemon.running_pid("web");
    let mut config = daemon.read_config();
    config.push_str("\n[service.broken]\ncommand = \"not a list\n");
    daemon.write_raw_config(&config);
    signal_holdfast(&daemon, Signal::SIGHUP);
    daemon.wait_until("the rejected reload is logged", |d| {
        d.stderr()
            .contains("reload on SIGHUP rejected, keeping the running config")
    });
    let status = daemon.status();
    assert_eq!(
        status.services.len(),
        1,
        "nothing was added: {:?}",
        status.services
    );
    assert_eq!(daemon.running_pid("web"), web, "the service kept running");
}

#[test]
fn sigusr1_reopens_the_log_files_after_they_were_moved() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sh", "-c", "trap 'echo second line' USR2; echo first line; while :; do sleep 60 & wait $!; done"]
start_secs = "0s"
"#,
    );
    daemon.wait_until("the first line is logged", |d| {
        d.log("web").contains("first line")
    });
    let log = daemon.dir().join("logs").join("web.log");
    let moved = daemon.dir().join("logs").join("web.log.1");
    std::fs::rename(&log, &moved).expect("mv web.log web.log.1");
    signal_holdfast(&daemon, Signal::SIGUSR1);
    // The reopen creates the file; from then on output goes there.
    support::wait_until("a new web.log is created", || log.exists());
    daemon.cli_ok(&["signal", "web", "USR2"]);
    daemon.wait_until("the second line is in the new web.log", |d| {
        d.log("web").contains("second line")
    });
    let old = std::fs::read_to_string(&moved).expect("read web.log.1");
    assert!(
        old.contains("first line") && !old.contains("second line"),
        "the moved file keeps only what came before the reopen:\n{old}"
    );
    assert!(
        !daemon.log("web").contains("first line"),
        "the new file starts after the reopen:\n{}",
        daemon.log("web")
    );
}

#[test]
fn a_second_sigint_during_a_slow_shutdown_stops_at_once() {
    // SIGTERM is ignored (by the shell and its sleeps) and the stop never escalates: only
    // the second SIGINT ends this shutdown.
    let mut daemon = Daemon::start(
        r#"
[service.stubborn]
command = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 60 & wait $!; done"]
start_secs = "0s"
stop = { signal = "TERM", timeout = "infinity" }
"#,
    );
    daemon.wait_until("stubborn ignores SIGTERM", |d| {
        d.log("stubborn").contains("ready")
    });
    let main = daemon.running_pid("stubborn");
    signal_holdfast(&daemon, Signal::SIGINT);
    daemon.wait_for_service("stubborn", "is stopping", |s| s.state == "stopping");
    assert!(is_alive(main), "SIGTERM was ignored");
    signal_holdfast(&daemon, Signal::SIGINT);
    let status = daemon.wait_exit();
    assert!(status.success(), "holdfast exits cleanly: {status}");
    support::wait_until("the stubborn service is dead", || !is_alive(main));
    assert!(
        daemon
            .stderr()
            .contains("second stop signal during the shutdown"),
        "the forced stop is logged"
    );
}
