//! The spawner thread: clones children from a thread whose fd table holds next to
//! nothing, so that starting the n-th service costs the same as starting the first.
//!
//! A child made by clone gets a copy of the cloning thread's fd table, and its `execve`
//! walks that copy to close every close-on-exec fd. holdfast holds a few fds per service
//! (log file, pipe ends, cgroup files), so cloning from holdfast's own table makes the
//! n-th spawn cost O(n) and starting n services O(n²). The spawner is a thread of
//! holdfast that unshared its fd table (`unshare(CLONE_FILES)`) and closed everything in
//! it but one end of a socket pair and stderr: each request's fds (stdout, stderr,
//! cgroup files, listen and extra fds) reach it over that socket (`SCM_RIGHTS`), the
//! rest of the request (the prepared [`ChildPlan`]) through memory, which the thread
//! shares with holdfast.
//!
//! A thread rather than a helper process: its children are holdfast's children without
//! `CLONE_PARENT` (a thread's children belong to its thread group, and the reaper's
//! `waitid` takes them), it cannot outlive holdfast nor be left behind, it is no extra
//! child of holdfast (what `children` of holdfast shows is its services and probes), it
//! shares holdfast's memory so nothing needs encoding, and it works as PID 1.
//!
//! Invariants:
//! - Requests are handled in the order they were submitted: the fds of a request are
//!   sent on the socket and its job queued under one lock, and the thread takes one job
//!   and one socket message at a time.
//! - A request is never failed because of the thread: when it is not running or cannot
//!   take a request, the request runs in the caller's thread ([`Prepared::run_here`]),
//!   and a request the thread could not start is handed back to its caller to run.
//! - Every signal is blocked in the thread (holdfast's handlers write to fds of
//!   holdfast's table).
//! - The thread's fd table holds stderr (so a panic message still reaches holdfast's
//!   log), its socket end, its `/dev/null` and, while a request is handled, that
//!   request's fds: all close-on-exec, so none reaches a child.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError, mpsc};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use super::*;

/// The most fds one request may pass through the thread (`SCM_MAX_FD` is 253); a request
/// with more runs in the caller's thread.
const MAX_PASSED_FDS: usize = 250;

/// The running spawner thread, `None` before [`start_spawner`] or after it failed.
static SPAWNER: Mutex<Option<Remote>> = Mutex::new(None);

/// holdfast's side of the spawner thread.
struct Remote {
    /// Carries each request's fds.
    socket: OwnedFd,
    jobs: mpsc::Sender<Job>,
}

/// One request for the thread.
struct Job {
    prepared: Prepared,
    /// The caller's fds the plan names, in the order they were sent.
    sent: Vec<RawFd>,
    reply: mpsc::SyncSender<Outcome>,
}

enum Outcome {
    Done(Result<Spawned, SpawnError>),
    /// The thread could not take the request (its fds did not arrive): run it here.
    Returned(Box<Prepared>),
}

/// A spawn under way (see [`submit`]).
pub struct Pending(Waiting);

enum Waiting {
    Done(Result<Spawned, SpawnError>),
    Remote(mpsc::Receiver<Outcome>),
}

impl Pending {
    pub(super) fn done(result: Result<Spawned, SpawnError>) -> Pending {
        Pending(Waiting::Done(result))
    }

    /// Waits until the child has exec'ed (or failed to).
    pub fn wait(self) -> Result<Spawned, SpawnError> {
        match self.0 {
            Waiting::Done(result) => result,
            Waiting::Remote(reply) => match reply.recv() {
                Ok(Outcome::Done(result)) => result,
                Ok(Outcome::Returned(prepared)) => prepared.run_here(),
                // The thread ended while handling this request (a panic, a bug): whether
                // it cloned is unknown, so no second child is started. Reported as
                // holdfast's own shortage: the service is not blamed for it.
                Err(mpsc::RecvError) => {
                    tracing::error!("the spawner thread ended during a spawn");
                    Err(err(SpawnStage::Fork, Errno::EAGAIN))
                }
            },
        }
    }
}

/// Starts the spawner thread, once; every spawn after this clones from it. On failure
/// (no thread, `unshare` refused) spawns stay in the caller's thread and the error is
/// returned for the caller to report.
pub fn start_spawner() -> Result<(), Errno> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return Ok(());
    }
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let (jobs, queue) = mpsc::channel();
    let (ready_tx, ready) = mpsc::sync_channel(1);
    let their_fd = theirs.as_raw_fd();
    std::thread::Builder::new()
        .name("spawner".to_owned())
        .spawn(move || {
            // No signal handler may run here: holdfast's (tokio's) write to fds of
            // holdfast's table, whose numbers mean other files in this thread's.
            let blocked = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None);
            match blocked.and_then(|()| own_fd_table(their_fd)) {
                Ok((socket, dev_null)) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(&socket, &dev_null, &queue);
                }
                Err(errno) => {
                    let _ = ready_tx.send(Err(errno));
                }
            }
        })
        .map_err(|e| e.raw_os_error().map_or(Errno::EAGAIN, Errno::from_raw))?;
    ready.recv().unwrap_or(Err(Errno::ECHILD))?;
    // The thread has its own copy now (or none, having failed): this one is ours to close.
    drop(theirs);
    *slot = Some(Remote { socket: ours, jobs });
    Ok(())
}

/// Hands `prepared` to the spawner thread, or runs it here when there is none (or it
/// cannot take it).
pub(super) fn submit(prepared: Prepared) -> Pending {
    let sent = prepared.plan.passed_fds();
    if sent.len() > MAX_PASSED_FDS {
        return Pending::done(prepared.run_here());
    }
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(remote) = slot.as_ref() else {
        drop(slot);
        return Pending::done(prepared.run_here());
    };
    let message = [std::io::IoSlice::new(&[0])];
    let rights = [ControlMessage::ScmRights(&sent)];
    if let Err(errno) = sendmsg::<()>(
        remote.socket.as_raw_fd(),
        &message,
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        // Short of memory or of in-flight fds: this request runs here, the next tries
        // the thread again. A peer that is gone will not come back.
        if matches!(errno, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) {
            tracing::error!("the spawner thread is gone ({errno}); spawning in-process");
            *slot = None;
        }
        drop(slot);
        return Pending::done(prepared.run_here());
    }
    let (reply, answer) = mpsc::sync_channel(1);
    let job = Job {
        prepared,
        sent,
        reply,
    };
    match remote.jobs.send(job) {
        Ok(()) => Pending(Waiting::Remote(answer)),
        Err(mpsc::SendError(job)) => {
            tracing::error!("the spawner thread is gone; spawning in-process");
            *slot = None;
            drop(slot);
            Pending::done(job.prepared.run_here())
        }
    }
}

/// In the new thread: a private fd table (`unshare(CLONE_FILES)`) in which only stderr
/// and the socket end `keep` stay open, plus a new `/dev/null` for the children's stdin.
fn own_fd_table(keep: RawFd) -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: unshare(CLONE_FILES) gives this thread a copy of the fd table; other
    // threads keep theirs unchanged.
    if unsafe { libc::unshare(libc::CLONE_FILES) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: after the unshare, `keep` is this table's own copy of the socket end that
    // `start_spawner` holds open in holdfast's table: nothing else in this thread owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(keep) };
    let mut kept = [libc::STDERR_FILENO, keep];
    kept.sort_unstable();
    let mut from = 0;
    for fd in kept {
        close_from_to(from, fd - 1)?;
        from = fd + 1;
    }
    close_from_to(from, RawFd::MAX)?;
    let dev_null = open_dev_null().map_err(|e| e.source)?;
    Ok((socket, dev_null))
}

/// Closes every fd in `first..=last` of this thread's table.
fn close_from_to(first: RawFd, last: RawFd) -> Result<(), Errno> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range is a plain system call; it closes fds of this thread's own
    // table (unshared), none of which anything in this thread still uses.
    let closed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        )
    };
    if closed == 0 {
        return Ok(());
    }
    // Kernels before 5.9: one by one, up to the fd limit.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1 << 20, |(soft, _)| soft.min(1 << 20));
    let end = last.min(RawFd::try_from(limit).unwrap_or(RawFd::MAX));
    for fd in first..=end {
        // SAFETY: closing an fd of this thread's own table that nothing here uses.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// The thread's loop: one job, its fds, clone, reply; until holdfast exits.
fn serve(socket: &OwnedFd, dev_null: &OwnedFd, queue: &mpsc::Receiver<Job>) {
    // One stack for every child: CLONE_VFORK returns only once the child has exec'ed or
    // exited, so it is free again for the next.
    let stack = ChildStack::new().ok();
    while let Ok(mut job) = queue.recv() {
        let fds = match receive_fds(socket, job.sent.len()) {
            Ok(fds) => fds,
            Err(errno) => {
                // Out of step with the socket: stop taking requests (each later one
                // finds the thread gone and runs in its caller's thread).
                tracing::error!("the spawner thread cannot receive fds ({errno}); stopping");
                let _ = job.reply.send(Outcome::Returned(Box::new(job.prepared)));
                return;
            }
        };
        let ours: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        job.prepared.plan.renumber(&job.sent, &ours);
        let result = match &stack {
            Some(stack) => job.prepared.run(dev_null.as_raw_fd(), stack),
            None => ChildStack::new()
                .map_err(|errno| err(SpawnStage::Fork, errno))
                .and_then(|stack| job.prepared.run(dev_null.as_raw_fd(), &stack)),
        };
        drop(fds);
        let _ = job.reply.send(Outcome::Done(result));
    }
}

/// Receives one message of exactly `count` fds (close-on-exec).
fn receive_fds(socket: &OwnedFd, count: usize) -> Result<Vec<OwnedFd>, Errno> {
    let mut byte = [0u8; 1];
    let mut buffer = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_PASSED_FDS]);
    let message = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut buffer,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::with_capacity(count);
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these fds in this thread's table for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.bytes == 0 {
        return Err(Errno::ECONNRESET);
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() != count {
        return Err(Errno::EBADMSG);
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Runs `sh -c script` through the spawner thread with `extra` passed at fd 5, and
    /// returns its exit status and what it wrote to stdout.
    fn run_through_spawner(script: &str, extra: &OwnedFd) -> (Spawned, i32, String) {
        start_spawner().expect("the spawner thread starts");
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("a pipe");
        let args = ["-c".to_owned(), script.to_owned()];
        let extra_fds = [(std::os::fd::AsFd::as_fd(extra), 5)];
        let req = SpawnRequest {
            program: "/bin/sh",
            args: &args,
            env: &[],
            working_dir: None,
            stdout: std::os::fd::AsFd::as_fd(&write),
            stderr: std::os::fd::AsFd::as_fd(&write),
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &extra_fds,
            setup: ProcessSetup::default(),
        };
        let pending = super::super::submit(&req);
        // The fds went along with the request: ours may go at once.
        drop(write);
        let spawned = pending.wait().expect("sh starts");
        let mut out = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut out)
            .expect("read the child's output");
        let pid = crate::os::nix_pid(spawned.pid);
        let status = match nix::sys::wait::waitpid(pid, None).expect("a child of this process") {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        };
        (spawned, status, out)
    }

    #[test]
    fn a_child_of_the_spawner_thread_is_ours_and_has_only_the_fds_it_was_given() {
        // Fds of this process the child must not see, however many there are.
        let held: Vec<OwnedFd> = (0..20).map(|_| open_dev_null().expect("open")).collect();
        let extra = open_dev_null().expect("open");
        let (spawned, status, out) =
            run_through_spawner("cd /proc/self/fd && echo *; echo $$ >&5", &extra);
        assert_eq!(status, 0, "{out}");
        // The shell's glob sees its own fds: 0-2, the extra fd 5 and the directory it
        // reads (at the lowest free number, 3).
        let fds: Vec<i32> = out
            .split_whitespace()
            .map(|fd| fd.parse().expect("fd numbers"))
            .collect();
        assert_eq!(fds, [0, 1, 2, 3, 5], "{out}");
        assert!(spawned.pid.as_raw() > 0);
        drop(held);
    }

    #[test]
    fn a_failed_exec_through_the_spawner_thread_is_reported_as_in_process() {
        start_spawner().expect("the spawner thread starts");
        let out = open_dev_null().expect("open");
        let out = std::os::fd::AsFd::as_fd(&out);
        let dir = std::env::temp_dir();
        let req = SpawnRequest {
            program: "./no-such-program-here",
            args: &[],
            env: &[],
            working_dir: Some(&dir),
            stdout: out,
            stderr: out,
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &[],
            setup: ProcessSetup::default(),
        };
        let error = spawn(&req).expect_err("nothing to exec");
        assert_eq!(error.source, Errno::ENOENT);
        assert_eq!(
            error.stage,
            SpawnStage::Exec {
                program: "./no-such-program-here".into()
            }
        );
    }
}
