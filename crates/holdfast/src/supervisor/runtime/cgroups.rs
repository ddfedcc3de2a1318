//! The cgroups of services: holdfast's parent cgroup and its name, each active
//! service's cgroup, OOM-kill recognition, and signalling every process of a run.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::unix::Pid;
use crate::unix::Signal;

use super::Shell;
use crate::cgroup::{self, CgroupError, Cgroups, ServiceCgroup};
use crate::model::{CgroupLimits, ExitStatus, ServiceName, ServiceSpec, SpawnErrorKind, defaults};
use crate::process::group;
use crate::supervisor::service::{RunId, SpawnFailure};
use crate::supervisor::spawn_failure;

/// A service's cgroup while the service is active.
pub(super) struct AttachedCgroup {
    pub(super) cgroup: ServiceCgroup,
    /// OOM kills counted in the cgroup when the current process was spawned.
    oom_kills: Option<u64>,
}

/// Sets up holdfast's parent cgroup, named after the control socket so that two
/// daemons on one host never share a service cgroup (the default socket gives
/// `holdfast`), and so that a daemon started after one was killed finds the cgroups of
/// the services it adopts (or stops). `None`, with a warning, when cgroups are
/// unavailable.
pub(super) fn setup(control: &Path) -> Option<Cgroups> {
    let name = cgroup_name(control);
    match Cgroups::setup(&cgroup::detect(), &name) {
        Ok(cgroups) => {
            tracing::info!(
                "cgroup {}: {} (controllers: {})",
                cgroups.version(),
                cgroups.parent_dir().display(),
                cgroups.controllers().join(", ")
            );
            Some(cgroups)
        }
        Err(e) => {
            tracing::warn!("cgroups unavailable, services are tracked by process group only: {e}");
            None
        }
    }
}

/// `holdfast` for the default control socket (one such daemon per host); else
/// `holdfast-<hash of the socket path>`. Stable across restarts of the daemon: only one
/// daemon at a time serves a control socket (it owns the state directory, see `owner`).
pub fn cgroup_name(control: &Path) -> String {
    if control == Path::new(defaults::CONTROL) {
        return "holdfast".to_owned();
    }
    let hash = holdfast_core::stable_hash::stable_hash(control.as_os_str().as_encoded_bytes());
    format!("holdfast-{hash:016x}")
}

impl Shell {
    /// The cgroup of `service`, while it is active.
    pub(super) fn cgroup(&self, service: &ServiceName) -> Option<&ServiceCgroup> {
        let attached = self.slots.get(service)?.cgroup.as_ref()?;
        Some(&attached.cgroup)
    }

    /// The cgroup for the next process of `name`, its `cgroup.procs` opened for the
    /// child to join, with the current OOM-kill count. An automatic restart finds the
    /// service's cgroup still there (empty) and reuses it as it is; after a reload its
    /// limits are brought to the spec's; one removed by hand is created again.
    pub(super) fn prepare_cgroup(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<Vec<OwnedFd>, SpawnFailure> {
        let Some(cgroups) = &mut self.cgroups else {
            if spec.cgroup != CgroupLimits::default() {
                return Err(spawn_failure::of_service(
                    SpawnErrorKind::Cgroup,
                    "cgroup limits are configured but cgroups are unavailable (see `holdfast doctor`)"
                        .to_owned(),
                ));
            }
            return Ok(Vec::new());
        };
        let failed = |e: CgroupError| spawn_failure::from_cgroup(&e);
        let slot = self.slots.entry(name.clone()).or_default();
        let attached = match &mut slot.cgroup {
            Some(attached) => attached,
            None => slot.cgroup.insert(AttachedCgroup {
                cgroup: cgroups
                    .service(name.as_str(), &spec.cgroup)
                    .map_err(failed)?,
                oom_kills: None,
            }),
        };
        let procs = cgroups
            .open(&mut attached.cgroup, name.as_str(), &spec.cgroup)
            .map_err(failed)?;
        attached.oom_kills = attached.cgroup.oom_kills();
        Ok(procs)
    }

    /// The service became inactive (stopped, failed): remove its cgroup.
    pub(super) fn forget_cgroup(&mut self, service: &ServiceName) {
        let attached = self.slots.get_mut(service).and_then(|s| s.cgroup.take());
        if let Some(attached) = attached {
            attached.cgroup.remove();
        }
    }

    /// At shutdown: every service's cgroup, then holdfast's own.
    pub(super) fn remove_cgroups(&mut self) {
        for slot in self.slots.values() {
            if let Some(attached) = &slot.cgroup {
                attached.cgroup.remove();
            }
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove();
        }
    }

    /// A SIGKILL of the main process that the cgroup's OOM counter accounts for, or an
    /// end of unknown cause it does (a process holdfast did not start, on a kernel that
    /// keeps no exit status for it: `pidfd::exited`).
    pub(super) fn classify(&self, service: &ServiceName, status: ExitStatus) -> ExitStatus {
        if !matches!(
            status,
            ExitStatus::Unknown
                | ExitStatus::Signaled {
                    signal: Signal::SIGKILL,
                    ..
                }
        ) {
            return status;
        }
        let attached = self.slots.get(service).and_then(|s| s.cgroup.as_ref());
        match attached {
            Some(AttachedCgroup {
                cgroup,
                oom_kills: Some(before),
                ..
            }) if cgroup.oom_kills().is_some_and(|n| n > *before) => ExitStatus::OomKilled,
            _ => status,
        }
    }

    /// Signals every process of `run`: through the service's cgroup, which holds also
    /// those that left its process groups; else the run's own group, plus any group its
    /// main process moved to (a daemon that called setsid after forking).
    pub(super) fn signal_run(&self, service: &ServiceName, run: RunId, pgid: Pid, signal: Signal) {
        let whole_cgroup = !self.overlapping(service, run);
        if whole_cgroup && self.cgroup(service).is_some_and(|c| c.signal(signal) > 0) {
            return;
        }
        let mut pgids = vec![pgid];
        pgids.extend(self.table.groups_of(run).into_iter().filter(|g| *g != pgid));
        for pgid in pgids {
            if let Err(e) = group::signal_group(pgid, signal) {
                tracing::warn!("{service}: failed to send {signal} to process group {pgid}: {e}");
            }
        }
    }

    /// Whether another run of `service` may be alive beside `run` (a rollout's old and
    /// new runs): the service's cgroup then holds both, so signals and liveness go by
    /// each run's process groups instead.
    pub(super) fn overlapping(&self, service: &ServiceName, run: RunId) -> bool {
        self.sup
            .service(service)
            .is_some_and(|s| s.live_runs().any(|r| r != run))
    }
}
