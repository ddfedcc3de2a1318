//! holdfast as PID 1 of a PID namespace: orphans are re-parented to it and it must reap
//! them, or they pile up as zombies.

mod support;

use support::{
    Daemon, children, holdfast_cgroups, is_zombie, kill_9, process_state, tagged_processes,
    wait_until,
};

#[test]
fn orphaned_grandchild_is_reaped_when_holdfast_is_pid_1() {
    // Each background subshell's parent exits at once, so its `sleep` is orphaned and
    // re-parented to PID 1: holdfast. The main process stays up.
    let mut daemon = Daemon::start_as_pid_1(
        r#"
[service.orphans]
command = ["/bin/sh", "-c", "for i in 1 2 3 4 5; do (sleep 3 &); done; exec sleep 1000"]
start_secs = "0s"
"#,
    );
    let holdfast = daemon.host_pid();
    assert_eq!(
        daemon.status().daemon.pid,
        1,
        "holdfast is PID 1 in its namespace"
    );

    // While the orphans sleep, holdfast has them as children besides the main process.
    daemon.wait_until("holdfast adopts the orphaned sleeps", |_| {
        children(holdfast).len() > 1
    });
    // Once they exit, holdfast must reap them: no zombie children remain, only the main
    // process of the service.
    daemon.wait_until("holdfast reaps every orphan and keeps no zombie", |_| {
        let kids = children(holdfast);
        kids.len() == 1 && !kids.iter().any(|&pid| is_zombie(pid))
    });
    let kids = children(holdfast);
    assert_eq!(
        process_state(kids[0]).map(|s| s != 'Z'),
        Some(true),
        "the remaining child is the live service"
    );
    assert_eq!(daemon.service("orphans").state, "running");

    daemon.cli_ok(&["shutdown"]);
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "holdfast as PID 1 exits cleanly on shutdown: {status}"
    );
    let tag = daemon.tag().to_owned();
    wait_until("no process of the test is left", || {
        tagged_processes(&tag).is_empty()
    });
}

#[test]
fn a_reused_pid_announced_as_mainpid_is_not_taken_for_an_old_exit() {
    // `orphan` leaves a setsid'd orphan that holdfast reaps as nobody's (exit 7, pid X).
    // `main` waits for that reap, makes the kernel hand out X again (ns_last_pid = X-1),
    // forks a child that gets X and announces it as its main process. The old exit of X
    // must not be taken for the new process's.
    let daemon = Daemon::start_as_pid_1(
        r#"
[service.orphan]
command = ["/bin/sh", "-c", "(setsid /bin/sh -c 'echo $$ > {DIR}/orphan.pid; exit 7' &); exec sleep 1000"]
start_secs = "0s"

[service.main]
command = ["/bin/sh", "-c", "while [ ! -s {DIR}/orphan.pid ]; do sleep 0.02; done; x=$(cat {DIR}/orphan.pid); while [ -e /proc/$x ]; do sleep 0.02; done; echo $((x - 1)) > /proc/sys/kernel/ns_last_pid; sleep 1000 & child=$!; echo $child > {DIR}/child.pid; systemd-notify MAINPID=$child READY=1; wait"]
ready = "notify"
start_secs = "0s"
"#,
    );
    let read_pid = |name: &str| -> Option<u32> {
        std::fs::read_to_string(daemon.dir().join(name))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    daemon.wait_until("main forked its child", |_| read_pid("child.pid").is_some());
    let orphan = read_pid("orphan.pid").expect("the orphan wrote its pid");
    let child = read_pid("child.pid").expect("main wrote its child's pid");
    assert_eq!(
        child, orphan,
        "the kernel handed the reaped orphan's pid to main's child"
    );
    let main = daemon.wait_for_service("main", "took its announced main pid or exited", |s| {
        s.pid == Some(child) || s.last_exit.is_some() || s.restarts > 0
    });
    assert_eq!(main.state, "running", "{main:?}");
    assert_eq!(main.pid, Some(child), "{main:?}");
    assert!(
        main.last_exit.is_none(),
        "no exit was recorded for the live main process: {main:?}"
    );
}

#[test]
fn holdfast_as_pid_1_leaves_the_empty_cgroups_of_a_live_daemon_on_the_host_alone() {
    // The host daemon's service waits 60 s to restart: its cgroup is empty meanwhile.
    let host = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
restart = "always"
restart_sec = "60s"
start_secs = "0s"
"#,
    );
    let web = host.running_pid("web");
    let dirs = holdfast_cgroups(web);
    if dirs.is_empty() {
        eprintln!("skipped: the service runs in no holdfast cgroup (cgroups unavailable)");
        return;
    }
    kill_9(web);
    host.wait_for_service("web", "waits to restart", |s| s.state == "backoff");

    // A daemon in its own pid namespace does not see the host daemon's pid in its /proc:
    // it must not take the host daemon for dead and sweep its cgroups.
    let _contained = Daemon::start_as_pid_1("");
    for dir in &dirs {
        assert!(dir.is_dir(), "{} was swept", dir.display());
    }
}
