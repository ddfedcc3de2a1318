//! The daemon side of the control socket: bind it safely, accept connections, check who
//! is calling, and forward each request to the supervisor.
//!
//! Invariants:
//! - The server never touches supervisor state: it turns one request line into one
//!   [`ControlMsg`] and writes back whatever the supervisor answers on the oneshot
//!   (`wait` sends its requests and then `status` requests the same way, see
//!   [`super::wait`]).
//! - Every connection runs in its own task, and every read and write on it has a
//!   deadline, so a stuck or malicious client can only ever hold up itself.
//! - Connections are capped per peer uid and in total ([`Admission`]); the total stays
//!   below half of holdfast's `RLIMIT_NOFILE`, so a flood of idle connections cannot take
//!   the descriptors that spawning services needs. A connection over a cap gets one
//!   error line saying so and is closed. Streaming requests (`events` and `logs` that
//!   follow, `wait`) may only take part of a uid's connections, and other uids only part
//!   of the total, so that root can always still ask for `status`, `stop` or `shutdown`.
//! - Every request line gets exactly one response line, errors included; only a client
//!   that connects and closes without sending anything (a liveness probe such as
//!   [`bind`]'s) is closed without an answer. The exceptions are `events` with
//!   `follow` and `logs`, answered with a stream of lines (see [`super::follow`] and
//!   [`super::logs`]).

mod admission;
mod peer;
mod request;
mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

use self::admission::{
    Admission, SharedAdmission, lock, nofile_limit, refuse, with_streaming_slot,
};
pub use self::peer::Groups;
use self::peer::{Access, authorized, check_peer};
pub use self::request::parse_request;
use self::request::{Incoming, read_line};
pub use self::socket::{bind, unlink};
pub use super::conn::{ControlMsg, Peer};
use super::conn::{Limits, dispatch, response_line};
use super::feed::EventFeed;
use super::protocol::{ControlError, ErrorKind, Reply, Request};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long a client may take to send its request line. Short: the CLI sends it right
/// after connecting, and an idle connection holds a descriptor and a slot of its uid.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections one peer uid may hold at once (root's included: a flood from another user
/// of the control group must leave room for root).
pub const MAX_CONNECTIONS_PER_UID: usize = 64;
/// Connections of each uid that stay for one-shot requests: streaming ones (followers,
/// `wait`) may hold only the rest (at most half of a uid's connections are kept back).
pub const ONE_SHOT_RESERVE: usize = 8;
/// Connections of the total that stay for root and holdfast's own euid: other uids of the
/// control group may hold only the rest (at most a quarter of the total is kept back).
pub const PRIVILEGED_RESERVE: usize = 8;
/// Connections held at once, at most; fewer when `RLIMIT_NOFILE` is low (see
/// [`Admission::for_nofile`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to accept the response line.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing server waits for its connections: the answer to `shutdown`, and
/// followers writing out the events of the shutdown, which a loaded machine may take a
/// while to read. Usually all are done in milliseconds; a client that never sends its
/// request is cut off by [`READ_TIMEOUT`] well before.
pub const CLOSE_GRACE: Duration = WRITE_TIMEOUT;

const LIMITS: Limits = Limits {
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    max_line: MAX_REQUEST_LINE,
};

/// Accept loop; one task per connection.
///
/// Each peer is checked with `SO_PEERCRED`: allowed are uid 0, holdfast's own euid and,
/// with `allowed_gid`, processes whose primary or supplementary groups contain it;
/// others get [`ErrorKind::PermissionDenied`]. Members of the allowed group only may read
/// and start/stop/restart (see [`serve_with_events`] for an admin group). Each connection carries one request line
/// (at most 64 KiB, read within 2 s), forwarded to the supervisor on `tx`; the answer is
/// written back as one line. If the supervisor is gone the answer is
/// [`ErrorKind::ShuttingDown`]. The loop runs until the task is aborted.
pub fn serve(
    listener: UnixListener,
    allowed_gid: Option<u32>,
    tx: mpsc::Sender<ControlMsg>,
) -> Server {
    let groups = Groups {
        control: allowed_gid,
        admin: None,
    };
    serve_with(listener, groups, tx, LIMITS, None)
}

/// Like [`serve`], and answers `events` with `follow` from `events`, the live stream of
/// the runtime's event bus (without it, such a request is refused as internal error).
/// Followers end when every sender of `events` is gone, which lets [`Server::close`]
/// finish promptly. `groups.admin` members may also use the verbs that change the daemon
/// (`shutdown`, `reload`, `signal`, `upgrade`), like root.
pub fn serve_with_events(
    listener: UnixListener,
    groups: Groups,
    tx: mpsc::Sender<ControlMsg>,
    events: EventFeed,
) -> Server {
    serve_with(listener, groups, tx, LIMITS, Some(events))
}

/// The running accept loop and its connections.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting, then waits up to `grace` for connections still being answered,
    /// so that the reply to `shutdown` reaches its client before holdfast exits.
    /// Connections still open after `grace` (a client that never sends) are dropped.
    pub async fn close(self, grace: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Stops everything at once.
    pub fn abort(&self) {
        self.task.abort();
    }
}

fn serve_with(
    listener: UnixListener,
    groups: Groups,
    tx: mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<EventFeed>,
) -> Server {
    let own_euid = nix::unistd::geteuid().as_raw();
    let access = Access { own_euid, groups };
    let admission = Arc::new(Mutex::new(Admission::for_nofile(nofile_limit(), own_euid)));
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        // Connections live in the set, so aborting this task aborts them too, and a
        // graceful close can wait for them.
        let mut connections = JoinSet::new();
        // The peer uid of each connection task, to release its slot when it ends.
        let mut owners = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                Some(joined) = connections.join_next_with_id(), if !connections.is_empty() => {
                    let id = match joined {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(uid) = owners.remove(&id) {
                        lock(&admission).release(uid);
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Without credentials the peer is counted as nobody in particular;
                        // `handle` answers it with the error.
                        let uid = getsockopt(&stream, PeerCredentials).map_or(u32::MAX, |c| c.uid());
                        let admitted = lock(&admission).admit(uid);
                        if let Err(message) = admitted {
                            refuse(stream, message);
                            continue;
                        }
                        let tx = tx.clone();
                        let events = events.clone();
                        let admission = Arc::clone(&admission);
                        let task = connections.spawn(handle(stream, access, tx, limits, events, admission));
                        owners.insert(task.id(), uid);
                    }
                    Err(e) => {
                        // Typically EMFILE: back off briefly instead of spinning on an
                        // error that only goes away when some descriptor is closed.
                        tracing::warn!(error = %e, "failed to accept control connection; retrying in 100ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        // Followers end once the runtime drops its sender too; this one must not keep
        // them streaming.
        drop(events);
        while connections.join_next().await.is_some() {}
    });
    Server { stop, task }
}

async fn handle(
    mut stream: UnixStream,
    access: Access,
    tx: mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<EventFeed>,
    admission: SharedAdmission,
) {
    // The request line is read even from a peer that is denied, so that it receives its
    // answer instead of a connection reset for unread data.
    let checked = check_peer(&stream, access).await;
    // Held until the connection ends, when the request streams.
    let mut streaming = None;
    let mut admit =
        |(peer, request)| with_streaming_slot(peer, request, &admission, &mut streaming);
    let response = match read_line(&mut stream, limits).await {
        Ok(Incoming::Nothing) => return,
        Ok(Incoming::Line(line)) => {
            match admit(authorized(checked, parse_request(&line), access)) {
                (Err(denied), _) => Err(denied),
                (Ok(_), Err(bad)) => Err(bad),
                (Ok(peer), Ok(request)) => {
                    match answer(stream, request, peer, &tx, limits, events).await {
                        Some((back, response)) => {
                            stream = back;
                            response
                        }
                        None => return,
                    }
                }
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &response {
        tracing::debug!(kind = ?e.kind, message = %e.message, "control request failed");
    }
    let line = response_line(response);
    let write = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "failed to write control response"),
        Err(_) => tracing::debug!("control client did not take its response in time"),
    }
}

/// Answers an admitted request: the connection back with its one response line, or
/// `None` when a stream (`events -f`, `logs`, `wait`) took the connection and answered.
async fn answer(
    mut stream: UnixStream,
    request: Request,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<EventFeed>,
) -> Option<(UnixStream, Result<Reply, ControlError>)> {
    let cannot = |what: &str| ControlError {
        kind: ErrorKind::Internal,
        message: format!("this daemon {what}"),
    };
    let response = match request {
        Request::Events {
            follow: true,
            service,
            since,
            last,
        } => match events {
            Some(events) => {
                let subscription = super::follow::Subscription {
                    live: events.subscribe(),
                    history: events.history(),
                };
                // Only the runtime's feed may keep the channel open (see `serve_with`).
                drop(events);
                let filter = super::follow::Filter {
                    service,
                    since,
                    last,
                };
                super::follow::follow(stream, filter, peer, tx, subscription, limits).await;
                return None;
            }
            None => Err(cannot("does not stream events")),
        },
        Request::Logs {
            services,
            lines,
            since,
            until,
            follow,
        } => match super::logs::Query::new(services, lines, since, until, follow) {
            Ok(query) => {
                let live = events.map(|events| events.subscribe());
                super::logs::serve(stream, query, peer, tx, limits, live).await;
                return None;
            }
            Err(bad) => Err(bad),
        },
        Request::Wait {
            requests,
            timeout_ms,
        } => match events {
            Some(events) => {
                tracing::debug!(?requests, ?timeout_ms, ?peer, "control request: wait");
                // Subscribed before any request is applied: no outcome can be missed.
                let live = events.subscribe();
                // Only the runtime's feed may keep the channel open (see `serve_with`).
                drop(events);
                let timeout = timeout_ms.map(Duration::from_millis);
                super::wait::run(Some(&mut stream), requests, timeout, peer, tx, live).await?
            }
            None => Err(cannot("cannot wait for outcomes")),
        },
        request => {
            tracing::debug!(?request, ?peer, "control request");
            dispatch(request, peer, tx).await
        }
    };
    Some((stream, response))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::io;
    use std::path::Path;

    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::admission::*;
    use super::peer::*;
    use super::*;
    use crate::control::client::{self, ClientError};
    use crate::control::protocol::{
        DaemonStatus, Envelope, EventRecord, Reply, RequestBody, ResponseBody, Status, VERSION,
    };
    use crate::model::ServiceName;

    /// A fresh directory under /tmp (short, for `sun_path`), removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("hf-ctl-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).expect("temp dir can be created");
            Self(dir)
        }

        fn socket(&self) -> PathBuf {
            self.0.join("control.sock")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).expect("test names are valid")
    }

    fn status() -> Status {
        Status {
            daemon: DaemonStatus {
                pid: 1,
                version: "0.1.0".to_owned(),
                config: "/etc/holdfast/holdfast.toml".to_owned(),
                uptime_ms: 5,
                shutting_down: false,
                execs: 0,
                reexec_error: None,
                managed_by: None,
            },
            services: Vec::new(),
        }
    }

    fn fake_event(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            time: "2026-11-25T12:00:00.000Z".to_owned(),
            service: Some(name(if seq % 2 == 0 { "db" } else { "api" })),
            kind: "stopped".to_owned(),
            message: "stopped".to_owned(),
            data: Default::default(),
        }
    }

    /// Connects to `socket` and sends a following `events` request.
    async fn follower(socket: &Path, service: Option<&str>) -> BufReader<UnixStream> {
        let request = Envelope {
            v: VERSION,
            body: RequestBody::Request(Request::Events {
                follow: true,
                service: service.map(name),
                since: None,
                last: None,
            }),
        };
        let mut line = serde_json::to_vec(&request).expect("requests serialize");
        line.push(b'\n');
        let mut stream = UnixStream::connect(socket).await.expect("daemon listens");
        stream.write_all(&line).await.expect("request is written");
        BufReader::new(stream)
    }

    async fn next_line(reader: &mut BufReader<UnixStream>) -> ResponseBody {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line));
        read.await.expect("a line comes").expect("line is read");
        let envelope: Envelope<ResponseBody> =
            serde_json::from_str(&line).expect("each line is a response envelope");
        envelope.body
    }

    fn seq_of(body: ResponseBody) -> u64 {
        match body {
            ResponseBody::Ok(Reply::Event { event }) => event.seq,
            other => panic!("expected an event line, got {other:?}"),
        }
    }

    /// Waits until the server's connection task has subscribed to `events`.
    async fn subscribed(events: &EventFeed, count: usize) {
        let start = std::time::Instant::now();
        while events.subscribers() < count {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nobody subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A server of `events`, whose history holds one event (seq 1) when followers come.
    fn serving_events(events: &EventFeed) -> (TempDir, Server) {
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), None).expect("socket binds");
        events.publish(fake_event(1));
        let server = serve_with_events(
            listener,
            Groups::default(),
            fake_supervisor(),
            events.clone(),
        );
        (dir, server)
    }

    #[tokio::test]
    async fn a_follower_gets_the_history_then_live_events_of_its_filter() {
        let events = EventFeed::new();
        let (dir, server) = serving_events(&events);
        let mut all = follower(&dir.socket(), None).await;
        let mut api = follower(&dir.socket(), Some("api")).await;
        assert_eq!(
            seq_of(next_line(&mut all).await),
            1,
            "the history comes first"
        );
        assert_eq!(seq_of(next_line(&mut api).await), 1);
        subscribed(&events, 2).await;
        for seq in 1..=4 {
            events.publish(fake_event(seq));
        }
        let seqs = [
            seq_of(next_line(&mut all).await),
            seq_of(next_line(&mut all).await),
            seq_of(next_line(&mut all).await),
        ];
        assert_eq!(
            seqs,
            [2, 3, 4],
            "seq 1 was in the history and is not repeated"
        );
        assert_eq!(seq_of(next_line(&mut api).await), 3, "only api's events");

        drop(all);
        drop(api);
        let start = std::time::Instant::now();
        while events.subscribers() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "a follower that disconnects is noticed without any event"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_and_disconnected() {
        // Further behind than the channel and the history hold.
        let events = EventFeed::with_lengths(4, 4);
        let (dir, server) = serving_events(&events);
        let mut slow = follower(&dir.socket(), None).await;
        assert_eq!(seq_of(next_line(&mut slow).await), 1);
        subscribed(&events, 1).await;
        // No await in between: the connection task cannot run, so it falls behind.
        for seq in 2..=20 {
            events.publish(fake_event(seq));
        }
        let err = error_of(next_line(&mut slow).await);
        assert_eq!(err.kind, ErrorKind::Lagged);
        assert!(err.message.contains("events missed"), "{}", err.message);
        let mut rest = String::new();
        slow.read_line(&mut rest)
            .await
            .expect("end of stream is read");
        assert_eq!(rest, "", "the stream is closed after the lagged line");
        server.abort();
    }

    #[tokio::test]
    async fn a_follower_left_behind_by_the_live_channel_catches_up_from_the_history() {
        let events = EventFeed::with_lengths(4, 32);
        let (dir, server) = serving_events(&events);
        let mut slow = follower(&dir.socket(), None).await;
        assert_eq!(seq_of(next_line(&mut slow).await), 1);
        subscribed(&events, 1).await;
        // No await in between: the connection task falls behind the channel, not the
        // history.
        for seq in 2..=20 {
            events.publish(fake_event(seq));
        }
        for seq in 2..=20 {
            assert_eq!(
                seq_of(next_line(&mut slow).await),
                seq,
                "in order, none lost"
            );
        }
        events.publish(fake_event(21));
        assert_eq!(seq_of(next_line(&mut slow).await), 21, "and live again");
        server.abort();
    }

    #[tokio::test]
    async fn events_without_follow_are_one_answer() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let reply = call(
            &dir.socket(),
            Request::Events {
                follow: false,
                service: None,
                since: None,
                last: None,
            },
        )
        .await;
        assert_eq!(
            reply.expect("events works"),
            Reply::Events {
                events: vec![fake_event(1)]
            }
        );
        server.abort();
    }

    #[tokio::test]
    async fn logs_of_an_unknown_service_are_an_error_and_of_none_an_empty_stream() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let logs = |services: Vec<ServiceName>| {
            let socket = dir.socket();
            tokio::task::spawn_blocking(move || {
                let mut replies = Vec::new();
                let request = Request::Logs {
                    services,
                    lines: Some(5),
                    since: None,
                    until: None,
                    follow: false,
                };
                client::stream(&socket, request, |reply| {
                    replies.push(reply);
                    std::ops::ControlFlow::Continue(())
                })
                .map(|()| replies)
            })
        };
        let err = logs(vec![name("ghost")]).await.expect("no panic");
        match err {
            Err(ClientError::Daemon(e)) => {
                assert_eq!(e.kind, ErrorKind::UnknownService);
                assert_eq!(e.message, r#"no service named "ghost""#);
            }
            other => panic!("expected an unknown service, got {other:?}"),
        }
        let replies = logs(Vec::new())
            .await
            .expect("no panic")
            .expect("logs work");
        assert_eq!(replies, vec![Reply::LogEnd]);
        server.abort();
    }

    /// A supervisor stand-in: `ghost` is unknown, `reload` finds the config invalid,
    /// `shutdown` drops the reply as a supervisor that exits would.
    fn fake_supervisor() -> mpsc::Sender<ControlMsg> {
        let (tx, mut rx) = mpsc::channel::<ControlMsg>(8);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let answer = match msg.request {
                    Request::Status => Ok(Reply::Status(status())),
                    Request::Start { name }
                    | Request::Stop { name }
                    | Request::Restart { name }
                        if name.as_str() == "ghost" =>
                    {
                        Err(ControlError {
                            kind: ErrorKind::UnknownService,
                            message: format!("no service named {name:?}"),
                        })
                    }
                    Request::Start { name } => Ok(Reply::Accepted {
                        message: format!("starting {name} (pid {})", msg.peer.pid.unwrap_or(0)),
                    }),
                    Request::Reload { .. } => Err(ControlError {
                        kind: ErrorKind::InvalidConfig,
                        message: "holdfast.toml:3: unknown field `comand`".to_owned(),
                    }),
                    Request::Events { .. } => Ok(Reply::Events {
                        events: vec![fake_event(1)],
                    }),
                    Request::Stop { .. }
                    | Request::Restart { .. }
                    | Request::Shutdown
                    | Request::QuarantineList
                    | Request::Crashes { .. }
                    | Request::CrashShow { .. }
                    | Request::CoreDumped { .. }
                    | Request::QuarantineRelease { .. }
                    | Request::Signal { .. }
                    | Request::ResetFailed { .. }
                    | Request::Upgrade { .. }
                    | Request::Logs { .. }
                    | Request::Wait { .. }
                    | Request::UpgradeSelf => {
                        drop(msg.reply);
                        continue;
                    }
                };
                let _ = msg.reply.send(answer);
            }
        });
        tx
    }

    async fn call(socket: &Path, request: Request) -> Result<Reply, ClientError> {
        let socket = socket.to_owned();
        tokio::task::spawn_blocking(move || client::call(&socket, request))
            .await
            .expect("client call does not panic")
    }

    /// The kind of the daemon's error answer, if the call got one.
    fn daemon_error(result: &Result<Reply, ClientError>) -> Option<ErrorKind> {
        match result {
            Err(ClientError::Daemon(error)) => Some(error.kind),
            _ => None,
        }
    }

    /// Sends raw bytes as a request and returns the parsed response line.
    async fn raw(socket: &Path, bytes: &[u8]) -> ResponseBody {
        let mut stream = UnixStream::connect(socket).await.expect("daemon listens");
        stream.write_all(bytes).await.expect("request is written");
        answer(stream).await
    }

    /// Reads one response line. Reading only up to the newline matters: after refusing
    /// an oversized line the server closes with input unread, which the kernel reports
    /// to the reader as a reset once the answer has been consumed.
    async fn answer(stream: UnixStream) -> ResponseBody {
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .expect("answer is read");
        assert!(line.ends_with('\n'), "one answer line: {line:?}");
        let envelope: Envelope<ResponseBody> =
            serde_json::from_str(&line).expect("answer is a response envelope");
        assert_eq!(envelope.v, VERSION);
        envelope.body
    }

    fn error_of(body: ResponseBody) -> ControlError {
        match body {
            ResponseBody::Error(e) => e,
            ResponseBody::Ok(reply) => panic!("expected an error, got {reply:?}"),
        }
    }

    async fn running(dir: &TempDir) -> Server {
        let listener = bind(&dir.socket(), None).expect("socket binds");
        serve(listener, None, fake_supervisor())
    }

    #[tokio::test]
    async fn requests_round_trip_through_the_supervisor() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let socket = dir.socket();

        let reply = call(&socket, Request::Status).await.expect("status works");
        assert_eq!(reply, Reply::Status(status()));

        let reply = call(&socket, Request::Start { name: name("api") }).await;
        let Ok(Reply::Accepted { message }) = reply else {
            panic!("start is accepted: {reply:?}");
        };
        let own_pid = std::process::id();
        assert_eq!(
            message,
            format!("starting api (pid {own_pid})"),
            "the supervisor sees the caller's pid from SO_PEERCRED"
        );

        let err = call(
            &socket,
            Request::Start {
                name: name("ghost"),
            },
        )
        .await;
        let Err(
            err @ ClientError::Daemon(ControlError {
                kind: ErrorKind::UnknownService,
                ..
            }),
        ) = err
        else {
            panic!("unknown service is reported: {err:?}");
        };
        assert_eq!(crate::cli::exit::of_error(&err), crate::cli::exit::FAILURE);

        let err = call(&socket, Request::Reload { dry_run: true }).await;
        let Err(
            err @ ClientError::Daemon(ControlError {
                kind: ErrorKind::InvalidConfig,
                ..
            }),
        ) = err
        else {
            panic!("invalid config is reported: {err:?}");
        };
        assert_eq!(
            crate::cli::exit::of_error(&err),
            crate::cli::exit::INVALID_CONFIG
        );

        let err = call(&socket, Request::Shutdown).await;
        assert_eq!(
            daemon_error(&err),
            Some(ErrorKind::ShuttingDown),
            "a dropped reply means the supervisor is going away: {err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_gone_supervisor_is_reported_as_shutting_down() {
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), None).expect("socket binds");
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let server = serve(listener, None, tx);
        let err = call(&dir.socket(), Request::Status).await;
        assert_eq!(daemon_error(&err), Some(ErrorKind::ShuttingDown), "{err:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_version_mismatch_names_both_versions() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let err = error_of(
            raw(
                &dir.socket(),
                b"{\"v\":2,\"request\":{\"cmd\":\"frobnicate\"}}\n",
            )
            .await,
        );
        assert_eq!(
            err.kind,
            ErrorKind::Version,
            "checked before the body: {err:?}"
        );
        assert!(
            err.message.contains("v2") && err.message.contains("v1"),
            "{}",
            err.message
        );
        server.abort();
    }

    #[tokio::test]
    async fn malformed_requests_are_bad_requests_with_the_parse_error() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let cases: [(&[u8], &str); 5] = [
            (b"hello there\n", "expected value"),
            (b"{\"request\":{\"cmd\":\"status\"}}\n", "missing field `v`"),
            (b"{\"v\":1}\n", "missing field `request`"),
            (
                b"{\"v\":1,\"request\":{\"cmd\":\"frobnicate\"}}\n",
                "unknown variant `frobnicate`",
            ),
            (
                b"{\"v\":1,\"request\":{\"cmd\":\"start\",\"name\":\"../etc\"}}\n",
                "invalid service name \"../etc\"",
            ),
        ];
        for (line, expected) in cases {
            let err = error_of(raw(&dir.socket(), line).await);
            assert_eq!(err.kind, ErrorKind::BadRequest, "{err:?}");
            assert!(
                err.message.contains(expected),
                "message {:?} should contain {expected:?}",
                err.message
            );
        }
        server.abort();
    }

    #[tokio::test]
    async fn an_oversized_request_line_is_refused() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let mut line = vec![b' '; MAX_REQUEST_LINE + 10];
        line.push(b'\n');
        let err = error_of(raw(&dir.socket(), &line).await);
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains("longer than 65536 bytes"),
            "{}",
            err.message
        );
        server.abort();
    }

    #[test]
    fn connections_are_capped_per_uid_and_in_total() {
        let mut admission = Admission::for_nofile(256, 0);
        assert_eq!((admission.total_cap, admission.per_uid_cap), (128, 64));
        for _ in 0..64 {
            admission.admit(65534).unwrap();
        }
        let refused = admission.admit(65534).unwrap_err();
        assert_eq!(
            refused,
            "too many control connections from uid 65534 (at most 64 at a time): try again later"
        );
        for _ in 0..64 {
            admission.admit(0).unwrap();
        }
        let refused = admission.admit(1000).unwrap_err();
        assert_eq!(
            refused,
            "too many control connections (at most 128 at a time): try again later"
        );
        admission.release(65534);
        admission.admit(1000).unwrap();
        admission.release(1000);
        admission.release(1000);
        assert_eq!(
            admission.total, 127,
            "a release of a uid holding nothing is ignored"
        );
    }

    #[test]
    fn streaming_connections_leave_room_for_one_shot_requests_of_their_uid() {
        let mut admission = Admission::for_nofile(256, 0);
        assert_eq!(admission.streaming_cap, 56);
        for _ in 0..56 {
            admission.admit(0).unwrap();
            admission.begin_streaming(0).unwrap();
        }
        admission.admit(0).unwrap();
        let refused = admission.begin_streaming(0).unwrap_err();
        assert_eq!(
            refused,
            "too many following control connections from uid 0 (at most 56 of its 64 at a \
             time follow events or logs or wait, the rest stay for other requests): try again later"
        );
        for _ in 0..7 {
            admission.admit(0).unwrap();
        }
        admission.begin_streaming(1000).unwrap();
        admission.end_streaming(0);
        admission.begin_streaming(0).unwrap();
        admission.end_streaming(1000);
        admission.end_streaming(1000);
        assert!(
            !admission.streaming_by_uid.contains_key(&1000),
            "an end of a uid streaming nothing is ignored"
        );
    }

    #[test]
    fn other_uids_leave_part_of_the_total_to_root_and_the_own_euid() {
        let mut admission = Admission::for_nofile(256, 4242);
        assert_eq!(admission.others_cap, 120);
        for uid in 1000..1002 {
            for _ in 0..60 {
                admission.admit(uid).unwrap();
            }
        }
        let refused = admission.admit(1002).unwrap_err();
        assert_eq!(
            refused,
            "too many control connections from users other than root and uid 4242 (at most \
             120 of 128 at a time, the rest stay for them): try again later"
        );
        for _ in 0..4 {
            admission.admit(0).unwrap();
            admission.admit(4242).unwrap();
        }
        assert!(admission.admit(0).is_err(), "the total is full");
        admission.release(1000);
        admission.release(4242);
        admission.admit(1002).unwrap();
        assert_eq!((admission.total, admission.others), (127, 120));
    }

    #[test]
    fn reserves_never_take_all_of_a_small_cap() {
        let a = Admission::for_nofile(0, 0);
        assert_eq!((a.others_cap, a.streaming_cap), (2, 1));
        let a = Admission::for_nofile(64, 0);
        assert_eq!((a.others_cap, a.streaming_cap), (24, 8));
    }

    #[test]
    fn connection_caps_leave_half_the_descriptors_and_stay_bounded() {
        let caps = |nofile| {
            let a = Admission::for_nofile(nofile, 0);
            (a.total_cap, a.per_uid_cap)
        };
        assert_eq!(caps(1024), (512, 64));
        assert_eq!(caps(1 << 20), (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID));
        assert_eq!(caps(u64::MAX), (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID));
        assert_eq!(caps(64), (32, 16));
        assert_eq!(caps(0), (2, 1), "never zero");
    }

    #[tokio::test]
    async fn a_slow_client_does_not_block_other_clients() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let mut slow = UnixStream::connect(dir.socket())
            .await
            .expect("daemon listens");
        slow.write_all(b"{\"v\":1,")
            .await
            .expect("partial request is written");
        for _ in 0..3 {
            let reply = call(&dir.socket(), Request::Status).await;
            assert!(matches!(reply, Ok(Reply::Status(_))), "{reply:?}");
        }
        drop(slow);
        server.abort();
    }

    #[tokio::test]
    async fn a_slow_client_gets_a_timeout_error() {
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), None).expect("socket binds");
        let limits = Limits {
            read_timeout: Duration::from_millis(50),
            ..LIMITS
        };
        let server = serve_with(listener, Groups::default(), fake_supervisor(), limits, None);
        let mut slow = UnixStream::connect(dir.socket())
            .await
            .expect("daemon listens");
        slow.write_all(b"{\"v\":1,")
            .await
            .expect("partial request is written");
        let err = error_of(answer(slow).await);
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains("no complete request line within 50ms"),
            "{}",
            err.message
        );
        server.abort();
    }

    #[tokio::test]
    async fn bind_creates_the_directory_and_restricts_the_socket_to_its_owner() {
        let dir = TempDir::new();
        let socket = dir.0.join("run/holdfast/control.sock");
        let _listener = bind(&socket, None).expect("socket binds");
        let parent = std::fs::metadata(socket.parent().expect("has a parent")).expect("exists");
        assert_eq!(parent.mode() & 0o7777, 0o755);
        let meta = std::fs::metadata(&socket).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o600);
    }

    #[tokio::test]
    async fn bind_with_a_group_opens_the_socket_to_that_group() {
        let dir = TempDir::new();
        let _listener = bind(&dir.socket(), Some(4242)).expect("socket binds");
        let meta = std::fs::metadata(dir.socket()).expect("socket exists");
        assert_eq!(meta.mode() & 0o7777, 0o660);
        assert_eq!(meta.gid(), 4242);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    }

    #[tokio::test]
    async fn a_second_daemon_is_refused_while_the_first_is_live() {
        let dir = TempDir::new();
        let server = running(&dir).await;
        let err = bind(&dir.socket(), None).expect_err("the socket is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let expected = format!(
            "holdfast is already running on {} (pid {})",
            dir.socket().display(),
            std::process::id()
        );
        assert_eq!(err.to_string(), expected);
        let reply = call(&dir.socket(), Request::Status).await;
        assert!(
            matches!(reply, Ok(Reply::Status(_))),
            "the first daemon still answers"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced() {
        let dir = TempDir::new();
        drop(std::os::unix::net::UnixListener::bind(dir.socket()).expect("stale socket binds"));
        assert!(
            dir.socket().exists(),
            "dropping a listener leaves its file behind"
        );
        let server = running(&dir).await;
        let reply = call(&dir.socket(), Request::Status).await;
        assert!(matches!(reply, Ok(Reply::Status(_))), "{reply:?}");
        server.abort();
        unlink(&dir.socket());
        assert!(!dir.socket().exists(), "unlink removes the socket");
    }

    #[tokio::test]
    async fn bind_never_replaces_a_file_that_is_not_a_socket() {
        let dir = TempDir::new();
        std::fs::write(dir.socket(), "precious").expect("file is written");
        let err = bind(&dir.socket(), None).expect_err("a regular file is not replaced");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.socket()).expect("file stays"),
            "precious"
        );
    }

    #[test]
    fn the_client_reports_a_missing_daemon_as_unreachable() {
        let dir = TempDir::new();
        let err = client::call(&dir.socket(), Request::Status).expect_err("nobody listens");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert_eq!(
            crate::cli::exit::of_error(&err),
            crate::cli::exit::UNREACHABLE
        );
        assert!(
            err.to_string()
                .contains(&dir.socket().display().to_string())
        );
    }

    #[test]
    fn root_the_daemons_own_user_and_the_allowed_group_may_connect() {
        let peer = |uid, gid| Peer {
            pid: Some(7),
            uid,
            gid,
        };
        assert!(allowed(&peer(0, 0), 1000, None, &[]), "root");
        assert!(
            allowed(&peer(1000, 1000), 1000, None, &[]),
            "holdfast's own euid"
        );
        assert!(!allowed(&peer(1001, 1001), 1000, None, &[]), "a stranger");
        assert!(
            !allowed(&peer(1001, 50), 0, None, &[50]),
            "groups count only when configured"
        );
        assert!(allowed(&peer(1001, 50), 0, Some(50), &[]), "primary group");
        assert!(
            allowed(&peer(1001, 1001), 0, Some(50), &[4, 50]),
            "supplementary group"
        );
        assert!(
            !allowed(&peer(1001, 1001), 0, Some(50), &[4, 24]),
            "other groups"
        );
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            pid: Some(7),
            uid,
            gid,
        }
    }

    #[test]
    fn admins_are_root_the_own_user_and_admin_group_members_and_the_control_group_operates() {
        let access = Access {
            own_euid: 1000,
            groups: Groups {
                control: Some(50),
                admin: Some(60),
            },
        };
        assert_eq!(role(&peer(0, 0), access, &[]), Some(Role::Admin), "root");
        assert_eq!(
            role(&peer(1000, 1000), access, &[]),
            Some(Role::Admin),
            "own user"
        );
        assert_eq!(
            role(&peer(1001, 50), access, &[60]),
            Some(Role::Admin),
            "admin_group member"
        );
        assert_eq!(
            role(&peer(1001, 1001), access, &[50]),
            Some(Role::Operator),
            "control_group member"
        );
        assert_eq!(role(&peer(1001, 1001), access, &[4]), None, "a stranger");
    }

    #[test]
    fn an_operator_may_read_and_start_stop_restart_but_not_change_the_daemon() {
        let access = Access {
            own_euid: 0,
            groups: Groups {
                control: Some(50),
                admin: None,
            },
        };
        let name = || "web".parse().expect("valid name");
        let may = |request: Request| {
            authorized(Ok((peer(1001, 50), Role::Operator)), Ok(request), access).1
        };
        for request in [
            Request::Status,
            Request::Start { name: name() },
            Request::Stop { name: name() },
            Request::Restart { name: name() },
            Request::QuarantineList,
            Request::ResetFailed { names: vec![] },
        ] {
            assert!(may(request.clone()).is_ok(), "{request:?}");
        }
        for (request, verb) in [
            (Request::Shutdown, "shutdown"),
            (Request::Reload { dry_run: true }, "reload"),
            (Request::UpgradeSelf, "upgrade --self"),
            (
                Request::Wait {
                    requests: vec![Request::Reload { dry_run: false }],
                    timeout_ms: None,
                },
                "reload",
            ),
        ] {
            let refused = may(request.clone()).expect_err("refused");
            assert_eq!(refused.kind, ErrorKind::PermissionDenied);
            assert!(
                refused
                    .message
                    .contains(&format!("uid 1001 may not `{verb}`"))
                    && refused.message.contains("set `admin_group`"),
                "{}",
                refused.message
            );
        }
        let admin = authorized(Ok((peer(0, 0), Role::Admin)), Ok(Request::Shutdown), access);
        assert!(admin.1.is_ok(), "root may shut down");
    }

    #[test]
    fn supplementary_groups_come_from_the_groups_line() {
        let status =
            "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNSpid:\t1\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27, 1000]);
        assert_eq!(parse_groups("Name:\tx\nGroups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    /// Runs a status request as another user with setpriv and python3 and returns the
    /// response line.
    fn request_as(socket: &Path, setpriv_args: &[&str]) -> String {
        let script = "import socket, sys\n\
            s = socket.socket(socket.AF_UNIX)\n\
            s.connect(sys.argv[1])\n\
            s.sendall(b'{\"v\":1,\"request\":{\"cmd\":\"status\"}}\\n')\n\
            print(s.makefile().readline(), end='')\n";
        let out = std::process::Command::new("setpriv")
            .args(setpriv_args)
            .args(["/usr/bin/python3", "-c", script])
            .arg(socket)
            .output()
            .expect("setpriv (util-linux) and /usr/bin/python3 are installed");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("answer is UTF-8")
    }

    #[tokio::test]
    async fn peers_are_checked_by_uid_and_group_membership() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to switch users");
            return;
        }
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), Some(4242)).expect("socket binds");
        let server = serve(listener, Some(4242), fake_supervisor());
        let socket = dir.socket();
        let run = |args: &'static [&'static str]| {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || request_as(&socket, args))
        };

        let primary = run(&["--reuid=65534", "--regid=4242", "--clear-groups"]);
        let answer = primary.await.expect("client runs");
        assert!(
            answer.starts_with("{\"v\":1,\"ok\":"),
            "primary group member: {answer}"
        );

        let supplementary = run(&["--reuid=65534", "--regid=65534", "--groups=27,4242"]);
        let answer = supplementary.await.expect("client runs");
        assert!(
            answer.starts_with("{\"v\":1,\"ok\":"),
            "supplementary member: {answer}"
        );

        // Open the file itself so the stranger reaches the credential check.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .expect("mode is set");
        let stranger = run(&["--reuid=65534", "--regid=65534", "--clear-groups"]);
        let answer = stranger.await.expect("client runs");
        assert!(
            answer.contains("\"kind\":\"permission_denied\"") && answer.contains("uid 65534"),
            "stranger: {answer}"
        );
        server.abort();
    }
}
