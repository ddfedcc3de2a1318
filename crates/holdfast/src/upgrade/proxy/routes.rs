//! Which run of a proxy-mode service gets the next connection or request, derived from
//! the core's events alone.
//!
//! A run becomes routable when it is up (`started`: ready and past `start_secs`) and
//! stops being routable as soon as it is told to stop (`draining`, `stop_requested`) or
//! is gone (`exited`). During an upgrade the new run is routed from the moment it is
//! up, and the old one only finishes what it has. The proxies see each change through
//! a watch channel per base service: nothing polls.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::ServiceName;
use holdfast_core::supervisor::event::EventKind;
use holdfast_core::supervisor::service::RunId;

/// How long a connection or request waits for a routable run before it is refused (503,
/// or a closed TCP connection). A restart (stop, `restart_sec`, start, readiness) takes
/// well under this; clients' own timeouts (nginx's `proxy_read_timeout`, browsers, most
/// HTTP libraries) are 60 s or more, so the client hears the refusal before it gives up.
pub const HOLD: Duration = Duration::from_secs(30);

/// The backends of one base service: one per instance that has a routable run (its
/// newest one), in instance order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Backends(pub Vec<SocketAddr>);

/// What a proxy holds of its routes: round robin over the current backends.
#[derive(Clone)]
pub struct Router {
    rx: watch::Receiver<Arc<Backends>>,
    next: Arc<AtomicUsize>,
}

impl Router {
    /// Waits until the routes change; `None` once the service is gone.
    pub async fn changed(&mut self) -> Option<Arc<Backends>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// The next backend in turn, if any is routable now.
    pub fn current(&mut self) -> Option<SocketAddr> {
        let backends = self.rx.borrow_and_update();
        let n = backends.0.len();
        if n == 0 {
            return None;
        }
        // Relaxed: the counter only spreads load, it orders nothing.
        Some(backends.0[self.next.fetch_add(1, Ordering::Relaxed) % n])
    }

    /// The next backend, waiting up to `hold` for one to become routable (between a
    /// stop and the next start). `None` when none did, or the service is gone.
    pub async fn pick(&mut self, hold: Duration) -> Option<SocketAddr> {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            if let Some(backend) = self.current() {
                return Some(backend);
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

impl Router {
    /// Like [`Router::pick`], but not `refused` (a backend that just refused a
    /// connection: its run went away, and the event saying so is on its way). When it is
    /// the only backend, waits for the routes to change (up to `hold`).
    pub async fn pick_instead_of(
        &mut self,
        refused: SocketAddr,
        hold: Duration,
    ) -> Option<SocketAddr> {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let others = self.rx.borrow_and_update().0.iter().any(|b| *b != refused);
            if others {
                // Round robin comes to another one within the list's length.
                return std::iter::from_fn(|| self.current()).find(|b| *b != refused);
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

/// One run the proxy knows of: its private port, and whether it takes new work.
#[derive(Debug, Clone, Copy)]
struct Run {
    port: u16,
    routable: bool,
}

/// The runs of the instances of one base service, and the channel its proxy listens on.
struct Base {
    instances: BTreeMap<ServiceName, BTreeMap<RunId, Run>>,
    tx: watch::Sender<Arc<Backends>>,
    next: Arc<AtomicUsize>,
}

impl Base {
    fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Backends::default()));
        Self {
            instances: BTreeMap::new(),
            tx,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn backends(&self) -> Backends {
        let newest = |runs: &BTreeMap<RunId, Run>| {
            runs.values()
                .rev()
                .find(|r| r.routable)
                .map(|r| SocketAddr::from((Ipv4Addr::LOCALHOST, r.port)))
        };
        Backends(self.instances.values().filter_map(newest).collect())
    }

    /// Tells the proxies, only when what they route to changed.
    fn publish(&self) {
        let backends = self.backends();
        self.tx.send_if_modified(|current| {
            if **current == backends {
                return false;
            }
            *current = Arc::new(backends);
            true
        });
    }
}

/// Private ports of every live run of every proxy-mode service, and their routes.
#[derive(Default)]
pub struct RouteTable {
    bases: HashMap<String, Base>,
}

impl RouteTable {
    /// A router for the proxy of `base` (its routes are kept from now on).
    pub fn router(&mut self, base: &str) -> Router {
        let base = self.bases.entry(base.to_owned()).or_insert_with(Base::new);
        Router {
            rx: base.tx.subscribe(),
            next: base.next.clone(),
        }
    }

    /// A run was given `port`; it is routed once it is up.
    pub fn add_run(&mut self, service: &ServiceName, run: RunId, port: u16) {
        let routable = false;
        self.insert(service, run, Run { port, routable });
    }

    /// Keeps `run` of `service` as `known` (not published: the caller does).
    fn insert(&mut self, service: &ServiceName, run: RunId, known: Run) -> &Base {
        let base = self
            .bases
            .entry(service.base().to_owned())
            .or_insert_with(Base::new);
        base.instances
            .entry(service.clone())
            .or_default()
            .insert(run, known);
        base
    }

    /// The private port of a live run.
    pub fn port(&self, service: &ServiceName, run: RunId) -> Option<u16> {
        let runs = self.bases.get(service.base())?.instances.get(service)?;
        Some(runs.get(&run)?.port)
    }

    /// Ports of all live runs, of every service: none is handed out twice.
    pub fn ports_in_use(&self) -> impl Iterator<Item = u16> + '_ {
        self.bases
            .values()
            .flat_map(|b| b.instances.values())
            .flat_map(|runs| runs.values().map(|r| r.port))
    }

    /// Whether any instance of `base` is still known.
    pub fn has_instances(&self, base: &str) -> bool {
        self.bases
            .get(base)
            .is_some_and(|b| !b.instances.is_empty())
    }

    /// Drops `base`: its proxies' routers see the channel close and refuse what waits.
    pub fn forget(&mut self, base: &str) {
        self.bases.remove(base);
    }

    /// Follows one event of `service`; events of services that are not proxied are
    /// ignored. `core` is what the core has of the service now: its current run (a
    /// `stop_requested` is of that run; `None`: of every run), and the earlier runs it
    /// is stopping (the old run of a rollout, also one stopped without `draining` when
    /// a stop by hand abandons the rollout), none of which takes new work.
    pub fn on_event(&mut self, service: &ServiceName, kind: &EventKind, core: &CoreView) {
        let Some(base) = self.bases.get_mut(service.base()) else {
            return;
        };
        let Some(runs) = base.instances.get_mut(service) else {
            return;
        };
        match kind {
            EventKind::Started { run, .. } => set_routable(runs, *run, true),
            EventKind::Draining { run, .. } => set_routable(runs, *run, false),
            EventKind::StopRequested { .. } => match core.current {
                Some(run) => set_routable(runs, run, false),
                None => runs.values_mut().for_each(|r| r.routable = false),
            },
            EventKind::Exited { run, .. } | EventKind::SpawnFailed { run, .. } => {
                runs.remove(run);
            }
            EventKind::Removed => {
                base.instances.remove(service);
                base.publish();
                return;
            }
            _ => {}
        }
        for run in &core.stopping {
            set_routable(runs, *run, false);
        }
        base.publish();
    }
}

/// One live run of a proxy-mode service as `upgrade --self` hands it to the next image:
/// its private port, and whether it takes new work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteForm {
    pub service: ServiceName,
    pub run: u64,
    pub port: u16,
    pub routable: bool,
}

impl RouteTable {
    /// Every live run, to hand over.
    pub fn forms(&self) -> Vec<RouteForm> {
        let instances = self.bases.values().flat_map(|b| &b.instances);
        instances
            .flat_map(|(service, runs)| {
                runs.iter().map(|(run, r)| RouteForm {
                    service: service.clone(),
                    run: run.0,
                    port: r.port,
                    routable: r.routable,
                })
            })
            .collect()
    }

    /// Takes back the runs a previous image handed over, routed as they were.
    pub fn restore(&mut self, forms: Vec<RouteForm>) {
        for form in forms {
            let known = Run {
                port: form.port,
                routable: form.routable,
            };
            self.insert(&form.service, RunId(form.run), known).publish();
        }
    }
}

/// What the core has of one service when one of its events is published.
#[derive(Debug, Default)]
pub struct CoreView {
    /// Its current run.
    pub current: Option<RunId>,
    /// Earlier runs it is stopping.
    pub stopping: Vec<RunId>,
}

fn set_routable(runs: &mut BTreeMap<RunId, Run>, run: RunId, routable: bool) {
    if let Some(r) = runs.get_mut(&run) {
        r.routable = routable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unix::Pid;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s.to_owned()).unwrap()
    }

    fn started(run: u64) -> EventKind {
        EventKind::Started {
            run: RunId(run),
            pid: Pid::from_raw(100),
        }
    }

    fn current(run: u64) -> CoreView {
        CoreView {
            current: Some(RunId(run)),
            stopping: Vec::new(),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn picks(router: &mut Router, n: usize) -> Vec<Option<SocketAddr>> {
        (0..n).map(|_| router.current()).collect()
    }

    #[test]
    fn a_run_is_routed_from_started_until_draining_and_the_newest_up_run_wins() {
        let web = name("web");
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        table.add_run(&web, RunId(1), 1001);
        assert_eq!(router.current(), None, "spawned is not up yet");
        table.on_event(&web, &started(1), &CoreView::default());
        assert_eq!(router.current(), Some(addr(1001)));
        // A rollout: the new run starts beside the old one, and takes over once up.
        table.add_run(&web, RunId(2), 1002);
        assert_eq!(router.current(), Some(addr(1001)));
        table.on_event(&web, &started(2), &CoreView::default());
        assert_eq!(router.current(), Some(addr(1002)));
        let draining = EventKind::Draining {
            run: RunId(1),
            pid: Pid::from_raw(100),
            drain: Duration::from_secs(1),
        };
        table.on_event(&web, &draining, &CoreView::default());
        assert_eq!(router.current(), Some(addr(1002)));
        assert_eq!(
            table.port(&web, RunId(1)),
            Some(1001),
            "kept until it exits"
        );
    }

    #[test]
    fn a_stop_or_an_exit_leaves_no_route_and_forgets_the_port() {
        let web = name("web");
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        table.add_run(&web, RunId(1), 1001);
        table.on_event(&web, &started(1), &CoreView::default());
        let stop = EventKind::StopRequested {
            signal: crate::unix::Signal::SIGTERM,
            timeout: crate::model::Timeout::After(Duration::from_secs(1)),
            scope: holdfast_core::supervisor::service::KillScope::ProcessGroup,
        };
        table.on_event(&web, &stop, &current(1));
        assert_eq!(router.current(), None);
        // A stop of one run leaves another routed (the core's current run is the one
        // that stops); without a current run, nothing stays routed.
        table.add_run(&web, RunId(2), 1002);
        table.on_event(&web, &started(2), &CoreView::default());
        table.on_event(&web, &stop, &current(1));
        assert_eq!(router.current(), Some(addr(1002)));
        table.on_event(&web, &stop, &CoreView::default());
        assert_eq!(router.current(), None);
        // A run the core stops beside its current one takes no new work, whatever the
        // event (a stop by hand that abandons a rollout stops the old run silently).
        table.on_event(&web, &started(2), &CoreView::default());
        let view = CoreView {
            current: Some(RunId(3)),
            stopping: vec![RunId(2)],
        };
        table.on_event(&web, &EventKind::Stopped, &view);
        assert_eq!(router.current(), None);
        let exited = EventKind::Exited {
            run: RunId(1),
            pid: Pid::from_raw(100),
            status: crate::model::ExitStatus::Exited(0),
        };
        table.on_event(&web, &exited, &CoreView::default());
        assert_eq!(table.port(&web, RunId(1)), None);
        assert_eq!(table.ports_in_use().collect::<Vec<_>>(), [1002]);
    }

    #[test]
    fn instances_of_a_base_take_turns() {
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        for (i, port) in [(0, 2000), (1, 2001)] {
            let instance = name(&format!("web@{i}"));
            table.add_run(&instance, RunId(10 + i), port);
            table.on_event(&instance, &started(10 + i), &CoreView::default());
        }
        table.add_run(&name("other"), RunId(5), 3000);
        let got = picks(&mut router, 4);
        let (a, b) = (Some(addr(2000)), Some(addr(2001)));
        assert!(got == [a, b, a, b] || got == [b, a, b, a], "{got:?}");
    }

    #[tokio::test]
    async fn a_pick_waits_for_a_run_to_come_up() {
        let web = name("web");
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        table.add_run(&web, RunId(1), 1001);
        let waiting = tokio::spawn(async move { router.pick(HOLD).await });
        tokio::task::yield_now().await;
        table.on_event(&web, &started(1), &CoreView::default());
        assert_eq!(waiting.await.unwrap(), Some(addr(1001)));
    }

    #[tokio::test]
    async fn after_a_refused_connect_the_pick_waits_for_another_backend() {
        let web = name("web");
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        table.add_run(&web, RunId(1), 1001);
        table.on_event(&web, &started(1), &CoreView::default());
        let mut waiting = router.clone();
        let waiting = tokio::spawn(async move { waiting.pick_instead_of(addr(1001), HOLD).await });
        tokio::task::yield_now().await;
        table.add_run(&web, RunId(2), 1002);
        table.on_event(&web, &started(2), &CoreView::default());
        assert_eq!(waiting.await.unwrap(), Some(addr(1002)));
        for _ in 0..3 {
            let got = router
                .pick_instead_of(addr(1001), Duration::from_millis(1))
                .await;
            assert_eq!(got, Some(addr(1002)));
        }
    }

    #[test]
    fn handed_over_routes_route_as_before() {
        let web = name("web");
        let mut table = RouteTable::default();
        table.add_run(&web, RunId(1), 1001);
        table.on_event(&web, &started(1), &CoreView::default());
        table.add_run(&web, RunId(2), 1002);
        let mut next = RouteTable::default();
        let mut router = next.router("web");
        next.restore(table.forms());
        assert_eq!(router.current(), Some(addr(1001)), "2 is not up yet");
        assert_eq!(next.port(&web, RunId(2)), Some(1002));
        next.on_event(&web, &started(2), &CoreView::default());
        assert_eq!(router.current(), Some(addr(1002)));
    }

    #[tokio::test]
    async fn a_pick_gives_up_after_the_hold() {
        let mut table = RouteTable::default();
        let mut router = table.router("web");
        assert_eq!(router.pick(Duration::from_millis(1)).await, None);
    }
}
