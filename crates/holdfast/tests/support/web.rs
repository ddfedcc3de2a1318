//! The HTTP side of a daemon under test: where its server listens (holdfast is told
//! `http = "127.0.0.1:0"` and logs the port it got), and a minimal HTTP/1.1 client (no
//! curl needed on the test machine).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::Daemon;

/// The `[holdfast]` line (it must come first in a test's TOML, before any table) that
/// turns the HTTP server on at a port of the kernel's choosing.
pub const HTTP_ON: &str = "http = \"127.0.0.1:0\"\n\n";

/// Where the daemon's HTTP server listens, from its `dashboard: http://ADDR/` log line.
pub fn addr(daemon: &Daemon) -> SocketAddr {
    let mut found = None;
    daemon.wait_until("holdfast logs its dashboard address", |d| {
        found = d.stderr().lines().rev().find_map(|line| {
            let rest = line.split("dashboard: http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        });
        found.is_some()
    });
    found.expect("found above")
}

/// The token of the daemon's `/control` (`<state_dir>/http.token`).
pub fn token(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.dir().join("state/http.token"))
        .expect("the token file is written at start")
        .trim()
        .to_owned()
}

/// An HTTP answer: status code, headers as received, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is JSON ({e}): {}", self.body))
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], "")
}

/// `GET path` with `Authorization: Bearer token`.
pub fn get_with_token(addr: SocketAddr, path: &str, token: &str) -> Answer {
    request(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
}

/// `POST path` with a JSON body and `Authorization: Bearer token` when given.
pub fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    request(addr, "POST", path, &headers, body)
}

/// `POST /control` with `body`, as the dashboard sends it: with `daemon`'s token.
pub fn control(daemon: &Daemon, body: &str) -> Answer {
    post(addr(daemon), "/control", Some(&token(daemon)), body)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("holdfast's HTTP server accepts");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream
        .write_all(text.as_bytes())
        .expect("the request is sent");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("the answer is read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {raw}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Answer {
        status,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
