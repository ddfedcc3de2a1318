//! What every request passes before its handler: the `Host` check (every route) and the
//! token (routes that change something or show service output).
//!
//! The Host check stops DNS rebinding: a web page of `evil.example` whose name is made to
//! resolve to 127.0.0.1 reaches a loopback dashboard from the victim's browser, with
//! `Host: evil.example:PORT`. Only names that cannot be rebound get through: `localhost`,
//! IP literals of loopback, the configured address (and, for an unspecified address
//! such as `0.0.0.0`, any IP literal: the machine is reached by one of its addresses).

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::WebState;

/// `Host` values accepted by a server listening on `listening`.
pub fn host_allowed(host: &str, listening: SocketAddr) -> bool {
    let (name, port) = split_host(host);
    if port.is_some_and(|p| p != listening.port()) {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    ip.is_loopback() || ip == listening.ip() || listening.ip().is_unspecified()
}

/// `name[:port]`, `[v6][:port]` → (name without brackets, port). A port that is not a
/// number makes the whole thing a name (refused later).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, port)) => match port.strip_prefix(':').and_then(|p| p.parse().ok()) {
                Some(port) => (ip, Some(port)),
                None => (host, None),
            },
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

/// Refuses (421 Misdirected Request) a request whose `Host` this server does not answer
/// to. Requests without `Host` (HTTP/1.0 tools) carry no name a page could rebind.
pub async fn check_host(
    State(listening): State<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(host) if !host_allowed(&host, listening) => {
            let error = serde_json::json!({"error": {
                "kind": "misdirected",
                "message": format!(
                    "this server answers to localhost, 127.0.0.1, [::1] or {listening}, \
                     not to Host {host:?} (a page of another site must not read it)"
                ),
            }});
            (StatusCode::MISDIRECTED_REQUEST, Json(error)).into_response()
        }
        _ => next.run(request).await,
    }
}

/// Lets through only requests with the token; the body is not even read before.
pub async fn require_token(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    if state.authorized(request.headers()) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>` for `token`.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"Bearer ")
        .then(|| rest.trim_ascii())
}

/// 401, with what to send.
pub fn unauthorized() -> Response {
    let error = serde_json::json!({"error": {
        "kind": "unauthorized",
        "message": "missing or wrong token: send `Authorization: Bearer <token>` with the \
                    token of <state_dir>/http.token (`holdfast http-token` prints it)",
    }});
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(error),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_that_cannot_be_rebound_pass_the_host_check() {
        let lo: SocketAddr = "127.0.0.1:9700".parse().expect("addr");
        for ok in [
            "localhost",
            "localhost:9700",
            "LOCALHOST:9700",
            "127.0.0.1:9700",
            "127.0.0.1",
            "[::1]:9700",
            "[::1]",
        ] {
            assert!(host_allowed(ok, lo), "{ok}");
        }
        for bad in [
            "evil.example:9700",
            "evil.example",
            "localhost:9701",
            "127.0.0.1:80",
            "localhost.evil.example:9700",
            "[::1]x",
            "10.0.0.5:9700",
        ] {
            assert!(!host_allowed(bad, lo), "{bad}");
        }
        let lan: SocketAddr = "10.0.0.5:9700".parse().expect("addr");
        assert!(host_allowed("10.0.0.5:9700", lan));
        assert!(!host_allowed("10.0.0.6:9700", lan));
        let any: SocketAddr = "0.0.0.0:9700".parse().expect("addr");
        assert!(host_allowed("10.0.0.6:9700", any));
        assert!(!host_allowed("evil.example:9700", any));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            headers.insert(header::AUTHORIZATION, value.parse().expect("value"));
            assert_eq!(bearer(&headers), Some(&b"abc"[..]), "{value}");
        }
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&headers), None);
    }
}
