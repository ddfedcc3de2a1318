//! The difference between two plans, as applied by `reload` and shown by `--dry-run`.

use crate::model::{Plan, ServiceSpec};
use crate::supervisor::answer::ReloadPlan;

/// Compares the running plan with a new one. Services are compared by their whole
/// definition: any change restarts the service so that it runs what the file says.
/// Except hooks (`[service.X.on]`): the runtime reads them from the plan at each event,
/// so a change of hooks alone applies without a restart. And `group`, a label for the CLI
/// that the running processes never see.
pub fn diff(old: &Plan, new: &Plan, dry_run: bool) -> ReloadPlan {
    let mut plan = ReloadPlan {
        dry_run,
        ..ReloadPlan::default()
    };
    for (name, spec) in &new.services {
        match old.services.get(name) {
            None => plan.added.push(name.clone()),
            Some(current) if !same_but_labels(current, spec) => plan.changed.push(name.clone()),
            Some(_) => plan.unchanged.push(name.clone()),
        }
    }
    plan.removed = old
        .services
        .keys()
        .filter(|name| !new.services.contains_key(*name))
        .cloned()
        .collect();
    let (a, b) = (&old.daemon, &new.daemon);
    // Not `http`: the shell moves its HTTP server itself (or says why not).
    let settings = [
        ("control", a.control != b.control),
        ("control_group", a.control_group != b.control_group),
        ("admin_group", a.admin_group != b.admin_group),
        ("state_dir", a.state_dir != b.state_dir),
        ("log_dir", a.log_dir != b.log_dir),
        ("pass_env", a.pass_env != b.pass_env),
    ];
    plan.ignored = settings
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| format!("[holdfast].{key}"))
        .collect();
    plan
}

/// Equal but for what a running process does not depend on (hooks, group, on_restart,
/// whether its output also goes to journald: the shell applies that to the live capture),
/// and the build `[upgrade]` resolved at load: a reload after a flip of the watched link
/// must not restart the service onto an unverified build behind the rollout's back
/// (moving to it is an upgrade's job).
fn same_but_labels(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    what_runs(a) == what_runs(b)
}

/// A fingerprint of what a run of `spec` is, stable across holdfast processes of one
/// build (FNV-1a of the spec without its labels, see [`same_but_labels`]): a holdfast
/// started after its predecessor was killed compares it with the one written down for
/// each process it finds, to tell whether the process runs what the config says now.
pub fn fingerprint(spec: &ServiceSpec) -> u64 {
    crate::stable_hash::stable_hash(format!("{:?}", what_runs(spec)).as_bytes())
}

/// `spec` with what its running processes do not depend on set to fixed values.
fn what_runs(spec: &ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        hooks: crate::model::Hooks::default(),
        group: None,
        on_restart: crate::model::OnRestart::default(),
        log: crate::model::LogSpec {
            forward: crate::model::LogForward::default(),
            ..spec.log
        },
        upgrade: spec
            .upgrade
            .clone()
            .map(|upgrade| crate::model::UpgradeSpec {
                build: std::path::PathBuf::new(),
                ..upgrade
            }),
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::model::{DaemonSettings, ServiceName};

    fn plan(spec: ServiceSpec) -> Plan {
        Plan {
            daemon: DaemonSettings {
                control: PathBuf::from("/run/holdfast/control.sock"),
                control_group: None,
                admin_group: None,
                state_dir: PathBuf::from("/var/lib/holdfast"),
                log_dir: PathBuf::from("/var/log/holdfast"),
                pass_env: Vec::new(),
                http: None,
                supervisord: None,
            },
            services: BTreeMap::from([(spec.name.clone(), spec)]),
        }
    }

    #[test]
    fn a_change_of_hooks_alone_restarts_nothing_but_other_changes_do() {
        let name = ServiceName::new("api").expect("valid name");
        let old = ServiceSpec::with_defaults(name.clone(), vec!["sleep".into(), "9".into()]);
        let mut hooked = old.clone();
        hooked
            .hooks
            .on
            .insert("exited".into(), vec!["/bin/true".into()]);
        let d = diff(&plan(old.clone()), &plan(hooked.clone()), false);
        assert_eq!(d.unchanged, std::slice::from_ref(&name));
        assert!(d.changed.is_empty());

        let mut other = hooked;
        other.command = vec!["sleep".into(), "10".into()];
        let d = diff(&plan(old), &plan(other), false);
        assert_eq!(d.changed, [name]);
    }

    #[test]
    fn turning_journald_forwarding_on_restarts_nothing() {
        let name = ServiceName::new("api").expect("valid name");
        let old = ServiceSpec::with_defaults(name.clone(), vec!["sleep".into(), "9".into()]);
        let mut forwarded = old.clone();
        forwarded.log.forward = crate::model::LogForward::Journald;
        let d = diff(&plan(old), &plan(forwarded), false);
        assert_eq!(d.unchanged, [name]);
        assert!(d.changed.is_empty());
    }

    #[test]
    fn a_change_of_group_alone_restarts_nothing() {
        let name = ServiceName::new("api").expect("valid name");
        let old = ServiceSpec::with_defaults(name.clone(), vec!["sleep".into(), "9".into()]);
        let grouped = ServiceSpec {
            group: Some("backend".into()),
            ..old.clone()
        };
        let d = diff(&plan(old), &plan(grouped), false);
        assert_eq!(d.unchanged, [name]);
        assert!(d.changed.is_empty());
    }

    #[test]
    fn a_new_build_alone_restarts_nothing_but_a_new_upgrade_setting_does() {
        use crate::model::{UpgradeMode, UpgradeSpec};
        let name = ServiceName::new("api").expect("valid name");
        let old = ServiceSpec {
            upgrade: Some(UpgradeSpec::new(
                UpgradeMode::Handover,
                PathBuf::from("/opt/api/a/server"),
            )),
            ..ServiceSpec::with_defaults(name.clone(), vec!["/opt/api/current/server".into()])
        };
        let mut flipped = old.clone();
        flipped.upgrade.as_mut().expect("set above").build = PathBuf::from("/opt/api/b/server");
        let d = diff(&plan(old.clone()), &plan(flipped.clone()), false);
        assert_eq!(d.unchanged, std::slice::from_ref(&name));
        assert!(d.changed.is_empty());

        let mut slower = flipped;
        slower.upgrade.as_mut().expect("set above").bake = std::time::Duration::from_secs(1);
        let d = diff(&plan(old), &plan(slower), false);
        assert_eq!(d.changed, [name]);
    }
}
