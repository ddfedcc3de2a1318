//! The HTTP side: routes, handlers and the accept loop with its drain.
//!
//! Drain (after SIGTERM/SIGINT): take the connections already queued and close the
//! listener (see [`take_queued`]), then for `drain_idle` answer every
//! request, including the next one on an idle keep-alive connection, with
//! `Connection: close`, so a client racing the shutdown gets an answer instead of a
//! reset. Connections still open after `drain_idle` are shut down gracefully
//! (in-flight requests finish, idle connections close). After `drain_timeout` the
//! app exits whatever is left.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header::CONNECTION},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use serde::Deserialize;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

use crate::{
    chaos::{self, Escape},
    state::{Health, Shared},
};

/// The response header naming the build that answered.
const BUILD_ID: HeaderName = HeaderName::from_static("x-build-id");

/// How long a response announcing an exit gets to reach the client before the exit.
const RESPONSE_GRACE: Duration = Duration::from_millis(100);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/health/ok", get(health_ok).post(health_ok))
        .route("/health/fail", get(health_fail).post(health_fail))
        .route("/health/hang", get(health_hang).post(health_hang))
        .route("/crash", get(crash).post(crash))
        .route("/panic", get(panic).post(panic))
        .route("/segfault", get(segfault).post(segfault))
        .route("/hang", get(hang).post(hang))
        .route("/alloc", get(alloc).post(alloc))
        .route("/fork", get(fork).post(fork))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Runs in front of every handler: a hung app answers nothing, every answer names the
/// build, and a draining app asks the client to close the connection after this
/// response.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if shared.is_hung() {
        return std::future::pending().await;
    }
    shared.count_request();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(BUILD_ID, shared.build_id.clone());
    if shared.is_draining() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn index(State(shared): State<Arc<Shared>>) -> String {
    format!(
        "demo-app build={} pid={} uptime={:.3}s requests={}\n",
        shared.build_id.to_str().unwrap_or("?"),
        std::process::id(),
        shared.started.elapsed().as_secs_f64(),
        shared.requests()
    )
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.health() {
        Health::Ok => "ok\n".into_response(),
        Health::Failing => (StatusCode::SERVICE_UNAVAILABLE, "failing\n").into_response(),
        Health::Hanging => std::future::pending().await,
    }
}

async fn health_ok(State(shared): State<Arc<Shared>>) -> &'static str {
    shared.set_health(Health::Ok);
    "health: ok\n"
}

async fn health_fail(State(shared): State<Arc<Shared>>) -> &'static str {
    shared.set_health(Health::Failing);
    "health: failing\n"
}

async fn health_hang(State(shared): State<Arc<Shared>>) -> &'static str {
    shared.set_health(Health::Hanging);
    "health: hanging\n"
}

#[derive(Deserialize)]
struct CrashQuery {
    code: Option<u8>,
}

async fn crash(Query(query): Query<CrashQuery>) -> impl IntoResponse {
    let code = query.code.unwrap_or(1);
    tokio::spawn(async move {
        tokio::time::sleep(RESPONSE_GRACE).await;
        chaos::crash(code)
    });
    (
        [(CONNECTION, "close")],
        format!("crashing with exit code {code}\n"),
    )
}

async fn panic() {
    chaos::panic("GET /panic")
}

async fn segfault() {
    chaos::segfault()
}

async fn hang(State(shared): State<Arc<Shared>>) -> &'static str {
    // The gate already let this request through, so this answer still goes out.
    chaos::hang(&shared);
    "hanging\n"
}

#[derive(Deserialize)]
struct AllocQuery {
    mb: u64,
}

async fn alloc(State(shared): State<Arc<Shared>>, Query(query): Query<AllocQuery>) -> String {
    let total = shared.hoard(chaos::to_usize(query.mb << 20));
    format!("allocated {} MiB, holding {} MiB\n", query.mb, total >> 20)
}

#[derive(Deserialize)]
struct ForkQuery {
    escape: Option<u8>,
}

async fn fork(State(shared): State<Arc<Shared>>, Query(query): Query<ForkQuery>) -> Response {
    let escape = match query.escape {
        None | Some(0) => Escape::Stay,
        Some(_) => Escape::Setsid,
    };
    match chaos::spawn_grandchild(escape, shared.ignore_sigterm) {
        Ok(pid) => {
            println!("grandchild pid={pid}");
            format!(
                "grandchild pid={pid} escaped={}\n",
                escape == Escape::Setsid
            )
            .into_response()
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to spawn grandchild: {error}\n"),
        )
            .into_response(),
    }
}

/// How long each drain phase may take.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub idle: Duration,
    pub timeout: Duration,
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection closed.
    Clean,
    /// `drain_timeout` passed with connections still open.
    TimedOut,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the
/// module doc). `shared` must be the state the router's gate reads.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
) -> Drained {
    let (close_idle, close_idle_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` yields None once all are gone.
    let (alive, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection = connection(stream, router.clone(), close_idle_rx.clone(), alive.clone());
                    tokio::spawn(connection);
                }
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning on the error.
                    eprintln!("failed to accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    shared.start_draining();
    take_queued(listener, &router, &close_idle_rx, &alive);
    drop(alive);

    let all_closed = alive_rx.recv();
    tokio::pin!(all_closed);
    if tokio::time::timeout(drain.idle, &mut all_closed)
        .await
        .is_ok()
    {
        return Drained::Clean;
    }
    close_idle.send_replace(true);
    let rest = drain.timeout.saturating_sub(drain.idle);
    match tokio::time::timeout(rest, all_closed).await {
        Ok(_) => Drained::Clean,
        Err(_) => Drained::TimedOut,
    }
}

/// Accepts the connections already queued on `listener`, then closes it. A socket
/// bound with SO_REUSEPORT is ours alone, and closing it would reset what waits in its
/// queue; a socket shared with the next run (LISTEN_FDS) keeps its queue open anyway.
/// A connection that lands in between the last accept and the close is still reset;
/// only the kernel closes that gap (`net.ipv4.tcp_migrate_req = 1`, which holdfast sets
/// as root for a reuseport service, hands the queue of a closed SO_REUSEPORT socket to
/// another socket of its group). Without it, this accept loop still made the difference
/// between a few resets per upgrade and none in our runs under `wrk`.
fn take_queued(
    listener: TcpListener,
    router: &Router,
    close_idle: &watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    // Still non-blocking: `accept` says WouldBlock once the queue is empty.
    while let Ok((stream, _peer)) = listener.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            tokio::spawn(connection(
                stream,
                router.clone(),
                close_idle.clone(),
                alive.clone(),
            ));
        }
    }
}

async fn connection(
    stream: TcpStream,
    router: Router,
    mut close_idle: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let service = TowerToHyperService::new(router);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let told_to_close = async move {
        // An error means the server loop is gone, which is as final as being told.
        let _ = close_idle.wait_for(|close| *close).await;
    };
    // Errors here are clients going away; the client sees them, not us.
    tokio::select! {
        _ = connection.as_mut() => {}
        () = told_to_close => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
