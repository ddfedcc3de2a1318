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

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

use super::follow::EventSender;
use super::protocol::{
    ControlError, Envelope, ErrorKind, Reply, Request, RequestBody, ResponseBody, VERSION,
};

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

/// One control request on its way to the supervisor. The supervisor answers on `reply`
/// once the request's transition is applied; dropping `reply` is answered to the client
/// as [`ErrorKind::ShuttingDown`].
#[derive(Debug)]
pub struct ControlMsg {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Result<Reply, ControlError>>,
}

/// Who sent a request, from the kernel (`SO_PEERCRED`), not from the client's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// `None` when the kernel reports no pid (peer in another pid namespace).
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// Binds the control socket at `path`.
///
/// Creates the parent directory if missing (0755). Refuses to start if another live
/// daemon answers on the socket (a connect that succeeds means live), removes a stale
/// socket file (connect refused) and refuses to replace anything that is not a socket.
/// The socket gets mode 0600; with `allowed_gid`, mode 0660 and group `allowed_gid`
/// (the owner stays holdfast's euid, which is root when holdfast runs as root).
///
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path, allowed_gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| annotate(e, format!("failed to create directory {parent:?}")))?;
    }
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|e| annotate(e, format!("failed to bind control socket {path:?}")))?;
    let mode = if allowed_gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| annotate(e, format!("failed to set mode of control socket {path:?}")))?;
    if let Some(gid) = allowed_gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            annotate(
                e.into(),
                format!("failed to give control socket {path:?} to group {gid}"),
            )
        })?;
    }
    Ok(listener)
}

/// Makes room for a fresh socket at `path`, unless a live daemon owns it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, format!("failed to inspect {path:?}"))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("refusing to replace {path:?} with the control socket: it is not a socket"),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => {
            let pid = getsockopt(&stream, PeerCredentials)
                .map(|cred| cred.pid().to_string())
                .unwrap_or_else(|_| "unknown".to_owned());
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "holdfast is already running on {} (pid {pid})",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path)
                .map_err(|e| annotate(e, format!("failed to remove stale socket {path:?}")))
        }
        Err(e) => Err(annotate(
            e,
            format!("failed to check whether {path:?} is in use"),
        )),
    }
}

/// Removes the socket file (called at clean shutdown). A missing file is fine.
pub fn unlink(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to remove control socket")
        }
    }
}

/// Deadlines and limits of one connection; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    read_timeout: Duration,
    pub(super) write_timeout: Duration,
    max_line: usize,
}

const LIMITS: Limits = Limits {
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    max_line: MAX_REQUEST_LINE,
};

/// Accept loop; one task per connection.
///
/// Each peer is checked with `SO_PEERCRED`: allowed are uid 0, holdfast's own euid and,
/// with `allowed_gid`, processes whose primary or supplementary groups contain it;
/// others get [`ErrorKind::PermissionDenied`]. Each connection carries one request line
/// (at most 64 KiB, read within 2 s), forwarded to the supervisor on `tx`; the answer is
/// written back as one line. If the supervisor is gone the answer is
/// [`ErrorKind::ShuttingDown`]. The loop runs until the task is aborted.
pub fn serve(
    listener: UnixListener,
    allowed_gid: Option<u32>,
    tx: mpsc::Sender<ControlMsg>,
) -> Server {
    serve_with(listener, allowed_gid, tx, LIMITS, None)
}

/// Like [`serve`], and answers `events` with `follow` from `events`, the live stream of
/// the runtime's event bus (without it, such a request is refused as internal error).
/// Followers end when every sender of `events` is gone, which lets [`Server::close`]
/// finish promptly.
pub fn serve_with_events(
    listener: UnixListener,
    allowed_gid: Option<u32>,
    tx: mpsc::Sender<ControlMsg>,
    events: EventSender,
) -> Server {
    serve_with(listener, allowed_gid, tx, LIMITS, Some(events))
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

/// How many connections each peer uid holds, against the caps.
#[derive(Debug)]
struct Admission {
    total_cap: usize,
    per_uid_cap: usize,
    /// Of `total_cap`, what uids other than root and `own_euid` may hold together.
    others_cap: usize,
    /// Of `per_uid_cap`, what one uid's streaming requests may hold.
    streaming_cap: usize,
    own_euid: u32,
    total: usize,
    others: usize,
    by_uid: HashMap<u32, usize>,
    streaming_by_uid: HashMap<u32, usize>,
}

impl Admission {
    /// Caps for a process allowed `nofile` descriptors: at most half of them for
    /// connections (the rest stays for services' pipes, cgroups and spawning), at most
    /// [`MAX_CONNECTIONS`]; one uid may take at most half of that total.
    fn for_nofile(nofile: u64, own_euid: u32) -> Self {
        let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
        let total_cap = half.clamp(2, MAX_CONNECTIONS);
        let per_uid_cap = (total_cap / 2).min(MAX_CONNECTIONS_PER_UID);
        Admission {
            total_cap,
            per_uid_cap,
            others_cap: total_cap - PRIVILEGED_RESERVE.min(total_cap / 4),
            streaming_cap: per_uid_cap - ONE_SHOT_RESERVE.min(per_uid_cap / 2),
            own_euid,
            total: 0,
            others: 0,
            by_uid: HashMap::new(),
            streaming_by_uid: HashMap::new(),
        }
    }

    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_euid
    }

    /// Counts a new connection from `uid`, or says why it may not stay.
    fn admit(&mut self, uid: u32) -> Result<(), String> {
        if self.total >= self.total_cap {
            return Err(format!(
                "too many control connections (at most {} at a time): try again later",
                self.total_cap
            ));
        }
        let privileged = self.privileged(uid);
        if !privileged && self.others >= self.others_cap {
            return Err(format!(
                "too many control connections from users other than root and uid {} \
                 (at most {} of {} at a time, the rest stay for them): try again later",
                self.own_euid, self.others_cap, self.total_cap
            ));
        }
        let held = self.by_uid.entry(uid).or_default();
        if *held >= self.per_uid_cap {
            return Err(format!(
                "too many control connections from uid {uid} (at most {} at a time): try again later",
                self.per_uid_cap
            ));
        }
        *held += 1;
        self.total += 1;
        if !privileged {
            self.others += 1;
        }
        Ok(())
    }

    /// A connection from `uid` ended.
    fn release(&mut self, uid: u32) {
        let privileged = self.privileged(uid);
        if let Some(held) = self.by_uid.get_mut(&uid) {
            *held -= 1;
            self.total -= 1;
            if !privileged {
                self.others -= 1;
            }
            if *held == 0 {
                self.by_uid.remove(&uid);
            }
        }
    }

    /// Counts an admitted connection of `uid` as streaming, or says why it may not.
    fn begin_streaming(&mut self, uid: u32) -> Result<(), String> {
        let streaming = self.streaming_by_uid.entry(uid).or_default();
        if *streaming >= self.streaming_cap {
            return Err(format!(
                "too many following control connections from uid {uid} (at most {} of its {} \
                 at a time follow events or logs or wait, the rest stay for other requests): \
                 try again later",
                self.streaming_cap, self.per_uid_cap
            ));
        }
        *streaming += 1;
        Ok(())
    }

    /// A streaming connection of `uid` ended.
    fn end_streaming(&mut self, uid: u32) {
        if let Some(streaming) = self.streaming_by_uid.get_mut(&uid) {
            *streaming -= 1;
            if *streaming == 0 {
                self.streaming_by_uid.remove(&uid);
            }
        }
    }
}

/// The admission, shared by the accept loop and the connection tasks (which learn only
/// from the request line whether they stream). Never held across an await.
type SharedAdmission = Arc<Mutex<Admission>>;

fn lock(admission: &SharedAdmission) -> MutexGuard<'_, Admission> {
    // The counts stay consistent even if a holder panicked: each update is one step.
    admission
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A streaming slot of one uid, given back when the stream ends.
struct StreamingSlot {
    admission: SharedAdmission,
    uid: u32,
}

impl StreamingSlot {
    fn take(admission: &SharedAdmission, uid: u32) -> Result<Self, ControlError> {
        lock(admission)
            .begin_streaming(uid)
            .map_err(|message| ControlError {
                kind: ErrorKind::Busy,
                message,
            })?;
        Ok(StreamingSlot {
            admission: Arc::clone(admission),
            uid,
        })
    }
}

impl Drop for StreamingSlot {
    fn drop(&mut self) {
        lock(&self.admission).end_streaming(self.uid);
    }
}

/// The request of `peer`, after taking a streaming slot into `slot` when it streams; a
/// busy refusal instead when its uid's streams already hold all theirs.
fn with_streaming_slot(
    peer: Result<Peer, ControlError>,
    request: Result<Request, ControlError>,
    admission: &SharedAdmission,
    slot: &mut Option<StreamingSlot>,
) -> (Result<Peer, ControlError>, Result<Request, ControlError>) {
    let request = match (&peer, request) {
        (Ok(peer), Ok(request)) if streams(&request) => StreamingSlot::take(admission, peer.uid)
            .map(|taken| {
                *slot = Some(taken);
                request
            }),
        (_, request) => request,
    };
    (peer, request)
}

/// Whether `request` holds its connection beyond one answer.
fn streams(request: &Request) -> bool {
    match request {
        Request::Events { follow, .. } | Request::Logs { follow, .. } => *follow,
        Request::Wait { .. } => true,
        _ => false,
    }
}

/// holdfast's soft `RLIMIT_NOFILE` (already raised at start).
fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Answers a connection over a cap with one error line and closes it, without a task:
/// a refused flood must not pile up anything. Best effort: the short line fits in the
/// socket buffer of a fresh connection.
fn refuse(stream: UnixStream, message: String) {
    tracing::debug!("refused control connection: {message}");
    let line = response_line(Err(ControlError {
        kind: ErrorKind::Busy,
        message,
    }));
    // A plain non-blocking write on the std socket: tokio has not polled this fresh
    // socket's readiness yet.
    if let Ok(mut stream) = stream.into_std() {
        let _ = stream.write_all(&line);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

fn serve_with(
    listener: UnixListener,
    allowed_gid: Option<u32>,
    tx: mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<EventSender>,
) -> Server {
    let own_euid = nix::unistd::geteuid().as_raw();
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
                        let task = connections.spawn(handle(stream, own_euid, allowed_gid, tx, limits, events, admission));
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

/// Whether a peer may use the control socket: root, holdfast's own user, or a member of
/// the allowed group (primary gid or one of `supplementary`).
fn allowed(peer: &Peer, own_euid: u32, allowed_gid: Option<u32>, supplementary: &[u32]) -> bool {
    if peer.uid == 0 || peer.uid == own_euid {
        return true;
    }
    match allowed_gid {
        Some(gid) => peer.gid == gid || supplementary.contains(&gid),
        None => false,
    }
}

/// Supplementary groups from the text of `/proc/<pid>/status` (`Groups:\t4 24 27`).
fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else {
        return Vec::new();
    };
    match tokio::fs::read_to_string(format!("/proc/{pid}/status")).await {
        Ok(status) => parse_groups(&status),
        // The peer may already have exited; then it only has its primary group.
        Err(_) => Vec::new(),
    }
}

async fn check_peer(
    stream: &UnixStream,
    own_euid: u32,
    allowed_gid: Option<u32>,
) -> Result<Peer, ControlError> {
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| ControlError {
        kind: ErrorKind::Internal,
        message: format!("failed to read peer credentials of control connection: {e}"),
    })?;
    let peer = Peer {
        pid: Some(cred.pid()).filter(|&pid| pid > 0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    // Reading /proc is only needed when the cheap checks fail.
    let supplementary = if allowed(&peer, own_euid, allowed_gid, &[]) || allowed_gid.is_none() {
        Vec::new()
    } else {
        supplementary_groups(peer.pid).await
    };
    if allowed(&peer, own_euid, allowed_gid, &supplementary) {
        Ok(peer)
    } else {
        let who = match allowed_gid {
            Some(gid) => format!("root, uid {own_euid} and members of group {gid}"),
            None => format!("root and uid {own_euid}"),
        };
        Err(ControlError {
            kind: ErrorKind::PermissionDenied,
            message: format!(
                "permission denied: uid {} may not use the control socket (allowed: {who})",
                peer.uid
            ),
        })
    }
}

/// What came in on a connection before the deadline.
enum Incoming {
    Line(Vec<u8>),
    /// Connected and closed without a byte: a liveness probe, nothing to answer.
    Nothing,
}

async fn read_line(stream: &mut UnixStream, limits: Limits) -> Result<Incoming, ControlError> {
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

fn bad_request(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// The fields needed before the full parse: the version must be checked first, so an old
/// CLI talking to a new daemon gets a version error, not a parse error.
#[derive(Deserialize)]
struct Probe {
    v: Option<serde_json::Value>,
    request: Option<IgnoredAny>,
}

/// Parses a request line, checking the protocol version first.
fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
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

/// Hands a request to the supervisor and waits for its answer.
pub(super) async fn dispatch(
    request: Request,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<Reply, ControlError> {
    let shutting_down = || ControlError {
        kind: ErrorKind::ShuttingDown,
        message: "holdfast is shutting down".to_owned(),
    };
    let (reply, answer) = oneshot::channel();
    let msg = ControlMsg {
        request,
        peer,
        reply,
    };
    tx.send(msg).await.map_err(|_| shutting_down())?;
    answer.await.map_err(|_| shutting_down())?
}

async fn handle(
    mut stream: UnixStream,
    own_euid: u32,
    allowed_gid: Option<u32>,
    tx: mpsc::Sender<ControlMsg>,
    limits: Limits,
    events: Option<EventSender>,
    admission: SharedAdmission,
) {
    // The request line is read even from a peer that is denied, so that it receives its
    // answer instead of a connection reset for unread data.
    let peer = check_peer(&stream, own_euid, allowed_gid).await;
    // Held until the connection ends, when the request streams.
    let mut streaming = None;
    let mut admit = |peer, request| with_streaming_slot(peer, request, &admission, &mut streaming);
    let response = match read_line(&mut stream, limits).await {
        Ok(Incoming::Nothing) => return,
        Ok(Incoming::Line(line)) => match admit(peer, parse_request(&line)) {
            (Err(denied), _) => Err(denied),
            (Ok(_), Err(bad)) => Err(bad),
            (
                Ok(peer),
                Ok(Request::Events {
                    follow: true,
                    service,
                    since,
                    last,
                }),
            ) => match events {
                Some(events) => {
                    let live = super::follow::subscribe(events);
                    let filter = super::follow::Filter {
                        service,
                        since,
                        last,
                    };
                    return super::follow::follow(stream, filter, peer, &tx, live, limits).await;
                }
                None => Err(ControlError {
                    kind: ErrorKind::Internal,
                    message: "this daemon does not stream events".to_owned(),
                }),
            },
            (
                Ok(peer),
                Ok(Request::Logs {
                    services,
                    lines,
                    since,
                    until,
                    follow,
                }),
            ) => match super::logs::Query::new(services, lines, since, until, follow) {
                Ok(query) => {
                    let live = events.map(super::follow::subscribe);
                    return super::logs::serve(stream, query, peer, &tx, limits, live).await;
                }
                Err(bad) => Err(bad),
            },
            (
                Ok(peer),
                Ok(Request::Wait {
                    requests,
                    timeout_ms,
                }),
            ) => match events {
                Some(events) => {
                    tracing::debug!(?requests, ?timeout_ms, ?peer, "control request: wait");
                    // Subscribed before any request is applied: no outcome can be missed.
                    let live = super::follow::subscribe(events);
                    let timeout = timeout_ms.map(Duration::from_millis);
                    match super::wait::run(&mut stream, requests, timeout, peer, &tx, live).await {
                        Some(response) => response,
                        None => return,
                    }
                }
                None => Err(ControlError {
                    kind: ErrorKind::Internal,
                    message: "this daemon cannot wait for outcomes".to_owned(),
                }),
            },
            (Ok(peer), Ok(request)) => {
                tracing::debug!(?request, ?peer, "control request");
                dispatch(request, peer, &tx).await
            }
        },
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

/// One response as a line: `{"v":1,"ok":...}` or `{"v":1,"error":...}` and a newline.
pub(super) fn response_line(response: Result<Reply, ControlError>) -> Vec<u8> {
    let body = match response {
        Ok(reply) => ResponseBody::Ok(reply),
        Err(e) => ResponseBody::Error(e),
    };
    let mut line = serde_json::to_vec(&Envelope { v: VERSION, body })
        .expect("protocol types always serialize to JSON");
    line.push(b'\n');
    line
}

fn annotate(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::control::client::{self, ClientError};
    use crate::control::protocol::{DaemonStatus, EventRecord, Status};
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
    async fn subscribed(events: &EventSender, count: usize) {
        let start = std::time::Instant::now();
        while events.receiver_count() < count {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nobody subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_follower_gets_the_history_then_live_events_of_its_filter() {
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), None).expect("socket binds");
        let events = crate::control::event_channel();
        let server = serve_with_events(listener, None, fake_supervisor(), events.clone());

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
            events.send(fake_event(seq)).expect("followers listen");
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
        while events.receiver_count() > 0 {
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
        let dir = TempDir::new();
        let listener = bind(&dir.socket(), None).expect("socket binds");
        let (events, _) = tokio::sync::broadcast::channel(4);
        let server = serve_with_events(listener, None, fake_supervisor(), events.clone());
        let mut slow = follower(&dir.socket(), None).await;
        assert_eq!(seq_of(next_line(&mut slow).await), 1);
        subscribed(&events, 1).await;
        // No await in between: the connection task cannot run, so it falls behind.
        for seq in 2..=20 {
            events.send(fake_event(seq)).expect("the follower listens");
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
                    | Request::QuarantineRelease { .. }
                    | Request::Signal { .. }
                    | Request::ResetFailed { .. }
                    | Request::Logs { .. }
                    | Request::Wait { .. } => {
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
        assert!(
            matches!(
                err,
                Err(ClientError::Daemon(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    ..
                }))
            ),
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
        assert!(
            matches!(
                err,
                Err(ClientError::Daemon(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    ..
                }))
            ),
            "{err:?}"
        );
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
        let server = serve_with(listener, None, fake_supervisor(), limits, None);
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
