//! The interface files: what is written where for each limit, per version, and the
//! OOM counters. Plain file I/O, so unit tests check it against a fake directory.

use std::fs;
use std::io;
use std::path::Path;

use super::{CONTROLLERS, CgroupError, Version, io_err};
use crate::model::CgroupLimits;

/// The CFS period holdfast uses for `cpu_quota` (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(io_err("write", &path))
}

/// Enables holdfast's controllers (those available) in `own/cgroup.subtree_control`, so
/// that `parent` may hand them to the services that need them; returns the controllers
/// enabled. (`parent`'s own `cgroup.subtree_control` is written per need, see
/// [`enable_v2`].)
///
/// v2 forbids enabling controllers for children of a non-root cgroup that itself holds
/// processes ("no internal processes"): if holdfast's own cgroup refuses with `EBUSY`,
/// holdfast moves itself into a leaf `<own>/<parent name>.daemon` and retries, as
/// systemd's delegation guidelines suggest.
pub fn delegate_v2(
    own: &Path,
    parent: &Path,
    available: &[String],
) -> Result<Vec<String>, CgroupError> {
    let wanted: Vec<String> = available
        .iter()
        .filter(|c| CONTROLLERS.contains(&c.as_str()))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return Ok(wanted);
    }
    let line = enable_line(&wanted);
    let own_control = own.join("cgroup.subtree_control");
    if let Err(e) = fs::write(&own_control, &line) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io_err("write", &own_control)(e));
        }
        let name = parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "holdfast".to_owned());
        let leaf = own.join(format!("{name}.daemon"));
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create cgroup", &leaf)(e)),
        }
        write(&leaf, "cgroup.procs", "0")?;
        write(own, "cgroup.subtree_control", &line)?;
    }
    Ok(wanted)
}

/// Enables `controllers` for the children of `parent` (one write; enabling one already
/// enabled is a no-op for the kernel, so the line may repeat earlier ones).
pub fn enable_v2(parent: &Path, controllers: &[String]) -> Result<(), CgroupError> {
    write(parent, "cgroup.subtree_control", &enable_line(controllers))
}

/// The controllers `parent` already enables for its children (from an earlier daemon of
/// the same name): none when the file is missing.
pub fn enabled_v2(parent: &Path) -> Vec<String> {
    fs::read_to_string(parent.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| c.trim_start_matches('+').to_owned())
        .filter(|c| CONTROLLERS.contains(&c.as_str()))
        .collect()
}

fn enable_line(controllers: &[String]) -> String {
    controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One limit's interface file: its controller, its name, and what it holds for given
/// limits (the kernel's default when the limit is unset).
struct LimitFile {
    controller: &'static str,
    name: &'static str,
    value: fn(&CgroupLimits) -> String,
}

fn or_max(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_owned(), |n| n.to_string())
}

fn or_minus_one(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_owned(), |n| n.to_string())
}

fn quota_us(limits: &CgroupLimits) -> Option<u64> {
    limits.cpu_quota.map(|p| u64::from(p) * CPU_PERIOD_US / 100)
}

/// v2: `memory.max`, `memory.high`, `cpu.max`, `cpu.weight`, `pids.max`.
const V2_FILES: [LimitFile; 5] = [
    LimitFile {
        controller: "memory",
        name: "memory.max",
        value: |l| or_max(l.memory),
    },
    LimitFile {
        controller: "memory",
        name: "memory.high",
        value: |l| or_max(l.memory_high),
    },
    LimitFile {
        controller: "cpu",
        name: "cpu.max",
        value: |l| {
            let quota = quota_us(l).map_or_else(|| "max".to_owned(), |q| q.to_string());
            format!("{quota} {CPU_PERIOD_US}")
        },
    },
    LimitFile {
        controller: "cpu",
        name: "cpu.weight",
        value: |l| l.cpu_weight.unwrap_or(100).to_string(),
    },
    LimitFile {
        controller: "pids",
        name: "pids.max",
        value: |l| or_max(l.pids),
    },
];

/// v1: the period before the quota (the kernel checks the pair at each write).
const V1_FILES: [LimitFile; 6] = [
    LimitFile {
        controller: "memory",
        name: "memory.limit_in_bytes",
        value: |l| or_minus_one(l.memory),
    },
    LimitFile {
        controller: "memory",
        name: "memory.soft_limit_in_bytes",
        value: |l| or_minus_one(l.memory_high),
    },
    LimitFile {
        controller: "cpu",
        name: "cpu.cfs_period_us",
        value: |_| CPU_PERIOD_US.to_string(),
    },
    LimitFile {
        controller: "cpu",
        name: "cpu.cfs_quota_us",
        value: |l| or_minus_one(quota_us(l)),
    },
    LimitFile {
        controller: "cpu",
        // v2's weight 100 is v1's 1024 shares.
        name: "cpu.shares",
        value: |l| {
            let shares = l
                .cpu_weight
                .map_or(1024, |w| (u64::from(w) * 1024 / 100).max(2));
            shares.to_string()
        },
    },
    LimitFile {
        controller: "pids",
        name: "pids.max",
        value: |l| or_max(l.pids),
    },
];

/// What a cgroup directory's limit files hold, as far as holdfast knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Not known (found, not created, or a write failed midway): every file is written.
    Unknown,
    /// These limits (a directory just created holds the defaults): only the files whose
    /// value differs are written. Each write to `cpu.cfs_*` costs a bandwidth update in
    /// the kernel, so one that changes nothing is worth skipping at 1000 services.
    Limits(CgroupLimits),
}

impl Holds {
    pub const DEFAULTS: Holds = Holds::Limits(CgroupLimits {
        memory: None,
        memory_high: None,
        cpu_quota: None,
        cpu_weight: None,
        pids: None,
    });
}

/// Writes `limits` into the files of `controllers` in `dir`, skipping those already
/// holding their value.
pub fn write_limits(
    version: Version,
    controllers: &[String],
    dir: &Path,
    holds: Holds,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    let files: &[LimitFile] = match version {
        Version::V1 => &V1_FILES,
        Version::V2 => &V2_FILES,
    };
    for file in files {
        if !controllers.iter().any(|c| c == file.controller) {
            continue;
        }
        let value = (file.value)(limits);
        if let Holds::Limits(held) = &holds {
            if (file.value)(held) == value {
                continue;
            }
        }
        write(dir, file.name, &value)?;
    }
    Ok(())
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}
