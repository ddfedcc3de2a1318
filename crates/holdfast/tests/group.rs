//! Process-group helpers against a real group: a shell leader and a grandchild. No
//! reaper runs here: the test waits for exactly its own processes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use holdfast::os::nix_pid;
use holdfast::process::group::{Member, group_alive, group_members, signal_group};
use holdfast::process::reap::become_subreaper;
use holdfast::process::spawn::{SpawnRequest, spawn};
use holdfast::unix::{Pid, Signal};
use nix::sys::wait::{WaitStatus, waitpid};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_group_is_listed_signalled_and_alive_until_its_zombies_are_reaped() {
    // So that the grandchild, orphaned when the shell dies, becomes ours to reap.
    become_subreaper().expect("become a subreaper");
    let padding = "x".repeat(200);
    let script = format!("sleep 60 & echo $!; wait # {padding}");
    let args = vec!["-c".to_owned(), script.clone()];
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let (out_read, out_write) = nix::unistd::pipe().expect("pipe");
    let devnull = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let leader = spawn(&SpawnRequest {
        program: "sh",
        args: &args,
        env: &env,
        working_dir: None,
        stdout: out_write.as_fd(),
        stderr: devnull.as_fd(),
        listen_fds: &[],
        listen_fd_names: &[],
        setup: Default::default(),
        extra_fds: &[],
    })
    .expect("spawn sh")
    .pid;
    drop(out_write);
    let mut line = String::new();
    BufReader::new(File::from(out_read))
        .read_line(&mut line)
        .expect("the grandchild's pid");
    let sleeper = Pid::from_raw(line.trim().parse().expect("a pid"));

    let mut expected = vec![
        Member {
            pid: leader,
            command: format!("sh -c {script}").chars().take(120).collect(),
        },
        Member {
            pid: sleeper,
            command: "sleep 60".to_owned(),
        },
    ];
    expected.sort_by_key(|p| p.pid.as_raw());
    // The grandchild shows up as a copy of the shell until it has exec'ed sleep.
    wait_until("both members are listed", || {
        group_members(leader) == expected
    });
    assert!(group_alive(leader));

    assert_eq!(signal_group(leader, Signal::SIGKILL), Ok(true));
    wait_until("no live member is left", || {
        group_members(leader).is_empty()
    });
    // Both are zombies now (nobody has reaped them): the group still "exists".
    assert!(
        group_alive(leader),
        "unreaped zombies keep their process group alive"
    );

    assert_eq!(
        waitpid(nix_pid(leader), None),
        Ok(WaitStatus::Signaled(
            nix_pid(leader),
            nix::sys::signal::Signal::SIGKILL,
            false
        ))
    );
    // The shell is gone, so its orphan has been reparented to us, the subreaper.
    assert_eq!(
        waitpid(nix_pid(sleeper), None),
        Ok(WaitStatus::Signaled(
            nix_pid(sleeper),
            nix::sys::signal::Signal::SIGKILL,
            false
        ))
    );
    assert!(!group_alive(leader), "the group ends with its last reap");
    assert_eq!(signal_group(leader, Signal::SIGTERM), Ok(false));
}
