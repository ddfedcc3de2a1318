//! What can go wrong in a spawn, and whose fault it is (a step of the service's setup,
//! or holdfast running short of its own descriptors, memory or processes).

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::model::Capability;

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

pub(super) fn rlimit_name(resource: u32) -> String {
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

pub(super) fn err(stage: SpawnStage, source: Errno) -> SpawnError {
    SpawnError { stage, source }
}
