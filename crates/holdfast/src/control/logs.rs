//! `logs`: the daemon reads services' log files for its clients, so whoever may use the
//! control socket (root, holdfast's user, the `control_group`) may read the logs too,
//! while the files stay 0640.
//!
//! Invariants:
//! - the supervisor only answers `status` (where the files are); the files are read on
//!   a blocking thread (one per request, with one inotify watcher for a follower),
//!   never on the supervisor's task or the connection's;
//! - memory is bounded: lines go through a small bounded channel, written to the client
//!   as they come (see [`crate::logs::read`] for the bounded read itself);
//! - every write has the control socket's write deadline; a client that goes away or
//!   stops reading ends the reading threads (followers via their [`crate::logs::Stopper`]);
//! - a follower's stream ends when the daemon shuts down (the event bus closes), with a
//!   line saying so, as an `events` follower's does.

use std::ops::ControlFlow;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::conn::{ControlMsg, Limits, Peer, dispatch, response_line};
use super::protocol::{ControlError, ErrorKind, EventRecord, Reply, Request};
use crate::logs::Follower;
use crate::logs::read::{self, Window, stamp_of};
use crate::model::ServiceName;

/// Lines shown before following when the client does not say (`journalctl -f`'s 10).
const FOLLOW_BACKLOG: usize = 10;
/// Lines in flight between the reading threads and the connection.
const CHANNEL: usize = 256;

/// What a `logs` request asks for.
#[derive(Debug, Clone)]
pub(super) struct Query {
    pub services: Vec<ServiceName>,
    pub lines: Option<usize>,
    pub window: Window,
    pub follow: bool,
}

/// The most lines `logs -f -n N` shows before following: the follower holds them in
/// memory per service until it has read each file to its end.
pub const MAX_FOLLOW_BACKLOG: usize = 10_000;

impl Query {
    /// Checks the time bounds (RFC 3339) and puts them in the stamps' own form.
    pub fn new(
        services: Vec<ServiceName>,
        lines: Option<usize>,
        since: Option<String>,
        until: Option<String>,
        follow: bool,
    ) -> Result<Query, ControlError> {
        let stamp = |what: &str, text: Option<String>| -> Result<Option<String>, ControlError> {
            text.map(|text| {
                humantime::parse_rfc3339_weak(&text)
                    .map(|time| humantime::format_rfc3339_millis(time).to_string())
                    .map_err(|e| bad_request(format!("invalid {what} time \"{text}\": {e}")))
            })
            .transpose()
        };
        let window = Window {
            since: stamp("since", since)?,
            until: stamp("until", until)?,
        };
        if follow && window.until.is_some() {
            return Err(bad_request(
                "until cannot be combined with follow".to_owned(),
            ));
        }
        // A follower keeps its backlog in the daemon's memory: a client's N is bounded.
        if let Some(n) = lines.filter(|&n| follow && n > MAX_FOLLOW_BACKLOG) {
            return Err(bad_request(format!(
                "-n {n} with -f: at most {MAX_FOLLOW_BACKLOG} lines before following (without -f, any number)"
            )));
        }
        Ok(Query {
            services,
            lines,
            window,
            follow,
        })
    }
}

fn bad_request(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// One line for the client, or the reason reading stopped.
type Item = Result<(usize, String), ControlError>;

/// Serves one `logs` request. `events` (taken before anything else happens on the
/// connection, without keeping a sender) tells a follower when the daemon goes away.
pub(super) async fn serve(
    mut stream: UnixStream,
    query: Query,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<broadcast::Receiver<EventRecord>>,
) {
    tracing::debug!(?query, ?peer, "control request: logs");
    let end = match stream_logs(&mut stream, query, peer, tx, limits, events).await {
        Ok(end) => end,
        Err(Gone) => return,
    };
    let write = async {
        stream.write_all(&response_line(end)).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(limits.write_timeout, write).await;
}

/// The client went away or stopped reading.
struct Gone;

/// Streams the lines; returns the last line to send (the end marker or an error).
async fn stream_logs(
    stream: &mut UnixStream,
    query: Query,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<broadcast::Receiver<EventRecord>>,
) -> Result<Result<Reply, ControlError>, Gone> {
    let sources = match log_files(&query.services, peer, tx).await {
        Ok(sources) => sources,
        Err(e) => return Ok(Err(e)),
    };
    let (names, paths): (Vec<ServiceName>, Vec<PathBuf>) = sources.into_iter().unzip();
    let (lines_tx, mut lines) = mpsc::channel::<Item>(CHANNEL);
    let mut stopper = None;
    let following = query.follow;
    if following {
        match Follower::open_all(&paths) {
            Ok(follower) => {
                stopper = Some(follower.stopper());
                let (window, last) = (query.window, query.lines);
                let tx = lines_tx.clone();
                std::thread::spawn(move || follow(follower, &window, last, &tx));
            }
            Err(e) => return Ok(Err(internal(e))),
        }
    } else {
        let tx = lines_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = read::read(&paths, &query.window, query.lines, |source, line| {
                send(&tx, Ok((source, line.to_owned())))
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(internal(e)));
            }
        });
    }
    drop(lines_tx);
    let (mut reader, mut writer) = stream.split();
    let mut scratch = [0_u8; 64];
    let daemon_gone = closed(events.filter(|_| following));
    tokio::pin!(daemon_gone);
    let end = loop {
        let item = tokio::select! {
            item = lines.recv() => item,
            // The client sends nothing after its request: any read result means it is
            // gone (EOF or error), or misbehaving, which ends the stream all the same.
            _ = reader.read(&mut scratch) => break Err(Gone),
            () = &mut daemon_gone => {
                break Ok(Err(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    message: "holdfast is shutting down: the log stream ends".to_owned(),
                }));
            }
        };
        let reply = match item {
            None => break Ok(Ok(Reply::LogEnd)),
            Some(Err(e)) => break Ok(Err(e)),
            Some(Ok((source, line))) => Reply::LogLine {
                service: names[source].clone(),
                line,
            },
        };
        let line = response_line(Ok(reply));
        match tokio::time::timeout(limits.write_timeout, writer.write_all(&line)).await {
            Ok(Ok(())) => {}
            _ => break Err(Gone),
        }
    };
    if let Some(stopper) = stopper {
        stopper.stop();
    }
    end
}

/// Returns once the event bus closes (the daemon is going away); never without a bus.
async fn closed(events: Option<broadcast::Receiver<EventRecord>>) {
    let Some(mut events) = events else {
        return std::future::pending().await;
    };
    loop {
        match events.recv().await {
            Err(RecvError::Closed) => return,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
        }
    }
}

/// The log file of each service asked for (all, in status order, when none is named).
async fn log_files(
    services: &[ServiceName],
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<Vec<(ServiceName, PathBuf)>, ControlError> {
    let status = match dispatch(Request::Status, peer, tx).await? {
        Reply::Status(status) => status,
        other => {
            return Err(ControlError {
                kind: ErrorKind::Internal,
                message: format!("unexpected answer to status: {other:?}"),
            });
        }
    };
    let all = status
        .services
        .into_iter()
        .map(|service| (service.name, PathBuf::from(service.log)));
    if services.is_empty() {
        return Ok(all.collect());
    }
    let all: Vec<_> = all.collect();
    let mut chosen: Vec<(ServiceName, PathBuf)> = Vec::new();
    for name in services {
        // A base name brings in each of its instances' files.
        let found: Vec<_> = all.iter().filter(|(n, _)| n.named_by(name)).collect();
        if found.is_empty() {
            return Err(ControlError {
                kind: ErrorKind::UnknownService,
                message: format!("no service named \"{name}\""),
            });
        }
        for file in found {
            if !chosen.iter().any(|(n, _)| *n == file.0) {
                chosen.push(file.clone());
            }
        }
    }
    Ok(chosen)
}

/// The last `n` lines of the services named (all when none), merged by time, read
/// off the async tasks: `logs -n N` for another server (the HTTP one), which answers
/// with them at once.
pub(crate) async fn tail(
    services: &[ServiceName],
    n: usize,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<Vec<(ServiceName, String)>, ControlError> {
    let (names, paths): (Vec<ServiceName>, Vec<PathBuf>) =
        log_files(services, peer, tx).await?.into_iter().unzip();
    let read = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        read::read(&paths, &Window::default(), Some(n), |source, line| {
            lines.push((names[source].clone(), line.to_owned()));
            ControlFlow::Continue(())
        })
        .map(|()| lines)
    });
    match read.await {
        Ok(result) => result.map_err(internal),
        Err(e) => Err(internal(std::io::Error::other(e))),
    }
}

fn internal(e: std::io::Error) -> ControlError {
    ControlError {
        kind: ErrorKind::Internal,
        message: format!("failed to read logs: {e}"),
    }
}

/// Hands a line to the connection; breaks once the connection is gone.
fn send(tx: &mpsc::Sender<Item>, item: Item) -> ControlFlow<()> {
    match tx.blocking_send(item) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    }
}

/// On its own thread: the last lines before following started, merged by time, then
/// every new line of every service as it is written.
fn follow(mut follower: Follower, window: &Window, last: Option<usize>, tx: &mpsc::Sender<Item>) {
    let result = backlog(&mut follower, window, last).and_then(|lines| {
        for line in lines {
            if send(tx, Ok(line)).is_break() {
                return Ok(());
            }
        }
        follower.run_all(|source, line| send(tx, Ok((source, line.to_owned()))))
    });
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(internal(e)));
    }
}

/// Up to `last` lines ([`FOLLOW_BACKLOG`] without `last`) of the window before the
/// point where each follower starts, merged by time. Held in memory: `logs -f -n N`
/// holds N lines per service.
fn backlog(
    follower: &mut Follower,
    window: &Window,
    last: Option<usize>,
) -> std::io::Result<Vec<(usize, String)>> {
    let n = last.unwrap_or(FOLLOW_BACKLOG);
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for source in 0..follower.files() {
        let mut stamp = String::new();
        for line in follower.backlog_of(source, n)? {
            if let Some(s) = stamp_of(&line) {
                stamp = s.to_owned();
            }
            if window.contains(&stamp) {
                lines.push((stamp.clone(), source, line));
            }
        }
    }
    // Stable: a service's lines keep their order, ties go to the service named first.
    lines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let skip = lines.len().saturating_sub(n);
    Ok(lines
        .into_iter()
        .skip(skip)
        .map(|(_, source, line)| (source, line))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_backlog_is_bounded_and_a_plain_read_is_not() {
        let over = Some(MAX_FOLLOW_BACKLOG + 1);
        let error = Query::new(Vec::new(), over, None, None, true).expect_err("too many");
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(Query::new(Vec::new(), Some(MAX_FOLLOW_BACKLOG), None, None, true).is_ok());
        assert!(Query::new(Vec::new(), over, None, None, false).is_ok());
    }
}
