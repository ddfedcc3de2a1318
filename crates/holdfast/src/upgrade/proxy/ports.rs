//! Private ports: each run of a proxy-mode service listens on one of its own, given to
//! it as `{port}` in its command and environment. Readiness and health addresses with
//! port 0 (what the config makes of `{port}` there) mean that same port.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;

use crate::model::{Probe, Readiness, ServiceSpec};

/// What `{port}` is replaced with in a proxy-mode service's command and env values.
pub const PLACEHOLDER: &str = "{port}";

/// A port for a new run: the first of `range` that no live run has (`taken`) and that
/// can be bound on 127.0.0.1 right now; without a range, one the kernel picks.
pub fn pick(range: Option<&RangeInclusive<u16>>, taken: &HashSet<u16>) -> io::Result<u16> {
    let Some(range) = range else {
        // Bound and closed again at once: the kernel does not hand the same ephemeral
        // port out again soon, so the run can bind it a moment later.
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()
            .map(|a| a.port());
    };
    range
        .clone()
        .filter(|p| !taken.contains(p))
        .find(|&p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "no free private port in {}-{}: every one is used by a run or bound by another program",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// `spec` as one run on `port` sees it: `{port}` in its command and env values, and
/// port 0 in its readiness and health addresses, become `port`.
pub fn substitute(spec: &ServiceSpec, port: u16) -> ServiceSpec {
    let text = port.to_string();
    let replace = |s: &String| s.replace(PLACEHOLDER, &text);
    let mut spec = spec.clone();
    spec.command = spec.command.iter().map(replace).collect();
    for value in spec.env.values_mut() {
        *value = replace(value);
    }
    spec.ready = match spec.ready {
        Readiness::Tcp(addr) => Readiness::Tcp(socket_addr(addr, port)),
        Readiness::Http(url) => Readiness::Http(url_port(&url, port)),
        other => other,
    };
    if let Some(health) = &mut spec.health {
        health.probe = probe(&health.probe, port);
    }
    spec
}

/// A health probe of the run on `port`.
fn probe(probe: &Probe, port: u16) -> Probe {
    let mut probe = probe.clone();
    match &mut probe {
        Probe::Http { url, authority, .. } => {
            *url = url_port(url, port);
            *authority = authority_port(authority, port);
        }
        Probe::Tcp { address } => *address = authority_port(address, port),
        Probe::Exec { .. } => {}
    }
    probe
}

fn socket_addr(addr: SocketAddr, port: u16) -> SocketAddr {
    if addr.port() == 0 {
        SocketAddr::new(addr.ip(), port)
    } else {
        addr
    }
}

/// `host:0` → `host:port`; any other authority stays.
fn authority_port(authority: &str, port: u16) -> String {
    match authority.strip_suffix(":0") {
        Some(host) => format!("{host}:{port}"),
        None => authority.to_owned(),
    }
}

/// `http://host:0/path` → `http://host:port/path`.
fn url_port(url: &str, port: u16) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    format!("{scheme}://{}{path}", authority_port(authority, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_of_the_range_is_skipped_when_a_run_has_it_or_something_else_binds_it() {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let b = busy.local_addr().unwrap().port();
        // Three ports from the busy one: it is bound, the next is taken by a run.
        let Some(end) = b.checked_add(2) else { return };
        let taken = HashSet::from([b + 1]);
        let got = pick(Some(&(b..=end)), &taken);
        // The last one may be bound by another test meanwhile: then none is free.
        match got {
            Ok(port) => assert_eq!(port, b + 2),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse),
        }
        let all = HashSet::from([b + 1, b + 2]);
        let err = pick(Some(&(b..=end)), &all).unwrap_err();
        assert!(err.to_string().contains("no free private port"), "{err}");
    }

    #[test]
    fn without_a_range_the_kernel_picks_a_bindable_port() {
        let port = pick(None, &HashSet::new()).unwrap();
        assert_ne!(port, 0);
    }

    #[test]
    fn a_runs_spec_has_its_port_in_command_env_readiness_and_health() {
        let mut spec = holdfast_core::supervisor::testkit::svc("api");
        spec.command = vec!["/bin/server".into(), "--listen=127.0.0.1:{port}".into()];
        spec.env.insert("PORT".into(), "{port}".into());
        spec.ready = Readiness::Tcp("127.0.0.1:0".parse().unwrap());
        let threshold = crate::model::Threshold {
            failures: 1,
            within: std::time::Duration::from_secs(1),
        };
        spec.health = Some(crate::model::HealthSpec {
            probe: Probe::Http {
                url: "http://127.0.0.1:0/health".into(),
                authority: "127.0.0.1:0".into(),
                path: "/health".into(),
                status: 200..=299,
                body: None,
            },
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            decay: crate::model::DecaySpec {
                grace: std::time::Duration::ZERO,
                degraded: threshold,
                unhealthy: threshold,
                recover_successes: 1,
            },
            unhealthy_action: crate::model::UnhealthyAction::None,
        });
        let run = substitute(&spec, 31007);
        assert_eq!(run.command[1], "--listen=127.0.0.1:31007");
        assert_eq!(run.env["PORT"], "31007");
        assert_eq!(
            run.ready,
            Readiness::Tcp("127.0.0.1:31007".parse().unwrap())
        );
        let Probe::Http { url, authority, .. } = &run.health.unwrap().probe else {
            panic!("still an http probe");
        };
        assert_eq!(
            (url.as_str(), authority.as_str()),
            ("http://127.0.0.1:31007/health", "127.0.0.1:31007")
        );
    }

    #[test]
    fn port_zero_and_the_placeholder_become_the_runs_port() {
        assert_eq!(
            url_port("http://127.0.0.1:0/health", 8081),
            "http://127.0.0.1:8081/health"
        );
        assert_eq!(
            url_port("http://127.0.0.1:0", 8081),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            url_port("http://127.0.0.1:9000/x", 8081),
            "http://127.0.0.1:9000/x",
            "a fixed port stays"
        );
        assert_eq!(authority_port("[::1]:0", 7), "[::1]:7");
        assert_eq!(authority_port("localhost:80", 7), "localhost:80");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(socket_addr(addr, 9).port(), 9);
    }
}
