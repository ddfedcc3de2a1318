//! The reaper against real children. One test on purpose: the reaper waits for *every*
//! child of this process, so two reaper tests in one binary would steal each other's
//! exits.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use holdfast::model::ExitStatus;
use holdfast::process::proc_stat;
use holdfast::process::reap::{self, Reaped};
use holdfast::process::spawn::{SpawnRequest, spawn};
use holdfast::unix::{Pid, Signal};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const DEADLINE: Duration = Duration::from_secs(10);

fn sh(script: &str, out: BorrowedFd<'_>) -> Pid {
    let args = vec!["-c".to_owned(), script.to_owned()];
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    spawn(&SpawnRequest {
        program: "/bin/sh",
        args: &args,
        env: &env,
        working_dir: None,
        stdout: out,
        stderr: out,
        listen_fds: &[],
        listen_fd_names: &[],
        setup: Default::default(),
        extra_fds: &[],
    })
    .expect("spawn /bin/sh")
    .pid
}

/// Exits received so far, by pid, so tests can ask for them in any order.
struct Exits {
    rx: UnboundedReceiver<Reaped>,
    seen: HashMap<Pid, Reaped>,
}

impl Exits {
    async fn of(&mut self, pid: Pid) -> Reaped {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(reaped) = self.seen.remove(&pid) {
                return reaped;
            }
            let reaped = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("pid {pid} was not reaped within {DEADLINE:?}"))
                .expect("the reaper task runs as long as we listen");
            self.seen.insert(reaped.pid, reaped);
        }
    }

    /// Waits for an exit of a pid we were never told, with this status.
    async fn unknown_with(&mut self, status: ExitStatus) -> Reaped {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(pid) = self
                .seen
                .iter()
                .find_map(|(pid, r)| (r.status == status).then_some(*pid))
            {
                return self.seen.remove(&pid).expect("just found");
            }
            let reaped = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no exit with {status} within {DEADLINE:?}"))
                .expect("the reaper task runs as long as we listen");
            self.seen.insert(reaped.pid, reaped);
        }
    }
}

#[tokio::test]
async fn the_reaper_reports_every_exit_with_status_and_group() {
    reap::become_subreaper().expect("become a subreaper");
    let devnull = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let quiet = devnull.as_fd();

    // A child that exits before the reaper exists is reaped by its first pass.
    let early = sh("exit 4", quiet);
    let deadline = Instant::now() + DEADLINE;
    while proc_stat(early).map(|s| !s.is_zombie()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the early child became a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (tx, rx) = unbounded_channel();
    reap::start(tx).expect("start the reaper");
    let mut exits = Exits {
        rx,
        seen: HashMap::new(),
    };
    let first = exits.of(early).await;
    assert_eq!(
        (first.pid, first.pgid, first.status),
        (early, Some(early), ExitStatus::Exited(4)),
        "exited before the reaper started"
    );

    // Exit code, and the group read from the zombie. Reaps are numbered in order.
    let code = sh("exit 3", quiet);
    let second = exits.of(code).await;
    assert_eq!(
        (second.pid, second.pgid, second.status),
        (code, Some(code), ExitStatus::Exited(3))
    );
    assert!(first.seq < second.seq, "{first:?} then {second:?}");
    assert!(second.seq <= reap::latest());

    // A child can be acted on while it is not reaped, and not once it is.
    let sleeper = sh("exec sleep 1000", quiet);
    assert_eq!(reap::while_unreaped(sleeper, || "alive"), Some("alive"));
    holdfast::os::kill(sleeper, Signal::SIGKILL).expect("kill the sleeper");
    exits.of(sleeper).await;
    assert_eq!(reap::while_unreaped(sleeper, || "reaped"), None);

    // Death by signal.
    let killed = sh("kill -KILL $$", quiet);
    assert_eq!(
        exits.of(killed).await.status,
        ExitStatus::Signaled {
            signal: Signal::SIGKILL,
            core_dumped: false
        }
    );

    // Many exits close together coalesce into fewer SIGCHLDs; none may be lost.
    let burst: Vec<Pid> = (0..20).map(|i| sh(&format!("exit {i}"), quiet)).collect();
    for (i, pid) in burst.into_iter().enumerate() {
        let code = i32::try_from(i).expect("small");
        assert_eq!(
            exits.of(pid).await.status,
            ExitStatus::Exited(code),
            "burst child {i}"
        );
    }

    // A child that failed before exec: spawn reports the error, the reaper its exit 127.
    let args: Vec<String> = Vec::new();
    let failed = spawn(&SpawnRequest {
        program: "/nonexistent/prog",
        args: &args,
        env: &[],
        working_dir: None,
        stdout: quiet,
        stderr: quiet,
        listen_fds: &[],
        listen_fd_names: &[],
        setup: Default::default(),
        extra_fds: &[],
    });
    assert!(failed.is_err(), "no such program");
    let reaped = exits.unknown_with(ExitStatus::Exited(127)).await;
    assert_eq!(
        reaped.pgid,
        Some(reaped.pid),
        "setsid ran before exec failed"
    );

    // An orphaned grandchild is reparented to us (subreaper) and reaped too, with the
    // group of the service it came from. It waits for its parent to be gone first.
    let (out_read, out_write) = nix::unistd::pipe().expect("pipe");
    let parent = sh(
        "p=$$; sh -c \"while kill -0 $p 2>/dev/null; do sleep 0.01; done; exit 7\" & echo $!",
        out_write.as_fd(),
    );
    drop(out_write);
    let mut line = String::new();
    BufReader::new(File::from(out_read))
        .read_line(&mut line)
        .expect("the grandchild's pid");
    let grandchild = Pid::from_raw(line.trim().parse().expect("a pid"));
    assert_eq!(exits.of(parent).await.status, ExitStatus::Exited(0));
    let orphan = exits.of(grandchild).await;
    assert_eq!(
        (orphan.pid, orphan.pgid, orphan.status),
        (grandchild, Some(parent), ExitStatus::Exited(7)),
        "the orphan is reaped here, in its service's group"
    );
}
