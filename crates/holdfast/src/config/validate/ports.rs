//! Two services waiting for the same readiness port.
//!
//! A `ready = { tcp }` or `{ http }` address is the port the service itself listens on.
//! If two services name the same one, at most one can bind it, and the other's readiness
//! probe would be answered by the wrong service: that is a copy-paste mistake.

use std::net::SocketAddr;

use crate::config::diagnostic::Problem;
use crate::model::Readiness;

/// A service's readiness port, with the span of its `ready` value.
pub(super) struct Claim<'a> {
    pub svc: &'a str,
    pub addr: SocketAddr,
    pub span: std::ops::Range<usize>,
}

/// The address a readiness mode connects to, if it is a port.
pub(super) fn ready_addr(ready: &Readiness) -> Option<SocketAddr> {
    match ready {
        Readiness::Tcp(addr) => Some(*addr),
        Readiness::Http(url) => http_addr(url),
        _ => None,
    }
}

/// The `IP:port` of a `ready = { http }` URL, which must be `http://IP:port/path`.
pub(super) fn http_addr(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?.split('/').next()?.parse().ok()
}

/// Two addresses collide when the ports match and the IPs match or one is a wildcard.
pub(super) fn collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// One problem per claim that collides with an earlier one (in file order).
pub(super) fn duplicates(mut claims: Vec<Claim<'_>>) -> Vec<Problem> {
    claims.sort_by_key(|c| c.span.start);
    let mut problems = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let Some(first) = claims[..i].iter().find(|c| collide(c.addr, claim.addr)) else {
            continue;
        };
        problems.push(
            Problem::new(
                format!(
                    "`service.{}.ready` claims port {}, already claimed by `service.{}`",
                    claim.svc,
                    claim.addr.port(),
                    first.svc
                ),
                claim.span.clone(),
                "same port",
            )
            .with_help(format!(
                "each service waits for its own listening port; `{}` waits for {}",
                first.svc, first.addr
            )),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_collide_with_any_ip_on_the_same_port() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(collide(a, "0.0.0.0:80".parse().unwrap()));
        assert!(collide(a, a));
        assert!(!collide(a, "127.0.0.2:80".parse().unwrap()));
        assert!(!collide(a, "127.0.0.1:81".parse().unwrap()));
    }

    #[test]
    fn http_readiness_claims_the_port_of_its_url() {
        let ready = Readiness::Http("http://127.0.0.1:8080/health".into());
        assert_eq!(ready_addr(&ready), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(ready_addr(&Readiness::Notify), None);
    }
}
