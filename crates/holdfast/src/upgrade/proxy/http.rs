//! The HTTP/1.1 proxy: each request of a client connection goes to the run that is
//! current when it arrives, so a keep-alive client moves to a new build between two
//! requests and never sends on a connection the old build is closing.
//!
//! Backend connections are kept in a small pool per backend and given back once a
//! response has been forwarded whole. A backend's `Connection: close` (an old build
//! draining says it) ends that backend connection only; the client's stays open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{TrySendError, http1 as client};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::Gate;
use super::routes::{HOLD, Router};

/// A request body towards a backend: buffered (replayable) or streamed.
type ReqBody = Either<Full<Bytes>, Incoming>;
/// A response body towards the client: the backend's, or holdfast's own (502/503).
type RespBody = Either<Returning, Full<Bytes>>;
type Sender = client::SendRequest<ReqBody>;

/// Request bodies up to this size are read whole before forwarding, so that an
/// idempotent request can be sent again when its backend connection closed under it.
/// Larger (or chunked) ones stream and are not retried once written.
const REPLAY_MAX: u64 = 64 * 1024;
/// Sends of one request at most: on a pooled connection, on a new one to the same
/// backend, on a new one to the run that replaced it.
const ATTEMPTS: u32 = 3;
/// Idle backend connections kept per backend; more are closed when given back.
const IDLE_MAX: usize = 256;

/// Headers of one hop only (RFC 9110 7.6.1), never forwarded. `Transfer-Encoding` and
/// `Content-Length` hyper sets itself from the body it sends.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// How long a keep-alive client connection winding down (see [`Gate`]) is left for
/// its next request, which is answered with `Connection: close`, before it is closed
/// idle: a client sending just as it closes would see its request fail, and one under
/// load sends well within this.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Accepts client connections on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, router: Router, gate: Gate) {
    let pool = Arc::new(Pool::default());
    // Idle connections to a run that is no longer routed go at once: the old build
    // then drains what it has and exits, rather than waiting out its idle grace.
    let pruner = {
        let (mut router, pool) = (router.clone(), pool.clone());
        tokio::spawn(async move {
            while let Some(backends) = router.changed().await {
                pool.keep_only(&backends.0);
            }
        })
    };
    let _pruner = AbortOnDrop(pruner);
    super::accept_each(&listener, &gate, |stream, peer, open| {
        let proxy = Proxy {
            router: router.clone(),
            pool: pool.clone(),
            client: peer.ip(),
            gate: gate.clone(),
        };
        tokio::spawn(async move {
            let _open = open;
            let gate = proxy.gate.clone();
            let service = hyper::service::service_fn(move |req| {
                let mut proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(req).await) }
            });
            let io = TokioIo::new(stream);
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = gate.wound_down() => {
                    // The next response closes it; an idle one is closed after the grace.
                    match tokio::time::timeout(IDLE_GRACE, connection.as_mut()).await {
                        Ok(served) => served,
                        Err(_) => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("proxy: client connection from {peer}: {e}");
            }
        });
    })
    .await;
}

/// One client connection's side of the proxy.
#[derive(Clone)]
struct Proxy {
    router: Router,
    pool: Arc<Pool>,
    client: IpAddr,
    gate: Gate,
}

/// A request as sent, kept to send it again: its head, and its body when buffered.
struct Replay {
    head: hyper::http::request::Parts,
    body: Option<Bytes>,
}

impl Replay {
    fn request(&self) -> Option<Request<ReqBody>> {
        let body = self.body.clone()?;
        let mut req = Request::new(Either::Left(Full::new(body)));
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        Some(req)
    }
}

impl Proxy {
    /// Forwards one request (see [`Proxy::forward_once`]); while the proxies wind
    /// down, its response closes the client's connection.
    async fn forward(&mut self, req: Request<Incoming>) -> Response<RespBody> {
        let mut response = self.forward_once(req).await;
        if self.gate.winding_down() {
            // The client's connection ends after this response, as the client is told.
            (response.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Forwards one request to the current backend. A request that failed before any
    /// response goes again (if it never reached the backend, or is idempotent and its
    /// body was kept), on a new connection: to the same backend after an idle pooled
    /// connection failed (the backend may have closed it just then), to another run
    /// once one is routed after a new connection failed (the run went away; the event
    /// saying so is on its way).
    async fn forward_once(&mut self, req: Request<Incoming>) -> Response<RespBody> {
        let (replay, mut req) = match self.prepare(req).await {
            Ok(prepared) => prepared,
            Err(status) => return status_response(status),
        };
        let (mut gone, mut fresh) = (None, false);
        for attempt in 1.. {
            let picked = match gone {
                Some(gone) => self.router.pick_instead_of(gone, HOLD).await,
                None => self.router.pick(HOLD).await,
            };
            let Some(backend) = picked else {
                return status_response(StatusCode::SERVICE_UNAVAILABLE);
            };
            let failed = match self.pool.send(backend, req, fresh).await {
                Ok(response) => return response,
                Err(failed) => failed,
            };
            tracing::debug!("proxy: {backend} (attempt {attempt}): {}", failed.error);
            gone = (fresh || failed.connect).then_some(backend);
            fresh = true;
            let again = failed
                .unsent
                .or_else(|| replay.as_ref().and_then(Replay::request));
            match again {
                Some(again) if attempt < ATTEMPTS => req = again,
                _ => break,
            }
        }
        status_response(StatusCode::BAD_GATEWAY)
    }

    /// The request as forwarded (hop-by-hop headers out, `X-Forwarded-For` in, a small
    /// body read whole), and what it takes to send it again if it may be.
    async fn prepare(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Option<Replay>, Request<ReqBody>), StatusCode> {
        let (mut head, body) = req.into_parts();
        strip_hop_by_hop(&mut head.headers);
        forwarded_for(&mut head.headers, self.client);
        let small = body.size_hint().exact().is_some_and(|n| n <= REPLAY_MAX);
        if !small {
            return Ok((None, Request::from_parts(head, Either::Right(body))));
        }
        let bytes = body
            .collect()
            .await
            .map_err(|_| StatusCode::BAD_REQUEST)?
            .to_bytes();
        let req = Request::from_parts(head.clone(), Either::Left(Full::new(bytes.clone())));
        let replay = is_idempotent(&head.method).then_some(Replay {
            head,
            body: Some(bytes),
        });
        Ok((replay, req))
    }
}

/// Methods a client may send twice (RFC 9110 9.2.2): sending one again after its
/// connection broke cannot do what the client did not ask for.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Removes the hop-by-hop headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For`.
fn forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn status_response(status: StatusCode) -> Response<RespBody> {
    let reason = status.canonical_reason().unwrap_or("error");
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!("{reason}\n")))));
    *response.status_mut() = status;
    response
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed send: why (a refused connect, a connection that closed), and the request
/// when it never reached the backend.
struct Failed {
    error: BoxError,
    unsent: Option<Request<ReqBody>>,
    /// No connection to the backend could be made.
    connect: bool,
}

/// Idle connections to the backends.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
    /// The backends routed at the last change of routes (`None` before the first):
    /// a connection to any other is not kept once its response is done.
    routed: Mutex<Option<Vec<SocketAddr>>>,
}

impl Pool {
    /// Sends `req` on an idle connection to `backend`, or a new one (always, when
    /// `fresh`).
    async fn send(
        self: &Arc<Self>,
        backend: SocketAddr,
        req: Request<ReqBody>,
        fresh: bool,
    ) -> Result<Response<RespBody>, Failed> {
        let sender = if fresh {
            connect(backend).await
        } else {
            self.checkout(backend).await
        };
        let mut sender = match sender {
            Ok(sender) => sender,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(req),
                    connect: true,
                });
            }
        };
        let mut response = match sender.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => {
                let unsent = e.take_message();
                return Err(Failed {
                    error: TrySendError::into_error(e).into(),
                    unsent,
                    connect: false,
                });
            }
        };
        // The backend closes this connection after the response: it is not reused,
        // but the client's connection stays.
        let closing = connection_close(response.headers());
        strip_hop_by_hop(response.headers_mut());
        let home = (!closing).then(|| (self.clone(), backend, sender));
        Ok(response.map(|body| Either::Left(Returning { body, home })))
    }

    async fn checkout(&self, backend: SocketAddr) -> Result<Sender, BoxError> {
        while let Some(mut sender) = self.take(backend) {
            // Not ready: the backend closed it while idle (or the connection broke).
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        connect(backend).await
    }

    /// Drops the idle connections to every backend but `routed`.
    fn keep_only(&self, routed: &[SocketAddr]) {
        *self.routed.lock().unwrap_or_else(|e| e.into_inner()) = Some(routed.to_vec());
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|backend, _| routed.contains(backend));
    }

    fn is_routed(&self, backend: SocketAddr) -> bool {
        let routed = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        routed.as_ref().is_none_or(|r| r.contains(&backend))
    }

    fn take(&self, backend: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(&backend)?.pop()
    }

    fn give_back(&self, backend: SocketAddr, sender: Sender) {
        if sender.is_closed() || !self.is_routed(backend) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !idle.contains_key(&backend) {
            // A new backend (a new run): connections to earlier runs that closed since
            // go now, so that restarts leave nothing behind.
            idle.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
        }
        let senders = idle.entry(backend).or_default();
        if senders.len() < IDLE_MAX {
            senders.push(sender);
        }
    }
}

/// Aborts the task when the proxy that spawned it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A new connection to `backend`.
async fn connect(backend: SocketAddr) -> Result<Sender, BoxError> {
    let stream = TcpStream::connect(backend).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("proxy: backend connection to {backend}: {e}");
        }
    });
    Ok(sender)
}

fn connection_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// A backend's response body on its way to the client; once it ended, its connection
/// goes back to the pool for the next request.
struct Returning {
    body: Incoming,
    home: Option<(Arc<Pool>, SocketAddr, Sender)>,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = matches!(polled, Poll::Ready(None)) || self.body.is_end_stream();
        if ended && let Some((pool, backend, sender)) = self.home.take() {
            pool.give_back(backend, sender);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    /// A body that ends without a frame (a 204, a HEAD) is never polled to its end.
    fn drop(&mut self) {
        if self.body.is_end_stream()
            && let Some((pool, backend, sender)) = self.home.take()
        {
            pool.give_back(backend, sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// A backend that answers the first request of each connection and closes the
    /// connection as the second one arrives, unanswered: a keep-alive connection closed
    /// by the server at the instant the proxy reuses it.
    async fn closing_backend(listener: TcpListener) {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                for answer in [true, false] {
                    let mut line = String::new();
                    while line != "\r\n" {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    if answer {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        stream.get_mut().write_all(ok).await.unwrap();
                    }
                }
            });
        }
    }

    /// A proxy in front of a `closing_backend` run: its public address, and its gate.
    async fn proxy_of_a_closing_backend() -> (SocketAddr, Gate, super::super::routes::RouteTable) {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        tokio::spawn(closing_backend(backend));
        let mut routes = super::super::routes::RouteTable::default();
        let web = crate::model::ServiceName::new("web".to_owned()).unwrap();
        let router = routes.router("web");
        routes.add_run(&web, holdfast_core::supervisor::service::RunId(1), port);
        let started = holdfast_core::supervisor::event::EventKind::Started {
            run: holdfast_core::supervisor::service::RunId(1),
            pid: crate::unix::Pid::from_raw(1),
        };
        routes.on_event(&web, &started, &super::super::routes::CoreView::default());
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        let gate = Gate::default();
        tokio::spawn(serve(public, router, gate.clone()));
        (addr, gate, routes)
    }

    /// Sends a GET on `client` and reads its answer (the backend's body, or the end of
    /// the proxy's own 502).
    async fn get(client: &mut TcpStream) -> String {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0; 1024];
        let mut answer = String::new();
        while !answer.ends_with("ok") && !answer.ends_with('\n') {
            let n = client.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the client's connection stays open: {answer}");
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        answer
    }

    #[tokio::test]
    async fn a_request_on_a_pooled_connection_the_backend_closed_is_sent_again() {
        let (addr, _gate, _routes) = proxy_of_a_closing_backend().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            let answer = get(&mut client).await;
            assert!(answer.contains("200 OK"), "{answer}");
        }
    }

    #[tokio::test]
    async fn winding_down_closes_each_keep_alive_client_after_its_next_response_or_idle() {
        let (addr, gate, _routes) = proxy_of_a_closing_backend().await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        for client in [&mut busy, &mut idle] {
            assert!(get(client).await.contains("200 OK"));
        }
        gate.0.winding_down.send_replace(true);
        let last = get(&mut busy).await;
        assert!(last.contains("200 OK"), "answered: {last}");
        assert!(last.to_lowercase().contains("connection: close"), "{last}");
        let mut rest = Vec::new();
        for client in [&mut busy, &mut idle] {
            let closed = tokio::time::timeout(IDLE_GRACE * 5, client.read_to_end(&mut rest));
            assert!(closed.await.is_ok(), "closed by the proxy");
        }
        let mut open = gate.0.open.subscribe();
        let none = tokio::time::timeout(IDLE_GRACE * 5, open.wait_for(|n| *n == 0));
        assert!(none.await.is_ok(), "no client connection is counted");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::HOST, "example".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);
    }

    #[test]
    fn the_clients_address_is_appended_to_x_forwarded_for() {
        let mut headers = HeaderMap::new();
        let client: IpAddr = "10.0.0.7".parse().unwrap();
        forwarded_for(&mut headers, client);
        forwarded_for(&mut headers, "127.0.0.1".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
    }

    #[test]
    fn a_backends_connection_close_is_seen_among_other_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "Upgrade, Close".parse().unwrap());
        assert!(connection_close(&headers));
        assert!(!connection_close(&HeaderMap::new()));
    }
}
