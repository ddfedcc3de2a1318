//! Ten thousand restarts leave nothing behind: holdfast's descriptors are the same
//! before and after, and its memory is printed (figures, not assertions: RSS is the
//! allocator's business; `scripts/soak` follows both over minutes).

mod support;

use std::time::Duration;

use support::Daemon;

const SERVICES: usize = 10;
const RESTARTS: u32 = 10_000;

/// holdfast's descriptors other than sockets: the control connections of the very
/// `status` calls that watch it come and go, while what a restart could leak (pipes,
/// pidfds, cgroup and log files) is not a socket.
/// holdfast's descriptors but sockets and those the ledger's writer holds for a moment
/// off the loop (its temp file, the state directory it syncs), which a count may or may
/// not catch.
fn fds(pid: u32, state_dir: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("holdfast's fds")
        .filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                !target.to_string_lossy().starts_with("socket:") && !target.starts_with(state_dir)
            })
        })
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn names() -> Vec<String> {
    (0..SERVICES).map(|i| format!("s{i}")).collect()
}

/// Stops every service and waits until all are stopped.
fn stop_all(daemon: &Daemon) {
    let names = names();
    let mut args = vec!["stop"];
    args.extend(names.iter().map(String::as_str));
    daemon.cli_ok(&args);
    daemon.wait_until("every service stopped", |d| {
        d.status().services.iter().all(|s| s.state == "stopped")
    });
}

fn restarts(daemon: &Daemon) -> u32 {
    daemon.status().services.iter().map(|s| s.restarts).sum()
}

#[test]
fn ten_thousand_restarts_leave_holdfasts_descriptors_as_they_were() {
    let services: String = names()
        .iter()
        .map(|name| {
            format!(
                "[service.{name}]\ncommand = [\"/bin/false\"]\nrestart = \"always\"\n\
                 restart_sec = \"0s\"\nstart_secs = \"0s\"\n\
                 start_limit = {{ interval = \"1s\", burst = 1000000 }}\n\n"
            )
        })
        .collect();
    let daemon = Daemon::start(&services);
    let pid = daemon.host_pid();
    let state_dir = daemon.dir().join("state");
    // Warm up: every lazily made thing (log files, cgroups, buffers) exists by now.
    daemon.wait_until("a first thousand restarts", |d| restarts(d) >= 1000);
    stop_all(&daemon);
    let (fds_before, rss_before) = (fds(pid, &state_dir), rss_kib(pid));
    // Not waited for: a service that crashes at once never stays started.
    let mut args = vec!["start", "--no-block"];
    let names = names();
    args.extend(names.iter().map(String::as_str));
    daemon.cli_ok(&args);
    let from = restarts(&daemon);
    // About 25 s on a quiet machine with 2 cores; a loaded CI runner is slower.
    daemon.wait_until_within(
        Duration::from_secs(300),
        "ten thousand more restarts",
        |d| restarts(d) >= from + RESTARTS,
    );
    stop_all(&daemon);
    let (fds_after, rss_after) = (fds(pid, &state_dir), rss_kib(pid));
    println!(
        "hygiene: {} restarts; holdfast fds (not sockets) {fds_before} -> {fds_after}, RSS \
         {rss_before} -> {rss_after} KiB",
        restarts(&daemon) - from
    );
    assert_eq!(
        fds_after, fds_before,
        "no descriptor leaked over the restarts"
    );
}
