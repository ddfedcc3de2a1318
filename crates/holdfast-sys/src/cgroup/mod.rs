//! Control groups: one cgroup per service under a holdfast-owned parent, for limits
//! (memory, CPU, pids), for killing a whole service (including processes that left its
//! process group) and for recognising OOM kills.
//!
//! Layout: `<holdfast's own cgroup>/<parent>/<service>`, where `<parent>` is named by
//! the runtime (unique per daemon, so two holdfasts never share a service cgroup).
//! - **v2** (unified hierarchy, controllers delegated to holdfast's cgroup): one directory;
//!   limits in `memory.max`, `memory.high`, `cpu.max`, `cpu.weight`, `pids.max`.
//! - **v1** (legacy or hybrid): one directory per controller hierarchy holdfast uses
//!   (`memory`, `cpu`, `pids`); limits in `memory.limit_in_bytes`,
//!   `memory.soft_limit_in_bytes`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.shares`,
//!   `pids.max`. Membership is read from the first hierarchy (`pids` when mounted).
//!
//! Invariants:
//! - A limit that is configured but cannot be enforced (controller missing) fails the
//!   spawn with an error naming the controller: a limit that silently does not hold is
//!   worse than none.
//! - Limits are rewritten at every spawn, with "no limit" written for unset ones, so a
//!   reload that removes a limit really removes it.
//! - Nothing here forks or waits; the runtime reaps what a kill leaves behind.
//! - A daemon killed by SIGKILL cannot remove its cgroups, so `setup` sweeps the empty
//!   cgroups of dead daemons: parents named `holdfast*.<pid>` whose pid no longer
//!   exists. A live daemon's cgroups are never touched (a just-created, still empty
//!   service cgroup must survive until its child joins), and `rmdir` refuses any cgroup
//!   that still has processes.

mod counters;
mod detect;
mod files;

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use holdfast_core::unix::Signal;
use nix::errno::Errno;

use crate::os::kill;
use holdfast_core::unix::Pid;

pub use counters::CounterFiles;
pub use detect::{Detected, Hierarchy, detect, detect_at};

use crate::model::CgroupLimits;

/// cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Controllers holdfast uses for limits.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Errors of cgroup setup and service cgroups, naming the file and the action.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy found (looked at /proc/self/cgroup and /sys/fs/cgroup)")]
    Unavailable,
    #[error("failed to {action} {path:?}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "limits.{limit} cannot be enforced: the cgroup {version} controller `{controller}` is not available to holdfast (see `holdfast doctor`)"
    )]
    MissingController {
        limit: &'static str,
        controller: &'static str,
        version: Version,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// The holdfast-owned parent cgroup(s), set up once at daemon start.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    /// v2: one entry (controller `""`, the parent directory). v1: one per controller
    /// hierarchy, the membership hierarchy first.
    parents: Vec<(String, PathBuf)>,
    /// Controllers that limits may use.
    controllers: Vec<String>,
}

impl Cgroups {
    /// Creates `<own cgroup>/<name>` in the detected hierarchies and, on v2, delegates
    /// the available controllers down to it.
    pub fn setup(detected: &Detected, name: &str) -> Result<Cgroups, CgroupError> {
        let cgroups = Self::create(detected, name)?;
        cgroups.sweep_stale(name);
        Ok(cgroups)
    }

    fn create(detected: &Detected, name: &str) -> Result<Cgroups, CgroupError> {
        match detected.preferred() {
            Some(Version::V2) => {
                let own = detected
                    .v2
                    .as_ref()
                    .expect("v2 preferred only when present");
                let parent = own.own_dir().join(name);
                fs::create_dir_all(&parent).map_err(io_err("create cgroup", &parent))?;
                let controllers = files::delegate_v2(&own.own_dir(), &parent, &own.controllers)?;
                Ok(Cgroups {
                    version: Version::V2,
                    parents: vec![(String::new(), parent)],
                    controllers,
                })
            }
            Some(Version::V1) => {
                let mut parents = Vec::new();
                for h in detected.v1_in_membership_order() {
                    let parent = h.own_dir().join(name);
                    fs::create_dir_all(&parent).map_err(io_err("create cgroup", &parent))?;
                    parents.push((h.controllers[0].clone(), parent));
                }
                let controllers = parents.iter().map(|(c, _)| c.clone()).collect();
                Ok(Cgroups {
                    version: Version::V1,
                    parents,
                    controllers,
                })
            }
            None => Err(CgroupError::Unavailable),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// The directory of the membership hierarchy's parent (for messages and doctor).
    pub fn parent_dir(&self) -> &Path {
        &self.parents[0].1
    }

    /// Removes empty cgroups of dead holdfasts next to ours (`<own>/holdfast*.<pid>/*`
    /// first, then the parents themselves).
    fn sweep_stale(&self, ours: &str) {
        // The pid in a cgroup's name is its daemon's pid in the daemon's namespace. From a
        // nested pid namespace (a container, holdfast as its PID 1) the host's daemons
        // are not in our `/proc`: they would all look dead, and the empty cgroup of a
        // live daemon's service (between two runs) would be swept from under it.
        if in_nested_pid_namespace() {
            return;
        }
        let dead = |name: &str| {
            name.rsplit_once('.')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        for (_, parent) in &self.parents {
            let Some(own) = parent.parent() else { continue };
            let Ok(entries) = fs::read_dir(own) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("holdfast")
                    || name == ours
                    || !dead(&name)
                    || !entry.path().is_dir()
                {
                    continue;
                }
                if let Ok(children) = fs::read_dir(entry.path()) {
                    for child in children.filter_map(Result::ok) {
                        if child.path().is_dir() {
                            let _ = fs::remove_dir(child.path());
                        }
                    }
                }
                let _ = fs::remove_dir(entry.path());
            }
        }
    }

    /// Re-creates parents removed by hand while holdfast runs.
    fn ensure_parents(&self) -> Result<(), CgroupError> {
        for (_, parent) in &self.parents {
            if parent.exists() {
                continue;
            }
            fs::create_dir_all(parent).map_err(io_err("create cgroup", parent))?;
            if self.version == Version::V2 {
                let own = parent.parent().unwrap_or(parent);
                files::delegate_v2(own, parent, &self.controllers)?;
            }
        }
        Ok(())
    }

    /// Creates (or reuses) the cgroup of `service` and writes its limits.
    pub fn service(
        &self,
        service: &str,
        limits: &CgroupLimits,
    ) -> Result<ServiceCgroup, CgroupError> {
        self.check_controllers(limits)?;
        self.ensure_parents()?;
        let dirs: Vec<(String, PathBuf)> = self
            .parents
            .iter()
            .map(|(controller, parent)| (controller.clone(), parent.join(service)))
            .collect();
        for (_, dir) in &dirs {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create cgroup", dir)(e)),
            }
        }
        let cgroup = ServiceCgroup {
            version: self.version,
            dirs,
        };
        match self.version {
            Version::V2 => files::write_v2_limits(&cgroup.dirs[0].1, limits, &self.controllers)?,
            Version::V1 => {
                for (controller, dir) in &cgroup.dirs {
                    files::write_v1_limits(controller, dir, limits)?;
                }
            }
        }
        Ok(cgroup)
    }

    fn check_controllers(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let wanted: [(&'static str, &'static str, bool); 5] = [
            ("memory", "memory", limits.memory.is_some()),
            ("memory_high", "memory", limits.memory_high.is_some()),
            ("cpu_quota", "cpu", limits.cpu_quota.is_some()),
            ("cpu_weight", "cpu", limits.cpu_weight.is_some()),
            ("pids", "pids", limits.pids.is_some()),
        ];
        for (limit, controller, set) in wanted {
            if set && !self.controllers.iter().any(|c| c == controller) {
                return Err(CgroupError::MissingController {
                    limit,
                    controller,
                    version: self.version,
                });
            }
        }
        Ok(())
    }

    /// Removes the parent directories (only succeeds once every service cgroup is gone).
    pub fn remove(&self) {
        for (_, dir) in &self.parents {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// One service's cgroup (a directory per v1 hierarchy, or one v2 directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCgroup {
    version: Version,
    /// `(controller, dir)`; the first is the membership hierarchy.
    dirs: Vec<(String, PathBuf)>,
}

/// Upper bound on kill passes: a fork bomb forks between our read of `cgroup.procs` and
/// the kills, but every pass kills all it saw, and `pids.max` bounds the population.
const MAX_KILL_PASSES: usize = 100;

impl ServiceCgroup {
    pub fn dir(&self) -> &Path {
        &self.dirs[0].1
    }

    /// Whether every directory of the cgroup is still there (an operator, or another
    /// tool, may have removed an empty one while the service was between two runs).
    pub fn exists(&self) -> bool {
        self.dirs
            .iter()
            .all(|(_, dir)| dir.join("cgroup.procs").exists())
    }

    /// `cgroup.procs` of every hierarchy, opened for writing (close-on-exec), for the
    /// child to join with a write of `0`.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|(_, dir)| {
                let path = dir.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(io_err("open", &path))
            })
            .collect()
    }

    /// The processes in the cgroup (empty when it is gone).
    pub fn pids(&self) -> Vec<Pid> {
        fs::read_to_string(self.dir().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
            .map(Pid::from_raw)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pids().is_empty()
    }

    /// Sends `signal` to every process of the cgroup; returns how many were signalled.
    /// SIGKILL goes through `cgroup.kill` on v2 when the kernel has it (atomic, races no
    /// fork); otherwise processes are signalled one by one, and for SIGKILL the pass is
    /// repeated until no process remains that was not already killed.
    pub fn signal(&self, signal: Signal) -> usize {
        if signal == Signal::SIGKILL && self.version == Version::V2 {
            let kill_file = self.dir().join("cgroup.kill");
            if kill_file.exists() && fs::write(&kill_file, "1").is_ok() {
                return self.pids().len();
            }
        }
        let mut signalled: Vec<Pid> = Vec::new();
        for _ in 0..MAX_KILL_PASSES {
            let fresh: Vec<Pid> = self
                .pids()
                .into_iter()
                .filter(|pid| !signalled.contains(pid))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                // ESRCH: it exited meanwhile.
                let _ = kill(pid, signal);
                signalled.push(pid);
            }
            if signal != Signal::SIGKILL {
                break;
            }
        }
        signalled.len()
    }

    /// How many processes of this cgroup the OOM killer has killed so far (v2:
    /// `memory.events`, v1: `memory.oom_control`), or `None` without a memory controller.
    pub fn oom_kills(&self) -> Option<u64> {
        let (dir, file) = match self.version {
            Version::V2 => (self.dir(), "memory.events"),
            Version::V1 => (
                self.dirs
                    .iter()
                    .find(|(c, _)| c == "memory")
                    .map(|(_, d)| d.as_path())?,
                "memory.oom_control",
            ),
        };
        files::oom_kill_count(&fs::read_to_string(dir.join(file)).ok()?)
    }

    /// Memory charged to the cgroup: v2 `memory.current`, v1 `memory.usage_in_bytes`;
    /// `None` without a memory controller. One small kernel-generated file, read through
    /// `files` (see [`CounterFiles`]).
    pub fn memory_bytes(&self, files: &mut CounterFiles) -> Option<u64> {
        match self.version {
            Version::V2 => files.read(&self.dir().join("memory.current")),
            Version::V1 => {
                files.read(&self.controller_dir("memory")?.join("memory.usage_in_bytes"))
            }
        }
    }

    /// Tasks (threads included) in the cgroup from `pids.current`; without the pids
    /// controller, the number of processes in `cgroup.procs`.
    pub fn tasks(&self, files: &mut CounterFiles) -> Option<u64> {
        let pids_dir = match self.version {
            Version::V2 => Some(self.dir()),
            Version::V1 => self.controller_dir("pids"),
        };
        pids_dir
            .and_then(|dir| files.read(&dir.join("pids.current")))
            .or_else(|| u64::try_from(self.pids().len()).ok())
    }

    fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Removes the cgroup directories; `EBUSY` (processes left) is ignored, the next
    /// spawn reuses the cgroup.
    pub fn remove(&self) {
        for (_, dir) in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {}
                Err(e) => tracing::debug!("cgroup {} not removed: {e}", dir.display()),
            }
        }
    }
}

/// Whether this process is outside the host's (initial) pid namespace, whose inode the
/// kernel fixes (`PROC_PID_INIT_INO`). `/proc/self/status`'s `NSpid` cannot tell: with
/// its own `/proc` mounted, a container sees only its own level.
fn in_nested_pid_namespace() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").is_ok_and(|ns| ns.ino() != PROC_PID_INIT_INO)
}

#[cfg(test)]
mod tests;
