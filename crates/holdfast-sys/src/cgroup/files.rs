//! The interface files: what is written where for each limit, per version, and the
//! OOM counters. Plain file I/O, so unit tests check it against a fake directory.

use std::fs;
use std::io;
use std::path::Path;

use super::{CONTROLLERS, CgroupError, io_err};
use crate::model::CgroupLimits;

/// The CFS period holdfast uses for `cpu_quota` (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(io_err("write", &path))
}

/// Enables holdfast's controllers (those available) in `own/cgroup.subtree_control` and
/// `parent/cgroup.subtree_control`; returns the controllers enabled.
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
    let line = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
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
    write(parent, "cgroup.subtree_control", &line)?;
    Ok(wanted)
}

/// v2: `memory.max`, `memory.high`, `cpu.max`, `cpu.weight`, `pids.max` for the
/// enabled controllers; unset limits are written as "no limit".
pub fn write_v2_limits(
    dir: &Path,
    limits: &CgroupLimits,
    controllers: &[String],
) -> Result<(), CgroupError> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    let or_max = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |n| n.to_string());
    if has("memory") {
        write(dir, "memory.max", &or_max(limits.memory))?;
        write(dir, "memory.high", &or_max(limits.memory_high))?;
    }
    if has("cpu") {
        let quota = limits.cpu_quota.map_or_else(
            || "max".to_owned(),
            |p| (u64::from(p) * CPU_PERIOD_US / 100).to_string(),
        );
        write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
        write(
            dir,
            "cpu.weight",
            &limits.cpu_weight.unwrap_or(100).to_string(),
        )?;
    }
    if has("pids") {
        write(dir, "pids.max", &or_max(limits.pids))?;
    }
    Ok(())
}

/// v1: the files of `controller`'s hierarchy; unset limits are written as "no limit".
pub fn write_v1_limits(
    controller: &str,
    dir: &Path,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    let or_minus_one = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |n| n.to_string());
    match controller {
        "memory" => {
            write(dir, "memory.limit_in_bytes", &or_minus_one(limits.memory))?;
            write(
                dir,
                "memory.soft_limit_in_bytes",
                &or_minus_one(limits.memory_high),
            )?;
        }
        "cpu" => {
            write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            let quota = limits.cpu_quota.map(|p| u64::from(p) * CPU_PERIOD_US / 100);
            write(dir, "cpu.cfs_quota_us", &or_minus_one(quota))?;
            // v2's weight 100 is v1's 1024 shares.
            let shares = limits
                .cpu_weight
                .map_or(1024, |w| (u64::from(w) * 1024 / 100).max(2));
            write(dir, "cpu.shares", &shares.to_string())?;
        }
        "pids" => {
            let max = limits
                .pids
                .map_or_else(|| "max".to_owned(), |n| n.to_string());
            write(dir, "pids.max", &max)?;
        }
        _ => {}
    }
    Ok(())
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}
