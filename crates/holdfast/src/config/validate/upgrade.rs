//! `listen`, `backlog` and `[service.X.upgrade]`: the sockets holdfast binds for a
//! service, and how a new build replaces the running one.
//!
//! The rules between the keys: `handover` passes the `listen` sockets, so it needs one;
//! `proxy` accepts on `listen` (TCP only) and hands each run a private port as
//! `{port}`, which the command or the env must use; `reuseport` services bind their port
//! themselves, so they take no `listen`. `{port}` outside proxy mode would reach the
//! program verbatim, so it is an error wherever it is written. In proxy mode `{port}`
//! may also stand in `ready` and in the health probe's address: the model stores port 0
//! there (see `Readiness::Tcp`), which the proxy replaces by the run's port.
//!
//! The build (`command[0]` resolved to its real path) and `watch` being a symlink are
//! facts of the machine: [`super::host`] judges them.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::{Validator, ports};
use crate::config::diagnostic::{Problem, choice_help};
use crate::config::raw::{
    RawCommand, RawReady, RawService, RawServiceEntry, RawUpgrade, RawVerify,
};
use crate::model::{
    Checksum, Listen, ListenAddr, ProxyProtocol, ProxySpec, UpgradeMode, UpgradeSpec, Verify,
    upgrade_defaults,
};

/// The placeholder of a proxied run's private port.
pub(super) const PORT: &str = "{port}";

const MODES: [&str; 3] = ["handover", "reuseport", "proxy"];

/// Longest `unix:` path: `sun_path` holds 108 bytes with the terminating NUL.
const MAX_UNIX_PATH: usize = 107;

/// `text` with `{port}` as port 0, the model's "the run's private port" (only proxy
/// mode allows it; elsewhere [`Validator::port_placeholders`] reports it).
pub(super) fn with_private_port(text: &str) -> Cow<'_, str> {
    if text.contains(PORT) {
        Cow::Owned(text.replace(PORT, "0"))
    } else {
        Cow::Borrowed(text)
    }
}

impl Validator<'_> {
    /// `listen` and `backlog`.
    pub(super) fn listen(&mut self, svc: &str, raw: &RawService) -> Listen {
        let mut addrs: Vec<ListenAddr> = Vec::new();
        for entry in raw.listen.iter().flat_map(|l| l.get_ref()) {
            let Some(addr) = self.listen_addr(svc, entry) else {
                continue;
            };
            if let Some(first) = addrs.iter().find(|a| same_port(a, &addr)) {
                let message = if *first == addr {
                    format!("`service.{svc}.listen` names {addr} twice")
                } else {
                    format!("`service.{svc}.listen` names {addr}, which {first} includes")
                };
                self.push(Problem::new(message, entry.span(), "duplicate").with_help(
                    "list each address once: a wildcard IP takes the port on every address",
                ));
                continue;
            }
            addrs.push(addr);
        }
        let backlog = raw
            .backlog
            .as_ref()
            .and_then(|b| self.backlog(svc, b, raw.listen.is_some()))
            .unwrap_or(upgrade_defaults::BACKLOG);
        Listen { addrs, backlog }
    }

    fn listen_addr(&mut self, svc: &str, entry: &Spanned<String>) -> Option<ListenAddr> {
        let text = entry.get_ref();
        parse_listen(text)
            .map_err(|(label, help)| {
                self.push(
                    Problem::new(
                        format!("invalid address {text:?} in `service.{svc}.listen`"),
                        entry.span(),
                        label,
                    )
                    .with_help(help),
                );
            })
            .ok()
    }

    fn backlog(&mut self, svc: &str, raw: &Spanned<i64>, listens: bool) -> Option<u32> {
        let (label, help) = match *raw.get_ref() {
            _ if !listens => (
                "no `listen`",
                "backlog applies to the `listen` sockets: add listen, or remove backlog",
            ),
            n @ 1..=65535 => return u32::try_from(n).ok(),
            _ => (
                "out of range",
                "write 1 to 65535 (the kernel caps it at net.core.somaxconn)",
            ),
        };
        self.push(
            Problem::new(
                format!("invalid `service.{svc}.backlog`"),
                raw.span(),
                label,
            )
            .with_help(help),
        );
        None
    }

    /// `[service.X.upgrade]`, judged with `listen` and the service's command.
    pub(super) fn upgrade(
        &mut self,
        svc: &str,
        raw: &RawService,
        command: Option<&[String]>,
    ) -> Option<UpgradeSpec> {
        let table = raw.upgrade.as_ref()?;
        let up = table.get_ref();
        let mode = self.mode(svc, up, table.span());
        if let Some(mode) = &mode {
            self.mode_needs(svc, raw, up, mode);
        }
        let watch = up
            .watch
            .as_ref()
            .and_then(|w| self.absolute_path(svc, "upgrade.watch", w, "/opt/api/current"));
        if let (Some(watch), Some(program), Some(at)) =
            (&watch, command.and_then(<[String]>::first), &up.watch)
        {
            self.program_under_watch(svc, watch, program, at.span());
        }
        // Every key is judged before the first `?`, so that one pass reports everything.
        let ready_timeout = self.nonzero_duration(
            up.ready_timeout.as_ref(),
            svc,
            "upgrade.ready_timeout",
            upgrade_defaults::READY_TIMEOUT,
            "the new run needs some time to get ready, e.g. \"60s\"",
        );
        let drain = self.duration(
            up.drain.as_ref(),
            svc,
            "upgrade.drain",
            upgrade_defaults::DRAIN,
        );
        let bake = self.duration(
            up.bake.as_ref(),
            svc,
            "upgrade.bake",
            upgrade_defaults::BAKE,
        );
        let verify = up.verify.as_ref().and_then(|v| self.verify(svc, v));
        let checksum = up
            .checksum
            .as_ref()
            .map_or(Checksum::IfPresent, |c| self.checksum(svc, c));
        Some(UpgradeSpec {
            ready_timeout,
            drain,
            bake,
            rollback_link: up.rollback_link.unwrap_or(true),
            verify,
            checksum,
            watch,
            // Resolved to the real path by the host check; as written without one.
            ..UpgradeSpec::new(mode?, PathBuf::from(command?.first()?))
        })
    }

    fn mode(&mut self, svc: &str, up: &RawUpgrade, span: Range<usize>) -> Option<UpgradeMode> {
        let Some(mode) = &up.mode else {
            self.push(
                Problem::new(
                    format!("`service.{svc}.upgrade` has no `mode`"),
                    span,
                    "missing `mode`",
                )
                .with_help(
                    "add mode = \"handover\" (holdfast passes the sockets), \"reuseport\" (the service binds with SO_REUSEPORT) or \"proxy\"",
                ),
            );
            return None;
        };
        let proxy_only =
            |key: &str| format!("`service.{svc}.upgrade.{key}` only applies to mode = \"proxy\"");
        let name = mode.get_ref().as_str();
        if name != "proxy" {
            for (key, at) in [("proxy", &up.proxy), ("ports", &up.ports)] {
                if let Some(at) = at {
                    self.push(
                        Problem::new(proxy_only(key), at.span(), "not proxy mode")
                            .with_help(format!("remove `{key}`, or set mode = \"proxy\"")),
                    );
                }
            }
        }
        match name {
            "handover" => Some(UpgradeMode::Handover),
            "reuseport" => Some(UpgradeMode::Reuseport),
            "proxy" => Some(UpgradeMode::Proxy(self.proxy(svc, up)?)),
            other => {
                self.push(
                    Problem::new(
                        format!("unknown upgrade mode {other:?} in `service.{svc}.upgrade.mode`"),
                        mode.span(),
                        "unknown mode",
                    )
                    .with_help(choice_help(other, &MODES, "valid")),
                );
                None
            }
        }
    }

    /// `proxy` (default `http`: what most proxied services speak, and what moves
    /// keep-alive clients to the new run) and `ports`.
    fn proxy(&mut self, svc: &str, up: &RawUpgrade) -> Option<ProxySpec> {
        let ports = up.ports.as_ref().and_then(|p| self.ports(svc, p));
        let protocol = match up.proxy.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
            None | Some(("http", _)) => ProxyProtocol::Http,
            Some(("tcp", _)) => ProxyProtocol::Tcp,
            Some((other, at)) => {
                self.push(
                    Problem::new(
                        format!(
                            "unknown proxy protocol {other:?} in `service.{svc}.upgrade.proxy`"
                        ),
                        at,
                        "unknown protocol",
                    )
                    .with_help(choice_help(other, &["http", "tcp"], "valid")),
                );
                return None;
            }
        };
        Some(ProxySpec { protocol, ports })
    }

    /// `ports = "A-B"`: at least two, since the old and the new run listen at once.
    fn ports(&mut self, svc: &str, raw: &Spanned<String>) -> Option<RangeInclusive<u16>> {
        let text = raw.get_ref();
        let range = text.split_once('-').and_then(|(a, b)| {
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            (a >= 1 && a < b).then_some(a..=b)
        });
        if range.is_none() {
            self.push(
                Problem::new(
                    format!("invalid port range {text:?} in `service.{svc}.upgrade.ports`"),
                    raw.span(),
                    "not \"LOW-HIGH\" with LOW < HIGH",
                )
                .with_help(
                    "write e.g. \"31000-31099\": at least two ports, since the old and the new run listen at once",
                ),
            );
        }
        range
    }

    /// What each mode needs of `listen` and `{port}`.
    fn mode_needs(&mut self, svc: &str, raw: &RawService, up: &RawUpgrade, mode: &UpgradeMode) {
        let at = up.mode.as_ref().map(Spanned::span).unwrap_or_default();
        let missing_listen = |what: &str| {
            Problem::new(
                format!(
                    "`service.{svc}.upgrade.mode = \"{}\"` needs `listen`",
                    mode.as_str()
                ),
                at.clone(),
                "no `listen`",
            )
            .with_help(format!(
                "add listen = [\"tcp://127.0.0.1:8080\"] to [service.{svc}]: {what}"
            ))
        };
        match mode {
            UpgradeMode::Handover if no_listen(raw) => {
                self.push(missing_listen(
                    "holdfast binds it once and passes it to every run",
                ));
            }
            UpgradeMode::Proxy(_) => {
                if no_listen(raw) {
                    self.push(missing_listen("the public address the proxy accepts on"));
                }
                self.proxy_listen_is_tcp(svc, raw);
                if !port_in_command_or_env(raw) {
                    self.push(
                        Problem::new(
                            format!("`service.{svc}` in proxy mode does not use `{{port}}`"),
                            at,
                            "no {port} in command or env",
                        )
                        .with_help(
                            "pass the private port, e.g. command = [\"/opt/api/current/server\", \"--port\", \"{port}\"]: otherwise the run would not know which port to listen on",
                        ),
                    );
                }
            }
            UpgradeMode::Reuseport => {
                if let Some(listen) = &raw.listen {
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.listen` does not apply to mode = \"reuseport\""),
                            listen.span(),
                            "the service binds itself",
                        )
                        .with_help(
                            "remove `listen` (the service binds its port with SO_REUSEPORT), or use mode = \"handover\"",
                        ),
                    );
                }
            }
            UpgradeMode::Handover => {}
        }
    }

    fn proxy_listen_is_tcp(&mut self, svc: &str, raw: &RawService) {
        for entry in raw.listen.iter().flat_map(|l| l.get_ref()) {
            if entry.get_ref().starts_with("unix:") {
                self.push(
                    Problem::new(
                        format!("the proxy of `service.{svc}` forwards TCP only"),
                        entry.span(),
                        "a unix socket",
                    )
                    .with_help(
                        "listen on \"tcp://IP:PORT\", or use mode = \"handover\" to pass a unix socket",
                    ),
                );
            }
        }
    }

    /// `{port}` anywhere outside proxy mode: it would reach the program verbatim.
    /// Proxy mode is judged as written, so that a mistake elsewhere in a proxy's table
    /// does not also report every `{port}`.
    pub(super) fn port_placeholders(&mut self, svc: &str, raw: &RawService) {
        let mode = raw.upgrade.as_ref().and_then(|u| u.get_ref().mode.as_ref());
        if mode.is_some_and(|m| m.get_ref() == "proxy") {
            return;
        }
        let mut found: Vec<(&str, Range<usize>)> = Vec::new();
        if let Some(RawCommand::Args(args)) = raw.command.as_ref().map(Spanned::get_ref) {
            found.extend(
                args.iter()
                    .filter(|a| a.get_ref().contains(PORT))
                    .map(|a| ("command", a.span())),
            );
        }
        found.extend(
            raw.env
                .iter()
                .flatten()
                .filter(|(_, v)| v.get_ref().contains(PORT))
                .map(|(_, v)| ("env", v.span())),
        );
        if let Some(ready) = raw.ready.as_ref().filter(|r| ready_has_port(r.get_ref())) {
            found.push(("ready", ready.span()));
        }
        if let Some(health) = &raw.health {
            let h = health.get_ref();
            for (key, addr) in [("health.http", &h.http), ("health.tcp", &h.tcp)] {
                if let Some(addr) = addr.as_ref().filter(|a| a.get_ref().contains(PORT)) {
                    found.push((key, addr.span()));
                }
            }
        }
        for (key, span) in found {
            self.push(
                Problem::new(
                    format!("`{PORT}` in `service.{svc}.{key}` without proxy mode"),
                    span,
                    "only proxy mode has a private port",
                )
                .with_help(format!(
                    "write the port itself, or set mode = \"proxy\" in [service.{svc}.upgrade] to give each run a private port"
                )),
            );
        }
    }

    /// `command[0]` must be the watched link or lie under it: otherwise a flip of the
    /// link would not change what runs.
    fn program_under_watch(&mut self, svc: &str, watch: &Path, program: &str, at: Range<usize>) {
        if Path::new(program).starts_with(watch) {
            return;
        }
        self.push(
            Problem::new(
                format!("`service.{svc}.command` does not run from `upgrade.watch`"),
                at,
                format!("{program} is not under {}", watch.display()),
            )
            .with_help(format!(
                "start the program through the link, e.g. command = [\"{}/server\"], or watch the link the command goes through",
                watch.display()
            )),
        );
    }

    fn verify(&mut self, svc: &str, raw: &Spanned<RawVerify>) -> Option<Verify> {
        let key = format!("service.{svc}.upgrade.verify");
        let example = "[\"{bin}\", \"--version\"]";
        let (command, timeout) = match raw.get_ref() {
            RawVerify::Command(command) => (Spanned::new(raw.span(), command.clone()), None),
            RawVerify::Table(table) => {
                let Some(command) = &table.command else {
                    self.push(
                        Problem::new(
                            format!("`{key}` has no `command`"),
                            raw.span(),
                            "missing `command`",
                        )
                        .with_help(format!(
                            "write verify = {{ command = {example}, timeout = \"10s\" }}"
                        )),
                    );
                    return None;
                };
                (command.clone(), table.timeout.as_ref())
            }
        };
        let timeout = self.nonzero_duration(
            timeout,
            svc,
            "upgrade.verify.timeout",
            upgrade_defaults::VERIFY_TIMEOUT,
            "give the check some time, e.g. \"10s\"",
        );
        let command = self.command_array(&key, "verify", &command, example)?;
        Some(Verify { command, timeout })
    }

    fn checksum(&mut self, svc: &str, raw: &Spanned<String>) -> Checksum {
        match raw.get_ref().as_str() {
            "if-present" => Checksum::IfPresent,
            "required" => Checksum::Required,
            other => {
                self.push(
                    Problem::new(
                        format!("unknown value {other:?} in `service.{svc}.upgrade.checksum`"),
                        raw.span(),
                        "unknown value",
                    )
                    .with_help(choice_help(
                        other,
                        &["if-present", "required"],
                        "valid",
                    )),
                );
                Checksum::IfPresent
            }
        }
    }
}

/// One `listen` address, or the label and hint of what is wrong with it.
fn parse_listen(text: &str) -> Result<ListenAddr, (&'static str, &'static str)> {
    if let Some(addr) = text.strip_prefix("tcp://") {
        return match addr.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(ListenAddr::Tcp(addr)),
            Ok(_) => Err((
                "port 0",
                "name the port clients connect to, e.g. \"tcp://0.0.0.0:8080\"",
            )),
            Err(_) => Err((
                "not tcp://IP:PORT",
                "write an IP address and a port, e.g. \"tcp://0.0.0.0:8080\" or \"tcp://[::]:8080\"",
            )),
        };
    }
    if let Some(path) = text.strip_prefix("unix:") {
        let path = Path::new(path);
        let help = "write an absolute path of at most 107 bytes, e.g. \"unix:/run/api.sock\"";
        if !path.is_absolute() {
            return Err(("relative path", help));
        }
        if path.as_os_str().len() > MAX_UNIX_PATH {
            return Err(("path too long for a unix socket", help));
        }
        return Ok(ListenAddr::Unix(path.to_owned()));
    }
    Err((
        "unknown kind of address",
        "write \"tcp://IP:PORT\" or \"unix:/absolute/path\"",
    ))
}

/// Two services that listen on the same address: the second could never bind it.
/// Reported at the later one, in file order.
pub(super) fn shared_addresses(entries: &[RawServiceEntry]) -> Vec<Problem> {
    let mut seen: Vec<(&str, ListenAddr)> = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let svc = entry.name.get_ref().as_str();
        let listen = entry.body.as_ref().and_then(|b| b.value.listen.as_ref());
        for written in listen.iter().flat_map(|l| l.get_ref()) {
            let Ok(addr) = parse_listen(written.get_ref()) else {
                continue;
            };
            let first = seen
                .iter()
                .find(|(other, at)| *other != svc && same_port(at, &addr));
            if let Some((other, at)) = first {
                problems.push(
                    Problem::new(
                        format!("`service.{svc}.listen` takes {addr}, already taken by `service.{other}`"),
                        written.span(),
                        "the same address",
                    )
                    .with_help(format!(
                        "each address is bound once, for one service; `{other}` listens on {at}"
                    )),
                );
            }
            seen.push((svc, addr));
        }
    }
    problems
}

fn same_port(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Tcp(a), ListenAddr::Tcp(b)) => ports::collide(*a, *b),
        (ListenAddr::Unix(a), ListenAddr::Unix(b)) => a == b,
        _ => false,
    }
}

/// No `listen`, or an empty one.
fn no_listen(raw: &RawService) -> bool {
    raw.listen.as_ref().is_none_or(|l| l.get_ref().is_empty())
}

fn port_in_command_or_env(raw: &RawService) -> bool {
    let in_command = match raw.command.as_ref().map(Spanned::get_ref) {
        Some(RawCommand::Args(args)) => args.iter().any(|a| a.get_ref().contains(PORT)),
        _ => false,
    };
    in_command
        || raw
            .env
            .iter()
            .flatten()
            .any(|(_, v)| v.get_ref().contains(PORT))
}

/// Whether `ready = { tcp }` or `{ http }` waits for the private port.
pub(super) fn ready_has_port(ready: &RawReady) -> bool {
    match ready {
        RawReady::Table(table) => [&table.tcp, &table.http]
            .into_iter()
            .flatten()
            .any(|a| a.contains(PORT)),
        RawReady::Mode(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use super::super::tests::{plan, problems, snippet};
    use crate::model::{
        Checksum, ListenAddr, Probe, ProxyProtocol, ProxySpec, Readiness, ServiceName, UpgradeMode,
        Verify,
    };

    fn spec<'p>(p: &'p crate::model::Plan, name: &str) -> &'p crate::model::ServiceSpec {
        &p.services[&ServiceName::new(name).expect("test names are valid")]
    }

    #[test]
    fn every_upgrade_key_is_converted_to_the_model() {
        let p = plan(
            r#"
            [service.api]
            command = ["/opt/api/current/server"]
            listen = ["tcp://127.0.0.1:8080", "unix:/run/api.sock", "tcp://[::]:8081"]
            backlog = 128
            [service.api.upgrade]
            mode = "handover"
            watch = "/opt/api/current"
            ready_timeout = "20s"
            drain = "5s"
            bake = "0s"
            rollback_link = false
            verify = { command = ["{bin}", "--version"], timeout = "3s" }
            checksum = "required"
            "#,
        );
        let api = spec(&p, "api");
        let tcp = |a: &str| ListenAddr::Tcp(a.parse::<SocketAddr>().expect("addr"));
        assert_eq!(
            api.listen.addrs,
            [
                tcp("127.0.0.1:8080"),
                ListenAddr::Unix("/run/api.sock".into()),
                tcp("[::]:8081")
            ]
        );
        assert_eq!(api.listen.backlog, 128);
        let up = api.upgrade.as_ref().expect("[upgrade]");
        assert_eq!(up.mode, UpgradeMode::Handover);
        assert_eq!(up.watch.as_deref(), Some(Path::new("/opt/api/current")));
        assert_eq!(
            up.build,
            Path::new("/opt/api/current/server"),
            "as written without a host"
        );
        assert_eq!(up.ready_timeout, Duration::from_secs(20));
        assert_eq!(up.drain, Duration::from_secs(5));
        assert_eq!(up.bake, Duration::ZERO);
        assert!(!up.rollback_link);
        assert_eq!(
            up.verify,
            Some(Verify {
                command: vec!["{bin}".into(), "--version".into()],
                timeout: Duration::from_secs(3),
            })
        );
        assert_eq!(up.checksum, Checksum::Required);
    }

    #[test]
    fn defaults_apply_and_verify_may_be_a_plain_array() {
        let p = plan(
            "[service.api]\ncommand = [\"/bin/api\"]\nlisten = [\"tcp://0.0.0.0:80\"]\n\
             [service.api.upgrade]\nmode = \"handover\"\nverify = [\"{bin}\", \"-t\"]\n",
        );
        let api = spec(&p, "api");
        assert_eq!(api.listen.backlog, crate::model::upgrade_defaults::BACKLOG);
        let up = api.upgrade.as_ref().expect("[upgrade]");
        assert_eq!(
            up.ready_timeout,
            crate::model::upgrade_defaults::READY_TIMEOUT
        );
        assert!(up.rollback_link);
        assert_eq!(up.checksum, Checksum::IfPresent);
        assert_eq!(
            up.verify.as_ref().map(|v| v.timeout),
            Some(crate::model::upgrade_defaults::VERIFY_TIMEOUT)
        );
    }

    #[test]
    fn a_listen_without_upgrade_is_plain_socket_activation() {
        let p = plan("[service.a]\ncommand = [\"/bin/a\"]\nlisten = [\"unix:/run/a.sock\"]\n");
        assert_eq!(spec(&p, "a").listen.addrs.len(), 1);
        assert_eq!(spec(&p, "a").upgrade, None);
    }

    #[test]
    fn proxy_mode_keeps_port_in_the_command_and_stores_port_zero_in_probes() {
        let p = plan(
            r#"
            [service.api]
            command = ["/bin/api", "--port", "{port}"]
            env = { ADDR = "127.0.0.1:{port}" }
            listen = ["tcp://0.0.0.0:8080"]
            ready = { http = "http://127.0.0.1:{port}/health" }
            instances = 2
            [service.api.upgrade]
            mode = "proxy"
            proxy = "tcp"
            ports = "31000-31099"
            [service.api.health]
            tcp = "127.0.0.1:{port}"
            [service.web]
            command = ["/bin/web", "{port}"]
            listen = ["tcp://0.0.0.0:8081"]
            ready = { tcp = "127.0.0.1:{port}" }
            [service.web.upgrade]
            mode = "proxy"
            "#,
        );
        let api = spec(&p, "api@1");
        assert_eq!(api.command, ["/bin/api", "--port", "{port}"]);
        assert_eq!(api.env["ADDR"], "127.0.0.1:{port}");
        assert_eq!(
            api.upgrade.as_ref().map(|u| &u.mode),
            Some(&UpgradeMode::Proxy(ProxySpec {
                protocol: ProxyProtocol::Tcp,
                ports: Some(31000..=31099),
            }))
        );
        assert_eq!(
            api.ready,
            Readiness::Http("http://127.0.0.1:0/health".into())
        );
        assert_eq!(
            api.health.as_ref().map(|h| &h.probe),
            Some(&Probe::Tcp {
                address: "127.0.0.1:0".into()
            })
        );
        assert_eq!(
            spec(&p, "api@0").listen,
            api.listen,
            "instances share the listen addresses"
        );
        assert_eq!(
            spec(&p, "web").ready,
            Readiness::Tcp("127.0.0.1:0".parse().expect("addr"))
        );
        assert_eq!(
            spec(&p, "web").upgrade.as_ref().map(|u| &u.mode),
            Some(&UpgradeMode::Proxy(ProxySpec {
                protocol: ProxyProtocol::Http,
                ports: None,
            })),
            "http by default"
        );
    }

    #[test]
    fn port_outside_proxy_mode_is_reported_where_it_is_written() {
        let src = "[service.a]\ncommand = [\"/bin/a\", \"{port}\"]\nenv = { P = \"{port}\" }\n\
                   ready = { tcp = \"127.0.0.1:{port}\" }\n\
                   [service.a.health]\nhttp = \"http://127.0.0.1:{port}/\"\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(
            snippets,
            [
                "\"{port}\"",
                "\"{port}\"",
                "{ tcp = \"127.0.0.1:{port}\" }",
                "\"http://127.0.0.1:{port}/\""
            ],
            "{all:#?}"
        );
        assert!(
            all.iter()
                .all(|p| p.message().contains("without proxy mode"))
        );
    }

    #[test]
    fn proxy_mode_without_port_says_the_run_would_not_know_its_port() {
        let src = "[service.a]\ncommand = [\"/bin/a\"]\nlisten = [\"tcp://0.0.0.0:80\"]\n\
                   [service.a.upgrade]\nmode = \"proxy\"\nproxy = \"http\"\n";
        let all = problems(src);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(snippet(src, &all[0]), "\"proxy\"");
        assert!(
            all[0].help().is_some_and(|h| h.contains("would not know")),
            "{all:#?}"
        );
    }

    #[test]
    fn the_program_must_run_through_the_watched_link() {
        let src = "[service.a]\ncommand = [\"/opt/a/b1/server\"]\nlisten = [\"tcp://0.0.0.0:80\"]\n\
                   [service.a.upgrade]\nmode = \"handover\"\nwatch = \"/opt/a/current\"\n";
        let all = problems(src);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(snippet(src, &all[0]), "\"/opt/a/current\"");
        plan(
            "[service.a]\ncommand = [\"/opt/a/current\"]\nlisten = [\"tcp://0.0.0.0:80\"]\n\
             [service.a.upgrade]\nmode = \"handover\"\nwatch = \"/opt/a/current\"\n",
        );
    }

    #[test]
    fn two_services_may_not_listen_on_the_same_address() {
        let src = "[service.a]\ncommand = [\"/bin/a\"]\nlisten = [\"tcp://0.0.0.0:80\", \"unix:/run/a.sock\"]\n\
                   [service.b]\ncommand = [\"/bin/b\"]\nlisten = [\"tcp://127.0.0.1:80\", \"tcp://127.0.0.1:81\"]\n\
                   [service.c]\ncommand = [\"/bin/c\"]\nlisten = [\"unix:/run/a.sock\"]\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(
            snippets,
            ["\"tcp://127.0.0.1:80\"", "\"unix:/run/a.sock\""],
            "{all:#?}"
        );
        assert_eq!(
            all[0].message(),
            "`service.b.listen` takes tcp://127.0.0.1:80, already taken by `service.a`"
        );
    }

    #[test]
    fn keys_of_another_mode_and_bad_values_are_rejected() {
        let src = "[service.a]\ncommand = [\"/bin/a\"]\nlisten = [\"tcp://0.0.0.0:80\"]\n\
                   [service.a.upgrade]\nmode = \"handover\"\nproxy = \"http\"\nports = \"2-1\"\n\
                   [service.b]\ncommand = [\"/bin/b\", \"{port}\"]\nlisten = [\"tcp://0.0.0.0:81\"]\n\
                   [service.b.upgrade]\nmode = \"proxy\"\nproxy = \"udp\"\nports = \"5-5\"\n\
                   [service.c]\ncommand = [\"/bin/c\"]\nbacklog = 10\n[service.c.upgrade]\ndrain = \"1s\"\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(
            snippets,
            [
                "\"http\"",
                "\"2-1\"",
                "\"udp\"",
                "\"5-5\"",
                "10",
                "[service.c.upgrade]"
            ],
            "{all:#?}"
        );
    }
}
