//! The cgroup of the systemd unit that runs holdfast (`Delegate=yes`), as seen from a
//! control process of that unit (`ExecStartPre=`, `ExecStopPost=`): systemd runs those
//! in the `.control` subcgroup of a delegated unit, so the unit's cgroup is its parent.
//!
//! - [`release_controllers`]: before a restarted holdfast is placed in the unit's cgroup.
//!   The holdfast before it enabled controllers in the unit's `cgroup.subtree_control`
//!   (and moved itself into a leaf, see `files::delegate_v2`); v2 refuses a process in a
//!   cgroup that enables controllers for its children ("no internal processes"), so
//!   systemd could not start the new main process there (219/CGROUP) and the services
//!   that outlived the crash would never be adopted. Disabling the controllers again
//!   drops the services' limits until the new holdfast adopts them and writes them back.
//! - [`kill_leftovers`]: after a stop that left services behind (`KillMode=process`
//!   SIGKILLs only holdfast when `TimeoutStopSec=` runs out).
//!
//! Plain file I/O over a given tree (and `kill` for the leftovers), so unit tests run it
//! against a fake tree.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use holdfast_core::unix::{Pid, Signal};

use super::{CgroupError, Version, detect_at, io_err};

/// The subcgroup systemd (since 247) runs a delegated unit's control processes in.
pub const CONTROL_CGROUP: &str = ".control";

/// Where a control process finds its unit's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitCgroup {
    /// The unit's cgroup directory, in the unified hierarchy (v2) or in systemd's own
    /// `name=systemd` hierarchy (v1), which holds every process of the unit.
    Delegated { version: Version, dir: PathBuf },
    /// The process is not in a `.control` cgroup: not a control process of a delegated
    /// unit (run by hand, or by a systemd without `.control`). Its own cgroup path.
    NotControl(String),
    /// No hierarchy tracks the process.
    Unknown,
}

/// The real host's view.
pub fn unit_cgroup() -> UnitCgroup {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    unit_cgroup_at(Path::new("/sys/fs/cgroup"), &own)
}

/// The unit's cgroup under the cgroup mounts at `root`, given `/proc/self/cgroup`.
pub fn unit_cgroup_at(root: &Path, proc_self_cgroup: &str) -> UnitCgroup {
    let detected = detect_at(root, proc_self_cgroup);
    let (version, mount, path) = if let Some(v2) = detected.v2 {
        (Version::V2, v2.mount, v2.own_path)
    } else if let Some(path) = proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        (parts.next()? == "name=systemd").then(|| parts.next())?
    }) {
        (Version::V1, root.join("systemd"), path.to_owned())
    } else {
        return UnitCgroup::Unknown;
    };
    let Some(unit) = path.trim_end_matches('/').strip_suffix(CONTROL_CGROUP) else {
        return UnitCgroup::NotControl(path);
    };
    let Some(unit) = unit.strip_suffix('/') else {
        return UnitCgroup::NotControl(path);
    };
    let dir = match unit.trim_matches('/') {
        "" => mount,
        rel => mount.join(rel),
    };
    UnitCgroup::Delegated { version, dir }
}

/// Every cgroup directory under `dir` (itself included), the deepest first, so that a
/// child's controllers are off before its parent's are disabled.
fn subtree(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                subtree(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_owned());
}

/// v2: disables every controller enabled in `cgroup.subtree_control` of `unit` and of
/// the cgroups under it (the deepest first: the kernel of some versions refuses to
/// disable a controller that a child still enables). Returns each cgroup changed with
/// the controllers it disabled; nothing for a unit with nothing enabled. A cgroup
/// without the file (gone meanwhile, or a fake tree) is passed over.
pub fn release_controllers(unit: &Path) -> Result<Vec<(PathBuf, Vec<String>)>, CgroupError> {
    let mut dirs = Vec::new();
    subtree(unit, &mut dirs);
    let mut released = Vec::new();
    for dir in dirs {
        let file = dir.join("cgroup.subtree_control");
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &file)(e)),
        };
        let enabled: Vec<String> = text
            .split_whitespace()
            .map(|c| c.trim_start_matches('+').to_owned())
            .filter(|c| !c.starts_with('-'))
            .collect();
        if enabled.is_empty() {
            continue;
        }
        let line = enabled
            .iter()
            .map(|c| format!("-{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        match fs::write(&file, line) {
            Ok(()) => released.push((dir, enabled)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("write", &file)(e)),
        }
    }
    Ok(released)
}

/// The pids in `cgroup.procs` of `unit` and the cgroups under it, except those of the
/// `.control` cgroup (the control process itself).
pub fn unit_pids(unit: &Path) -> Vec<Pid> {
    let mut dirs = Vec::new();
    subtree(unit, &mut dirs);
    let control = unit.join(CONTROL_CGROUP);
    dirs.iter()
        .filter(|dir| !dir.starts_with(&control))
        .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many rounds [`kill_leftovers`] makes at most: each kills what the cgroups hold,
/// including children forked by a process killed in the round before.
const KILL_ROUNDS: usize = 10;

/// SIGKILLs every process left in `unit` (but the `.control` cgroup's), round after
/// round until a round finds none it has not killed already; returns how many it killed.
pub fn kill_leftovers(unit: &Path) -> usize {
    let own = crate::os::getpid();
    let mut killed = BTreeSet::new();
    for _ in 0..KILL_ROUNDS {
        let fresh: Vec<Pid> = unit_pids(unit)
            .into_iter()
            .filter(|pid| *pid != own && !killed.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            if crate::os::kill(pid, Signal::SIGKILL).is_ok() {
                killed.insert(pid);
            }
        }
    }
    killed.len()
}
