//! The CLI side of the control socket: one blocking request/response exchange, or one
//! request answered by a stream of lines (`events -f`).
//!
//! Blocking std I/O on purpose: the CLI makes a single call and exits, so it needs no
//! runtime. Every read and write has a deadline, so a wedged daemon makes the CLI fail
//! with a clear error instead of hanging; only a stream's reads wait without one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::protocol::{ControlError, Envelope, Reply, Request, RequestBody, ResponseBody, VERSION};

/// How long the daemon may take to answer (a `stop` waits for the service to stop).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer accepted; a status of thousands of services fits easily.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClientError {
    /// Nobody answers on the socket.
    #[error("cannot reach holdfast on control socket {}", path.display())]
    #[diagnostic(help(
        "is `holdfast up` running? Point to its socket with --socket or HOLDFAST_SOCKET"
    ))]
    Unreachable { path: PathBuf, source: io::Error },
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(ControlError),
    /// A malformed answer, a timeout or an I/O error mid-way.
    #[error("{0}")]
    Protocol(String),
}

/// Sends one request to the daemon at `socket` and waits (at most [`TIMEOUT`] per read
/// or write) for its answer.
pub fn call(socket: &Path, request: Request) -> Result<Reply, ClientError> {
    call_within(socket, request, Some(TIMEOUT))
}

/// Like [`call`], waiting for the answer at most `read_timeout` (`None`: as long as it
/// takes): longer for requests the daemon answers only once their outcome is known
/// ([`Request::Wait`], which has a deadline of its own), shorter for callers that must
/// not keep a user waiting (shell completion).
pub fn call_within(
    socket: &Path,
    request: Request,
    read_timeout: Option<Duration>,
) -> Result<Reply, ClientError> {
    parse_response(&answer_line(socket, request, read_timeout)?)
}

/// Like [`call`], for a request answered with one kind of reply: its fields are parsed
/// straight into `T`, or the answer is given back as a [`Reply`] when it is another
/// (e.g. `Status` for [`Request::Status`]). A [`Reply`] is parsed by way of a buffered
/// copy of the whole answer (its tag and the envelope's flatten need one), which for a
/// status of thousands of services is most of the CLI's time.
pub fn call_for<T: DeserializeOwned>(
    socket: &Path,
    request: Request,
) -> Result<Result<T, Reply>, ClientError> {
    #[derive(Deserialize)]
    struct Direct<T> {
        v: Option<u32>,
        ok: Option<T>,
    }
    let line = answer_line(socket, request, Some(TIMEOUT))?;
    match serde_json::from_slice(&line) {
        Ok(Direct {
            v: Some(VERSION),
            ok: Some(value),
        }) => Ok(Ok(value)),
        // An error, another version or another kind of reply: said as `call` says it.
        _ => parse_response(&line).map(Err),
    }
}

/// Sends `request` and reads the one answer line.
fn answer_line(
    socket: &Path,
    request: Request,
    read_timeout: Option<Duration>,
) -> Result<Vec<u8>, ClientError> {
    let stream = send(socket, request, read_timeout)?;
    let mut answer = Vec::new();
    BufReader::new((&stream).take(MAX_RESPONSE))
        .read_until(b'\n', &mut answer)
        .map_err(|e| io_error(socket, "read from", e))?;
    Ok(answer)
}

/// Connects to the daemon and returns the connection with the daemon's pid, as the
/// kernel reports it in this process's pid namespace (`SO_PEERCRED`), for a caller
/// that must watch the daemon process itself (`shutdown`).
pub fn daemon_pid(socket: &Path) -> Result<i32, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: socket.to_owned(),
        source,
    })?;
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io_error(socket, "read the peer of", e.into()))?;
    Ok(creds.pid())
}

/// The number of the newest event the daemon published (0 before its first). The
/// supervisor answers this and any later request in turn, so following from it (`since`)
/// misses nothing published after that request, however late the follower's
/// connection is registered (`status --watch`, `upgrade` waiting for its outcome).
pub fn newest_event(socket: &Path) -> Result<u64, ClientError> {
    let request = Request::Events {
        follow: false,
        service: None,
        since: None,
        last: Some(1),
    };
    match call(socket, request)? {
        Reply::Events { events } => Ok(events.last().map_or(0, |event| event.seq)),
        other => Err(ClientError::Protocol(format!(
            "holdfast answered `events` with an unexpected reply: {other:?}"
        ))),
    }
}

/// Sends a streaming request (`events` with `follow`) and hands each answer line to
/// `on_reply` until it breaks, the daemon closes the stream (`Ok`) or sends an error.
/// Reads have no deadline: a quiet service may send nothing for hours.
pub fn stream(
    socket: &Path,
    request: Request,
    on_reply: impl FnMut(Reply) -> ControlFlow<()>,
) -> Result<(), ClientError> {
    stream_until(socket, request, None, on_reply).map(|_| ())
}

/// How a stream read until a deadline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    /// The daemon closed it, or `on_reply` broke off.
    Ended,
    /// The deadline passed first.
    TimedOut,
}

/// Like [`stream`], giving up once `deadline` (if any) passes.
pub fn stream_until(
    socket: &Path,
    request: Request,
    deadline: Option<Instant>,
    mut on_reply: impl FnMut(Reply) -> ControlFlow<()>,
) -> Result<Streamed, ClientError> {
    let stream = send(socket, request, None)?;
    let mut reader = BufReader::new(&stream);
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Streamed::TimedOut);
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| io_error(socket, "configure", e))?;
        }
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_RESPONSE)
            .read_until(b'\n', &mut line);
        match read {
            Err(e) if deadline.is_some() && is_timeout(&e) => return Ok(Streamed::TimedOut),
            Err(e) => return Err(io_error(socket, "read from", e)),
            Ok(_) => {}
        }
        if line.is_empty() || on_reply(parse_response(&line)?).is_break() {
            return Ok(Streamed::Ended);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects and writes the request line; reads then wait at most `read_timeout`.
fn send(
    socket: &Path,
    request: Request,
    read_timeout: Option<Duration>,
) -> Result<UnixStream, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: socket.to_owned(),
        source,
    })?;
    let timeouts = stream
        .set_read_timeout(read_timeout)
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)));
    timeouts.map_err(|e| io_error(socket, "configure", e))?;

    let envelope = Envelope {
        v: VERSION,
        body: RequestBody::Request(request),
    };
    let mut line = serde_json::to_vec(&envelope).expect("protocol types always serialize");
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        // A daemon over its connection caps answers and closes without reading the
        // request, so the write may fail: its answer says why.
        return Err(refusal(&stream).unwrap_or_else(|| io_error(socket, "write to", e)));
    }
    Ok(stream)
}

/// The daemon's error answer already waiting on `stream`, if there is one.
fn refusal(stream: &UnixStream) -> Option<ClientError> {
    let mut answer = Vec::new();
    BufReader::new(stream.take(MAX_RESPONSE))
        .read_until(b'\n', &mut answer)
        .ok()?;
    match parse_response(&answer) {
        Err(refused @ ClientError::Daemon(_)) => Some(refused),
        _ => None,
    }
}

fn io_error(socket: &Path, action: &str, e: io::Error) -> ClientError {
    let what = if is_timeout(&e) {
        "no answer in time".to_owned()
    } else {
        e.to_string()
    };
    ClientError::Protocol(format!(
        "failed to {action} control socket {}: {what}",
        socket.display()
    ))
}

/// The fields checked before the full parse: an error is shown whatever the version (a
/// newer daemon explaining a version mismatch), anything else needs our version.
#[derive(Deserialize)]
struct Probe {
    v: Option<serde_json::Value>,
    error: Option<ControlError>,
}

fn parse_response(line: &[u8]) -> Result<Reply, ClientError> {
    if line.is_empty() {
        return Err(ClientError::Protocol(
            "holdfast closed the connection without answering".to_owned(),
        ));
    }
    let malformed = |e: serde_json::Error| {
        ClientError::Protocol(format!("malformed answer from holdfast: {e}"))
    };
    let probe: Probe = serde_json::from_slice(line).map_err(malformed)?;
    if let Some(error) = probe.error {
        return Err(ClientError::Daemon(error));
    }
    match probe.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        other => {
            let theirs = other.map_or_else(|| "no version".to_owned(), |v| format!("v{v}"));
            return Err(ClientError::Protocol(format!(
                "holdfast answered with protocol {theirs}, this CLI speaks v{VERSION}: use the holdfast binary that matches the daemon"
            )));
        }
    }
    let envelope: Envelope<ResponseBody> = serde_json::from_slice(line).map_err(malformed)?;
    match envelope.body {
        ResponseBody::Ok(reply) => Ok(reply),
        ResponseBody::Error(error) => Err(ClientError::Daemon(error)),
    }
}
