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
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::routes::{CoreView, RouteTable};
use crate::model::{ListenAddr, ProxyProtocol, ProxySpec, ServiceName, ServiceSpec, UpgradeMode};

/// The proxies of every proxy-mode service, and the private ports of their runs.
#[derive(Default)]
pub struct Proxies {
    routes: RouteTable,
    /// Accept loops, per base service.
    listening: HashMap<String, Listening>,
    /// The client connections being served, and the word to wind them down.
    gate: Gate,
    /// While winding down for `upgrade --self`: the bases that were accepting, which
    /// accept again in the next image (or in this one, if the exec fails). No accept
    /// loop starts meanwhile.
    wound: Option<Vec<String>>,
}

/// What the proxies hand to the next image: the routes, and which bases accept (a
/// stopped service's proxy goes on answering, 503 after its hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyForm {
    pub routes: Vec<routes::RouteForm>,
    pub accepting: Vec<String>,
}

/// The client connections of every proxy, counted, and whether they are to end: before
/// `upgrade --self` the proxies stop accepting (new clients wait in the listen backlog,
/// which the new image takes over) and each connection ends at a point its client
/// expects: an HTTP one after its next response (`Connection: close`), a TCP one when
/// either side closes.
#[derive(Clone)]
pub struct Gate(Arc<GateState>);

struct GateState {
    winding_down: watch::Sender<bool>,
    open: watch::Sender<usize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(GateState {
            winding_down: watch::channel(false).0,
            open: watch::channel(0).0,
        }))
    }
}

impl Gate {
    /// Counts a client connection until the guard drops.
    fn enter(&self) -> Open {
        self.0.open.send_modify(|n| *n += 1);
        Open(self.clone())
    }

    /// Whether connections are to end.
    fn winding_down(&self) -> bool {
        *self.0.winding_down.borrow()
    }

    /// Resolves once connections are to end.
    async fn wound_down(&self) {
        let mut rx = self.0.winding_down.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// One client connection, counted while it lives.
struct Open(Gate);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.0.open.send_modify(|n| *n -= 1);
    }
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
            if let Some(wound) = &mut self.wound {
                wound.retain(|base| base != service.base());
            }
            self.routes.forget(service.base());
        }
    }

    /// Before `upgrade --self`: stops accepting (clients wait in the listen backlog)
    /// and winds the client connections down. The future, which borrows nothing (the
    /// loop goes on routing meanwhile), resolves once none is left or `bound` passed,
    /// with how many are still open (the exec cuts them).
    pub fn wind_down(&mut self, bound: Duration) -> impl Future<Output = usize> + Send + 'static {
        let listening = std::mem::take(&mut self.listening);
        self.wound = Some(listening.keys().cloned().collect());
        let tasks: Vec<JoinHandle<()>> = (listening.into_values())
            .flat_map(|mut l| std::mem::take(&mut l.tasks))
            .collect();
        let gate = self.gate.clone();
        async move {
            // Aborted and gone before the connections are counted: an accept loop
            // aborted mid-poll may still hand out the connections it accepted.
            for task in tasks {
                task.abort();
                let _ = task.await;
            }
            gate.0.winding_down.send_replace(true);
            let mut open = gate.0.open.subscribe();
            let _ = tokio::time::timeout(bound, open.wait_for(|n| *n == 0)).await;
            *open.borrow()
        }
    }

    /// Whether the proxies are winding down for `upgrade --self`.
    pub fn winding_down(&self) -> bool {
        self.wound.is_some()
    }

    /// What to hand to the next image.
    pub fn handover(&self) -> ProxyForm {
        let accepting = match &self.wound {
            Some(wound) => wound.clone(),
            None => self.listening.keys().cloned().collect(),
        };
        ProxyForm {
            routes: self.routes.forms(),
            accepting,
        }
    }

    /// Serves as a previous image did (`handed`: what it handed over), or as this one
    /// did before [`Proxies::wind_down`] (`None`: the exec failed): routes restored,
    /// accepting on the public sockets of each proxy-mode service of `specs` that did.
    pub fn resume<'a>(
        &mut self,
        handed: Option<ProxyForm>,
        specs: impl IntoIterator<Item = &'a ServiceSpec>,
        public: impl Fn(&str) -> io::Result<Public>,
    ) {
        let form = handed.unwrap_or_else(|| ProxyForm {
            routes: Vec::new(),
            accepting: self.wound.take().unwrap_or_default(),
        });
        self.wound = None;
        self.gate.0.winding_down.send_replace(false);
        self.routes.restore(form.routes);
        for spec in specs {
            let Some(proxy) = proxy_spec(spec) else {
                continue;
            };
            let base = spec.name.base();
            if !form.accepting.iter().any(|b| b == base) && !self.routes.has_instances(base) {
                continue;
            }
            if let Err(e) = self.listen(spec, proxy, || public(base)) {
                tracing::error!("{base}: the proxy does not accept again: {e}");
            }
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
        if let Some(wound) = &mut self.wound {
            // Winding down: it accepts again in the next image.
            if !wound.iter().any(|b| b == base) {
                wound.push(base.to_owned());
            }
            return Ok(());
        }
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
            let gate = self.gate.clone();
            tasks.push(match proxy.protocol {
                ProxyProtocol::Http => tokio::spawn(http::serve(listener, router.clone(), gate)),
                ProxyProtocol::Tcp => tokio::spawn(tcp::serve(listener, router.clone(), gate)),
            });
        }
        let listening = Listening { addrs, tasks };
        self.listening.insert(base.to_owned(), listening);
        Ok(())
    }
}

/// Accepts on `listener` until the task is aborted, handing each client connection
/// (Nagle off: requests and answers are small) to `serve`, counted by `gate` for as
/// long as `serve` keeps its [`Open`].
async fn accept_each(
    listener: &TcpListener,
    gate: &Gate,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr, Open),
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, peer, gate.enter());
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
