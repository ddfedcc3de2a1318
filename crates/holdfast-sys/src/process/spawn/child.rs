//! The child side: its own stack, and the async-signal-safe pre-exec sequence from
//! `clone` to `execve` (see the numbered steps in the `spawn` module documentation).

use std::os::fd::RawFd;

use nix::errno::Errno;

use super::*;

/// The child's stack. Generous: the pre-exec sequence needs a few KiB, and an unused
/// anonymous mapping costs address space, not memory (pages are touched only when used).
pub(super) const CHILD_STACK_SIZE: usize = 256 * 1024;

/// An anonymous mapping for the child's stack with a `PROT_NONE` guard page below it, so
/// an overflow faults instead of running into other memory. Unmapped on drop, which
/// `spawn` does only after clone has returned (the child has exec'ed or exited by then).
pub(super) struct ChildStack {
    pub(super) base: *mut libc::c_void,
    pub(super) len: usize,
}

impl ChildStack {
    pub(super) fn new() -> Result<ChildStack, Errno> {
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
    pub(super) fn top(&self) -> *mut libc::c_void {
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
pub(super) struct ChildArgs<'a> {
    pub(super) plan: &'a mut ChildPlan,
    pub(super) report: RawFd,
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
pub(super) extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&mut ChildArgs` that `spawn` passed to clone; it and the plan
    // it borrows stay alive and unused by the parent, which CLONE_VFORK keeps suspended
    // until this child has exec'ed or exited.
    let child = unsafe { &mut *arg.cast::<ChildArgs<'_>>() };
    child_main(child.plan, child.report)
}

/// Runs the pre-exec sequence (see the module docs) and execs; never returns.
pub(super) fn child_main(plan: &mut ChildPlan, report: RawFd) -> ! {
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
pub(super) struct CapHeader {
    pub(super) version: u32,
    pub(super) pid: libc::c_int,
}

/// The kernel's `struct __user_cap_data_struct`; version 3 takes two (bits 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct CapData {
    pub(super) effective: u32,
    pub(super) permitted: u32,
    pub(super) inheritable: u32,
}

pub(super) const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Steps 5-9: rlimits, affinity, OOM score, umask, credentials, capabilities.
/// Raw system calls only: glibc's `setuid`/`setgid`/`setgroups` broadcast to all threads
/// with a signal (SIGRTMIN+1), which this single-threaded child has reset to default.
pub(super) fn child_setup(setup: &SetupPlan, report: RawFd) {
    set_resources(setup, report);
    drop_bounding_set(setup, report);
    set_credentials(setup, report);
    set_capabilities(setup, report);
}

/// Steps 5-7: rlimits (raising a hard limit needs root, so before the user switch), CPU
/// affinity, OOM score, umask.
fn set_resources(setup: &SetupPlan, report: RawFd) {
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
}

/// Step 8, first part: the bounding set.
fn drop_bounding_set(setup: &SetupPlan, report: RawFd) {
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
}

/// Step 8: `PR_SET_KEEPCAPS` if capabilities are kept, then `setgroups` → `setresgid` →
/// `setresuid`, in this order: each later call drops the right to make the earlier one.
fn set_credentials(setup: &SetupPlan, report: RawFd) {
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
}

/// Step 9: the kept capabilities (effective, permitted, inheritable), raised as ambient
/// so that they survive `execve` of a non-root program.
fn set_capabilities(setup: &SetupPlan, report: RawFd) {
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
pub(super) fn child_setup_fds(plan: &mut ChildPlan, mut report: RawFd) -> RawFd {
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
pub(super) unsafe fn write_decimal(out: *mut u8, mut value: u32) {
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
pub(super) fn child_fail(report: RawFd, stage: ChildStage, detail: RawFd) -> ! {
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
