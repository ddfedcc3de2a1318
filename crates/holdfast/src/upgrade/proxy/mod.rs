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
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::supervisor::event::{Event, EventKind};
use holdfast_core::supervisor::service::{RunId, Service};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::routes::{CoreView, RouteTable};
use crate::model::{ListenAddr, ProxyProtocol, ProxySpec, ServiceName, ServiceSpec, UpgradeMode};

/// The proxies of every proxy-mode service, and the private ports of their runs.
#[derive(Default)]
pub struct Proxies {
    routes: RouteTable,
    /// Accept loops, per base service.
    listening: HashMap<String, Listening>,
}

/// The accept loops of one base service, on its addresses; they stop (and their dups
/// of the sockets close) when it is dropped.
struct Listening {
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for task in &self.tasks {
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

/// The public sockets of a service, bound by the shell (`listen`, kept open across its
/// runs): each TCP address with its own descriptor (a dup) for the proxy to accept on.
pub type Public = Vec<(SocketAddr, OwnedFd)>;

impl Proxies {
    /// For a spawn of `run`: the spec the run sees, with its private port in place of
    /// `{port}` (unchanged for a service that is not proxied). Its public sockets
    /// (`public`, asked for when its proxy does not accept on them yet) accept from now
    /// on.
    pub fn prepare_run(
        &mut self,
        service: &ServiceName,
        run: RunId,
        spec: &Arc<ServiceSpec>,
        public: impl FnOnce() -> io::Result<Public>,
    ) -> io::Result<Arc<ServiceSpec>> {
        let Some(proxy) = proxy_spec(spec) else {
            return Ok(spec.clone());
        };
        self.listen(spec, proxy, public)?;
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

    /// Follows an event: routes change, a removed service's proxy stops. `now`: the
    /// service as the core has it after the event.
    pub fn on_event(&mut self, event: &Event, now: Option<&Service>) {
        // Most services are not proxied: their events cost a lookup only.
        let Some(service) = event
            .service
            .as_ref()
            .filter(|s| self.routes.has_instances(s.base()))
        else {
            return;
        };
        let core = CoreView {
            current: now.and_then(Service::run),
            stopping: now.map_or_else(Vec::new, |s| s.draining().iter().map(|d| d.run).collect()),
        };
        self.routes.on_event(service, &event.kind, &core);
        if matches!(event.kind, EventKind::Removed) && !self.routes.has_instances(service.base()) {
            self.listening.remove(service.base());
            self.routes.forget(service.base());
        }
    }

    /// Accepts on `spec`'s public addresses, unless its base already does on exactly
    /// these (a reload may have changed them: the proxy then moves to the new ones).
    fn listen(
        &mut self,
        spec: &ServiceSpec,
        proxy: &ProxySpec,
        public: impl FnOnce() -> io::Result<Public>,
    ) -> io::Result<()> {
        let base = spec.name.base();
        let addrs: Vec<SocketAddr> = spec
            .listen
            .addrs
            .iter()
            .filter_map(|a| match a {
                ListenAddr::Tcp(addr) => Some(*addr),
                // Refused by the config: a proxy accepts on TCP only.
                ListenAddr::Unix(_) => None,
            })
            .collect();
        if self.listening.get(base).is_some_and(|l| l.addrs == addrs) {
            return Ok(());
        }
        let router = self.routes.router(base);
        let mut tasks = Vec::new();
        for (addr, fd) in public()? {
            if !addrs.contains(&addr) {
                continue;
            }
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            tasks.push(match proxy.protocol {
                ProxyProtocol::Http => tokio::spawn(http::serve(listener, router.clone())),
                ProxyProtocol::Tcp => tokio::spawn(tcp::serve(listener, router.clone())),
            });
        }
        let listening = Listening { addrs, tasks };
        self.listening.insert(base.to_owned(), listening);
        Ok(())
    }
}

/// Accepts on `listener` until the task is aborted, handing each client connection
/// (Nagle off: requests and answers are small) to `serve`.
async fn accept_each(
    listener: &TcpListener,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, peer);
            }
            Err(e) => accept_failed(listener, &e).await,
        }
    }
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
