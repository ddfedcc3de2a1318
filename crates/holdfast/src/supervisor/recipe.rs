//! The one recipe for every process holdfast starts on a service's behalf: its main
//! process, its exec probes and its event hooks get the same environment, identity
//! variables and resource limits, so a probe or hook sees the world the service sees.
//!
//! What differs per role is added by the caller: the main process gets `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, its cgroup and capabilities; a hook gets the event's `HOLDFAST_*`
//! variables. Helpers never get more privileges than the service
//! ([`limits::helper_setup`]).

use crate::model::ServiceSpec;
use crate::process::limits::{self, NofileBaseline};
use crate::process::spawn::{ProcessSetup, RlimitSetting};

/// Environment and limits of a process of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// holdfast's own environment (minus its private variables), then the spec's `env`,
    /// `HOLDFAST_SERVICE`, and `HOME`/`USER`/`LOGNAME` of the service user unless the spec
    /// sets them.
    pub env: Vec<(String, String)>,
    /// The spec's rlimits, and holdfast's original `nofile` soft limit when the spec sets
    /// none (holdfast raised its own).
    pub rlimits: Vec<RlimitSetting>,
}

impl Recipe {
    pub fn new(
        base_env: &[(String, String)],
        spec: &ServiceSpec,
        nofile: Option<NofileBaseline>,
    ) -> Self {
        let mut env: Vec<(String, String)> = base_env
            .iter()
            .filter(|(k, _)| !spec.env.contains_key(k))
            .cloned()
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("HOLDFAST_SERVICE".to_owned(), spec.name.to_string()));
        let identity = limits::identity_env(spec.privileges.credentials.as_ref());
        let ours = |k: &str| identity.iter().any(|(i, _)| i == k) && !spec.env.contains_key(k);
        env.retain(|(k, _)| !ours(k));
        env.extend(
            identity
                .into_iter()
                .filter(|(k, _)| !spec.env.contains_key(k)),
        );
        Self {
            env,
            rlimits: limits::rlimit_settings(&spec.limits, nofile),
        }
    }

    /// How a helper (exec probe, hook) of `spec` is set up: the service's user, umask,
    /// `no_new_privs` and these limits; no cgroup, no capabilities.
    pub fn helper_setup<'a>(&'a self, spec: &'a ServiceSpec) -> ProcessSetup<'a> {
        limits::helper_setup(spec, &self.rlimits)
    }
}
