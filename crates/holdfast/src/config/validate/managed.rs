//! `managed_by`, `takeover`, `arbiter_timeout`, `health_grace_period`, `sync_interval`
//! (observer mode: a service systemd or supervisord runs), and `[holdfast.supervisord]`.

use std::ops::Range;

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::Problem;
use crate::config::raw::{RawService, RawSupervisord};
use crate::model::{
    ARBITER_TIMEOUT, HEALTH_GRACE_PERIOD, HealthSpec, ManagedBy, SYNC_INTERVAL, SupervisordAccess,
    SupervisordServer, Takeover, Upstream,
};

const MANAGED_BY_HELP: &str = "write managed_by = \"systemd:web.service\" (a unit systemctl \
    knows) or managed_by = \"supervisord:web\" (a [program:web] of supervisord)";

impl Validator<'_> {
    /// The observer-mode keys of one service; `None` for a service holdfast runs.
    pub(super) fn managed_by(
        &mut self,
        raw_name: &Spanned<String>,
        raw: &RawService,
        health: Option<&HealthSpec>,
    ) -> Option<ManagedBy> {
        let svc = raw_name.get_ref().as_str();
        let Some(value) = &raw.managed_by else {
            self.only_with_managed_by(svc, raw);
            return None;
        };
        let upstream = self.upstream(svc, value);
        let takeover = match raw.takeover.as_ref().map(|t| *t.get_ref()) {
            Some(true) => Takeover::Allowed,
            _ => Takeover::Never,
        };
        let arbiter_timeout = self.nonzero_duration(
            raw.arbiter_timeout.as_ref(),
            svc,
            "arbiter_timeout",
            ARBITER_TIMEOUT,
            "an upstream gets this long to show a restart and to answer: write e.g. \"5s\"",
        );
        // Zero is allowed: no grace, every failure after a start counts.
        let health_grace_period = self.duration(
            raw.health_grace_period.as_ref(),
            svc,
            "health_grace_period",
            HEALTH_GRACE_PERIOD,
        );
        let default_sync = health.map_or(SYNC_INTERVAL, |h| h.interval);
        let sync_interval = self.nonzero_duration(
            raw.sync_interval.as_ref(),
            svc,
            "sync_interval",
            default_sync,
            "how often holdfast asks the upstream: write e.g. \"5s\", or leave it out to \
             follow the health interval",
        );
        self.spawn_keys_of_observed(raw_name, raw, takeover);
        let upstream = upstream?;
        if let (Upstream::Systemd { .. }, Takeover::Allowed, Some(key)) =
            (&upstream, takeover, raw.takeover.as_ref())
        {
            // systemctl failing (a busy bus, a daemon-reload) does not mean systemd is
            // gone, and a process of a unit holdfast adopted would still be in that
            // unit's cgroup, where systemd keeps managing it.
            self.push(
                Problem::new(
                    format!("`service.{svc}.takeover` with a systemd upstream"),
                    key.span(),
                    "only for supervisord:PROGRAM",
                )
                .with_help(
                    "systemd outlives holdfast; remove takeover, or let holdfast run \
                     the service itself (remove managed_by)",
                ),
            );
        }
        Some(ManagedBy {
            upstream,
            takeover,
            arbiter_timeout,
            health_grace_period,
            sync_interval,
        })
    }

    fn upstream(&mut self, svc: &str, value: &Spanned<String>) -> Option<Upstream> {
        let text = value.get_ref().as_str();
        let problem = |message: String, label: &str| {
            Problem::new(message, value.span(), label).with_help(MANAGED_BY_HELP)
        };
        let key = format!("`service.{svc}.managed_by`");
        match text.split_once(':') {
            Some(("systemd", unit)) => match unit_name_problem(unit) {
                None => Some(Upstream::Systemd {
                    unit: unit.to_owned(),
                }),
                Some(why) => {
                    self.push(problem(
                        format!("invalid unit name {unit:?} in {key}: {why}"),
                        "invalid unit",
                    ));
                    None
                }
            },
            Some(("supervisord", program)) => match program_name_problem(program) {
                None => Some(Upstream::Supervisord {
                    program: program.to_owned(),
                }),
                Some(why) => {
                    self.push(problem(
                        format!("invalid program name {program:?} in {key}: {why}"),
                        "invalid program",
                    ));
                    None
                }
            },
            _ => {
                self.push(problem(
                    format!("unknown upstream {text:?} in {key}"),
                    "not systemd:UNIT or supervisord:PROGRAM",
                ));
                None
            }
        }
    }

    /// `takeover` and the timing keys only mean something with `managed_by`.
    fn only_with_managed_by(&mut self, svc: &str, raw: &RawService) {
        let keys = [
            ("takeover", raw.takeover.as_ref().map(Spanned::span)),
            (
                "arbiter_timeout",
                raw.arbiter_timeout.as_ref().map(Spanned::span),
            ),
            (
                "health_grace_period",
                raw.health_grace_period.as_ref().map(Spanned::span),
            ),
            (
                "sync_interval",
                raw.sync_interval.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in keys {
            let Some(span) = span else { continue };
            self.push(
                Problem::new(
                    format!("`service.{svc}.{key}` without `managed_by`"),
                    span,
                    "only for observed services",
                )
                .with_help(format!(
                    "{key} belongs to a service another supervisor runs: add managed_by, or remove {key}"
                )),
            );
        }
    }

    /// Keys that shape how holdfast spawns and stops a process: moot for a service the
    /// upstream runs, unless holdfast may take it over (then they apply from then on).
    /// `instances`, `listen` and `upgrade` never fit: the upstream runs one copy of its
    /// own with its own sockets and builds.
    fn spawn_keys_of_observed(
        &mut self,
        raw_name: &Spanned<String>,
        raw: &RawService,
        takeover: Takeover,
    ) {
        let svc = raw_name.get_ref().as_str();
        let never = [
            ("instances", raw.instances.as_ref().map(Spanned::span)),
            ("listen", raw.listen.as_ref().map(Spanned::span)),
            ("backlog", raw.backlog.as_ref().map(Spanned::span)),
            ("upgrade", raw.upgrade.as_ref().map(Spanned::span)),
        ];
        for (key, span) in never.into_iter().filter_map(|(k, s)| Some((k, s?))) {
            self.push(
                Problem::new(
                    format!("`service.{svc}.{key}` in a service with `managed_by`"),
                    span,
                    "not for an observed service",
                )
                .with_help(format!(
                    "the upstream runs this service with its own {key} settings: remove {key} here"
                )),
            );
        }
        if takeover == Takeover::Allowed {
            if raw.command.is_none() {
                self.push(
                    Problem::new(
                        format!("service `{svc}` has `takeover = true` but no `command`"),
                        raw_name.span(),
                        "missing `command`",
                    )
                    .with_help("a service holdfast takes over is run with its command: add command = [\"/usr/bin/prog\", \"arg\"]"),
                );
            }
            return;
        }
        for (key, span) in spawn_only_keys(raw) {
            self.push(
                Problem::new(
                    format!("`service.{svc}.{key}` in a service holdfast only observes"),
                    span,
                    "holdfast never spawns it",
                )
                .with_help(format!(
                    "with managed_by and no takeover, the upstream starts and stops it: remove {key}, or set takeover = true to have it used after a takeover"
                )),
            );
        }
    }

    /// `[holdfast.supervisord]`.
    pub(super) fn supervisord(
        &mut self,
        raw: Option<&Spanned<RawSupervisord>>,
    ) -> Option<SupervisordAccess> {
        let raw = raw?.get_ref();
        let server = match &raw.serverurl {
            None => SupervisordServer::parse(crate::model::SUPERVISORD_SERVERURL).ok()?,
            Some(url) => match SupervisordServer::parse(url.get_ref()) {
                Ok(server) => server,
                Err(why) => {
                    self.push(
                        Problem::new(
                            format!(
                                "invalid `holdfast.supervisord.serverurl` {:?}",
                                url.get_ref()
                            ),
                            url.span(),
                            "invalid serverurl",
                        )
                        .with_help(why),
                    );
                    return None;
                }
            },
        };
        let text = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.get_ref().clone());
        Some(SupervisordAccess {
            server,
            username: text(&raw.username),
            password: text(&raw.password),
        })
    }
}

/// The spawn-only keys that `raw` sets, with their spans.
fn spawn_only_keys(raw: &RawService) -> Vec<(&'static str, Range<usize>)> {
    let span = |s: Option<Range<usize>>| s;
    let keys = [
        ("command", span(raw.command.as_ref().map(Spanned::span))),
        ("restart", raw.restart.as_ref().map(Spanned::span)),
        ("restart_sec", raw.restart_sec.as_ref().map(Spanned::span)),
        ("backoff", raw.backoff.as_ref().map(Spanned::span)),
        ("start_limit", raw.start_limit.as_ref().map(Spanned::span)),
        ("start_secs", raw.start_secs.as_ref().map(Spanned::span)),
        ("stop", raw.stop.as_ref().map(Spanned::span)),
        ("dump_signal", raw.dump_signal.as_ref().map(Spanned::span)),
        ("user", raw.user.as_ref().map(Spanned::span)),
        ("group", raw.group.as_ref().map(Spanned::span)),
        ("limits", raw.limits.as_ref().map(Spanned::span)),
        ("ready", raw.ready.as_ref().map(Spanned::span)),
        (
            "start_timeout",
            raw.start_timeout.as_ref().map(Spanned::span),
        ),
        ("watchdog", raw.watchdog.as_ref().map(Spanned::span)),
        ("type", raw.kind.as_ref().map(Spanned::span)),
        ("pidfile", raw.pidfile.as_ref().map(Spanned::span)),
        ("on_restart", raw.on_restart.as_ref().map(Spanned::span)),
        ("working_dir", raw.working_dir.as_ref().map(Spanned::span)),
    ];
    keys.into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect()
}

/// Why `unit` is not a systemd service unit name, if it is not one.
fn unit_name_problem(unit: &str) -> Option<&'static str> {
    let valid_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '-' | '@');
    if unit.is_empty() {
        return Some("it is empty");
    }
    if unit.len() > 255 {
        return Some("it is longer than 255 characters");
    }
    if !unit.chars().all(valid_char) {
        return Some("use A-Z a-z 0-9 : _ . \\ - @ only");
    }
    match unit.rsplit_once('.') {
        // `systemctl` reads `web` as `web.service`.
        None => None,
        Some((stem, "service")) if !stem.is_empty() => None,
        Some(_) => Some("only a .service unit has a main process to observe"),
    }
}

/// Why `program` is not a supervisord program name (`web`, or `group:web`).
fn program_name_problem(program: &str) -> Option<&'static str> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-');
    if program.is_empty() {
        return Some("it is empty");
    }
    if !program.chars().all(valid_char) || program.starts_with(':') || program.ends_with(':') {
        return Some("use A-Z a-z 0-9 _ . - (and group:name for a program in a group)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::{plan, problems, snippet};
    use super::{program_name_problem, unit_name_problem};
    use crate::model::{ServiceName, SupervisordServer, Takeover, Upstream};

    #[test]
    fn an_observed_service_needs_no_command() {
        let plan = plan(
            r#"
            [holdfast.supervisord]
            serverurl = "unix:///tmp/s.sock"
            username = "u"
            [service.web]
            managed_by = "supervisord:web"
            arbiter_timeout = "2s"
            "#,
        );
        let web = &plan.services[&ServiceName::new("web").unwrap()];
        let managed = web.managed_by.as_ref().expect("observed");
        assert!(web.command.is_empty());
        assert_eq!(
            managed.upstream,
            Upstream::Supervisord {
                program: "web".into()
            }
        );
        assert_eq!(managed.takeover, Takeover::Never);
        assert_eq!(managed.arbiter_timeout, std::time::Duration::from_secs(2));
        let access = plan.daemon.supervisord.as_ref().expect("configured");
        assert_eq!(access.server, SupervisordServer::Unix("/tmp/s.sock".into()));
        assert_eq!(access.username.as_deref(), Some("u"));
    }

    #[test]
    fn spawn_keys_of_an_observed_service_are_errors_unless_it_may_be_taken_over() {
        let src = "[service.web]\nmanaged_by = \"systemd:web.service\"\nrestart = \"always\"\n";
        let found = problems(src);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(snippet(src, &found[0]), "\"always\"");
        assert!(
            found[0]
                .help()
                .is_some_and(|h| h.contains("takeover = true"))
        );
        let src = "[service.web]\nmanaged_by = \"supervisord:web\"\ntakeover = true\nrestart = \"always\"\n";
        let found = problems(src);
        assert_eq!(found.len(), 1, "takeover needs a command: {found:#?}");
        assert!(found[0].message().contains("no `command`"));
    }

    #[test]
    fn a_zero_arbiter_timeout_or_sync_interval_is_refused_with_a_hint() {
        for key in ["arbiter_timeout", "sync_interval"] {
            let src = format!("[service.web]\nmanaged_by = \"supervisord:web\"\n{key} = \"0s\"\n");
            let found = problems(&src);
            assert_eq!(found.len(), 1, "{key}: {found:#?}");
            assert_eq!(snippet(&src, &found[0]), "\"0s\"");
            assert!(
                found[0].help().is_some_and(|h| h.contains("\"5s\"")),
                "{found:#?}"
            );
        }
        let src = "[service.web]\nmanaged_by = \"supervisord:web\"\nhealth_grace_period = \"0s\"\n";
        let web = &plan(src).services[&ServiceName::new("web").unwrap()];
        let grace = web.managed_by.as_ref().map(|m| m.health_grace_period);
        assert_eq!(grace, Some(std::time::Duration::ZERO), "no grace is fine");
    }

    #[test]
    fn takeover_of_a_systemd_unit_is_refused_at_the_key() {
        let src = "[service.web]\nmanaged_by = \"systemd:web.service\"\ntakeover = true\n\
                   command = [\"/bin/web\"]\n";
        let found = problems(src);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message().contains("systemd upstream"),
            "{found:#?}"
        );
        assert_eq!(snippet(src, &found[0]), "true");
        assert!(
            found[0]
                .help()
                .is_some_and(|h| h.contains("remove takeover"))
        );
    }

    #[test]
    fn a_bad_upstream_points_at_the_value_with_a_hint() {
        for value in [
            "\"systemd:web.socket\"",
            "\"launchd:web\"",
            "\"supervisord:a b\"",
        ] {
            let src = format!("[service.web]\nmanaged_by = {value}\n");
            let found = problems(&src);
            assert_eq!(found.len(), 1, "{found:#?}");
            assert_eq!(snippet(&src, &found[0]), value);
            assert!(
                found[0]
                    .help()
                    .is_some_and(|h| h.contains("systemd:web.service"))
            );
        }
        let src = "[service.web]\ncommand = [\"/bin/web\"]\ntakeover = true\n";
        assert!(problems(src)[0].message().contains("without `managed_by`"));
        let src = "[holdfast.supervisord]\nserverurl = \"ftp://x\"\n";
        assert_eq!(snippet(src, &problems(src)[0]), "\"ftp://x\"");
    }

    #[test]
    fn unit_names_are_service_units() {
        assert_eq!(unit_name_problem("web.service"), None);
        assert_eq!(unit_name_problem("web"), None);
        assert_eq!(unit_name_problem("getty@tty1.service"), None);
        assert!(unit_name_problem("web.socket").is_some());
        assert!(unit_name_problem("we b.service").is_some());
        assert!(unit_name_problem("").is_some());
    }

    #[test]
    fn program_names_may_name_a_group() {
        assert_eq!(program_name_problem("web"), None);
        assert_eq!(program_name_problem("apps:web"), None);
        assert!(program_name_problem("web app").is_some());
        assert!(program_name_problem(":web").is_some());
    }
}
