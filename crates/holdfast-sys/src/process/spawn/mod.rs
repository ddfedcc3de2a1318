//! Starting a child: clone (vfork-style), the pre-exec sequence, execve.
//!
//! This is the only module in holdfast with `unsafe`, `clone` and `exec`.
//!
//! The child is created like glibc's `posix_spawn` does it: `clone(CLONE_VM |
//! CLONE_VFORK | SIGCHLD)` on a stack of its own, allocated before and freed after.
//! `fork` would copy holdfast's page tables only for the child to tear them down again
//! at `execve`, which dominated starting many services. With `CLONE_VM` the child runs in
//! holdfast's memory while the calling thread is suspended until the child has exec'ed
//! or exited (`CLONE_VFORK`); everything else (fd table, fs struct with cwd and umask,
//! signal handler table, credentials, rlimits, cgroup membership) is the child's own
//! copy, as after `fork`.
//!
//! Once [`start_spawner`] has run, the clone happens in the spawner thread, whose fd
//! table holds only the request's fds: the child's copy of the table, and the walk of
//! it at `execve`, then cost the same whatever holdfast holds (see [`spawner`]).
//!
//! Invariants:
//! - Everything the child needs (CStrings, the argv/envp pointer arrays, the `LISTEN_PID`
//!   slot, `/dev/null`, the fd plan, its stack) is prepared *before* `clone`, all but
//!   `/dev/null` and the stack by the caller ([`Prepared`]). Between
//!   `clone` and `execve` the child makes only raw, async-signal-safe system calls: it
//!   never allocates, locks, logs, unwinds or runs destructors, and it leaves with
//!   `_exit` (or `execve`), never by returning from its entry function.
//! - Sharing memory, the child writes only to its own stack, the thread's `errno` (the
//!   parent ignores it unless `clone` itself failed, when no child ran) and two parts of
//!   the [`ChildPlan`] that are its scratch space: the `LISTEN_PID` slot and the sources
//!   of the fd moves. The parent never reads either after `clone`, only frees them.
//! - All signals are blocked in the spawning thread across `clone`, so no holdfast signal
//!   handler can run in the child (in holdfast's memory!) before the child has reset
//!   every disposition (in its own copy of the handler table: no `CLONE_SIGHAND`).
//! - The child is a session and process-group leader (`pgid == pid`), its signal mask is
//!   empty and every signal has its default disposition (`SIG_IGN` survives `execve`
//!   otherwise), stdin is `/dev/null`, and its only open fds are 0, 1, 2 and the passed
//!   listen fds at 3, 4, ...: every other fd is marked close-on-exec before `execve`.
//! - Failures are reported through a close-on-exec pipe: the child writes
//!   `(stage, detail, errno)` and exits with 127; the parent reads until EOF, and EOF
//!   without a record means `execve` succeeded. The parent never waits for the child:
//!   [`super::reap`] reaps it, including a child that failed before exec (its pid is
//!   not returned, so the runtime sees an exit of a pid it does not know and drops it).
//!
//! # The pre-exec sequence
//!
//! The order matters; each feature is a field of [`SpawnRequest`] (most in
//! [`ProcessSetup`]), prepared before clone and applied by one step of `child_main`:
//!
//! 1. reset signal dispositions to `SIG_DFL`, then empty the signal mask;
//! 2. `setsid()` (new session and process group);
//! 3. join the service's cgroup: write `0` into each `cgroup.procs` fd opened before
//!    clone — early, so everything is accounted (it moves the writer's own thread group,
//!    which is the child alone: no `CLONE_THREAD`);
//! 4. fd plan: stdin `/dev/null`, stdout, stderr, listen fds to 3.., everything else
//!    close-on-exec;
//! 5. `setrlimit` (raising a hard limit needs root, so before the user switch);
//! 6. `sched_setaffinity` (CPU affinity), then `oom_score_adj` (opened in the child:
//!    `/proc/self` opened before clone would be holdfast's; the kernel keeps a vfork
//!    child's `oom_score_adj` its own although it shares holdfast's memory);
//! 7. `umask`;
//! 8. drop every capability not kept from the bounding set (needs CAP_SETPCAP, so still
//!    as root), `PR_SET_KEEPCAPS` if capabilities are kept, then
//!    `setgroups` → `setresgid` → `setresuid` (in this order: each later call drops the
//!    right to make the earlier one), as raw system calls: glibc's wrappers signal every
//!    thread with SIGRTMIN+1, whose handler this child has just reset;
//! 9. capabilities: `capset` (effective + permitted + inheritable = the kept set), then
//!    `PR_CAP_AMBIENT_RAISE` for each, so they survive `execve` of a non-root program;
//! 10. `chdir` (after the user switch, so the service user's permissions apply);
//! 11. `PR_SET_NO_NEW_PRIVS` (unless the service opted out);
//! 12. write the digits of `LISTEN_PID` (the child's own pid) into the reserved slot;
//! 13. `execve`.

#![expect(
    unsafe_code,
    reason = "clone, the async-signal-safe pre-exec sequence and execve need raw libc calls"
)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use holdfast_core::unix::Pid;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use crate::model::{Capability, Credentials};

mod child;
mod error;
mod plan;
mod report;
mod spawner;

use self::child::*;
pub use self::error::*;
use self::plan::*;
use self::report::*;
pub use self::spawner::{Pending, start_spawner};

/// What to start. Borrowed: the caller keeps ownership of every fd and string.
#[derive(Debug, Clone, Copy)]
pub struct SpawnRequest<'a> {
    /// Resolved against `PATH` (the `PATH` of `env`, else the default) before clone
    /// when it contains no `/`; otherwise used as written (relative to `working_dir`).
    pub program: &'a str,
    /// `argv[1..]`; `argv[0]` is `program` as written.
    pub args: &'a [String],
    /// The complete environment of the child, except that `LISTEN_FDS`, `LISTEN_PID`
    /// and `LISTEN_FDNAMES` are owned by `spawn`: entries with these names are dropped
    /// and, when `listen_fds` is non-empty, replaced by the right values.
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
    /// Becomes the child's fd 1.
    pub stdout: BorrowedFd<'a>,
    /// Becomes the child's fd 2. The child's stdin is always `/dev/null`.
    pub stderr: BorrowedFd<'a>,
    /// Become the child's fds 3, 4, ... (socket activation), with `FD_CLOEXEC` cleared;
    /// the child gets `LISTEN_FDS=<n>` and `LISTEN_PID=<its own pid>`.
    pub listen_fds: &'a [BorrowedFd<'a>],
    /// If non-empty, the child gets `LISTEN_FDNAMES=a:b:...`.
    pub listen_fd_names: &'a [String],
    /// Further fds at fixed numbers `(fd, target)`, with `FD_CLOEXEC` cleared (the s6
    /// notification fd). A target must not be 0-2 or one of the listen fds' numbers.
    pub extra_fds: &'a [(BorrowedFd<'a>, RawFd)],
    /// cgroup, rlimits, affinity, OOM score, umask, credentials, capabilities.
    pub setup: ProcessSetup<'a>,
}

/// The process attributes the child sets up before exec, in the order of the module
/// docs. The default changes nothing (except `no_new_privs`, which is off in the default
/// and on in every service spec by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSetup<'a> {
    /// Open `cgroup.procs` files (one per v1 hierarchy, or the one v2 file) the child
    /// writes `0` into, joining the cgroup before anything else it does is accounted.
    pub cgroup_procs: &'a [BorrowedFd<'a>],
    /// Applied with `setrlimit`, before the user switch (raising a hard limit needs root).
    pub rlimits: &'a [RlimitSetting],
    pub cpu_affinity: Option<&'a [usize]>,
    pub oom_score_adjust: Option<i32>,
    pub umask: Option<u32>,
    pub credentials: Option<&'a Credentials>,
    /// `Some`: exactly these capabilities stay (permitted, effective, inheritable,
    /// ambient) and the bounding set loses every other one.
    pub capabilities: Option<&'a [Capability]>,
    pub no_new_privs: bool,
}

/// One `setrlimit` call: `resource` is a `libc::RLIMIT_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitSetting {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// A started child: it has successfully exec'ed its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// Also the child's process group id and session id.
    pub pid: Pid,
}

/// Starts `req.program` as a new session and process-group leader and returns once it
/// has exec'ed (or failed to). Blocks the calling thread until clone + exec are done.
///
/// The caller must have started the reaper ([`super::reap::start`]): `spawn` never waits.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    submit(req).wait()
}

/// Starts `req` like [`spawn`], without waiting for the child's exec when the spawner
/// thread is running ([`start_spawner`]): the caller's fds are passed along before this
/// returns (the caller may close its copies at once), and [`Pending::wait`] gives the
/// result. Several requests may be under way at once; each completes in its own time.
pub fn submit(req: &SpawnRequest<'_>) -> Pending {
    match Prepared::new(req) {
        Ok(prepared) => spawner::submit(prepared),
        Err(error) => Pending::done(Err(error)),
    }
}

/// A request turned into everything the child needs, except its stdin (`/dev/null` of
/// whichever fd table the clone happens in). Owns all of it, so it can move to the
/// spawner thread.
struct Prepared {
    plan: ChildPlan,
    program: std::path::PathBuf,
}

impl Prepared {
    fn new(req: &SpawnRequest<'_>) -> Result<Prepared, SpawnError> {
        let program =
            super::program::resolve(req.program, req.env, req.working_dir).map_err(|errno| {
                err(
                    SpawnStage::ResolveProgram {
                        program: req.program.to_owned(),
                    },
                    errno,
                )
            })?;
        let plan = ChildPlan::prepare(req, &program)?;
        Ok(Prepared { plan, program })
    }

    /// Clones and execs from the calling thread, with its fd table.
    fn run_here(self) -> Result<Spawned, SpawnError> {
        let dev_null = open_dev_null()?;
        let stack = ChildStack::new().map_err(|errno| err(SpawnStage::Fork, errno))?;
        self.run(dev_null.as_raw_fd(), &stack)
    }

    /// Clones (on `stack`, unused by anything else) and waits for the child's exec.
    /// Every fd of the plan must be open in the calling thread's fd table.
    fn run(mut self, stdin: RawFd, stack: &ChildStack) -> Result<Spawned, SpawnError> {
        self.plan.set_stdin(stdin);
        let plan = &mut self.plan;
        let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|errno| err(SpawnStage::ErrorPipe, errno))?;

        // Block every signal across clone so that none of holdfast's handlers (tokio's,
        // which write to a pipe shared with the parent) can run in the child before it
        // resets them.
        let mut saved_mask = SigSet::empty();
        pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut saved_mask),
        )
        .map_err(|errno| err(SpawnStage::Fork, errno))?;

        let mut child = ChildArgs {
            plan,
            report: report_write.as_raw_fd(),
        };
        // SAFETY: `child_entry` only runs `child_main`, which makes async-signal-safe raw
        // system calls on memory prepared before clone and never returns (it execs or
        // `_exit`s), so no allocator lock, destructor or unwinding happens in the child.
        // `stack.top()` is the 16-byte aligned top of a live mapping of CHILD_STACK_SIZE
        // bytes that nothing else uses. `child` (and the plan it borrows) stays alive and
        // untouched by this thread until clone returns: CLONE_VFORK suspends this thread
        // until the child has exec'ed or exited, so the child's accesses all happen
        // before ours resume. Without CLONE_FILES, CLONE_FS, CLONE_SIGHAND or
        // CLONE_THREAD the child's fds, cwd, umask, signal handlers, credentials and
        // thread group are its own.
        let forked = unsafe {
            libc::clone(
                child_entry,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut child).cast(),
            )
        };
        let fork_errno = Errno::last();
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved_mask), None)
            .expect("restoring a signal mask we just read cannot fail");
        if forked < 0 {
            return Err(err(SpawnStage::Fork, fork_errno));
        }
        let pid = Pid::from_raw(forked);
        // Our copy of the write end must go, or the read below would never see EOF.
        drop(report_write);

        match read_report(&report_read) {
            Ok(None) => Ok(Spawned { pid }),
            Ok(Some(report)) => Err(report.into_error(&self.plan, self.program)),
            Err(errno) => Err(err(SpawnStage::ReadErrorPipe, errno)),
        }
    }
}

/// The child's stdin, close-on-exec in the table it is opened in.
fn open_dev_null() -> Result<std::os::fd::OwnedFd, SpawnError> {
    nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| err(SpawnStage::OpenDevNull, errno))
}

/// Finds the file `execve` will run. A name without `/` is searched in the `PATH` of the
/// child's environment, else holdfast's own, else a conventional default; empty `PATH`
/// entries (meaning "current directory" to a shell) are skipped on purpose.
fn cstring(bytes: &[u8], what: impl FnOnce() -> String) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| err(SpawnStage::InvalidString { what: what() }, Errno::EINVAL))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn decimal(value: u32) -> String {
        let mut out = [0xffu8; 21];
        // SAFETY: `out` has 21 writable bytes.
        unsafe { write_decimal(out.as_mut_ptr(), value) };
        let end = out.iter().position(|&b| b == 0).expect("NUL terminator");
        String::from_utf8(out[..end].to_vec()).expect("ascii digits")
    }

    #[test]
    fn only_holdfasts_own_steps_short_of_resources_are_its_fault() {
        let blamed = |stage, errno| err(stage, errno).is_holdfast_resource_shortage();
        assert!(blamed(SpawnStage::ErrorPipe, Errno::EMFILE));
        assert!(blamed(SpawnStage::OpenDevNull, Errno::ENFILE));
        assert!(blamed(SpawnStage::Fork, Errno::EAGAIN));
        assert!(blamed(SpawnStage::Fork, Errno::ENOMEM));
        assert!(!blamed(SpawnStage::Fork, Errno::EPERM), "not a shortage");
        let exec = SpawnStage::Exec {
            program: PathBuf::from("/bin/app"),
        };
        assert!(!blamed(exec, Errno::ENOMEM), "the child's step");
        let join = SpawnStage::Setup(SetupStep::JoinCgroup);
        assert!(!blamed(join, Errno::EAGAIN), "the service's pids limit");
    }

    #[test]
    fn decimal_formatter_writes_digits_and_nul() {
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(7), "7");
        assert_eq!(decimal(4_194_304), "4194304");
        assert_eq!(decimal(u32::MAX), u32::MAX.to_string());
    }

    /// The child shares holdfast's memory (CLONE_VM) but nothing else: what it sets up
    /// for itself must not leak into holdfast.
    #[test]
    fn the_child_sets_oom_score_umask_and_cwd_for_itself_not_for_holdfast() {
        let ours = || {
            let oom = std::fs::read_to_string("/proc/self/oom_score_adj").expect("read oom");
            let status = std::fs::read_to_string("/proc/self/status").expect("read status");
            let umask = status
                .lines()
                .find(|line| line.starts_with("Umask:"))
                .expect("a Umask line")
                .to_owned();
            let cwd = std::env::current_dir().expect("a cwd");
            (oom.trim().parse::<i32>().expect("a number"), umask, cwd)
        };
        let before = ours();
        let out = std::fs::File::create("/dev/null").expect("open /dev/null");
        let out = std::os::fd::AsFd::as_fd(&out);
        let dir = std::env::temp_dir();
        let req = SpawnRequest {
            program: "/bin/true",
            args: &[],
            env: &[],
            working_dir: Some(&dir),
            stdout: out,
            stderr: out,
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &[],
            setup: ProcessSetup {
                oom_score_adjust: Some(if before.0 == 321 { 322 } else { 321 }),
                umask: Some(0o077),
                ..Default::default()
            },
        };
        let spawned = spawn(&req).expect("spawn /bin/true");
        let pid = crate::os::nix_pid(spawned.pid);
        let status = nix::sys::wait::waitpid(pid, None).expect("our child");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(pid, 0),
            "the child's setup succeeded"
        );
        assert_eq!(ours(), before);
    }

    #[test]
    fn stage_display_names_the_object() {
        let error = err(
            SpawnStage::Exec {
                program: PathBuf::from("/bin/nope"),
            },
            Errno::ENOENT,
        );
        assert!(
            error.to_string().starts_with("exec \"/bin/nope\": ENOENT"),
            "{error}"
        );
    }
}
