//! Hidden commands the unit of `holdfast gen systemd --self` runs around holdfast
//! (`interop::systemd::self_unit`): `cgroup-release` as `ExecStartPre=+`, `cgroup-reap`
//! as `ExecStopPost=+`. systemd runs them in the `.control` subcgroup of the delegated
//! unit; each says on stderr (the journal) what it did, and neither fails the unit
//! for something missing: outside systemd, on v1, on a unit with nothing to do, they do
//! nothing.

use std::process::ExitCode;

use miette::miette;

use crate::cgroup::{self, UnitCgroup, Version};

/// Before holdfast starts: disables the controllers the holdfast before this one (killed,
/// its services still running) enabled in the unit's cgroup, so that systemd may place
/// the new main process there; the new holdfast enables them again and writes the
/// adopted services' limits back.
pub fn release() -> miette::Result<ExitCode> {
    let dir = match cgroup::unit_cgroup() {
        UnitCgroup::Delegated {
            version: Version::V2,
            dir,
        } => dir,
        UnitCgroup::Delegated {
            version: Version::V1,
            ..
        } => {
            eprintln!("cgroup-release: cgroup v1: nothing to release");
            return Ok(ExitCode::SUCCESS);
        }
        other => {
            eprintln!(
                "cgroup-release: not a control process of a delegated unit ({other:?}): nothing to do"
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let released = cgroup::release_controllers(&dir).map_err(|e| miette!("cgroup-release: {e}"))?;
    if released.is_empty() {
        eprintln!("cgroup-release: {}: no controllers enabled", dir.display());
    }
    for (cgroup, controllers) in released {
        eprintln!(
            "cgroup-release: {}: disabled {} (left enabled by the holdfast before)",
            cgroup.display(),
            controllers.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the unit stopped, from `$SERVICE_RESULT` (systemd.exec(5)): whether what is left
/// in its cgroup is to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// `TimeoutStopSec=` ran out (SIGKILL reached holdfast alone, `KillMode=process`)
    /// or the unit hit its start limit (no holdfast comes to adopt them): the services
    /// left would run unsupervised.
    Kill,
    /// A crash (the next holdfast adopts the services), a clean stop (nothing is left),
    /// or a result this version does not know: left alone.
    Keep,
}

pub fn after_stop(service_result: Option<&str>) -> AfterStop {
    match service_result {
        Some("timeout" | "start-limit-hit") => AfterStop::Kill,
        _ => AfterStop::Keep,
    }
}

/// After holdfast stopped: kills what is left in the unit's cgroup when
/// [`after_stop`] says so.
pub fn reap() -> miette::Result<ExitCode> {
    let result = std::env::var("SERVICE_RESULT").ok();
    if after_stop(result.as_deref()) == AfterStop::Keep {
        eprintln!(
            "cgroup-reap: service result {}: the services are left alone",
            result.as_deref().unwrap_or("unknown")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let UnitCgroup::Delegated { dir, .. } = cgroup::unit_cgroup() else {
        eprintln!("cgroup-reap: not a control process of a delegated unit: nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let killed = cgroup::kill_leftovers(&dir);
    eprintln!(
        "cgroup-reap: service result {}: killed {killed} processes left in {}",
        result.as_deref().unwrap_or("unknown"),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stop_timeout_or_a_start_limit_kills_the_services_left_behind() {
        assert_eq!(after_stop(Some("timeout")), AfterStop::Kill);
        assert_eq!(after_stop(Some("start-limit-hit")), AfterStop::Kill);
        for kept in [
            "success",
            "signal",
            "core-dump",
            "exit-code",
            "watchdog",
            "oom-kill",
            "resources",
            "something-new",
        ] {
            assert_eq!(after_stop(Some(kept)), AfterStop::Keep, "{kept}");
        }
        assert_eq!(after_stop(None), AfterStop::Keep);
    }
}
