//! holdfast's HTTP server (`[holdfast] http = "127.0.0.1:9700"`): `/health` for outer
//! checks, token-protected `/control`, and the dashboard with its read-only API.
//!
//! Invariants:
//! - Like the control socket's server, it never touches supervisor state: every request
//!   becomes a [`Request`] sent to the supervisor task ([`WebState::request`]), answered
//!   by the same code as the CLI's. No verb is implemented twice.
//! - Everything that changes something is under `/control` and needs the token
//!   ([`token`]); so do logs and crash reports. Everything else only reads, and every
//!   request must name this server in `Host` ([`guard`]).
//! - It runs on tasks of its own; a slow HTTP client holds up only itself.
//! - Its connections hold the event feed weakly ([`WeakFeed`]), so event streams end
//!   when the runtime drops the feed at shutdown.
//!
//! Routes are added in [`router`]; a handler takes `State<WebState>`.

mod api;
mod control;
mod dashboard;
mod events;
mod guard;
mod health;
mod listener;
mod metrics;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::token::Token;
use crate::control::feed::{EventFeed, WeakFeed};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request, Status};
use crate::control::server::{ControlMsg, Peer};
use crate::model::DaemonSettings;
use crate::observe::metrics::Metrics;

/// What every handler may use: the way to the supervisor, the event feed, the token.
#[derive(Clone)]
pub struct WebState(Arc<Shared>);

struct Shared {
    control: mpsc::Sender<ControlMsg>,
    events: WeakFeed,
    token: Token,
    /// Who requests come from, as far as the supervisor is concerned: holdfast's own
    /// user (the token is its secret; without the token only reads get through).
    peer: Peer,
    /// Random per daemon start: a peer polling the heartbeat sees a restart in it.
    instance: String,
    /// The kernel's boot id (empty when unreadable).
    boot_id: String,
    started: Instant,
    state_dir: PathBuf,
    log_dir: PathBuf,
    metrics: Metrics,
    /// Event streams held open at once, at most (each holds a descriptor for as long as
    /// the browser stays): a flood of them must leave descriptors for the services.
    streams: Arc<tokio::sync::Semaphore>,
}

/// Event streams open at once, at most.
pub const MAX_STREAMS: usize = 64;
/// For the supervisor task to answer `/health` and the heartbeat.
pub const LOOP_DEADLINE: Duration = Duration::from_secs(5);

impl WebState {
    fn new(seed: &Seed, token: Token) -> Self {
        let instance = token::instance_id();
        WebState(Arc::new(Shared {
            control: seed.control.clone(),
            events: seed.events.clone(),
            token,
            peer: Peer {
                pid: None,
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            },
            instance,
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_owned())
                .unwrap_or_default(),
            started: seed.started,
            state_dir: seed.state_dir.clone(),
            log_dir: seed.log_dir.clone(),
            metrics: seed.metrics.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }))
    }

    /// Sends `request` to the supervisor, as the control socket's server does.
    pub async fn request(&self, request: Request) -> Result<Reply, ControlError> {
        crate::control::dispatch(request, self.0.peer, &self.0.control).await
    }

    /// Applies `requests` and answers once their outcomes are known, or `timeout` passed:
    /// the CLI's waited verbs' one request ([`Request::Wait`]).
    pub async fn wait(
        &self,
        requests: Vec<Request>,
        timeout: Duration,
    ) -> Result<Reply, ControlError> {
        // Subscribed before any request is applied: no outcome can be missed.
        let live = self.0.events.subscribe().ok_or_else(|| ControlError {
            kind: ErrorKind::ShuttingDown,
            message: "holdfast is shutting down: nothing to wait for".to_owned(),
        })?;
        crate::control::wait::apply_and_wait(
            requests,
            Some(timeout),
            self.0.peer,
            &self.0.control,
            live,
        )
        .await
    }

    /// The status snapshot (the answer to `holdfast status`).
    pub async fn status(&self) -> Result<Status, ControlError> {
        match self.request(Request::Status).await? {
            Reply::Status(status) => Ok(status),
            other => Err(ControlError {
                kind: ErrorKind::Internal,
                message: format!("unexpected answer to status: {other:?}"),
            }),
        }
    }

    /// The status snapshot, or a 503-kind error when the supervisor task does not answer
    /// within [`LOOP_DEADLINE`]: for the checks of holdfast's liveness (`/health`, the
    /// heartbeat), where a hung loop must show as an answer, not a hung request.
    pub async fn status_within_deadline(&self) -> Result<Status, ControlError> {
        tokio::time::timeout(LOOP_DEADLINE, self.status())
            .await
            .unwrap_or_else(|_| {
                Err(ControlError {
                    kind: ErrorKind::Busy,
                    message: format!(
                        "holdfast's loop did not answer within {} s",
                        LOOP_DEADLINE.as_secs()
                    ),
                })
            })
    }

    /// The last `n` lines of the services' logs (all when none named), merged by time.
    pub async fn log_tail(
        &self,
        services: &[crate::model::ServiceName],
        n: usize,
    ) -> Result<Vec<(crate::model::ServiceName, String)>, ControlError> {
        crate::control::log_tail(services, n, self.0.peer, &self.0.control).await
    }

    /// The event feed: its history and, until shutdown, its live channel.
    pub fn events(&self) -> &WeakFeed {
        &self.0.events
    }

    /// A slot for one more event stream, held until it ends; `None` when all are taken.
    pub fn stream_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.0.streams).try_acquire_owned().ok()
    }

    /// The number of the newest event (0 before the first).
    pub fn seq(&self) -> u64 {
        self.0.events.history().newest()
    }

    /// Whether the request carries the token (`Authorization: Bearer <token>`, the
    /// scheme in any case).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        guard::bearer(headers).is_some_and(|t| self.0.token.matches(t))
    }

    /// Random per daemon start.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// The kernel's boot id.
    pub fn boot_id(&self) -> &str {
        &self.0.boot_id
    }

    /// Since this server started (with the daemon).
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    pub fn state_dir(&self) -> &Path {
        &self.0.state_dir
    }

    pub fn log_dir(&self) -> &Path {
        &self.0.log_dir
    }

    /// The counters fed by the events.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

/// The largest `POST /control` body: a command is a few hundred bytes.
const MAX_CONTROL_BODY: usize = 16 * 1024;

/// Every route of a server listening on `listening`. Another route is one more
/// `.route(...)` here, its handler in a module of its own: under `secret` when it changes
/// something or shows service output (logs and crash reports hold what services print
/// and their stacks; the control socket limits them to its control group), else open
/// (the dashboard without the token shows states and events).
pub fn router(state: WebState, listening: SocketAddr) -> Router {
    let secret = Router::new()
        .route(
            "/control",
            post(control::control).layer(DefaultBodyLimit::max(MAX_CONTROL_BODY)),
        )
        .route("/control/heartbeat", get(control::heartbeat))
        .route("/api/crashes", get(api::crashes))
        .route("/api/crashes/{id}", get(api::crash))
        .route("/api/logs/{name}", get(api::logs))
        // Before any extractor: a request without the token is not even read.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::script))
        .route("/style.css", get(dashboard::style))
        .route("/health", get(health::health))
        .route("/api/status", get(api::status))
        .route("/api/events", get(events::events))
        .route("/metrics", get(metrics::metrics))
        .merge(secret)
        .layer(axum::middleware::from_fn_with_state(
            listening,
            guard::check_host,
        ))
        .with_state(state)
}

/// A [`ControlError`] as an HTTP answer: JSON `{"error": {"kind", "message"}}` with the
/// status that fits its kind.
pub fn error_response(error: ControlError) -> Response {
    let status = match error.kind {
        ErrorKind::BadRequest
        | ErrorKind::Version
        | ErrorKind::UnknownService
        | ErrorKind::InvalidConfig => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::ShuttingDown | ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal | ErrorKind::Lagged => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

/// Binds the server's address (before any service starts, so that a port in use fails
/// `up` at once). A non-loopback address is served, with a warning: it was written in
/// the config.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (the port is in use: another holdfast or another server listens on it)"
            }
            _ => "",
        };
        std::io::Error::new(e.kind(), format!("cannot listen on {addr}{hint}: {e}"))
    })?;
    listener.set_nonblocking(true)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "the HTTP server listens on {addr}, reachable from other machines: \
             /health and the dashboard's read-only API need no token"
        );
    }
    Ok(listener)
}

/// The running server.
pub struct Server {
    addr: SocketAddr,
    socket: listener::Socket,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Where it listens (the port, if `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket now, freeing its port; the requests under way go on
    /// until [`Server::close`].
    fn close_socket(&self) {
        self.socket.close();
    }

    /// Stops accepting and waits up to `grace` for requests under way; then drops what
    /// is left.
    pub async fn close(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router(state)` on `listener`. Must be called inside a tokio runtime.
pub fn serve(listener: std::net::TcpListener, state: WebState) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let socket = listener::Socket::new(tokio::net::TcpListener::from_std(listener)?);
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(state, addr);
    let capped = listener::Capped::new(socket.clone());
    let task = tokio::spawn(listener::run(capped, app, stopped));
    Ok(Server {
        addr,
        socket,
        stop: Some(stop),
        task,
    })
}

/// The daemon's HTTP server: on while `[holdfast] http` is set, turned on, moved or off
/// by a reload. Its state is made with the token when a server first runs, and kept
/// when a reload turns the server off, so that another can turn it on again with the
/// same token and instance id.
pub struct Web {
    seed: Seed,
    state: Option<WebState>,
    server: Option<Server>,
    /// The address the config asks for (`:0` included), while a server runs.
    configured: Option<SocketAddr>,
}

/// What a server's state is made of, kept from the start whether or not one runs.
struct Seed {
    control: mpsc::Sender<ControlMsg>,
    events: WeakFeed,
    metrics: Metrics,
    state_dir: PathBuf,
    log_dir: PathBuf,
    /// The daemon's start: the heartbeat's uptime is the daemon's, not the server's.
    started: Instant,
}

impl Web {
    /// The server of a daemon, off until [`Web::open`] or a reload turns it on.
    pub fn new(
        daemon: &DaemonSettings,
        control: mpsc::Sender<ControlMsg>,
        events: &EventFeed,
        metrics: Metrics,
    ) -> Web {
        Web {
            seed: Seed {
                control,
                events: events.downgrade(),
                metrics,
                state_dir: daemon.state_dir.clone(),
                log_dir: daemon.log_dir.clone(),
                started: Instant::now(),
            },
            state: None,
            server: None,
            configured: None,
        }
    }

    /// Serves on `addr`, the token made if missing: at start, where a port in use
    /// fails `up` before any service starts.
    pub fn open(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let server = self.listen(addr)?;
        announce(&server, self.state()?);
        self.replace(Some(server));
        self.configured = Some(addr);
        Ok(())
    }

    /// The server's state, made (with the token) when first asked for.
    fn state(&mut self) -> std::io::Result<&WebState> {
        if self.state.is_none() {
            let token = Token::load_or_create(&token::path(&self.seed.state_dir))?;
            self.state = Some(WebState::new(&self.seed, token));
        }
        Ok(self.state.as_ref().expect("made above"))
    }

    /// Serves on `wanted` from now on (off with `None`), as a reload asks. A new address
    /// is bound before the old server closes, so a port in use leaves the server where it
    /// was: the error says why.
    pub fn rebind(&mut self, wanted: Option<SocketAddr>) -> Result<(), String> {
        if wanted == self.configured {
            return Ok(());
        }
        let next = match wanted {
            Some(addr) => {
                let server = self.serve_moving(addr)?;
                announce(&server, self.state().map_err(|e| e.to_string())?);
                Some(server)
            }
            None => {
                tracing::info!("the HTTP server is off: `http` was removed from [holdfast]");
                None
            }
        };
        self.replace(next);
        self.configured = wanted;
        Ok(())
    }

    /// Binds `addr` and serves on it.
    fn listen(&mut self, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = bind(addr)?;
        serve(listener, self.state()?.clone())
    }

    /// Serves on `addr` while the server runs. The unspecified address on the port the
    /// server holds (`127.0.0.1:P` to `0.0.0.0:P`, or back) cannot be bound beside it:
    /// then, and only then (another IP is in the way only of the unspecified one), the
    /// server's socket is closed first, and if `addr` still cannot be served (another
    /// process holds it), the old address is served again and the error says so. Only
    /// when even that fails is the server off, which the error says too.
    fn serve_moving(&mut self, addr: SocketAddr) -> Result<Server, String> {
        let error = match self.listen(addr) {
            Ok(server) => return Ok(server),
            Err(e) => e,
        };
        let Some(old) = self.server.as_ref().filter(|old| {
            error.kind() == std::io::ErrorKind::AddrInUse && in_the_way(old.addr(), addr)
        }) else {
            return Err(error.to_string());
        };
        let back = old.addr();
        old.close_socket();
        // From here on any failure, binding or serving, goes back to the old address.
        let error = match self.listen(addr) {
            Ok(server) => return Ok(server),
            Err(e) => e,
        };
        match self.listen(back) {
            Ok(server) => {
                tracing::info!("the HTTP server is back on {back}");
                self.replace(Some(server));
                Err(format!("{error} (after closing {back} to free its port)"))
            }
            Err(lost) => {
                self.replace(None);
                self.configured = None;
                Err(format!(
                    "{error} (after closing {back} to free its port); {back} again: {lost}"
                ))
            }
        }
    }

    /// Puts `next` in place of the running server, which finishes its requests under
    /// way in the background.
    fn replace(&mut self, next: Option<Server>) {
        if let Some(old) = std::mem::replace(&mut self.server, next) {
            tokio::spawn(old.close(CLOSE_GRACE));
        }
    }

    /// The address the config asked for (`:0` included) that the server runs on; `None`
    /// while it is off.
    pub fn configured(&self) -> Option<SocketAddr> {
        self.configured
    }

    /// The address the server listens on, while one runs.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::addr)
    }

    /// The running server, for the daemon to close (see [`Server::close`]) last.
    pub fn take_server(&mut self) -> Option<Server> {
        self.configured = None;
        self.server.take()
    }
}

/// Whether a socket on `old` keeps `new` from being bound: on the same port, only when one
/// of them is the unspecified address (which takes the port on every IP).
fn in_the_way(old: SocketAddr, new: SocketAddr) -> bool {
    old.port() == new.port() && (old.ip().is_unspecified() || new.ip().is_unspecified())
}

/// How long a replaced server may finish the requests under way.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The line `holdfast up` prints: where the dashboard is, where its token is.
fn announce(server: &Server, state: &WebState) {
    tracing::info!(
        "dashboard: http://{}/  token: {}",
        server.addr(),
        token::path(state.state_dir()).display()
    );
}
