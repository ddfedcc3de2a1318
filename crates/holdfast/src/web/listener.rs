//! The HTTP server's listener, with a cap on connections held at once: each holds a
//! descriptor, and a flood of them must leave descriptors for spawning services (the
//! control socket has the same kind of cap). At the cap, new connections wait in the
//! kernel's backlog until one ends. Each connection must send a request's head within
//! [`HEADER_READ_TIMEOUT`], the first one and each one after (hyper's timer runs while
//! it waits for a head, an idle keep-alive included), so that idle or trickling clients
//! cannot hold every slot.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections held at once, at most.
pub const MAX_CONNECTIONS: usize = 256;
/// For a request's head to arrive, on a new or an idle kept-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stopped`; then waits for the requests under way
/// (the caller bounds the wait by aborting this task, which drops every connection).
pub async fn run(
    mut listener: Capped,
    app: axum::Router,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use axum::serve::Listener as _;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Owned here: aborting this task drops (and so closes) every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            (io, _) = listener.accept() => {
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
                connections.spawn(async move {
                    // A client going away or timing out is no news.
                    let _ = connection.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // The server holds the socket too: closed here, it frees the port as the loop ends.
    listener.socket.close();
    drop(listener);
    graceful.shutdown().await;
}

pub struct Capped {
    socket: Socket,
    slots: Arc<Semaphore>,
}

impl Capped {
    pub fn new(socket: Socket) -> Self {
        Capped {
            socket,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// The listening socket, shared by the accept loop and its server, which can close it
/// at once, from any task: a reload moving the address to another IP on the same port
/// must free the port before it binds the new one, without waiting for the loop.
#[derive(Clone)]
pub struct Socket(Arc<Mutex<Option<TcpListener>>>);

impl Socket {
    pub fn new(listener: TcpListener) -> Self {
        Socket(Arc::new(Mutex::new(Some(listener))))
    }

    /// Closes the socket now; the loop accepts nothing more (its stop signal ends it).
    pub fn close(&self) {
        drop(self.lock().take());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TcpListener>> {
        // Nothing panics while holding it; a poisoned lock still holds a valid socket.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next connection; `None` once the socket is closed.
    async fn accept(&self) -> Option<io::Result<(TcpStream, std::net::SocketAddr)>> {
        std::future::poll_fn(|cx| match self.lock().as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await
    }
}

/// An accepted connection and its slot, given back when it is dropped.
pub struct Held {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl axum::serve::Listener for Capped {
    type Io = Held;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Held, Self::Addr) {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.socket.accept().await {
                // Closed: nothing comes any more; the loop's stop signal ends it.
                None => std::future::pending().await,
                Some(Ok((stream, addr))) => {
                    return (
                        Held {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Some(Err(e)) => {
                    // Typically EMFILE: back off instead of spinning on an error that
                    // only goes away when some descriptor is closed.
                    tracing::warn!("failed to accept an HTTP connection ({e}); retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match self.socket.lock().as_ref() {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the HTTP server's socket is closed",
            )),
        }
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
