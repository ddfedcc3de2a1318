//! `upgrade.mode = "proxy"`: holdfast accepts on the service's public `listen`
//! addresses and forwards to the current run, which listens on a private port.
//!
//! The shell owns [`Proxies`] (in its one task): at each spawn of a proxy-mode service it
//! hands the run a port ([`Proxies::prepare_run`]) and it feeds every event to
//! [`Proxies::on_event`], which decides the routes. The accept loops run in their own
//! tasks and learn of route changes through a watch channel.

mod http;
pub mod ports;
pub mod routes;
mod tcp;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::supervisor::event::{Event, EventKind};
use holdfast_core::supervisor::service::RunId;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use self::routes::RouteTable;
use crate::model::{ListenAddr, ProxyProtocol, ProxySpec, ServiceName, ServiceSpec, UpgradeMode};

/// The proxies of every proxy-mode service, and the private ports of their runs.
#[derive(Default)]
pub struct Proxies {
    routes: RouteTable,
    /// Accept loops, per base service.
    listening: HashMap<String, Listening>,
}

/// The accept loops of one base service; they stop when it is dropped.
struct Listening(Vec<JoinHandle<()>>);

impl Drop for Listening {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The proxy settings of a proxy-mode service.
pub fn proxy_spec(spec: &ServiceSpec) -> Option<&ProxySpec> {
    match &spec.upgrade.as_ref()?.mode {
        UpgradeMode::Proxy(proxy) => Some(proxy),
        _ => None,
    }
}

impl Proxies {
    /// For a spawn of `run`: the spec the run sees, with its private port in place of
    /// `{port}` (unchanged for a service that is not proxied). Its public addresses
    /// accept from now on.
    pub fn prepare_run(
        &mut self,
        service: &ServiceName,
        run: RunId,
        spec: &Arc<ServiceSpec>,
    ) -> io::Result<Arc<ServiceSpec>> {
        let Some(proxy) = proxy_spec(spec) else {
            return Ok(spec.clone());
        };
        self.listen(spec, proxy)?;
        let taken: HashSet<u16> = self.routes.ports_in_use().collect();
        let port = ports::pick(proxy.ports.as_ref(), &taken)?;
        self.routes.add_run(service, run, port);
        Ok(Arc::new(ports::substitute(spec, port)))
    }

    /// `spec` as `run` sees it (its port in its health probe's address).
    pub fn run_spec<'a>(
        &self,
        service: &ServiceName,
        run: RunId,
        spec: &'a ServiceSpec,
    ) -> Cow<'a, ServiceSpec> {
        match self.routes.port(service, run) {
            Some(port) => Cow::Owned(ports::substitute(spec, port)),
            None => Cow::Borrowed(spec),
        }
    }

    /// Follows an event: routes change, a removed service's proxy stops. `current`: the
    /// service's current run as the core has it now.
    pub fn on_event(&mut self, event: &Event, current: Option<RunId>) {
        let Some(service) = &event.service else {
            return;
        };
        self.routes.on_event(service, &event.kind, current);
        if matches!(event.kind, EventKind::Removed) && !self.routes.has_instances(service.base()) {
            self.listening.remove(service.base());
            self.routes.forget(service.base());
        }
    }

    /// Starts accepting on `spec`'s public addresses, unless its base already does.
    fn listen(&mut self, spec: &ServiceSpec, proxy: &ProxySpec) -> io::Result<()> {
        let base = spec.name.base();
        if self.listening.contains_key(base) {
            return Ok(());
        }
        let listeners = public_listeners(spec)?;
        let router = self.routes.router(base);
        let tasks = listeners
            .into_iter()
            .map(|listener| match proxy.protocol {
                ProxyProtocol::Http => tokio::spawn(http::serve(listener, router.clone())),
                ProxyProtocol::Tcp => tokio::spawn(tcp::serve(listener, router.clone())),
            })
            .collect();
        self.listening.insert(base.to_owned(), Listening(tasks));
        Ok(())
    }
}

/// The public sockets of a proxy-mode service, bound now.
///
/// INTERIM: holdfast binds `listen` sockets once for a service and keeps them open across
/// its runs (the "config+sockets" part); once those exist, this returns them (as tokio
/// listeners) instead of binding its own.
pub fn public_listeners(spec: &ServiceSpec) -> io::Result<Vec<TcpListener>> {
    spec.listen
        .addrs
        .iter()
        .map(|addr| match addr {
            ListenAddr::Tcp(addr) => {
                let socket = match addr {
                    std::net::SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    std::net::SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.set_reuseaddr(true)?;
                socket.bind(*addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                socket.listen(spec.listen.backlog)
            }
            ListenAddr::Unix(path) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "proxy mode accepts on tcp:// addresses only, not unix:{}",
                    path.display()
                ),
            )),
        })
        .collect()
}

/// After a failed accept: out of descriptors (EMFILE/ENFILE) or memory, the next accept
/// fails the same way until something is freed, so the loop pauses instead of spinning.
async fn accept_failed(listener: &TcpListener, error: &io::Error) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::warn!("proxy on {addr}: accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
