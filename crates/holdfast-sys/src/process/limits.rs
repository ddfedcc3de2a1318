//! Turning a service's typed limits and identity into what `spawn` applies: rlimit
//! settings and the identity variables of the environment.
//!
//! holdfast raises its own `RLIMIT_NOFILE` at start (a thousand services need a few
//! thousand fds: the soft limit to the hard limit, and as root the hard limit to the
//! kernel's `nr_open`), and gives each child back the soft limit
//! holdfast started with unless the service sets `limits.nofile`, as systemd does:
//! `select()`-based programs break with a soft limit above 1024.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::spawn::RlimitSetting;
use crate::model::{Limits, Rlimit, ServiceSpec};

/// holdfast's `RLIMIT_NOFILE` before it raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileBaseline {
    pub soft: u64,
    pub hard: u64,
}

/// The most fds holdfast raises its own hard limit to, as systemd does for itself: a few
/// per service leaves room for well over 100,000 services, and the kernel's `nr_open`
/// bounds it further.
const NOFILE_CEILING: u64 = 1 << 20;

/// Raises holdfast's own `RLIMIT_NOFILE`: the soft limit to the hard limit and, where
/// holdfast may (as root), the hard limit to the kernel's `nr_open` (at most
/// [`NOFILE_CEILING`]) first. Returns the original limits, which children get back.
pub fn raise_nofile() -> nix::Result<NofileBaseline> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let ceiling = nr_open.map_or(hard, |n| n.min(NOFILE_CEILING));
    // Without the privilege (not root) raising the hard limit fails: keep the one we have.
    let raised = ceiling > hard && setrlimit(Resource::RLIMIT_NOFILE, ceiling, ceiling).is_ok();
    if !raised && soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(NofileBaseline { soft, hard })
}

/// The `setrlimit` calls for a child: each configured limit (soft = hard = value), and
/// the original `nofile` soft limit when none is configured.
pub fn rlimit_settings(limits: &Limits, baseline: Option<NofileBaseline>) -> Vec<RlimitSetting> {
    let value = |r: Rlimit| match r {
        Rlimit::Value(n) => n,
        Rlimit::Infinity => libc::RLIM64_INFINITY,
    };
    let configured = [
        (libc::RLIMIT_NOFILE, limits.nofile),
        (libc::RLIMIT_NPROC, limits.nproc),
        (libc::RLIMIT_CORE, limits.core),
        (libc::RLIMIT_MEMLOCK, limits.memlock),
        (libc::RLIMIT_STACK, limits.stack),
    ];
    let mut settings: Vec<RlimitSetting> = configured
        .into_iter()
        .filter_map(|(resource, limit)| {
            let v = value(limit?);
            Some(RlimitSetting {
                resource,
                soft: v,
                hard: v,
            })
        })
        .collect();
    if limits.nofile.is_none() {
        if let Some(base) = baseline {
            settings.push(RlimitSetting {
                resource: libc::RLIMIT_NOFILE,
                soft: base.soft,
                hard: base.hard,
            });
        }
    }
    settings
}

/// rlimits, umask, credentials and no_new_privs of `spec`, without its cgroup and
/// capabilities: how holdfast runs helpers on a service's behalf (exec probes, event
/// hooks), as the service's user and never with more privileges than the service.
pub fn helper_setup<'a>(
    spec: &'a ServiceSpec,
    rlimits: &'a [RlimitSetting],
) -> super::spawn::ProcessSetup<'a> {
    super::spawn::ProcessSetup {
        rlimits,
        umask: spec.privileges.umask,
        credentials: spec.privileges.credentials.as_ref(),
        no_new_privs: spec.privileges.no_new_privs,
        ..super::spawn::ProcessSetup::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_the_original_nofile_soft_limit_unless_configured() {
        let base = NofileBaseline {
            soft: 1024,
            hard: 524_288,
        };
        let inherited = rlimit_settings(&Limits::default(), Some(base));
        assert_eq!(
            inherited,
            [RlimitSetting {
                resource: libc::RLIMIT_NOFILE,
                soft: 1024,
                hard: 524_288
            }]
        );
        let configured = Limits {
            nofile: Some(Rlimit::Value(4096)),
            core: Some(Rlimit::Infinity),
            ..Limits::default()
        };
        let settings = rlimit_settings(&configured, Some(base));
        assert_eq!(settings.len(), 2, "nofile and core, no baseline entry");
        assert!(settings.contains(&RlimitSetting {
            resource: libc::RLIMIT_NOFILE,
            soft: 4096,
            hard: 4096
        }));
    }
}
