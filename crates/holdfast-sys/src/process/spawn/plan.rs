//! Everything the child needs, prepared before `clone`: strings, pointer arrays, the
//! `LISTEN_PID` slot, the fd moves and the setup steps. The child only reads it (and
//! writes its scratch parts, see the module documentation of `spawn`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::c_char;
use nix::errno::Errno;

use super::*;

/// `LISTEN_PID=` followed by room for any pid's digits and the NUL.
pub(super) const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
pub(super) const LISTEN_PID_SLOT_LEN: usize = LISTEN_PID_PREFIX.len() + 20 + 1;

/// Variables `spawn` owns (see [`SpawnRequest::env`]).
pub(super) const LISTEN_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// One descriptor the child must have at `target`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FdMove {
    pub(super) source: RawFd,
    pub(super) target: RawFd,
}

/// Everything the child uses, built before clone. Holds raw pointers into its own
/// buffers, so it must stay where it is (and alive) until the clone is done.
///
/// The child runs in the parent's memory and writes to exactly two parts of the plan:
/// the `LISTEN_PID` slot and the `source` fields of `fd_moves` (its private fd copies).
/// The parent never reads either after clone.
pub(super) struct ChildPlan {
    pub(super) program: CString,
    // Owners of the memory `argv`/`envp` point into.
    pub(super) _argv_storage: Vec<CString>,
    pub(super) _env_storage: Vec<CString>,
    pub(super) _listen_pid_slot: Vec<u8>,
    pub(super) argv: Vec<*const c_char>,
    pub(super) envp: Vec<*const c_char>,
    /// Where the child writes its pid's digits (inside `listen_pid_slot`), if passing fds.
    pub(super) listen_pid_digits: Option<*mut u8>,
    pub(super) dir: Option<CString>,
    /// stdin, stdout, stderr, then the listen fds, in target order 0, 1, 2, 3, ...
    /// After clone, `source` holds the child's copies: the parent must not read it.
    pub(super) fd_moves: Vec<FdMove>,
    /// The first fd number that is not a target: every temporary copy lives at or above
    /// it, and everything from it up is made close-on-exec.
    pub(super) first_free_fd: RawFd,
    /// Fallback bound for marking fds close-on-exec when `close_range` is unavailable.
    pub(super) fd_limit: RawFd,
    /// The highest signal number (`SIGRTMAX`), read before clone.
    pub(super) max_signal: libc::c_int,
    /// The kernel's `sigset_t` size in bytes (8 on most architectures), for `rt_sigaction`.
    pub(super) kernel_sigset_size: libc::size_t,
    pub(super) setup: SetupPlan,
}

/// [`ProcessSetup`] turned into plain data for the child.
pub(super) struct SetupPlan {
    pub(super) cgroup_procs: Vec<RawFd>,
    pub(super) rlimits: Vec<RlimitSetting>,
    pub(super) cpu_set: Option<libc::cpu_set_t>,
    /// `/proc/self/oom_score_adj` (opened in the child: opened here, it would be ours)
    /// and the digits to write.
    pub(super) oom_score: Option<(CString, Vec<u8>)>,
    pub(super) umask: Option<libc::mode_t>,
    /// `(uid, gid, groups)`; `uid` is `None` when only the group changes.
    pub(super) credentials: Option<(Option<u32>, u32, Vec<libc::gid_t>)>,
    pub(super) capabilities: Option<CapabilityPlan>,
    pub(super) no_new_privs: bool,
}

pub(super) struct CapabilityPlan {
    /// Bitmask of the capabilities kept.
    pub(super) keep: u64,
    /// Kept capability numbers, to raise as ambient.
    pub(super) list: Vec<u8>,
    /// The highest capability the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub(super) last_cap: u8,
}

impl SetupPlan {
    pub(super) fn prepare(setup: &ProcessSetup<'_>) -> Result<SetupPlan, SpawnError> {
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

/// The index of stdin in [`ChildPlan::fd_moves`]: `/dev/null` of the fd table the clone
/// happens in, unlike every other source, which is the caller's.
const STDIN: usize = 0;

// SAFETY: the raw pointers of a plan (`argv`, `envp`, `listen_pid_digits`) point into
// heap buffers the plan owns (`CString`s and `Vec`s, which do not move when the plan
// does), and nothing else refers to them: moving the plan to another thread moves the
// pointees' only owner along with the pointers.
unsafe impl Send for ChildPlan {}

impl ChildPlan {
    pub(super) fn set_stdin(&mut self, dev_null: RawFd) {
        self.fd_moves[STDIN].source = dev_null;
    }

    /// The caller's fds the child needs (all but stdin), each once: what must be open in
    /// the fd table of whichever thread clones.
    pub(super) fn passed_fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = Vec::with_capacity(self.fd_moves.len() + 3);
        let sources = self.fd_moves.iter().skip(STDIN + 1).map(|m| m.source);
        for fd in sources.chain(self.setup.cgroup_procs.iter().copied()) {
            if !fds.contains(&fd) {
                fds.push(fd);
            }
        }
        fds
    }

    /// Renames the fds of [`ChildPlan::passed_fds`] (`from`) to their copies in another
    /// fd table (`to`, in the same order).
    pub(super) fn renumber(&mut self, from: &[RawFd], to: &[RawFd]) {
        let rename = |fd: &mut RawFd| {
            if let Some(i) = from.iter().position(|f| f == fd) {
                *fd = to[i];
            }
        };
        for moved in self.fd_moves.iter_mut().skip(STDIN + 1) {
            rename(&mut moved.source);
        }
        self.setup.cgroup_procs.iter_mut().for_each(rename);
    }

    /// The plan for `req`; its stdin is set by [`ChildPlan::set_stdin`] before clone.
    pub(super) fn prepare(req: &SpawnRequest<'_>, program: &Path) -> Result<ChildPlan, SpawnError> {
        let program_c = cstring(program.as_os_str().as_bytes(), || {
            format!("program {program:?}")
        })?;
        let argv_storage = argv_strings(req)?;

        let passing_fds = !req.listen_fds.is_empty();
        let env_storage = env_strings(req)?;

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

        let fd_moves = fd_moves(req)?;
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

/// `argv`: the program as given, then the arguments.
fn argv_strings(req: &SpawnRequest<'_>) -> Result<Vec<CString>, SpawnError> {
    let mut argv_storage = Vec::with_capacity(req.args.len() + 1);
    argv_storage.push(cstring(req.program.as_bytes(), || {
        format!("program {:?}", req.program)
    })?);
    for arg in req.args {
        argv_storage.push(cstring(arg.as_bytes(), || format!("argument {arg:?}"))?);
    }
    Ok(argv_storage)
}

/// `envp` without `LISTEN_PID` (its slot is filled in by the child): the request's
/// variables, except the `LISTEN_*` ones `spawn` owns, then `LISTEN_FDS` and
/// `LISTEN_FDNAMES` when fds are passed.
fn env_strings(req: &SpawnRequest<'_>) -> Result<Vec<CString>, SpawnError> {
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
    Ok(env_storage)
}

/// Where each fd goes in the child: `/dev/null` (set later, see [`STDIN`]), stdout,
/// stderr at 0-2, the listen fds at 3.., then the extra fds at the targets asked for
/// (each target once).
fn fd_moves(req: &SpawnRequest<'_>) -> Result<Vec<FdMove>, SpawnError> {
    let mut fd_moves = vec![
        FdMove {
            source: -1,
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
    Ok(fd_moves)
}
