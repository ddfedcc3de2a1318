//! INTERIM, for proxy mode only until `listen` and `[service.X.upgrade]` are read in full
//! (the "config+sockets" part replaces this file): `listen = ["tcp://IP:PORT"]` and
//! `[service.X.upgrade] mode = "proxy"`, `proxy = "http" | "tcp"`, `ports = "A-B"`.

use std::path::PathBuf;

use super::Validator;
use crate::config::diagnostic::Problem;
use crate::config::raw::RawService;
use crate::model::{
    Listen, ListenAddr, ProxyProtocol, ProxySpec, UpgradeMode, UpgradeSpec, upgrade_defaults,
};

impl Validator<'_> {
    pub(super) fn proxy_interim(
        &mut self,
        svc: &str,
        raw: &RawService,
        command: Option<&Vec<String>>,
    ) -> (Listen, Option<UpgradeSpec>) {
        let mut addrs = Vec::new();
        for addr in raw.listen.iter().flatten() {
            let parsed = addr
                .get_ref()
                .strip_prefix("tcp://")
                .and_then(|a| a.parse().ok());
            match parsed {
                Some(a) => addrs.push(ListenAddr::Tcp(a)),
                None => self.push(
                    Problem::new(
                        format!(
                            "invalid address {:?} in `service.{svc}.listen`",
                            addr.get_ref()
                        ),
                        addr.span(),
                        "not tcp://IP:PORT",
                    )
                    .with_help("write e.g. \"tcp://127.0.0.1:8080\""),
                ),
            }
        }
        let listen = Listen {
            addrs,
            backlog: upgrade_defaults::BACKLOG,
        };
        let upgrade = raw.upgrade.as_ref().and_then(|table| {
            let span = table.span();
            let t = table.get_ref();
            let protocol = match t.proxy.as_deref() {
                None | Some("http") => Some(ProxyProtocol::Http),
                Some("tcp") => Some(ProxyProtocol::Tcp),
                Some(_) => None,
            };
            let ports = match t.ports.as_deref() {
                None => Some(None),
                Some(range) => range
                    .split_once('-')
                    .and_then(|(a, b)| Some(a.trim().parse::<u16>().ok()?..=b.trim().parse().ok()?))
                    .filter(|r| !r.is_empty() && *r.start() > 0)
                    .map(Some),
            };
            let (Some("proxy"), Some(protocol), Some(ports), Some(command)) =
                (t.mode.as_deref(), protocol, ports, command)
            else {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.upgrade` is not understood yet"),
                        span,
                        "only proxy mode",
                    )
                    .with_help(
                        "mode = \"proxy\", proxy = \"http\" or \"tcp\", ports = \"31000-31099\"",
                    ),
                );
                return None;
            };
            let mode = UpgradeMode::Proxy(ProxySpec { protocol, ports });
            Some(UpgradeSpec::new(mode, PathBuf::from(&command[0])))
        });
        (listen, upgrade)
    }
}
