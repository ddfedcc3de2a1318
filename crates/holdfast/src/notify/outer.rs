//! Which service manager runs holdfast itself, if any: systemd or supervisord.
//!
//! Both say so in the environment they give their children: systemd sets
//! `INVOCATION_ID` (and `NOTIFY_SOCKET` for `Type=notify`), supervisord sets
//! `SUPERVISOR_ENABLED=1`, `SUPERVISOR_PROCESS_NAME` and `SUPERVISOR_SERVER_URL`.
//! holdfast adapts to what it finds: it notifies systemd (see [`super::upstream`]),
//! logs to the journal when its stderr is the journal, takes supervisord's XML-RPC
//! address from it, and shows in `status` who restarts holdfast when it dies — that
//! manager, never holdfast itself, so a crash is restarted once and the services are
//! adopted by the new holdfast rather than started a second time.

use std::fmt;

/// The service manager that started holdfast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OuterManager {
    Systemd {
        /// The unit holdfast runs in, from its cgroup (e.g. `holdfast.service`).
        unit: Option<String>,
    },
    Supervisord {
        /// `SUPERVISOR_PROCESS_NAME`: the program name in supervisord's config.
        program: Option<String>,
    },
}

impl OuterManager {
    /// Reads holdfast's own environment and cgroup.
    pub fn detect() -> Option<OuterManager> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        from_parts(&env_var, &cgroup)
    }

    /// Whether holdfast's environment carries systemd's marks, the test [`Self::detect`]
    /// makes for systemd. Also true under a supervisord that systemd runs (its children
    /// inherit the marks), where `detect` names supervisord: the manager that restarts
    /// holdfast.
    pub fn systemd_in_environment() -> bool {
        systemd_marked(&env_var)
    }
}

/// A variable of holdfast's environment; set but empty counts as unset.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// systemd sets `INVOCATION_ID` for every service, `NOTIFY_SOCKET` for `Type=notify`.
fn systemd_marked(var: &dyn Fn(&str) -> Option<String>) -> bool {
    var("INVOCATION_ID").is_some() || var("NOTIFY_SOCKET").is_some()
}

/// [`OuterManager::detect`] on a given environment and `/proc/self/cgroup` text.
fn from_parts(var: &dyn Fn(&str) -> Option<String>, cgroup: &str) -> Option<OuterManager> {
    if var("SUPERVISOR_ENABLED").is_some() {
        return Some(OuterManager::Supervisord {
            program: var("SUPERVISOR_PROCESS_NAME"),
        });
    }
    if systemd_marked(var) {
        return Some(OuterManager::Systemd {
            unit: unit_of(cgroup),
        });
    }
    None
}

/// The systemd unit of a `/proc/self/cgroup`: the last `.service` (or `.scope`) in the
/// path of the systemd hierarchy (`0::` on cgroup v2, `name=systemd` on v1).
fn unit_of(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            (controllers.is_empty() || controllers == "name=systemd").then_some(path)
        })
        .flat_map(|path| path.rsplit('/'))
        .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
        .map(str::to_owned)
}

impl fmt::Display for OuterManager {
    /// `systemd:holdfast.service`, `supervisord:holdfast`: the syntax of `managed_by`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (manager, name) = match self {
            OuterManager::Systemd { unit } => ("systemd", unit),
            OuterManager::Supervisord { program } => ("supervisord", program),
        };
        match name {
            Some(name) => write!(f, "{manager}:{name}"),
            None => f.write_str(manager),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn systemd_is_recognised_with_the_unit_from_a_v2_cgroup() {
        let found = from_parts(
            &env(&[("INVOCATION_ID", "4f1c")]),
            "0::/system.slice/holdfast.service\n",
        );
        assert_eq!(
            found,
            Some(OuterManager::Systemd {
                unit: Some("holdfast.service".into())
            })
        );
        assert_eq!(found.unwrap().to_string(), "systemd:holdfast.service");
    }

    #[test]
    fn the_unit_comes_from_the_systemd_hierarchy_of_a_v1_cgroup() {
        let cgroup = "12:memory:/system.slice/other.service/x\n\
                      1:name=systemd:/system.slice/holdfast.service\n";
        assert_eq!(unit_of(cgroup).as_deref(), Some("holdfast.service"));
    }

    #[test]
    fn a_subgroup_holdfast_made_under_its_unit_still_names_the_unit() {
        let cgroup = "0::/system.slice/holdfast.service/holdfast.daemon\n";
        assert_eq!(unit_of(cgroup).as_deref(), Some("holdfast.service"));
    }

    #[test]
    fn supervisord_is_recognised_with_its_program_name() {
        let found = from_parts(
            &env(&[
                ("SUPERVISOR_ENABLED", "1"),
                ("SUPERVISOR_PROCESS_NAME", "holdfast"),
            ]),
            "",
        );
        assert_eq!(found.unwrap().to_string(), "supervisord:holdfast");
    }

    #[test]
    fn under_a_supervisord_that_systemd_runs_systemd_is_marked_but_supervisord_manages() {
        let var = env(&[
            ("INVOCATION_ID", "4f1c"),
            ("SUPERVISOR_ENABLED", "1"),
            ("SUPERVISOR_PROCESS_NAME", "holdfast"),
        ]);
        assert!(systemd_marked(&var));
        assert_eq!(
            from_parts(&var, "").unwrap().to_string(),
            "supervisord:holdfast"
        );
    }

    #[test]
    fn a_shell_is_no_service_manager() {
        assert_eq!(
            from_parts(&env(&[]), "0::/user.slice/session-1.scope\n"),
            None
        );
    }
}
