//! One `[service.X]` table: its name, and the assembly of its [`ServiceSpec`] from the
//! parts the sibling modules check.

use std::collections::BTreeSet;

use serde_spanned::Spanned;

use super::Validator;
use super::after::Edge;
use crate::config::diagnostic::Problem;
use crate::config::raw::{Partial, RawService};
use crate::model::{ServiceName, ServiceSpec};

/// How to write a service or group name (the CLI reads both, a group after `@`).
const NAME_RULE: &str = "use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)";

impl Validator<'_> {
    pub(super) fn service_name(&mut self, raw: &Spanned<String>) -> Option<ServiceName> {
        if raw.get_ref().contains('@') {
            self.push(super::instances::at_in_key(raw));
            return None;
        }
        match ServiceName::new(raw.get_ref().clone()) {
            // The CLI reads `all` as every service (`holdfast restart all`).
            Ok(name) if name.as_str() == ServiceName::ALL => {
                self.push(
                    Problem::new(
                        "the service name \"all\" is reserved".to_owned(),
                        raw.span(),
                        "reserved name",
                    )
                    .with_help(
                        "`all` names every service on the command line; choose another name",
                    ),
                );
                None
            }
            Ok(name) => Some(name),
            Err(_) => {
                self.push(
                    Problem::new(
                        format!("invalid service name {:?}", raw.get_ref()),
                        raw.span(),
                        "invalid name",
                    )
                    .with_help(NAME_RULE),
                );
                None
            }
        }
    }

    /// A group name follows the rules of service names: the CLI reads it after `@`.
    fn service_group(&mut self, svc: &str, raw: &Spanned<String>) -> Option<String> {
        if ServiceName::is_plain(raw.get_ref()) {
            return Some(raw.get_ref().clone());
        }
        self.push(
            Problem::new(
                format!(
                    "invalid group name {:?} in `service.{svc}.service_group`",
                    raw.get_ref()
                ),
                raw.span(),
                "invalid group name",
            )
            .with_help(NAME_RULE),
        );
        None
    }

    pub(super) fn service(
        &mut self,
        raw_name: &Spanned<String>,
        name: Option<ServiceName>,
        partial: &Partial<RawService>,
        declared: &BTreeSet<&str>,
        edges: &mut Vec<Edge>,
    ) -> Option<ServiceSpec> {
        let svc = raw_name.get_ref().as_str();
        let raw = &partial.value;
        // Every check runs before the first `?`, so that one pass reports everything.
        let command_is_bad = partial.bad_keys.iter().any(|k| k == "command");
        let health = raw.health.as_ref().and_then(|h| self.health(svc, h));
        let managed_by = self.managed_by(raw_name, raw, health.as_ref());
        // An observed service has a command only for a takeover (checked with the
        // other observer keys).
        let observed = raw.managed_by.is_some();
        let command = if command_is_bad {
            None
        } else if observed && raw.command.is_none() {
            Some(Vec::new())
        } else {
            self.command(raw_name, raw)
        };
        let env = self.env(svc, raw);
        let working_dir = raw
            .working_dir
            .as_ref()
            .and_then(|dir| self.absolute_path(svc, "working_dir", dir, "/srv/app"));
        let after = self.after(raw_name, raw, declared, edges);
        let group = raw
            .service_group
            .as_ref()
            .and_then(|g| self.service_group(svc, g));
        let (restart, backoff) = self.restart(svc, raw);
        let start_limit = self.start_limit(svc, raw);
        let stop = self.stop(svc, raw);
        let log = self.log(svc, raw);
        let hooks = self.hooks(svc, raw);
        let privileges = self.privileges(svc, raw);
        let (limits, cgroup) = self.limits(svc, raw);
        let readiness = self.readiness(svc, raw);
        self.ready_needs_health(svc, raw, &readiness.ready, health.as_ref());
        let exit_codes = self.exit_codes(svc, raw);
        let listen = self.listen(svc, raw);
        let upgrade = self.upgrade(svc, raw, command.as_deref());
        let on_restart = self.on_restart(svc, raw);
        self.port_placeholders(svc, raw);
        Some(ServiceSpec {
            name: name?,
            command: command?,
            env,
            inherit_env: raw.inherit_env.unwrap_or(false),
            working_dir,
            after,
            group,
            autostart: raw.autostart.unwrap_or(true),
            restart,
            backoff,
            start_limit,
            start_secs: readiness.start_secs,
            stop,
            log,
            hooks,
            privileges,
            limits,
            cgroup,
            ready: readiness.ready,
            start_timeout: readiness.start_timeout,
            watchdog: readiness.watchdog,
            kind: readiness.kind,
            health,
            exit_codes,
            // Filled in per copy by `instances::expand`.
            instance: None,
            listen,
            upgrade,
            on_restart,
            managed_by,
        })
    }
}
