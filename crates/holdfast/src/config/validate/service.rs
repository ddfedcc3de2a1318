//! One `[service.X]` table: its name, and the assembly of its [`ServiceSpec`] from the
//! parts the sibling modules check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::Validator;
use super::after::Edge;
use crate::config::diagnostic::Problem;
use crate::config::raw::{Partial, RawService};
use crate::model::{Backoff, RestartPolicy, ServiceName, ServiceSpec, defaults};

impl Validator<'_> {
    pub(super) fn service_name(&mut self, raw: &Spanned<String>) -> Option<ServiceName> {
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
                    .with_help(
                        "use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)",
                    ),
                );
                None
            }
        }
    }

    /// A group name follows the rules of service names: the CLI reads it after `@`.
    fn service_group(&mut self, svc: &str, raw: &Spanned<String>) -> Option<String> {
        if ServiceName::new(raw.get_ref().clone()).is_ok() {
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
            .with_help("use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)"),
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
        let command_is_bad = partial.bad_keys.iter().any(|k| k == "command");
        let command = if command_is_bad {
            None
        } else {
            self.command(raw_name, raw)
        };
        let env = self.env(svc, raw);
        let working_dir = raw.working_dir.as_ref().and_then(|dir| {
            if Path::new(dir.get_ref()).is_absolute() {
                Some(PathBuf::from(dir.get_ref()))
            } else {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.working_dir` is not absolute"),
                        dir.span(),
                        "relative path",
                    )
                    .with_help("write an absolute path, e.g. \"/srv/app\""),
                );
                None
            }
        });
        let after = self.after(raw_name, raw, declared, edges);
        let group = raw
            .service_group
            .as_ref()
            .and_then(|g| self.service_group(svc, g));
        let restart = match &raw.restart {
            None => RestartPolicy::OnFailure,
            Some(policy) => self.restart(svc, policy),
        };
        let restart_sec = self.duration(
            raw.restart_sec.as_ref(),
            svc,
            "restart_sec",
            defaults::RESTART_SEC,
        );
        let backoff = match &raw.backoff {
            None => Backoff::Fixed(restart_sec),
            Some(backoff) => self.backoff(svc, backoff.get_ref(), raw, restart_sec),
        };
        let start_limit = self.start_limit(svc, raw);
        let stop = self.stop(svc, raw);
        let log = self.log(svc, raw);
        let hooks = self.hooks(svc, raw);
        let privileges = super::privs::privileges(svc, raw, self.problems);
        let (limits, cgroup) = super::privs::limits(svc, raw, self.problems);
        let readiness = self.readiness(svc, raw);
        // A service that says when it is ready is running once it is: no start_secs
        // unless the file asks for one.
        let start_secs = self.duration(
            raw.start_secs.as_ref(),
            svc,
            "start_secs",
            readiness.ready.default_start_secs(),
        );
        let health = raw.health.as_ref().and_then(|h| self.health(svc, h));
        let exit_codes = self.exit_codes(svc, raw);
        if let (crate::model::Readiness::Health, None, Some(ready)) =
            (&readiness.ready, &health, &raw.ready)
        {
            self.push(
                Problem::new(
                    format!("`service.{svc}.ready = \"health\"` needs a health probe"),
                    ready.span(),
                    format!("no [service.{svc}.health]"),
                )
                .with_help(format!(
                    "add [service.{svc}.health] with http, tcp or exec, or choose another ready mode"
                )),
            );
        }

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
            start_secs,
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
        })
    }
}
