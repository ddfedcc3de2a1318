//! Reading and parsing the one request line of a connection.

use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;

use crate::control::conn::Limits;
use crate::control::protocol::{ControlError, Envelope, ErrorKind, Request, RequestBody, VERSION};

/// What came in on a connection before the deadline.
pub(super) enum Incoming {
    Line(Vec<u8>),
    /// Connected and closed without a byte: a liveness probe, nothing to answer.
    Nothing,
}

pub(super) async fn read_line(
    stream: &mut UnixStream,
    limits: Limits,
) -> Result<Incoming, ControlError> {
    let mut reader = BufReader::new(stream.take(limits.max_line as u64));
    let mut line = Vec::new();
    let read = tokio::time::timeout(limits.read_timeout, reader.read_until(b'\n', &mut line));
    match read.await {
        Err(_elapsed) => Err(bad_request(format!(
            "no complete request line within {}",
            humantime::format_duration(limits.read_timeout)
        ))),
        Ok(Err(e)) => Err(bad_request(format!("failed to read request: {e}"))),
        Ok(Ok(0)) => Ok(Incoming::Nothing),
        Ok(Ok(_)) if line.ends_with(b"\n") => Ok(Incoming::Line(line)),
        Ok(Ok(n)) if n >= limits.max_line => Err(bad_request(format!(
            "request line longer than {} bytes",
            limits.max_line
        ))),
        // EOF after a request without its newline: accept it as the line.
        Ok(Ok(_)) => Ok(Incoming::Line(line)),
    }
}

pub(super) fn bad_request(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// The fields needed before the full parse: the version must be checked first, so an old
/// CLI talking to a new daemon gets a version error, not a parse error.
#[derive(Deserialize)]
pub(super) struct Probe {
    v: Option<serde_json::Value>,
    request: Option<IgnoredAny>,
}

/// Parses a request line, checking the protocol version first. Public for the fuzz
/// target (`fuzz/`).
pub fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    let probe: Probe =
        serde_json::from_slice(line).map_err(|e| bad_request(format!("invalid request: {e}")))?;
    match probe.v {
        None => return Err(bad_request("invalid request: missing field `v`".to_owned())),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(other) => {
            return Err(ControlError {
                kind: ErrorKind::Version,
                message: format!(
                    "protocol version mismatch: the client speaks v{other}, this daemon speaks v{VERSION}"
                ),
            });
        }
    }
    if probe.request.is_none() {
        return Err(bad_request(
            "invalid request: missing field `request`".to_owned(),
        ));
    }
    let envelope: Envelope<RequestBody> =
        serde_json::from_slice(line).map_err(|e| bad_request(format!("invalid request: {e}")))?;
    let RequestBody::Request(request) = envelope.body;
    Ok(request)
}
