//! holdfast as PID 1 of a PID namespace: orphans are re-parented to it and it must reap
//! them, or they pile up as zombies.

mod support;

use support::{Daemon, children, is_zombie, process_state, tagged_processes, wait_until};

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
