//! Thousands of services on one holdfast: they all start, show in `status`, and stop.
//! Not timed (the benchmarks measure how fast); the deadlines only bound a hung run.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use holdfast::model::Capability;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Daemon, tagged_processes};

const SERVICES: usize = 5000;

/// holdfast holds up to this many fds per service (log file, both ends of the stdout
/// and stderr pipes).
const FDS_PER_SERVICE: u64 = 5;

/// Starting and stopping thousands of services in a debug build on a loaded machine
/// takes minutes; a passing run stays far below this.
const SCALE_DEADLINE: Duration = Duration::from_secs(900);

/// How often the conditions are checked: asking for the status of thousands of services
/// is itself work for the daemon.
const POLL: Duration = Duration::from_millis(500);

/// Whether holdfast can have an fd for each of its services' needs: its hard
/// `RLIMIT_NOFILE` (inherited from this test) is large enough, or it may raise it.
fn fd_budget_allows(services: usize) -> Result<(), String> {
    let needed = services as u64 * FDS_PER_SERVICE + 1000;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| e.to_string())?;
    let may_raise = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let caps = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(caps.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|caps| {
            let resource = Capability::from_name("CAP_SYS_RESOURCE").expect("a known capability");
            caps & resource.mask() != 0
        });
    if hard >= needed || may_raise {
        Ok(())
    } else {
        Err(format!(
            "RLIMIT_NOFILE hard limit {hard} < {needed} and no CAP_SYS_RESOURCE to raise it"
        ))
    }
}

/// Polls `cond` until it holds; fails naming `what` (with holdfast's log) after
/// [`SCALE_DEADLINE`].
fn wait_long(daemon: &Daemon, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
    let start = Instant::now();
    while !cond(daemon) {
        if start.elapsed() >= SCALE_DEADLINE {
            daemon.fail(&format!(
                "timed out after {SCALE_DEADLINE:?} waiting until {what}"
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[test]
fn five_thousand_sleep_services_start_show_in_status_and_stop_cleanly() {
    if let Err(why) = fd_budget_allows(SERVICES) {
        eprintln!("skipped: {SERVICES} services do not fit: {why}");
        return;
    }
    let config: String = (0..SERVICES)
        .map(|i| {
            format!(
                "[service.s{i:04}]\ncommand = [\"sleep\", \"1000000\"]\nstart_secs = \"0s\"\n\n"
            )
        })
        .collect();
    // Booting with them all would keep holdfast from answering `status` for longer than
    // the harness waits for its first answer: they come with a reload instead.
    let mut daemon = Daemon::start("");
    daemon.write_config(&config);
    kill(Pid::from_raw(daemon.host_pid() as i32), Signal::SIGHUP).expect("signal holdfast");
    wait_long(&daemon, "every service is running", |d| {
        d.try_status().is_ok_and(|status| {
            status.services.len() == SERVICES
                && status.services.iter().all(|s| s.state == "running")
        })
    });

    let status = daemon.status();
    let pids: HashSet<u32> = status.services.iter().filter_map(|s| s.pid).collect();
    assert_eq!(
        pids.len(),
        SERVICES,
        "each service has a process of its own"
    );
    let sleeping = pids
        .iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(b"sleep\0"))
        })
        .count();
    assert_eq!(
        sleeping, SERVICES,
        "every service's process has exec'ed sleep"
    );

    daemon.cli_ok(&["shutdown"]);
    wait_long(&daemon, "holdfast exits", Daemon::has_exited);
    let exit = daemon.wait_exit();
    assert!(exit.success(), "holdfast exits cleanly: {exit}");
    let tag = daemon.tag().to_owned();
    wait_long(&daemon, "no process of the test is left", |_| {
        tagged_processes(&tag).is_empty()
    });
}
