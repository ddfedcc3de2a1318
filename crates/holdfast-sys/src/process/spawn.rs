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
//! Invariants:
//! - Everything the child needs (CStrings, the argv/envp pointer arrays, the `LISTEN_PID`
//!   slot, `/dev/null`, the fd plan, its stack) is prepared *before* `clone`. Between
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

use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use holdfast_core::unix::Pid;
use libc::c_char;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use crate::model::{Capability, Credentials};

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

/// `exec "/bin/nope": ENOENT: No such file or directory`.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {source}")]
pub struct SpawnError {
    pub stage: SpawnStage,
    pub source: Errno,
}

/// The step of starting a child that failed. Parent-side stages come first, then the
/// child's pre-exec steps in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnStage {
    /// Looking up a program without `/` in `PATH`.
    ResolveProgram {
        program: String,
    },
    /// An argument, environment entry or path contains a NUL byte.
    InvalidString {
        what: String,
    },
    OpenDevNull,
    ErrorPipe,
    /// Creating the child (`clone`; shown as "fork", what it stands in for).
    Fork,
    /// Reading the child's report (parent side).
    ReadErrorPipe,
    ResetSignals,
    Setsid,
    /// Moving a descriptor into place as the child's fd `target`.
    Dup {
        target: RawFd,
    },
    ClearCloexec {
        fd: RawFd,
    },
    /// Marking every fd holdfast did not mean to pass as close-on-exec.
    CloseInheritedFds,
    Chdir {
        dir: PathBuf,
    },
    Exec {
        program: PathBuf,
    },
    /// A process-setup step: cgroup, rlimits, affinity, credentials, capabilities.
    Setup(SetupStep),
    /// The child reported a stage this parent does not know (cannot happen: same binary).
    Unknown {
        code: u32,
    },
}

impl fmt::Display for SpawnStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnStage::ResolveProgram { program } => write!(f, "resolve {program:?} in PATH"),
            SpawnStage::InvalidString { what } => write!(f, "{what} contains a NUL byte"),
            SpawnStage::OpenDevNull => write!(f, "open \"/dev/null\""),
            SpawnStage::ErrorPipe => write!(f, "create error pipe"),
            SpawnStage::Fork => write!(f, "fork"),
            SpawnStage::ReadErrorPipe => write!(f, "read the child's error pipe"),
            SpawnStage::ResetSignals => write!(f, "reset signal mask"),
            SpawnStage::Setsid => write!(f, "setsid"),
            SpawnStage::Dup { target } => write!(f, "dup2 to fd {target}"),
            SpawnStage::ClearCloexec { fd } => write!(f, "clear FD_CLOEXEC on fd {fd}"),
            SpawnStage::CloseInheritedFds => write!(f, "mark inherited fds close-on-exec"),
            SpawnStage::Chdir { dir } => write!(f, "chdir {dir:?}"),
            SpawnStage::Exec { program } => write!(f, "exec {program:?}"),
            SpawnStage::Setup(step) => write!(f, "{step}"),
            SpawnStage::Unknown { code } => write!(f, "unknown pre-exec stage {code}"),
        }
    }
}

/// The steps of [`ProcessSetup`], in the order the child runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupStep {
    JoinCgroup,
    Setrlimit { resource: u32 },
    CpuAffinity,
    OomScoreAdjust,
    DropBoundingSet { capability: Capability },
    KeepCaps,
    Setgroups,
    Setgid { gid: u32 },
    Setuid { uid: u32 },
    Capset,
    RaiseAmbient { capability: Capability },
    NoNewPrivs,
}

impl fmt::Display for SetupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupStep::JoinCgroup => write!(f, "join the service's cgroup"),
            SetupStep::Setrlimit { resource } => write!(f, "setrlimit({})", rlimit_name(*resource)),
            SetupStep::CpuAffinity => write!(f, "sched_setaffinity"),
            SetupStep::OomScoreAdjust => write!(f, "write /proc/self/oom_score_adj"),
            SetupStep::DropBoundingSet { capability } => {
                write!(f, "drop {capability} from the bounding set")
            }
            SetupStep::KeepCaps => write!(f, "prctl(PR_SET_KEEPCAPS)"),
            SetupStep::Setgroups => write!(f, "setgroups"),
            SetupStep::Setgid { gid } => write!(f, "setgid({gid})"),
            SetupStep::Setuid { uid } => write!(f, "setuid({uid})"),
            SetupStep::Capset => write!(f, "capset"),
            SetupStep::RaiseAmbient { capability } => {
                write!(f, "raise ambient capability {capability}")
            }
            SetupStep::NoNewPrivs => write!(f, "prctl(PR_SET_NO_NEW_PRIVS)"),
        }
    }
}

fn rlimit_name(resource: u32) -> String {
    let name = match resource {
        r if r == libc::RLIMIT_NOFILE => "RLIMIT_NOFILE",
        r if r == libc::RLIMIT_NPROC => "RLIMIT_NPROC",
        r if r == libc::RLIMIT_CORE => "RLIMIT_CORE",
        r if r == libc::RLIMIT_MEMLOCK => "RLIMIT_MEMLOCK",
        r if r == libc::RLIMIT_STACK => "RLIMIT_STACK",
        other => return format!("resource {other}"),
    };
    name.to_owned()
}

/// Whether `errno` says the calling process (holdfast) is short of descriptors, memory
/// or processes, rather than that something about the service is wrong.
pub fn is_resource_shortage(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::EAGAIN
    )
}

impl SpawnError {
    /// Whether a step holdfast runs for itself (opening `/dev/null`, the error pipe,
    /// creating the child) failed for lack of holdfast's own resources. Steps the child
    /// runs on the service's behalf are the service's, whatever their errno (a `pids`
    /// limit of its cgroup, an exec that needs more memory than allowed).
    pub fn is_holdfast_resource_shortage(&self) -> bool {
        let holdfasts_own = matches!(
            self.stage,
            SpawnStage::OpenDevNull
                | SpawnStage::ErrorPipe
                | SpawnStage::Fork
                | SpawnStage::ReadErrorPipe
        );
        holdfasts_own && is_resource_shortage(self.source)
    }
}

fn err(stage: SpawnStage, source: Errno) -> SpawnError {
    SpawnError { stage, source }
}

/// Starts `req.program` as a new session and process-group leader and returns once it
/// has exec'ed (or failed to). Blocks the calling thread only for clone + exec.
///
/// The caller must have started the reaper ([`super::reap::start`]): `spawn` never waits.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let program = super::program::resolve(req.program, req.env).map_err(|errno| {
        err(
            SpawnStage::ResolveProgram {
                program: req.program.to_owned(),
            },
            errno,
        )
    })?;
    let dev_null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| err(SpawnStage::OpenDevNull, errno))?;
    let mut plan = ChildPlan::prepare(req, &program, dev_null.as_raw_fd())?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| err(SpawnStage::ErrorPipe, errno))?;
    let stack = ChildStack::new().map_err(|errno| err(SpawnStage::Fork, errno))?;

    // Block every signal across clone so that none of holdfast's handlers (tokio's, which
    // write to a pipe shared with the parent) can run in the child before it resets them.
    let mut saved_mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved_mask),
    )
    .map_err(|errno| err(SpawnStage::Fork, errno))?;

    let mut child = ChildArgs {
        plan: &mut plan,
        report: report_write.as_raw_fd(),
    };
    // SAFETY: `child_entry` only runs `child_main`, which makes async-signal-safe raw
    // system calls on memory prepared before clone and never returns (it execs or
    // `_exit`s), so no allocator lock, destructor or unwinding happens in the child.
    // `stack.top()` is the 16-byte aligned top of a live mapping of CHILD_STACK_SIZE
    // bytes that nothing else uses. `child` (and the plan it borrows) stays alive and
    // untouched by this thread until clone returns: CLONE_VFORK suspends this thread
    // until the child has exec'ed or exited, so the child's accesses all happen before
    // ours resume. Without CLONE_FILES, CLONE_FS, CLONE_SIGHAND or CLONE_THREAD the
    // child's fds, cwd, umask, signal handlers, credentials and thread group are its own.
    let forked = unsafe {
        libc::clone(
            child_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut child).cast(),
        )
    };
    let fork_errno = Errno::last();
    // The child has exec'ed or exited (CLONE_VFORK): its stack is no longer in use.
    drop(stack);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved_mask), None)
        .expect("restoring a signal mask we just read cannot fail");
    if forked < 0 {
        return Err(err(SpawnStage::Fork, fork_errno));
    }
    let pid = Pid::from_raw(forked);
    // Our copy of the write end must go, or the read below would never see EOF.
    drop(report_write);
    drop(dev_null);

    match read_report(&report_read) {
        Ok(None) => Ok(Spawned { pid }),
        Ok(Some(report)) => Err(report.into_error(&plan, program)),
        Err(errno) => Err(err(SpawnStage::ReadErrorPipe, errno)),
    }
}

/// Finds the file `execve` will run. A name without `/` is searched in the `PATH` of the
/// child's environment, else holdfast's own, else a conventional default; empty `PATH`
/// entries (meaning "current directory" to a shell) are skipped on purpose.
fn cstring(bytes: &[u8], what: impl FnOnce() -> String) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| err(SpawnStage::InvalidString { what: what() }, Errno::EINVAL))
}

/// `LISTEN_PID=` followed by room for any pid's digits and the NUL.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const LISTEN_PID_SLOT_LEN: usize = LISTEN_PID_PREFIX.len() + 20 + 1;

/// Variables `spawn` owns (see [`SpawnRequest::env`]).
const LISTEN_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// One descriptor the child must have at `target`.
#[derive(Debug, Clone, Copy)]
struct FdMove {
    source: RawFd,
    target: RawFd,
}

/// Everything the child uses, built before clone. Holds raw pointers into its own
/// buffers, so it must stay where it is (and alive) until the clone is done.
///
/// The child runs in the parent's memory and writes to exactly two parts of the plan:
/// the `LISTEN_PID` slot and the `source` fields of `fd_moves` (its private fd copies).
/// The parent never reads either after clone.
struct ChildPlan {
    program: CString,
    // Owners of the memory `argv`/`envp` point into.
    _argv_storage: Vec<CString>,
    _env_storage: Vec<CString>,
    _listen_pid_slot: Vec<u8>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// Where the child writes its pid's digits (inside `listen_pid_slot`), if passing fds.
    listen_pid_digits: Option<*mut u8>,
    dir: Option<CString>,
    /// stdin, stdout, stderr, then the listen fds, in target order 0, 1, 2, 3, ...
    /// After clone, `source` holds the child's copies: the parent must not read it.
    fd_moves: Vec<FdMove>,
    /// The first fd number that is not a target: every temporary copy lives at or above
    /// it, and everything from it up is made close-on-exec.
    first_free_fd: RawFd,
    /// Fallback bound for marking fds close-on-exec when `close_range` is unavailable.
    fd_limit: RawFd,
    /// The highest signal number (`SIGRTMAX`), read before clone.
    max_signal: libc::c_int,
    /// The kernel's `sigset_t` size in bytes (8 on most architectures), for `rt_sigaction`.
    kernel_sigset_size: libc::size_t,
    setup: SetupPlan,
}

/// [`ProcessSetup`] turned into plain data for the child.
struct SetupPlan {
    cgroup_procs: Vec<RawFd>,
    rlimits: Vec<RlimitSetting>,
    cpu_set: Option<libc::cpu_set_t>,
    /// `/proc/self/oom_score_adj` (opened in the child: opened here, it would be ours)
    /// and the digits to write.
    oom_score: Option<(CString, Vec<u8>)>,
    umask: Option<libc::mode_t>,
    /// `(uid, gid, groups)`; `uid` is `None` when only the group changes.
    credentials: Option<(Option<u32>, u32, Vec<libc::gid_t>)>,
    capabilities: Option<CapabilityPlan>,
    no_new_privs: bool,
}

struct CapabilityPlan {
    /// Bitmask of the capabilities kept.
    keep: u64,
    /// Kept capability numbers, to raise as ambient.
    list: Vec<u8>,
    /// The highest capability the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    last_cap: u8,
}

impl SetupPlan {
    fn prepare(setup: &ProcessSetup<'_>) -> Result<SetupPlan, SpawnError> {
        let cpu_set = match setup.cpu_affinity {
            None => None,
            Some(cpus) => {
                // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                for &cpu in cpus {
                    if cpu >= libc::CPU_SETSIZE as usize {
                        return Err(err(
                            SpawnStage::Setup(SetupStep::CpuAffinity),
                            Errno::EINVAL,
                        ));
                    }
                    // SAFETY: `cpu` was checked against CPU_SETSIZE just above.
                    unsafe { libc::CPU_SET(cpu, &mut set) };
                }
                Some(set)
            }
        };
        let oom_score = setup.oom_score_adjust.map(|score| {
            (
                CString::new("/proc/self/oom_score_adj").expect("no NUL"),
                format!("{score}\n").into_bytes(),
            )
        });
        let credentials = setup.credentials.map(|c| {
            (
                c.user.as_ref().map(|u| u.uid),
                c.gid,
                c.groups.iter().map(|&g| g as libc::gid_t).collect(),
            )
        });
        let capabilities = setup.capabilities.map(|caps| CapabilityPlan {
            keep: caps.iter().fold(0, |mask, cap| mask | cap.mask()),
            list: caps.iter().map(|cap| cap.number()).collect(),
            last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(40),
        });
        Ok(SetupPlan {
            cgroup_procs: setup.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect(),
            rlimits: setup.rlimits.to_vec(),
            cpu_set,
            oom_score,
            umask: setup.umask.map(|m| m as libc::mode_t),
            credentials,
            capabilities,
            no_new_privs: setup.no_new_privs,
        })
    }
}

impl ChildPlan {
    fn prepare(
        req: &SpawnRequest<'_>,
        program: &Path,
        dev_null: RawFd,
    ) -> Result<ChildPlan, SpawnError> {
        let program_c = cstring(program.as_os_str().as_bytes(), || {
            format!("program {program:?}")
        })?;
        let mut argv_storage = Vec::with_capacity(req.args.len() + 1);
        argv_storage.push(cstring(req.program.as_bytes(), || {
            format!("program {:?}", req.program)
        })?);
        for arg in req.args {
            argv_storage.push(cstring(arg.as_bytes(), || format!("argument {arg:?}"))?);
        }

        let passing_fds = !req.listen_fds.is_empty();
        let mut env_storage = Vec::with_capacity(req.env.len() + 2);
        for (key, value) in req.env {
            if LISTEN_VARS.contains(&key.as_str()) {
                continue;
            }
            let entry = format!("{key}={value}");
            env_storage.push(cstring(entry.as_bytes(), || {
                format!("environment variable {key:?}")
            })?);
        }
        if passing_fds {
            env_storage.push(
                CString::new(format!("LISTEN_FDS={}", req.listen_fds.len()))
                    .expect("a formatted number has no NUL"),
            );
            if !req.listen_fd_names.is_empty() {
                let names = format!("LISTEN_FDNAMES={}", req.listen_fd_names.join(":"));
                env_storage.push(cstring(names.as_bytes(), || "LISTEN_FDNAMES".to_owned())?);
            }
        }

        let mut listen_pid_slot = vec![0u8; LISTEN_PID_SLOT_LEN];
        listen_pid_slot[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        // Raw pointers into the slot are taken once, from one `as_mut_ptr`, and the Vec is
        // not touched again until the plan is dropped.
        let slot_ptr = listen_pid_slot.as_mut_ptr();

        let argv: Vec<*const c_char> = argv_storage
            .iter()
            .map(|arg| arg.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let mut envp: Vec<*const c_char> = env_storage.iter().map(|e| e.as_ptr()).collect();
        let listen_pid_digits = if passing_fds {
            envp.push(slot_ptr.cast_const().cast());
            // SAFETY: the prefix is shorter than the slot, so the offset stays in bounds.
            Some(unsafe { slot_ptr.add(LISTEN_PID_PREFIX.len()) })
        } else {
            None
        };
        envp.push(std::ptr::null());

        let dir = match req.working_dir {
            Some(dir) => Some(cstring(dir.as_os_str().as_bytes(), || {
                format!("working directory {dir:?}")
            })?),
            None => None,
        };

        let mut fd_moves = vec![
            FdMove {
                source: dev_null,
                target: 0,
            },
            FdMove {
                source: req.stdout.as_raw_fd(),
                target: 1,
            },
            FdMove {
                source: req.stderr.as_raw_fd(),
                target: 2,
            },
        ];
        for (i, fd) in req.listen_fds.iter().enumerate() {
            fd_moves.push(FdMove {
                source: fd.as_raw_fd(),
                target: RawFd::try_from(3 + i).expect("fewer listen fds than RawFd::MAX"),
            });
        }
        for (fd, target) in req.extra_fds {
            if fd_moves.iter().any(|m| m.target == *target) || *target < 0 {
                return Err(err(SpawnStage::Dup { target: *target }, Errno::EINVAL));
            }
            fd_moves.push(FdMove {
                source: fd.as_raw_fd(),
                target: *target,
            });
        }
        let first_free_fd = fd_moves.iter().map(|m| m.target).max().unwrap_or(2) + 1;

        let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 20))
            .unwrap_or(1 << 16);

        Ok(ChildPlan {
            program: program_c,
            _argv_storage: argv_storage,
            _env_storage: env_storage,
            _listen_pid_slot: listen_pid_slot,
            argv,
            envp,
            listen_pid_digits,
            dir,
            fd_moves,
            first_free_fd,
            fd_limit: RawFd::try_from(fd_limit).unwrap_or(RawFd::MAX),
            max_signal: libc::SIGRTMAX(),
            kernel_sigset_size: usize::try_from(libc::SIGRTMAX())
                .expect("SIGRTMAX is positive")
                .div_ceil(64)
                * 8,
            setup: SetupPlan::prepare(&req.setup)?,
        })
    }
}

/// The child's failure codes on the error pipe (`ChildStage as u32`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum ChildStage {
    ResetSignals = 1,
    Setsid = 2,
    Dup = 3,
    ClearCloexec = 4,
    CloseInheritedFds = 5,
    Chdir = 6,
    Exec = 7,
    JoinCgroup = 8,
    Setrlimit = 9,
    CpuAffinity = 10,
    OomScoreAdjust = 11,
    DropBoundingSet = 12,
    KeepCaps = 13,
    Setgroups = 14,
    Setgid = 15,
    Setuid = 16,
    Capset = 17,
    RaiseAmbient = 18,
    NoNewPrivs = 19,
}

/// `(stage, detail, errno)` as three native-endian 32-bit words; 12 bytes is far below
/// `PIPE_BUF`, so the write is atomic and the parent sees all of it or nothing.
const REPORT_LEN: usize = 12;

struct ChildReport {
    stage: u32,
    detail: i32,
    errno: i32,
}

impl ChildReport {
    fn into_error(self, plan: &ChildPlan, program: PathBuf) -> SpawnError {
        let stage = match self.stage {
            s if s == ChildStage::ResetSignals as u32 => SpawnStage::ResetSignals,
            s if s == ChildStage::Setsid as u32 => SpawnStage::Setsid,
            s if s == ChildStage::Dup as u32 => SpawnStage::Dup {
                target: self.detail,
            },
            s if s == ChildStage::ClearCloexec as u32 => {
                SpawnStage::ClearCloexec { fd: self.detail }
            }
            s if s == ChildStage::CloseInheritedFds as u32 => SpawnStage::CloseInheritedFds,
            s if s == ChildStage::Chdir as u32 => SpawnStage::Chdir {
                dir: plan
                    .dir
                    .as_ref()
                    .map(|d| PathBuf::from(OsStr::from_bytes(d.as_bytes())))
                    .unwrap_or_default(),
            },
            s if s == ChildStage::Exec as u32 => SpawnStage::Exec { program },
            s => match setup_step(s, self.detail) {
                Some(step) => SpawnStage::Setup(step),
                None => SpawnStage::Unknown { code: s },
            },
        };
        err(stage, Errno::from_raw(self.errno))
    }
}

/// The setup step a child's stage code and detail word stand for.
fn setup_step(stage: u32, detail: i32) -> Option<SetupStep> {
    let capability = || Capability::from_number(u8::try_from(detail).unwrap_or(u8::MAX));
    let id = detail as u32;
    Some(match stage {
        s if s == ChildStage::JoinCgroup as u32 => SetupStep::JoinCgroup,
        s if s == ChildStage::Setrlimit as u32 => SetupStep::Setrlimit { resource: id },
        s if s == ChildStage::CpuAffinity as u32 => SetupStep::CpuAffinity,
        s if s == ChildStage::OomScoreAdjust as u32 => SetupStep::OomScoreAdjust,
        s if s == ChildStage::DropBoundingSet as u32 => SetupStep::DropBoundingSet {
            capability: capability(),
        },
        s if s == ChildStage::KeepCaps as u32 => SetupStep::KeepCaps,
        s if s == ChildStage::Setgroups as u32 => SetupStep::Setgroups,
        s if s == ChildStage::Setgid as u32 => SetupStep::Setgid { gid: id },
        s if s == ChildStage::Setuid as u32 => SetupStep::Setuid { uid: id },
        s if s == ChildStage::Capset as u32 => SetupStep::Capset,
        s if s == ChildStage::RaiseAmbient as u32 => SetupStep::RaiseAmbient {
            capability: capability(),
        },
        s if s == ChildStage::NoNewPrivs as u32 => SetupStep::NoNewPrivs,
        _ => return None,
    })
}

/// Reads the child's report until EOF. `None`: the pipe closed empty, so exec succeeded.
fn read_report(pipe: &OwnedFd) -> Result<Option<ChildReport>, Errno> {
    let mut buf = [0u8; REPORT_LEN];
    let mut filled = 0;
    loop {
        match nix::unistd::read(pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == REPORT_LEN {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    if filled < REPORT_LEN {
        // Empty: exec succeeded. A torn report cannot happen (atomic write); if it did,
        // the child still died before exec, so say so rather than claim success.
        return if filled == 0 {
            Ok(None)
        } else {
            Err(Errno::EIO)
        };
    }
    let word = |i: usize| {
        let bytes: [u8; 4] = buf[i * 4..i * 4 + 4]
            .try_into()
            .expect("a 4-byte window of a 12-byte buffer");
        bytes
    };
    Ok(Some(ChildReport {
        stage: u32::from_ne_bytes(word(0)),
        detail: i32::from_ne_bytes(word(1)),
        errno: i32::from_ne_bytes(word(2)),
    }))
}

/// The child's stack. Generous: the pre-exec sequence needs a few KiB, and an unused
/// anonymous mapping costs address space, not memory (pages are touched only when used).
const CHILD_STACK_SIZE: usize = 256 * 1024;

/// An anonymous mapping for the child's stack with a `PROT_NONE` guard page below it, so
/// an overflow faults instead of running into other memory. Unmapped on drop, which
/// `spawn` does only after clone has returned (the child has exec'ed or exited by then).
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> Result<ChildStack, Errno> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| usize::try_from(size).ok())
            .unwrap_or(4096);
        let len = CHILD_STACK_SIZE + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack { base, len };
        // The stack grows down: the guard is the lowest page.
        // SAFETY: `base..base + page` is the start of the mapping we just created.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the end of the mapping (page-aligned, so 16-byte
    /// aligned as every supported ABI wants).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is `len` bytes long.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping `new` created, and no reference
        // into it outlives `self` (the only user, the child, has exec'ed or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What `child_entry` receives through clone's `void *` argument.
struct ChildArgs<'a> {
    plan: &'a mut ChildPlan,
    report: RawFd,
}

// ---------------------------------------------------------------------------------------
// In the child, between clone and execve. Async-signal-safe only: raw libc calls on
// memory prepared before clone; no allocation, no formatting, no panics, no `?` into
// types with destructors. Every failure ends in `child_fail`.
//
// The child shares holdfast's memory (CLONE_VM) and runs on its own stack: it writes
// nothing of the parent's but the scratch parts of `ChildPlan` (see there) and errno.
// ---------------------------------------------------------------------------------------

/// clone's entry point: runs `child_main`, which never returns (returning would make
/// glibc's clone wrapper call the `exit` system call, also harmless, but never happens).
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&mut ChildArgs` that `spawn` passed to clone; it and the plan
    // it borrows stay alive and unused by the parent, which CLONE_VFORK keeps suspended
    // until this child has exec'ed or exited.
    let child = unsafe { &mut *arg.cast::<ChildArgs<'_>>() };
    child_main(child.plan, child.report)
}

/// Runs the pre-exec sequence (see the module docs) and execs; never returns.
fn child_main(plan: &mut ChildPlan, report: RawFd) -> ! {
    // 1. Signals: defaults first, then unblock (everything is still blocked from the
    // parent, so no handler inherited from holdfast can run in between).
    //
    // The raw `rt_sigaction` system call, not libc's `sigaction`: glibc refuses to touch
    // the signals it reserves for itself (32 and 33), yet an ignored one of those survives
    // execve like any other. An all-zero kernel `struct sigaction` means SIG_DFL, no
    // flags, empty mask, whatever the architecture's field order.
    let kernel_action = [0u64; 5];
    for signal in 1..=plan.max_signal {
        // SAFETY: rt_sigaction is a plain system call reading `kernel_action`, a local
        // buffer at least as large as the kernel's struct. EINVAL for SIGKILL and SIGSTOP
        // is expected and ignored.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                kernel_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                plan.kernel_sigset_size,
            );
        }
    }
    // SAFETY: sigemptyset/sigprocmask on a local set are async-signal-safe.
    let unblocked = unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    };
    if unblocked != 0 {
        child_fail(report, ChildStage::ResetSignals, 0);
    }

    // 2. A new session, so the child is also a process-group leader (pgid == pid).
    // SAFETY: setsid is a plain system call.
    if unsafe { libc::setsid() } < 0 {
        child_fail(report, ChildStage::Setsid, 0);
    }

    // 3. Join the cgroup, early, so everything from here on is accounted to it.
    for &fd in &plan.setup.cgroup_procs {
        // SAFETY: write on an fd opened before clone, from a static buffer.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } < 0 {
            child_fail(report, ChildStage::JoinCgroup, fd);
        }
    }

    // 4. Descriptors.
    let report = child_setup_fds(plan, report);

    // 5.-9. rlimits, CPU affinity, OOM score, umask, setgroups → setgid → setuid, caps.
    child_setup(&plan.setup, report);

    // 10. Working directory.
    if let Some(dir) = &plan.dir {
        // SAFETY: `dir` is a NUL-terminated string prepared before clone.
        if unsafe { libc::chdir(dir.as_ptr()) } < 0 {
            child_fail(report, ChildStage::Chdir, 0);
        }
    }

    // 11. no_new_privs: from here on exec can grant nothing (setuid bits, file caps).
    if plan.setup.no_new_privs {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) is a plain system call on integers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            child_fail(report, ChildStage::NoNewPrivs, 0);
        }
    }

    // 12. LISTEN_PID: only now is our own pid known.
    if let Some(digits) = plan.listen_pid_digits {
        // SAFETY: getpid is a plain system call.
        let pid = unsafe { libc::getpid() };
        // SAFETY: `digits` points at 21 writable bytes inside the LISTEN_PID slot, which
        // `plan` owns and nothing else references in this (single-threaded) child.
        unsafe { write_decimal(digits, pid.unsigned_abs()) };
    }

    // 13. Exec.
    // SAFETY: program, argv and envp are NUL-terminated strings and NULL-terminated
    // pointer arrays owned by `plan`, which outlives this call.
    unsafe {
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
    }
    child_fail(report, ChildStage::Exec, 0)
}

/// The kernel's `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// The kernel's `struct __user_cap_data_struct`; version 3 takes two (bits 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Steps 5-9: rlimits, affinity, OOM score, umask, credentials, capabilities.
/// Raw system calls only: glibc's `setuid`/`setgid`/`setgroups` broadcast to all threads
/// with a signal (SIGRTMIN+1), which this single-threaded child has reset to default.
fn child_setup(setup: &SetupPlan, report: RawFd) {
    for limit in &setup.rlimits {
        let value = libc::rlimit64 {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: prlimit64 on ourselves (pid 0) reading a local struct.
        let set = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                limit.resource,
                &raw const value,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if set < 0 {
            child_fail(report, ChildStage::Setrlimit, limit.resource as i32);
        }
    }
    if let Some(set) = &setup.cpu_set {
        // SAFETY: sched_setaffinity on ourselves reading a cpu_set_t prepared before clone.
        let done = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
        if done < 0 {
            child_fail(report, ChildStage::CpuAffinity, 0);
        }
    }
    if let Some((path, digits)) = &setup.oom_score {
        // SAFETY: open/write/close on a path and buffer prepared before clone.
        let written = unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let n = if fd < 0 {
                -1
            } else {
                libc::write(fd, digits.as_ptr().cast(), digits.len())
            };
            if fd >= 0 {
                libc::close(fd);
            }
            n
        };
        if written < 0 {
            child_fail(report, ChildStage::OomScoreAdjust, 0);
        }
    }
    if let Some(mask) = setup.umask {
        // SAFETY: umask is a plain system call that cannot fail.
        unsafe { libc::umask(mask) };
    }
    // The bounding set can only shrink with CAP_SETPCAP in the effective set, which a
    // service user no longer has after setuid: drop first, while still root.
    if let Some(caps) = &setup.capabilities {
        for cap in 0..=caps.last_cap {
            if caps.keep & (1u64 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl(PR_CAPBSET_DROP) is a plain system call on integers.
            let dropped =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
            // EINVAL: the kernel does not know this capability; nothing to drop.
            if dropped < 0 && Errno::last() != Errno::EINVAL {
                child_fail(report, ChildStage::DropBoundingSet, i32::from(cap));
            }
        }
    }
    if let Some((uid, gid, groups)) = &setup.credentials {
        if setup.capabilities.is_some() && uid.is_some() {
            // SAFETY: prctl(PR_SET_KEEPCAPS) is a plain system call on integers.
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
                child_fail(report, ChildStage::KeepCaps, 0);
            }
        }
        // SAFETY: raw setgroups reading `groups`, prepared before clone.
        if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } < 0 {
            child_fail(report, ChildStage::Setgroups, 0);
        }
        // SAFETY: raw setresgid on integers.
        if unsafe { libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) } < 0 {
            child_fail(report, ChildStage::Setgid, *gid as i32);
        }
        if let Some(uid) = *uid {
            // SAFETY: raw setresuid on integers.
            if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } < 0 {
                child_fail(report, ChildStage::Setuid, uid as i32);
            }
        }
    }
    if let Some(caps) = &setup.capabilities {
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let word = |shift: u32| (caps.keep >> shift) as u32;
        let data = [
            CapData {
                effective: word(0),
                permitted: word(0),
                inheritable: word(0),
            },
            CapData {
                effective: word(32),
                permitted: word(32),
                inheritable: word(32),
            },
        ];
        // SAFETY: raw capset reading a local header and two data structs (version 3).
        if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } < 0 {
            child_fail(report, ChildStage::Capset, 0);
        }
        for &cap in &caps.list {
            // SAFETY: prctl(PR_CAP_AMBIENT) is a plain system call on integers.
            let raised = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    libc::c_ulong::from(cap),
                    0,
                    0,
                )
            };
            if raised < 0 {
                child_fail(report, ChildStage::RaiseAmbient, i32::from(cap));
            }
        }
    }
}

/// Puts stdin/stdout/stderr and the listen fds at 0, 1, 2, 3, ... and marks everything
/// else close-on-exec. Returns the (possibly moved) report fd.
///
/// A source may already sit on some other move's target (a listen fd at 3 that must go
/// to 4, the report pipe at 3, ...). So first every source and the report fd are copied
/// above the last target (`F_DUPFD_CLOEXEC`, so the copies vanish at exec), and only then
/// are the copies `dup2`'ed into place: no `dup2` can clobber a source still needed.
fn child_setup_fds(plan: &mut ChildPlan, mut report: RawFd) -> RawFd {
    let first_free = plan.first_free_fd;
    if report < first_free {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) is a plain system call.
        let moved = unsafe { libc::fcntl(report, libc::F_DUPFD_CLOEXEC, first_free) };
        if moved < 0 {
            child_fail(report, ChildStage::Dup, first_free);
        }
        report = moved;
    }
    for index in 0..plan.fd_moves.len() {
        let FdMove { source, target } = plan.fd_moves[index];
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) is a plain system call.
        let copy = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, first_free) };
        if copy < 0 {
            child_fail(report, ChildStage::Dup, target);
        }
        plan.fd_moves[index].source = copy;
    }
    for index in 0..plan.fd_moves.len() {
        let FdMove { source, target } = plan.fd_moves[index];
        // SAFETY: dup2 is a plain system call; `source` is our private copy.
        if unsafe { libc::dup2(source, target) } < 0 {
            child_fail(report, ChildStage::Dup, target);
        }
        // dup2 already leaves `target` without FD_CLOEXEC; clearing it explicitly keeps
        // that true whatever primitive is used above.
        // SAFETY: fcntl(F_SETFD) is a plain system call.
        if unsafe { libc::fcntl(target, libc::F_SETFD, 0) } < 0 {
            child_fail(report, ChildStage::ClearCloexec, target);
        }
    }

    // Everything from `first_free` up closes at exec: our temporary copies, the report
    // pipe, and any fd holdfast inherited or opened without O_CLOEXEC.
    // SAFETY: close_range is a plain system call; CLOEXEC mode closes nothing now.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked < 0 {
        // Kernels before 5.11: mark each fd (EBADF for the unused numbers is fine).
        for fd in first_free..plan.fd_limit {
            // SAFETY: fcntl(F_SETFD) is a plain system call.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // Targets may be sparse (an extra fd at 5 with nothing at 3 and 4): the numbers in
    // between are no targets and must not leak either.
    for fd in 3..first_free {
        if !plan.fd_moves.iter().any(|m| m.target == fd) {
            // SAFETY: fcntl(F_SETFD) is a plain system call.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    report
}

/// Writes `value` in decimal followed by a NUL at `out`. Async-signal-safe.
///
/// # Safety
/// `out` must be valid for writing 11 bytes (`u32::MAX` has 10 digits, plus the NUL).
unsafe fn write_decimal(out: *mut u8, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i < len <= 10, within the caller's guarantee.
        unsafe { out.add(i).write(digits[len - 1 - i]) };
    }
    // SAFETY: len <= 10, so the NUL lands within the 11 bytes.
    unsafe { out.add(len).write(0) };
}

/// Reports `(stage, detail, errno)` to the parent and exits 127. Reads `errno` first,
/// before any other call can change it.
fn child_fail(report: RawFd, stage: ChildStage, detail: RawFd) -> ! {
    let errno = Errno::last_raw();
    let mut buf = [0u8; REPORT_LEN];
    buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&detail.to_ne_bytes());
    buf[8..12].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; `buf` is a local array. The write
    // cannot block or be torn (12 bytes into an empty pipe whose reader waits for us);
    // were it to fail anyway, the parent would take the EOF for success and learn of the
    // failure only from the exit status 127 the reaper reports.
    unsafe {
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
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
