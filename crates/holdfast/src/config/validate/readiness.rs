//! Validation of the start-up keys: `ready`, `start_secs`, `start_timeout`, `watchdog`,
//! `type` and `pidfile`. A mode that needs a parameter (an address, a URL, a pidfile) is an error
//! without it, with the line to write in the help.

use std::net::SocketAddr;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{Validator, ports, upgrade};
use crate::config::diagnostic::{Problem, choice_help};
use crate::config::raw::{RawReady, RawReadyTable, RawService};
use crate::model::{HealthSpec, Readiness, ServiceKind, Timeout, defaults};

const MODES: [&str; 6] = ["none", "notify", "fd", "tcp", "http", "health"];
/// The fd `ready = "fd"` means (the s6 convention's usual choice).
const DEFAULT_READY_FD: i32 = 3;

/// The validated start-up settings of one service.
pub(super) struct StartUp {
    pub ready: Readiness,
    pub start_secs: Duration,
    pub start_timeout: Timeout,
    pub watchdog: Option<Duration>,
    pub kind: ServiceKind,
}

impl Validator<'_> {
    pub(super) fn readiness(&mut self, svc: &str, raw: &RawService) -> StartUp {
        let ready = match &raw.ready {
            None => Readiness::None,
            Some(ready) => self.ready(svc, ready),
        };
        let start_timeout = self.nonzero_timeout(
            raw.start_timeout.as_ref(),
            svc,
            "start_timeout",
            Timeout::After(defaults::START_TIMEOUT),
            "use e.g. \"90s\", or \"infinity\" to wait for readiness without a limit",
        );
        // A service that says when it is ready is running once it is: no start_secs
        // unless the file asks for one.
        let start_secs = self.duration(
            raw.start_secs.as_ref(),
            svc,
            "start_secs",
            ready.default_start_secs(),
        );
        // "0s" and "infinity" mean no watchdog, like systemd's `WatchdogSec=`.
        let watchdog = match self.timeout(raw.watchdog.as_ref(), svc, "watchdog", Timeout::Never) {
            Timeout::After(d) if !d.is_zero() => Some(d),
            Timeout::After(_) | Timeout::Never => None,
        };
        let kind = self.kind(svc, raw);
        StartUp {
            ready,
            start_secs,
            start_timeout,
            watchdog,
            kind,
        }
    }

    /// `ready = "health"` waits for the health probe, so there must be one.
    pub(super) fn ready_needs_health(
        &mut self,
        svc: &str,
        raw: &RawService,
        ready: &Readiness,
        health: Option<&HealthSpec>,
    ) {
        let (Readiness::Health, None, Some(at)) = (ready, health, &raw.ready) else {
            return;
        };
        self.push(
            Problem::new(
                format!("`service.{svc}.ready = \"health\"` needs a health probe"),
                at.span(),
                format!("no [service.{svc}.health]"),
            )
            .with_help(format!(
                "add [service.{svc}.health] with http, tcp or exec, or choose another ready mode"
            )),
        );
    }

    fn ready(&mut self, svc: &str, raw: &Spanned<RawReady>) -> Readiness {
        let span = raw.span();
        match raw.get_ref() {
            RawReady::Mode(mode) => match mode.as_str() {
                "none" => Readiness::None,
                "notify" => Readiness::Notify,
                "fd" => Readiness::Fd(DEFAULT_READY_FD),
                "health" => Readiness::Health,
                "tcp" | "http" => {
                    let example = if mode == "tcp" {
                        "ready = { tcp = \"127.0.0.1:8080\" }"
                    } else {
                        "ready = { http = \"http://127.0.0.1:8080/health\" }"
                    };
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.ready = \"{mode}\"` needs to know where"),
                            span,
                            "missing address",
                        )
                        .with_help(format!("write {example}")),
                    );
                    Readiness::None
                }
                other => {
                    self.push(
                        Problem::new(
                            format!("unknown readiness mode {other:?} in `service.{svc}.ready`"),
                            span,
                            "unknown mode",
                        )
                        .with_help(choice_help(other, &MODES, "valid")),
                    );
                    Readiness::None
                }
            },
            RawReady::Table(table) => self.ready_table(svc, table, span),
        }
    }

    fn ready_table(
        &mut self,
        svc: &str,
        table: &RawReadyTable,
        span: std::ops::Range<usize>,
    ) -> Readiness {
        let given = [
            table.fd.is_some(),
            table.tcp.is_some(),
            table.http.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.push(
                Problem::new(
                    format!("`service.{svc}.ready` must name exactly one of fd, tcp, http"),
                    span,
                    "one mode",
                )
                .with_help(
                    "e.g. ready = { tcp = \"127.0.0.1:8080\" }, or a plain ready = \"notify\"",
                ),
            );
            return Readiness::None;
        }
        if let Some(fd) = table.fd {
            if !(3..=1023).contains(&fd) {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.ready.fd` must be between 3 and 1023"),
                        span,
                        "bad fd",
                    )
                    .with_help("0, 1 and 2 are stdin, stdout and stderr: use 3"),
                );
                return Readiness::None;
            }
            return Readiness::Fd(i32::try_from(fd).expect("checked range"));
        }
        if let Some(addr) = &table.tcp {
            return match upgrade::with_private_port(addr).parse::<SocketAddr>() {
                Ok(addr) => Readiness::Tcp(addr),
                Err(_) => {
                    self.push(
                        Problem::new(
                            format!("invalid address {addr:?} in `service.{svc}.ready.tcp`"),
                            span,
                            "not IP:port",
                        )
                        .with_help("write an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
                    );
                    Readiness::None
                }
            };
        }
        let written = table.http.as_deref().expect("exactly one key is set");
        let url = upgrade::with_private_port(written).into_owned();
        if ports::http_addr(&url).is_none() {
            self.push(
                Problem::new(
                    format!("invalid URL {written:?} in `service.{svc}.ready.http`"),
                    span,
                    "not http://IP:port/path",
                )
                .with_help(
                    "write e.g. \"http://127.0.0.1:8080/health\" (plain HTTP to an IP address)",
                ),
            );
            return Readiness::None;
        }
        Readiness::Http(url)
    }

    fn kind(&mut self, svc: &str, raw: &RawService) -> ServiceKind {
        let forking = match &raw.kind {
            None => false,
            Some(kind) => match kind.get_ref().as_str() {
                "simple" => false,
                "forking" => true,
                other => {
                    self.push(
                        Problem::new(
                            format!("unknown service type {other:?} in `service.{svc}.type`"),
                            kind.span(),
                            "unknown type",
                        )
                        .with_help("valid: simple (the default), forking"),
                    );
                    false
                }
            },
        };
        match (&raw.pidfile, forking) {
            (Some(pidfile), true) => self
                .absolute_path(svc, "pidfile", pidfile, "/run/daemon.pid")
                .map_or(ServiceKind::Simple, |pidfile| ServiceKind::Forking {
                    pidfile,
                }),
            (None, true) => {
                let span = raw.kind.as_ref().map(Spanned::span).unwrap_or_default();
                self.push(
                    Problem::new(
                        format!("`service.{svc}.type = \"forking\"` needs a `pidfile`"),
                        span,
                        "no pidfile",
                    )
                    .with_help(
                        "add the file the daemon writes its pid to: pidfile = \"/run/daemon.pid\"",
                    ),
                );
                ServiceKind::Simple
            }
            (Some(pidfile), false) => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.pidfile` only applies to forking services"),
                        pidfile.span(),
                        "unused",
                    )
                    .with_help("add type = \"forking\", or remove `pidfile`"),
                );
                ServiceKind::Simple
            }
            (None, false) => ServiceKind::Simple,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;
    use crate::model::{Readiness, ServiceKind};

    fn problems(toml: &str) -> String {
        match parse(toml, "test.toml", Path::new("/")) {
            Ok(_) => String::new(),
            Err(e) => e.render_plain(),
        }
    }

    #[test]
    fn every_readiness_form_is_accepted() {
        let plan = parse(
            r#"
[service.a]
command = ["a"]
ready = "notify"
watchdog = "10s"
start_timeout = "5s"
[service.b]
command = ["b"]
ready = { tcp = "127.0.0.1:80" }
[service.c]
command = ["c"]
ready = "fd"
type = "forking"
pidfile = "/run/c.pid"
[service.d]
command = ["d"]
ready = { http = "http://127.0.0.1:81/health" }
"#,
            "test.toml",
            Path::new("/"),
        )
        .expect("valid config");
        let spec = |n: &str| &plan.services[&n.parse().expect("name")];
        assert_eq!(spec("a").ready, Readiness::Notify);
        assert_eq!(spec("a").watchdog, Some(std::time::Duration::from_secs(10)));
        assert_eq!(
            spec("a").start_timeout,
            crate::model::Timeout::After(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            spec("b").ready,
            Readiness::Tcp("127.0.0.1:80".parse().expect("addr"))
        );
        assert_eq!(spec("c").ready, Readiness::Fd(3));
        assert_eq!(
            spec("c").kind,
            ServiceKind::Forking {
                pidfile: "/run/c.pid".into()
            }
        );
        assert_eq!(
            spec("d").start_timeout,
            crate::model::Timeout::After(crate::model::defaults::START_TIMEOUT)
        );
    }

    #[test]
    fn a_mode_without_its_parameter_is_an_error_with_the_line_to_write() {
        let text = problems("[service.a]\ncommand = [\"a\"]\nready = \"tcp\"\n");
        assert!(
            text.contains("`service.a.ready = \"tcp\"` needs to know where"),
            "{text}"
        );
        assert!(
            text.contains("ready = { tcp = \"127.0.0.1:8080\" }"),
            "{text}"
        );
    }

    #[test]
    fn forking_needs_a_pidfile_and_a_pidfile_needs_forking() {
        let text = problems("[service.a]\ncommand = [\"a\"]\ntype = \"forking\"\n");
        assert!(text.contains("needs a `pidfile`"), "{text}");
        let text = problems("[service.a]\ncommand = [\"a\"]\npidfile = \"/run/a.pid\"\n");
        assert!(text.contains("only applies to forking services"), "{text}");
    }

    #[test]
    fn bad_readiness_values_are_reported() {
        let text = problems(
            "[service.a]\ncommand = [\"a\"]\nready = \"notfy\"\n\
             [service.b]\ncommand = [\"b\"]\nready = { tcp = \"localhost:80\" }\n\
             [service.c]\ncommand = [\"c\"]\nready = { fd = 1 }\n",
        );
        assert!(text.contains("did you mean \"notify\"?"), "{text}");
        assert!(text.contains("invalid address \"localhost:80\""), "{text}");
        assert!(
            text.contains("`service.c.ready.fd` must be between 3 and 1023"),
            "{text}"
        );
    }
}
