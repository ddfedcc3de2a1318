//! What a verb acts on: service names, `all`, and `@group` (a `service_group` label),
//! resolved against the running daemon's services.
//!
//! A service with `instances = N` runs as `web@0` .. `web@{N-1}`: `web@1` names one
//! instance, `web` all of them. Verbs whose daemon side knows instances (`start`,
//! `stop`, `restart`: a restart of `web` is rolling) get `web` as one target
//! ([`Grain::Service`]); the others get each instance ([`Grain::Instance`]).
//!
//! Resolution happens before anything is sent: one unknown name or group is an error
//! and no service is touched (a typo never half-applies a `stop`).

use std::path::Path;

use crate::config::closest;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request, ServiceStatus, named};
use crate::model::ServiceName;

/// The target that means every service.
pub const ALL: &str = ServiceName::ALL;

/// How a service that runs as instances comes out of the expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// `web` (or `all`, `@group`) stays the one name `web`; `web@1` stays itself.
    Service,
    /// `web` becomes `web@0`, `web@1`, ...
    Instance,
}

/// Expands `args` (names, `all`, `@group`) into service names, in the order given,
/// each once. Asks the daemon for its services (and their groups).
pub fn expand(
    socket: &Path,
    args: &[String],
    grain: Grain,
) -> Result<Vec<ServiceName>, ClientError> {
    let services = match client::call(socket, Request::Status)? {
        Reply::Status(status) => status.services,
        other => {
            return Err(ClientError::Protocol(format!(
                "holdfast answered with an unexpected reply: {other:?}"
            )));
        }
    };
    resolve(&services, args, grain).map_err(ClientError::Daemon)
}

/// [`expand`] without the daemon: `services` is its status.
pub fn resolve(
    services: &[ServiceStatus],
    args: &[String],
    grain: Grain,
) -> Result<Vec<ServiceName>, ControlError> {
    let mut names: Vec<ServiceName> = Vec::new();
    for arg in args {
        let found = one(services, arg)?;
        // An instance named on its own stays itself.
        let collapse = grain == Grain::Service && !found.iter().any(|n| n.as_str() == arg);
        for mut name in found {
            if collapse && name.instance_index().is_some() {
                name = ServiceName::new(name.base()).expect("the base of a valid name is valid");
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

fn one(services: &[ServiceStatus], arg: &str) -> Result<Vec<ServiceName>, ControlError> {
    if arg == ALL {
        return Ok(services.iter().map(|s| s.name.clone()).collect());
    }
    if let Some(group) = arg.strip_prefix('@') {
        let members: Vec<ServiceName> = services
            .iter()
            .filter(|s| s.group.as_deref() == Some(group))
            .map(|s| s.name.clone())
            .collect();
        if members.is_empty() {
            let mut groups: Vec<&str> =
                services.iter().filter_map(|s| s.group.as_deref()).collect();
            groups.sort_unstable();
            groups.dedup();
            let hint = match closest(group, groups.iter().copied()) {
                Some(best) => format!("; did you mean \"@{best}\"?"),
                None if groups.is_empty() => "; no service has a `service_group`".to_owned(),
                None => format!("; groups: {}", groups.join(", ")),
            };
            return Err(unknown(format!("no group named \"{group}\"{hint}")));
        }
        return Ok(members);
    }
    // No service has a name that is not valid: such an argument names nothing.
    let found: Vec<ServiceName> = match ServiceName::new(arg) {
        Ok(target) => named(services, &target)
            .into_iter()
            .map(|s| s.name.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    if !found.is_empty() {
        return Ok(found);
    }
    let hint = closest(arg, services.iter().map(|s| s.name.as_str()))
        .map(|best| format!("; did you mean \"{best}\"?"))
        .unwrap_or_default();
    Err(unknown(format!("no service named \"{arg}\"{hint}")))
}

fn unknown(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::UnknownService,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, group: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            group: group.map(str::to_owned),
            ..ServiceStatus::sample(name, "running")
        }
    }

    fn services() -> Vec<ServiceStatus> {
        vec![
            service("api", Some("backend")),
            service("db", None),
            service("web", Some("frontend")),
            service("worker", Some("backend")),
        ]
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn resolved(list: &[&str]) -> Vec<String> {
        resolve(&services(), &args(list), Grain::Instance)
            .expect("resolves")
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    fn error(list: &[&str]) -> String {
        resolve(&services(), &args(list), Grain::Instance)
            .expect_err("does not resolve")
            .message
    }

    #[test]
    fn names_groups_and_all_expand_in_order_each_service_once() {
        assert_eq!(resolved(&["web", "@backend"]), ["web", "api", "worker"]);
        assert_eq!(resolved(&["worker", "all"]), ["worker", "api", "db", "web"]);
        assert_eq!(resolved(&["db", "db"]), ["db"]);
    }

    #[test]
    fn unknown_names_and_groups_are_errors_with_a_hint() {
        assert_eq!(
            error(&["web", "wev"]),
            "no service named \"wev\"; did you mean \"web\"?"
        );
        assert_eq!(
            error(&["nothing-like-it"]),
            "no service named \"nothing-like-it\""
        );
        assert_eq!(
            error(&["@backnd"]),
            "no group named \"backnd\"; did you mean \"@backend\"?"
        );
        assert_eq!(
            error(&["@storage"]),
            "no group named \"storage\"; groups: backend, frontend"
        );
    }
}

#[cfg(test)]
mod instance_tests {
    use super::*;

    fn services() -> Vec<ServiceStatus> {
        let mut list: Vec<ServiceStatus> = ["db", "web@0", "web@1", "web@2"]
            .iter()
            .map(|n| ServiceStatus::sample(n, "running"))
            .collect();
        list[1].group = Some("front".to_owned());
        list[2].group = Some("front".to_owned());
        list[3].group = Some("front".to_owned());
        list
    }

    fn resolved(list: &[&str], grain: Grain) -> Vec<String> {
        let args: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        resolve(&services(), &args, grain)
            .expect("resolves")
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_base_name_means_every_instance_and_an_instance_name_one() {
        assert_eq!(
            resolved(&["web"], Grain::Instance),
            ["web@0", "web@1", "web@2"]
        );
        assert_eq!(resolved(&["web@1"], Grain::Instance), ["web@1"]);
        assert_eq!(resolved(&["all"], Grain::Instance).len(), 4);
    }

    #[test]
    fn verbs_the_daemon_rolls_get_the_base_name_once() {
        assert_eq!(resolved(&["web"], Grain::Service), ["web"]);
        assert_eq!(resolved(&["web@1"], Grain::Service), ["web@1"]);
        assert_eq!(resolved(&["all"], Grain::Service), ["db", "web"]);
        assert_eq!(resolved(&["@front", "db"], Grain::Service), ["web", "db"]);
    }
}
