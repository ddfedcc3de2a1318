//! `process::spawn` against real processes. No reaper runs in this binary: each test
//! waits for exactly the pids it spawned (through `Child`'s drop), never for `-1`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use holdfast::os::nix_pid;
use holdfast::process::proc_stat;
use holdfast::process::spawn::{SpawnRequest, SpawnStage, spawn};
use holdfast::unix::Pid;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{WaitStatus, waitpid};

/// A spawned child whose whole group is killed and which is waited for on drop.
struct Child(Pid);

impl Child {
    fn wait(self) -> WaitStatus {
        let status = waitpid(nix_pid(self.0), None).expect("the child is ours to wait for");
        std::mem::forget(self);
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = killpg(nix_pid(self.0), Signal::SIGKILL);
        let _ = waitpid(nix_pid(self.0), None);
    }
}

fn path_env() -> Vec<(String, String)> {
    vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())]
}

fn request<'a>(
    program: &'a str,
    args: &'a [String],
    env: &'a [(String, String)],
    out: BorrowedFd<'a>,
) -> SpawnRequest<'a> {
    SpawnRequest {
        program,
        args,
        env,
        working_dir: None,
        stdout: out,
        stderr: out,
        listen_fds: &[],
        listen_fd_names: &[],
        setup: Default::default(),
        extra_fds: &[],
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn read_all(fd: OwnedFd) -> String {
    let mut text = String::new();
    File::from(fd)
        .read_to_string(&mut text)
        .expect("read the child's output");
    text
}

fn open_fds(pid: Pid) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the child's fd directory")
        .map(|entry| {
            entry
                .expect("fd entry")
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
                .expect("fd names are numbers")
        })
        .collect()
}

/// Waits until the child's open fds are exactly `expected`. `spawn` returns at exec, while
/// the new program may still be starting (the dynamic loader and locale setup open and
/// close fds of their own), so a transient extra fd is fine, but a leaked one never goes.
fn assert_open_fds_settle_to(pid: Pid, expected: &BTreeSet<i32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = open_fds(pid);
        if &open == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the child keeps fds {open:?} open; only {expected:?} should be"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_field(pid: Pid, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn environ(pid: Pid) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

fn socket_inode(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat").st_ino
}

#[test]
fn child_output_reaches_the_given_stdout_and_stderr() {
    let (out_read, out_write) = nix::unistd::pipe().expect("pipe");
    let (err_read, err_write) = nix::unistd::pipe().expect("pipe");
    let env = path_env();
    let argv = args(&["-c", "echo hi; echo oops >&2"]);
    let mut req = request("sh", &argv, &env, out_write.as_fd());
    req.stderr = err_write.as_fd();
    let child = Child(spawn(&req).expect("spawn sh").pid);
    drop((out_write, err_write));

    assert_eq!(read_all(out_read), "hi\n");
    assert_eq!(read_all(err_read), "oops\n");
    let pid = child.0;
    assert_eq!(child.wait(), WaitStatus::Exited(nix_pid(pid), 0));
}

#[test]
fn a_missing_absolute_program_fails_at_exec_with_enoent() {
    let devnull = File::open("/dev/null").expect("/dev/null");
    let error = spawn(&request("/nonexistent/prog", &[], &[], devnull.as_fd()))
        .expect_err("there is no such program");
    assert_eq!(
        error.stage,
        SpawnStage::Exec {
            program: "/nonexistent/prog".into()
        }
    );
    assert_eq!(error.source, Errno::ENOENT);
    assert!(
        error
            .to_string()
            .starts_with("exec \"/nonexistent/prog\": ENOENT"),
        "message names stage, program and errno: {error}"
    );
}

#[test]
fn a_program_not_in_path_fails_before_fork() {
    let devnull = File::open("/dev/null").expect("/dev/null");
    let env = path_env();
    let error = spawn(&request("no-such-program-xyz", &[], &env, devnull.as_fd()))
        .expect_err("not in PATH");
    assert_eq!(
        error.stage,
        SpawnStage::ResolveProgram {
            program: "no-such-program-xyz".into()
        }
    );
    assert_eq!(error.source, Errno::ENOENT);
}

#[test]
fn a_missing_working_directory_fails_at_chdir() {
    let devnull = File::open("/dev/null").expect("/dev/null");
    let env = path_env();
    let mut req = request("true", &[], &env, devnull.as_fd());
    req.working_dir = Some(Path::new("/nonexistent/dir"));
    let error = spawn(&req).expect_err("no such directory");
    assert_eq!(
        error.stage,
        SpawnStage::Chdir {
            dir: "/nonexistent/dir".into()
        }
    );
    assert_eq!(error.source, Errno::ENOENT);
}

#[test]
fn the_working_directory_applies_to_the_child() {
    let (out_read, out_write) = nix::unistd::pipe().expect("pipe");
    let env = path_env();
    let argv = args(&["-c", "pwd"]);
    let mut req = request("sh", &argv, &env, out_write.as_fd());
    req.working_dir = Some(Path::new("/usr/share"));
    let child = Child(spawn(&req).expect("spawn sh").pid);
    drop(out_write);
    assert_eq!(read_all(out_read), "/usr/share\n");
    drop(child);
}

#[test]
fn the_child_leads_its_own_session_and_process_group() {
    let devnull = File::open("/dev/null").expect("/dev/null");
    let env = path_env();
    let argv = args(&["60"]);
    let child = Child(
        spawn(&request("sleep", &argv, &env, devnull.as_fd()))
            .expect("spawn sleep")
            .pid,
    );
    let stat = proc_stat(child.0).expect("the child is running");
    assert_eq!(stat.pgid, child.0, "group leader");
    assert_eq!(stat.sid, child.0, "session leader");
    assert_eq!(stat.comm, "sleep", "spawn returns after exec");
}

#[test]
fn only_stdio_is_open_in_a_child_without_listen_fds() {
    // An fd holdfast holds without CLOEXEC (dup never sets it) must not leak.
    let devnull = File::open("/dev/null").expect("/dev/null");
    let _leaky = nix::unistd::dup(devnull.as_fd()).expect("dup");
    let env = path_env();
    let argv = args(&["60"]);
    let child = Child(
        spawn(&request("sleep", &argv, &env, devnull.as_fd()))
            .expect("spawn sleep")
            .pid,
    );
    assert_open_fds_settle_to(child.0, &BTreeSet::from([0, 1, 2]));
    let stdin = std::fs::read_link(format!("/proc/{}/fd/0", child.0)).expect("fd 0");
    assert_eq!(stdin, Path::new("/dev/null"));
}

#[test]
fn listen_fds_arrive_at_3_and_up_with_listen_pid_equal_to_the_child_pid() {
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    // Passed in reverse order of their fd numbers, so low sources collide with targets.
    let passed: Vec<BorrowedFd<'_>> = listeners.iter().rev().map(|l| l.as_fd()).collect();
    let names = args(&["e", "d", "c", "b", "a"]);
    let devnull = File::open("/dev/null").expect("/dev/null");
    let _leaky = nix::unistd::dup(devnull.as_fd()).expect("dup");
    let env = vec![
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("LISTEN_PID".to_owned(), "1".to_owned()),
        ("KEEP".to_owned(), "me".to_owned()),
    ];
    let argv = args(&["60"]);
    let mut req = request("sleep", &argv, &env, devnull.as_fd());
    req.listen_fds = &passed;
    req.listen_fd_names = &names;
    let child = Child(spawn(&req).expect("spawn sleep").pid);

    assert_open_fds_settle_to(child.0, &(0..8).collect());
    for (i, fd) in passed.iter().enumerate() {
        let link = std::fs::read_link(format!("/proc/{}/fd/{}", child.0, 3 + i)).expect("fd");
        assert_eq!(
            link.to_string_lossy(),
            format!("socket:[{}]", socket_inode(*fd)),
            "fd {} is the {i}th passed socket",
            3 + i
        );
        let flags =
            std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", child.0, 3 + i)).expect("fdinfo");
        let flags = flags
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .expect("flags line");
        let flags = u32::from_str_radix(flags.trim(), 8).expect("octal flags");
        assert_eq!(flags & 0o2000000, 0, "O_CLOEXEC is cleared on fd {}", 3 + i);
    }

    let mut environment = environ(child.0);
    environment.sort();
    assert_eq!(
        environment,
        vec![
            "KEEP=me".to_owned(),
            "LISTEN_FDNAMES=e:d:c:b:a".to_owned(),
            "LISTEN_FDS=5".to_owned(),
            format!("LISTEN_PID={}", child.0),
            "PATH=/usr/bin:/bin".to_owned(),
        ],
        "LISTEN_* are spawn's own, LISTEN_PID is the child's pid"
    );
}

#[test]
fn listen_pid_is_what_the_child_sees_as_its_own_pid() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let passed = [listener.as_fd()];
    let (out_read, out_write) = nix::unistd::pipe().expect("pipe");
    let env = path_env();
    let argv = args(&["-c", "echo $LISTEN_FDS $LISTEN_PID $$"]);
    let mut req = request("sh", &argv, &env, out_write.as_fd());
    req.listen_fds = &passed;
    let child = Child(spawn(&req).expect("spawn sh").pid);
    drop(out_write);
    assert_eq!(read_all(out_read), format!("1 {0} {0}\n", child.0));
}

#[test]
fn signal_dispositions_and_mask_are_reset_in_the_child() {
    // Rust's runtime ignores SIGPIPE in this process; make sure, so the test means something.
    let ignored = u64::from_str_radix(&status_field(holdfast::os::getpid(), "SigIgn"), 16)
        .expect("hex SigIgn");
    assert_ne!(
        ignored & (1 << (Signal::SIGPIPE as i32 - 1)),
        0,
        "precondition: the test process ignores SIGPIPE"
    );
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGUSR1);
    blocked
        .thread_block()
        .expect("block signals in this thread");

    let devnull = File::open("/dev/null").expect("/dev/null");
    let env = path_env();
    let argv = args(&["60"]);
    let spawned = spawn(&request("sleep", &argv, &env, devnull.as_fd()));
    blocked.thread_unblock().expect("unblock");
    let child = Child(spawned.expect("spawn sleep").pid);

    assert_eq!(
        status_field(child.0, "SigIgn"),
        "0000000000000000",
        "nothing ignored"
    );
    assert_eq!(
        status_field(child.0, "SigBlk"),
        "0000000000000000",
        "nothing blocked"
    );
}
