//! Control groups: one cgroup per service under a holdfast-owned parent, for limits
//! (memory, CPU, pids), for killing a whole service (including processes that left its
//! process group) and for recognising OOM kills (of services with a memory limit).
//!
//! Layout: `<holdfast's own cgroup>/<parent>/<service>`, where `<parent>` is named by
//! the runtime (unique per daemon, so two holdfasts never share a service cgroup).
//! - **v2** (unified hierarchy, controllers delegated to holdfast's cgroup): one directory;
//!   limits in `memory.max`, `memory.high`, `cpu.max`, `cpu.weight`, `pids.max`.
//!   A controller is enabled in the parent's `cgroup.subtree_control` only once a
//!   service's limits use it (enabling one creates its state in every service cgroup).
//! - **v1** (legacy or hybrid): a directory in the tracking hierarchy (`pids` when
//!   mounted, else `cpu`, else `memory`: the cheapest to create first), whose
//!   `cgroup.procs` tells membership, plus one in the hierarchy of each other controller
//!   the service's limits use; limits in `memory.limit_in_bytes`,
//!   `memory.soft_limit_in_bytes`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.shares`,
//!   `pids.max`. A service without limits costs one `mkdir`, not three, and no write.
//!
//! Invariants:
//! - A limit that is configured but cannot be enforced (controller missing) fails the
//!   spawn with an error naming the controller: a limit that silently does not hold is
//!   worse than none.
//! - Only limit files whose value changes are written (a new directory holds the
//!   kernel's defaults; one holdfast did not create is written in full), so a reload
//!   that removes a limit writes "no limit" back, and one that drops a v1 controller
//!   takes the service out of that hierarchy.
//! - Nothing here forks or waits; the runtime reaps what a kill leaves behind.
//! - A daemon killed by SIGKILL cannot remove its cgroups, so `setup` sweeps the empty
//!   cgroups of dead daemons: parents named `holdfast*.<pid>` whose pid no longer
//!   exists. A live daemon's cgroups are never touched (a just-created, still empty
//!   service cgroup must survive until its child joins), and `rmdir` refuses any cgroup
//!   that still has processes.

mod counters;
mod detect;
mod files;
mod unit;

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use holdfast_core::unix::Signal;
use nix::errno::Errno;

use crate::os::kill;
use holdfast_core::unix::Pid;

pub use counters::CounterFiles;
pub use detect::{Detected, Hierarchy, detect, detect_at};
pub use files::Holds;
pub use unit::{
    CONTROL_CGROUP, UnitCgroup, kill_leftovers, release_controllers, unit_cgroup, unit_cgroup_at,
    unit_pids,
};

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

impl CgroupError {
    /// Whether a cgroup file or directory was missing: removed by hand (an operator, or
    /// another tool, may remove an empty cgroup while its service is between two runs).
    pub fn is_gone(&self) -> bool {
        matches!(self, CgroupError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
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
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// v2: one entry (controller `""`, the parent directory). v1: one per controller
    /// hierarchy, the tracking hierarchy first.
    parents: Vec<(String, PathBuf)>,
    /// Controllers that limits may use.
    controllers: Vec<String>,
    /// v2: the controllers the parent enables for its children, those that some service's
    /// limits used so far (never disabled again: that would drop other services' limits).
    enabled: Vec<String>,
}

/// Each limit by name, with its controller and whether `limits` sets it.
fn limit_controllers(limits: &CgroupLimits) -> [(&'static str, &'static str, bool); 5] {
    [
        ("memory", "memory", limits.memory.is_some()),
        ("memory_high", "memory", limits.memory_high.is_some()),
        ("cpu_quota", "cpu", limits.cpu_quota.is_some()),
        ("cpu_weight", "cpu", limits.cpu_weight.is_some()),
        ("pids", "pids", limits.pids.is_some()),
    ]
}

/// The controllers that `limits` use, in [`CONTROLLERS`] order.
fn needed(limits: &CgroupLimits) -> Vec<String> {
    let table = limit_controllers(limits);
    CONTROLLERS
        .iter()
        .filter(|c| {
            table
                .iter()
                .any(|(_, controller, set)| *set && controller == *c)
        })
        .map(|c| (*c).to_owned())
        .collect()
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
                    enabled: files::enabled_v2(&parent),
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
                    enabled: Vec::new(),
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

    /// The directory of the tracking hierarchy's parent (for messages and doctor).
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

    /// `service`'s directory under the parent at `index`, created unless it is there (a
    /// new one holds the kernel's defaults). A parent removed by hand while holdfast
    /// runs is created again; finding that out costs nothing while it is there.
    fn make_dir(&mut self, index: usize, service: &str) -> Result<(PathBuf, Holds), CgroupError> {
        let dir = self.parents[index].1.join(service);
        let created = match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.recreate_parent(index)?;
                fs::create_dir(&dir)
            }
            other => other,
        };
        match created {
            Ok(()) => Ok((dir, Holds::DEFAULTS)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((dir, Holds::Unknown)),
            Err(e) => Err(io_err("create cgroup", &dir)(e)),
        }
    }

    fn recreate_parent(&mut self, index: usize) -> Result<(), CgroupError> {
        let parent = &self.parents[index].1;
        fs::create_dir_all(parent).map_err(io_err("create cgroup", parent))?;
        if self.version == Version::V2 {
            let own = parent.parent().unwrap_or(parent);
            files::delegate_v2(own, parent, &self.controllers)?;
            // A new parent enables nothing for its children yet.
            self.enabled.clear();
        }
        Ok(())
    }

    /// v2: enables `wanted` in the parent's `cgroup.subtree_control` unless it already is
    /// (one write the first time a service's limits use a controller).
    fn enable(&mut self, wanted: &[String]) -> Result<(), CgroupError> {
        if wanted.iter().all(|c| self.enabled.contains(c)) {
            return Ok(());
        }
        let enabled: Vec<String> = self
            .controllers
            .iter()
            .filter(|c| self.enabled.contains(c) || wanted.contains(c))
            .cloned()
            .collect();
        files::enable_v2(&self.parents[0].1, &enabled)?;
        self.enabled = enabled;
        Ok(())
    }

    /// v1: the parents (by index) a service with `wanted` controllers is in: the
    /// tracking hierarchy and the hierarchy of each controller it uses.
    fn v1_parents(&self, wanted: &[String]) -> Vec<usize> {
        (0..self.parents.len())
            .filter(|&i| i == 0 || wanted.contains(&self.parents[i].0))
            .collect()
    }

    /// v1: `service`'s directory in the hierarchy at `index`, with `limits` written.
    fn v1_dir(
        &mut self,
        index: usize,
        service: &str,
        limits: &CgroupLimits,
    ) -> Result<(String, PathBuf), CgroupError> {
        let (dir, holds) = self.make_dir(index, service)?;
        let controller = self.parents[index].0.clone();
        files::write_limits(
            Version::V1,
            std::slice::from_ref(&controller),
            &dir,
            holds,
            limits,
        )?;
        Ok((controller, dir))
    }

    /// Creates (or finds) the cgroup of `service` and writes its limits: on v1 in the
    /// tracking hierarchy and those of the controllers its limits use; on v2 with
    /// those controllers enabled for it.
    pub fn service(
        &mut self,
        service: &str,
        limits: &CgroupLimits,
    ) -> Result<ServiceCgroup, CgroupError> {
        self.check_controllers(limits)?;
        let wanted = needed(limits);
        let (dir, controllers) = match self.version {
            Version::V2 => {
                let (dir, holds) = self.make_dir(0, service)?;
                self.enable(&wanted)?;
                files::write_limits(Version::V2, &self.enabled, &dir, holds, limits)?;
                let controllers = wanted.into_iter().map(|c| (c, dir.clone())).collect();
                (dir, controllers)
            }
            Version::V1 => {
                let mut controllers = Vec::new();
                for index in self.v1_parents(&wanted) {
                    controllers.push(self.v1_dir(index, service, limits)?);
                }
                (controllers[0].1.clone(), controllers)
            }
        };
        Ok(ServiceCgroup {
            version: self.version,
            dir,
            controllers,
            holds: Holds::Limits(*limits),
        })
    }

    /// Brings `service`'s cgroup to `limits`, those of its next run (a reload may have
    /// changed them): on v1 it joins the hierarchy of a controller now used and leaves
    /// (removes, when empty) one no longer used; on either version it writes only the
    /// files whose value changes, "no limit" for a limit removed. Nothing to do when the
    /// limits are those it holds, as at every automatic restart.
    pub fn apply(
        &mut self,
        cgroup: &mut ServiceCgroup,
        service: &str,
        limits: &CgroupLimits,
    ) -> Result<(), CgroupError> {
        if cgroup.holds == Holds::Limits(*limits) {
            return Ok(());
        }
        self.check_controllers(limits)?;
        // Unknown until every write succeeded: a retry then writes every file.
        let holds = std::mem::replace(&mut cgroup.holds, Holds::Unknown);
        let wanted = needed(limits);
        match self.version {
            Version::V2 => {
                self.enable(&wanted)?;
                files::write_limits(Version::V2, &self.enabled, &cgroup.dir, holds, limits)?;
                let dir = &cgroup.dir;
                cgroup.controllers = wanted.into_iter().map(|c| (c, dir.clone())).collect();
            }
            Version::V1 => {
                let tracking = &cgroup.dir;
                // A directory still holding processes (a leftover of the last run) stays,
                // with its limit written back to none below.
                cgroup.controllers.retain(|(controller, dir)| {
                    dir == tracking || wanted.contains(controller) || !remove_dir(dir)
                });
                for (controller, dir) in &cgroup.controllers {
                    let controller = std::slice::from_ref(controller);
                    files::write_limits(Version::V1, controller, dir, holds, limits)?;
                }
                for index in self.v1_parents(&wanted) {
                    let controller = &self.parents[index].0;
                    if !cgroup.controllers.iter().any(|(c, _)| c == controller) {
                        let joined = self.v1_dir(index, service, limits)?;
                        cgroup.controllers.push(joined);
                    }
                }
            }
        }
        cgroup.holds = Holds::Limits(*limits);
        Ok(())
    }

    /// `cgroup.procs` of `service`'s cgroup, opened for its next process to join, the
    /// cgroup first brought to `limits` (see [`Cgroups::apply`]). One removed by hand
    /// meanwhile (all of it, or a v1 hierarchy's directory) is created again.
    pub fn open(
        &mut self,
        cgroup: &mut ServiceCgroup,
        service: &str,
        limits: &CgroupLimits,
    ) -> Result<Vec<OwnedFd>, CgroupError> {
        match self
            .apply(cgroup, service, limits)
            .and_then(|()| cgroup.open_procs())
        {
            Err(e) if e.is_gone() => {
                *cgroup = self.service(service, limits)?;
                cgroup.open_procs()
            }
            opened => opened,
        }
    }

    fn check_controllers(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for (limit, controller, set) in limit_controllers(limits) {
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

    /// Kills every process in the service cgroups under the parent but those named in
    /// `keep`: at start, what a killed holdfast with the same cgroup name left behind
    /// that is not adopted. Returns each cgroup that held processes, with their count.
    pub fn kill_strays(&self, keep: &[&str]) -> Vec<(String, usize)> {
        let Ok(entries) = fs::read_dir(self.parent_dir()) else {
            return Vec::new();
        };
        let mut killed = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name.as_str()) || !entry.path().is_dir() {
                continue;
            }
            let cgroup = ServiceCgroup {
                version: self.version,
                dir: entry.path(),
                controllers: Vec::new(),
                holds: Holds::Unknown,
            };
            let n = cgroup.signal(Signal::SIGKILL);
            if n > 0 {
                killed.push((name, n));
            }
        }
        killed
    }

    /// Removes the parent directories (only succeeds once every service cgroup is gone).
    pub fn remove(&self) {
        for (_, dir) in &self.parents {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// One service's cgroup: a directory per v1 hierarchy it is in, or one v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCgroup {
    version: Version,
    /// The directory in the tracking hierarchy (v2: the only one): its `cgroup.procs`
    /// lists the service's processes, for kills and for recognising its daemons.
    dir: PathBuf,
    /// The controllers the service is in, each with its directory (v2: `dir` for the
    /// controllers its limits use; v1: also the tracking hierarchy's own controller).
    controllers: Vec<(String, PathBuf)>,
    /// What its limit files hold.
    holds: Holds,
}

/// Upper bound on kill passes: a fork bomb forks between our read of `cgroup.procs` and
/// the kills, but every pass kills all it saw, and `pids.max` bounds the population.
const MAX_KILL_PASSES: usize = 100;

impl ServiceCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its directory in each hierarchy (one on v2).
    fn dirs(&self) -> Vec<&Path> {
        match self.version {
            Version::V2 => vec![self.dir.as_path()],
            Version::V1 => self.controllers.iter().map(|(_, d)| d.as_path()).collect(),
        }
    }

    /// `cgroup.procs` of every hierarchy, opened for writing (close-on-exec), for the
    /// child to join with a write of `0`. A cgroup removed by hand between two runs (an
    /// operator, or another tool, may remove an empty one) fails with
    /// [`CgroupError::is_gone`]: no `stat` before each spawn asks.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs()
            .into_iter()
            .map(|dir| {
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
            // Without `cgroup.kill` (Linux < 5.14) the open fails: no `stat` first.
            let killed = fs::OpenOptions::new()
                .write(true)
                .open(self.dir().join("cgroup.kill"))
                .and_then(|mut file| file.write_all(b"1"));
            if killed.is_ok() {
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
    /// `memory.events`, v1: `memory.oom_control`), or `None` outside the memory
    /// controller (no memory limit), without reading anything.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let dir = self.controller_dir("memory")?;
        files::oom_kill_count(&fs::read_to_string(dir.join(file)).ok()?)
    }

    /// Memory charged to the cgroup: v2 `memory.current`, v1 `memory.usage_in_bytes`;
    /// outside the memory controller (no memory limit), the resident memory of its
    /// processes. One small kernel-generated file, read through `files` (see
    /// [`CounterFiles`]).
    pub fn memory_bytes(&self, files: &mut CounterFiles) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        match self.controller_dir("memory") {
            Some(dir) => files.read(&dir.join(file)),
            None => resident_bytes(&self.pids()),
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
        self.controllers
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Removes the cgroup directories; `EBUSY` (processes left) is ignored, the next
    /// spawn reuses the cgroup.
    pub fn remove(&self) {
        for dir in self.dirs() {
            remove_dir(dir);
        }
    }
}

/// Removes an (empty) cgroup directory; whether it is gone.
fn remove_dir(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => true,
        Err(e) => {
            tracing::debug!("cgroup {} not removed: {e}", dir.display());
            false
        }
    }
}

/// The resident memory of `pids` (`/proc/PID/statm`, in pages); `None` without any.
fn resident_bytes(pids: &[Pid]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    let page = u64::try_from(page).ok()?;
    let pages: u64 = pids
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/statm")).ok())
        .filter_map(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(pages * page)
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
