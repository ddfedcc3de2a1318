//! The imperative shell around the supervisor core.
//!
//! One task owns the `Supervisor`. Each `select!` arm only turns a source (reaped child,
//! deadline, control request, Unix signal) into an input; `apply` executes the effects.
//! When nothing happens the task sleeps: the only timer is the core's next deadline.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::bus::{self, EventBus};
use super::core::{Command, Effect, Input, SignalWhom, Supervisor, state_name};
use super::event::{Event, EventKind};
use super::hooks::{HookRunner, Note};
use super::recipe::{Environments, Inherited, Recipe};
use super::service::{
    Cause, Escalation, FailReason, KILL_WAIT, KillScope, RunId, Service, SpawnFailure, State,
};
use super::startup;
use crate::cgroup::{self, CgroupError, Cgroups, ServiceCgroup};
use crate::config;
use crate::control::protocol::{
    ControlError, DaemonStatus, ErrorKind, ExitInfo, HealthStatus, ProcessInfo, Reply, Request,
    ServiceStatus, Status,
};
use crate::control::server::{self, ControlMsg};
use crate::health::probe;
use crate::logs::Capture;
use crate::model::{
    ExitStatus, Plan, Probe, Readiness, ServiceKind, ServiceName, ServiceSpec, defaults,
};
use crate::notify::{self, NotifyMsg, server::Datagram, upstream::Upstream};
use crate::process::{group, limits, reap, spawn};
use crate::quarantine;

/// Reaped pids that matched no service, remembered briefly: a main pid learned from
/// `MAINPID=` or a pidfile may already have been reaped when the core adopts it. Only a
/// reap numbered after the pid was seen alive is its exit (the pid may have been reused).
const UNCLAIMED_KEPT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The cause is the source, shown once by the error report under this line.
    #[error("failed to set up {what}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until a shutdown completes.
pub async fn run(config_path: PathBuf, plan: Plan) -> Result<(), RuntimeError> {
    let setup = |what: &str| {
        let what = what.to_owned();
        move |source| RuntimeError::Setup { what, source }
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(setup("SIGINT handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(setup("SIGHUP handler"))?;
    reap::become_subreaper().map_err(setup("child subreaper"))?;
    let (reaped_tx, mut reaped) = mpsc::unbounded_channel();
    reap::start(reaped_tx).map_err(setup("child reaper"))?;
    let nofile = limits::raise_nofile()
        .inspect_err(|e| tracing::warn!("cannot raise holdfast's RLIMIT_NOFILE: {e}"))
        .ok();
    let daemon = plan.daemon.clone();
    for (what, dir) in [("state", &daemon.state_dir), ("log", &daemon.log_dir)] {
        std::fs::create_dir_all(dir)
            .map_err(setup(&format!("{what} directory {}", dir.display())))?;
    }
    let listener = server::bind(
        &daemon.control,
        daemon.control_group.as_ref().map(|g| g.gid),
    )
    .map_err(setup("control socket"))?;
    let notify_path = notify::server::socket_path(&daemon.state_dir);
    let notify_socket = notify::server::bind(&notify_path).map_err(setup("notify socket"))?;
    let (notes_tx, mut notes) = mpsc::channel(notify::server::QUEUE);
    let senders = notify::server::Senders::default();
    let notify_task = notify::server::serve(notify_socket, senders.clone(), notes_tx);
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
    let upstream = Upstream::from_env();
    let mut upstream_ping = upstream.ping_interval().map(tokio::time::interval);
    let (control_tx, mut control) = mpsc::channel(64);
    let (probe_tx, mut probe_results) = mpsc::unbounded_channel();
    let dev_null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(setup("/dev/null for probe output"))?;
    // Last of the setup steps that can fail: a failed start leaves no cgroup behind.
    let cgroups = setup_cgroups(&daemon.control);
    let events = bus::channel();
    let server = server::serve_with_events(
        listener,
        daemon.control_group.as_ref().map(|g| g.gid),
        control_tx,
        events.clone(),
    );
    tracing::info!(
        config = %config_path.display(),
        control = %daemon.control.display(),
        services = plan.services.len(),
        "holdfast {} up",
        env!("CARGO_PKG_VERSION")
    );

    let now = Instant::now();
    let mut shell = Shell {
        sup: Supervisor::new(plan, now, seed()).with_kill_scope(match cgroups {
            Some(_) => KillScope::Cgroup,
            None => KillScope::ProcessGroup,
        }),
        config_path,
        captures: HashMap::new(),
        groups: HashMap::new(),
        envs: Environments::new(Inherited::capture(&daemon.pass_env)),
        started: now,
        bus: EventBus::new(bus::HISTORY, events),
        hooks: HookRunner::default(),
        probes: HashMap::new(),
        probe_tx,
        dev_null: dev_null.into(),
        mains: HashMap::new(),
        unclaimed: VecDeque::new(),
        announced: HashMap::new(),
        watchers: HashMap::new(),
        inputs_tx,
        notify_path: notify_path.clone(),
        senders,
        upstream,
        cgroups,
        service_cgroups: HashMap::new(),
        lingering: HashMap::new(),
        nofile,
    };
    let mut done = shell.apply(Input::Boot);
    while !done {
        let deadline = [shell.sup.next_deadline(), shell.hooks.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        done = tokio::select! {
            Some(r) = reaped.recv() => {
                let mut done = false;
                for input in shell.on_reaped(r) {
                    done |= shell.apply(input);
                }
                done
            }
            Some(msg) = control.recv() => shell.on_control(msg),
            Some(msg) = probe_results.recv() => match shell.on_probe(msg) {
                Some(input) => shell.apply(input),
                None => false,
            },
            Some(datagram) = notes.recv() => match shell.on_notify(datagram) {
                Some(input) => shell.apply(input),
                None => false,
            },
            Some(input) = inputs.recv() => match shell.vet_watcher_input(input) {
                Some(input) => shell.apply(input),
                None => false,
            },
            () = tick_opt(&mut upstream_ping) => {
                shell.upstream.watchdog();
                false
            }
            () = sleep_until(deadline) => shell.on_deadline(),
            _ = sigterm.recv() => shell.apply(Input::Shutdown),
            _ = sigint.recv() => shell.apply(Input::Shutdown),
            _ = sighup.recv() => {
                match shell.reload(false) {
                    Ok(plan) => tracing::info!("reloaded on SIGHUP: {}", plan.summary()),
                    Err(e) => tracing::error!("reload on SIGHUP rejected, keeping the running config:\n{}", e.message),
                }
                false
            }
        };
    }
    // Hooks fired by the last events (a pager on `stopped`, say) may still finish within
    // their timeout; past it they are killed like any hook. Bounded even for a hook that
    // SIGKILL cannot end, so that shutdown always completes.
    let bound = crate::clock::later(
        shell.hooks.last_deadline().unwrap_or_else(Instant::now),
        KILL_WAIT,
    );
    let drain = async {
        while shell.hooks.running() > 0 {
            let deadline = shell
                .hooks
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(r) = reaped.recv() => { shell.on_reaped(r); }
                () = sleep_until(deadline) => { shell.on_deadline(); }
            }
        }
    };
    if tokio::time::timeout_at(bound.into(), drain).await.is_err() {
        tracing::warn!("hooks survived SIGKILL; exiting without them");
    }
    notify_task.abort();
    let _ = std::fs::remove_file(&notify_path);
    // Pending requests are answered "shutting down"; replies in flight (the one to
    // `shutdown` itself) still reach their clients.
    drop(control);
    // Dropping the shell closes the event bus: `events -f` followers get a last line
    // and end, instead of holding up the close.
    for attached in shell.service_cgroups.values() {
        attached.cgroup.remove();
    }
    if let Some(cgroups) = &shell.cgroups {
        cgroups.remove();
    }
    drop(shell);
    server.close(Duration::from_secs(1)).await;
    server::unlink(&daemon.control);
    tracing::info!("holdfast stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next tick of an optional interval (forever without one).
async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A service's cgroup while the service is active.
struct AttachedCgroup {
    cgroup: ServiceCgroup,
    /// OOM kills counted in the cgroup when the current process was spawned.
    oom_kills: Option<u64>,
    /// The limits written into it (a reload that changes them rewrites them).
    limits: crate::model::CgroupLimits,
}

struct Shell {
    sup: Supervisor,
    config_path: PathBuf,
    /// Log capture per service, opened at its first spawn and kept across restarts.
    captures: HashMap<ServiceName, Capture>,
    /// Process groups that may still have members, keyed by group id (= main pid).
    groups: HashMap<Pid, (ServiceName, RunId)>,
    /// What services inherit, and the `INVOCATION_ID` of each one's current run.
    envs: Environments,
    started: Instant,
    /// Numbered, stamped events: history for `events`, broadcast for `events -f`.
    bus: EventBus,
    /// Running `[service.X.on]` hooks.
    hooks: HookRunner,
    /// Main processes by pid: the exit of one is its run's exit. Starts as the spawned
    /// group leader; `MAINPID=` or a forking service's pidfile can move it.
    mains: HashMap<Pid, (ServiceName, RunId)>,
    /// Recently reaped pids that matched nothing (see [`UNCLAIMED_KEPT`]).
    unclaimed: VecDeque<reap::Reaped>,
    /// Main pids learned from `MAINPID=` or a pidfile, with the reap count when they were
    /// seen alive: a reap of the pid numbered no later was of an earlier process.
    announced: HashMap<Pid, reap::ReapSeq>,
    /// Start-up watchers of starting runs, at most one of each kind per service: a
    /// forking service awaits its readiness condition and its pidfile at once.
    watchers: HashMap<(ServiceName, Watch), (RunId, tokio::task::JoinHandle<()>)>,
    /// Where watchers send their findings.
    inputs_tx: mpsc::UnboundedSender<Input>,
    notify_path: PathBuf,
    /// Who may notify, as far as the notify socket's task needs to know (see
    /// [`Shell::publish_senders`]).
    senders: notify::server::Senders,
    /// holdfast's own sd_notify reports to whoever started it.
    upstream: Upstream,
    /// Exec probes in flight, by pid (also their process group): their exit, reported by
    /// the reaper like any child's, decides the probe's result.
    probes: HashMap<Pid, ExecProbe>,
    /// Results of network probes and timeouts of exec probes, from their tasks.
    probe_tx: mpsc::UnboundedSender<ProbeMsg>,
    /// Output of exec probes goes nowhere (their exit status is the result).
    dev_null: std::os::fd::OwnedFd,
    /// holdfast's parent cgroup; `None` when cgroups are unavailable (process groups
    /// only, and no cgroup limits can be enforced).
    cgroups: Option<Cgroups>,
    /// The cgroup of each active service. It lives as long as the service is active, so
    /// an automatic restart reuses it (no mkdir/rmdir per respawn).
    service_cgroups: HashMap<ServiceName, AttachedCgroup>,
    /// Runs whose main process is gone while other processes remained: every reap
    /// re-checks them, since a process that left the process groups (setsid) is only
    /// found through the cgroup.
    lingering: HashMap<ServiceName, RunId>,
    /// holdfast's own RLIMIT_NOFILE before raising it, restored in children.
    nofile: Option<limits::NofileBaseline>,
}

/// What a start-up watcher waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Watch {
    /// The readiness condition (`ready = tcp | http | fd`).
    Readiness,
    /// The pidfile of a forking service naming its daemon.
    Pidfile,
}

/// An exec probe in flight.
struct ExecProbe {
    service: ServiceName,
    run: RunId,
    deadline: probe::ExecDeadline,
}

/// What probe tasks report to the runtime loop.
#[derive(Debug)]
enum ProbeMsg {
    /// A network probe finished (or timed out).
    Done(Input),
    /// An exec probe's timeout passed; if it is not reaped yet, it is killed.
    ExecTimedOut { pid: Pid, timeout: Duration },
}

impl Shell {
    /// Feeds one input to the core and executes the effects, including the inputs they
    /// produce (a spawn's result). Returns true once the shutdown is complete.
    fn apply(&mut self, input: Input) -> bool {
        let effects = self.sup.handle(input, Instant::now());
        self.execute(effects)
    }

    fn execute(&mut self, effects: Vec<Effect>) -> bool {
        let mut queue = VecDeque::from(effects);
        let mut exit = false;
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Spawn { service, run, spec } => {
                    let input = self.spawn(service, run, &spec);
                    queue.extend(self.sup.handle(input, Instant::now()));
                }
                Effect::Signal {
                    service,
                    run,
                    group: pgid,
                    signal,
                } => {
                    // The service's cgroup holds every process of the run, also those
                    // that left its process groups.
                    if let Some(attached) = self.service_cgroups.get(&service) {
                        if attached.cgroup.signal(signal) > 0 {
                            continue;
                        }
                    }
                    // The run's own group, plus any group its main process moved to (a
                    // daemon that called setsid after forking).
                    let mut pgids = vec![pgid];
                    pgids.extend(
                        self.groups
                            .iter()
                            .filter(|(g, (_, r))| *r == run && **g != pgid)
                            .map(|(g, _)| *g),
                    );
                    for pgid in pgids {
                        if let Err(e) = group::signal_group(pgid, signal) {
                            tracing::warn!(
                                "{service}: failed to send {signal} to process group {pgid}: {e}"
                            );
                        }
                    }
                }
                Effect::SignalMain {
                    service,
                    pid,
                    signal,
                    ..
                } => {
                    if let Err(e) = self.signal_main(&service, pid, signal) {
                        tracing::warn!("{service}: {e}");
                    }
                }
                Effect::Emit(event) => self.publish(&event),
                Effect::Remove { service } => {
                    self.captures.remove(&service);
                    self.forget_cgroup(&service);
                }
                Effect::StartAgain { .. } => unreachable!("consumed by the core"),
                Effect::Exit => exit = true,
                Effect::StartProbe { service, run, spec } => {
                    if let Some(input) = self.start_probe(service, run, &spec) {
                        queue.extend(self.sup.handle(input, Instant::now()));
                    }
                }
                Effect::Quarantine {
                    service,
                    status,
                    reason,
                } => self.quarantine(&service, status, reason),
                Effect::MainPid {
                    service,
                    run,
                    pid,
                    alive_at,
                } => {
                    if let Some(input) = self.main_pid(service, run, pid, alive_at) {
                        queue.extend(self.sup.handle(input, Instant::now()));
                    }
                }
                Effect::ReadPidfile { service, run, path } => {
                    self.read_pidfile(service, run, path);
                }
            }
        }
        self.drop_stale_watchers();
        self.report_upstream();
        exit
    }

    /// `pid` is now the main process of `run`. Returns its exit if it was already reaped:
    /// only a reap after `alive_at` can be, an earlier one was of an earlier process.
    fn main_pid(
        &mut self,
        service: ServiceName,
        run: RunId,
        pid: Pid,
        alive_at: reap::ReapSeq,
    ) -> Option<Input> {
        self.mains.retain(|_, (_, r)| *r != run);
        let mains = &self.mains;
        self.announced.retain(|p, _| mains.contains_key(p));
        let exit = self
            .unclaimed
            .iter()
            .position(|r| r.pid == pid && r.seq > alive_at);
        if let Some(i) = exit {
            let reaped = self.unclaimed.remove(i).expect("position is in range");
            return Some(self.main_exited(service, run, reaped.status));
        }
        self.announced.insert(pid, alive_at);
        if let Ok(stat) = crate::process::proc_stat(pid) {
            self.groups
                .entry(stat.pgid)
                .or_insert_with(|| (service.clone(), run));
        }
        self.mains.insert(pid, (service, run));
        self.publish_senders();
        None
    }

    /// Tells the notify socket's task the groups and main pids of services, so that it
    /// drops everyone else's datagrams. Called wherever one is added (removals may wait:
    /// a stale entry only lets a datagram through to `on_notify`).
    fn publish_senders(&self) {
        let ids = self.groups.keys().chain(self.mains.keys()).copied();
        self.senders.set(ids);
    }

    fn read_pidfile(&mut self, service: ServiceName, run: RunId, path: PathBuf) {
        let Some(leader) = self.sup.service(&service).and_then(Service::group) else {
            return;
        };
        let target = self.target(&service, run);
        let lineage = startup::Lineage {
            leader,
            me: nix::unistd::getpid(),
            cgroup: self
                .service_cgroups
                .get(&service)
                .map(|attached| attached.cgroup.clone()),
        };
        let task = startup::pidfile(target, path, lineage);
        self.watch(service, Watch::Pidfile, run, task);
    }

    fn target(&self, service: &ServiceName, run: RunId) -> startup::Target {
        startup::Target {
            service: service.clone(),
            run,
            tx: self.inputs_tx.clone(),
        }
    }

    /// Keeps `task` as the `kind` watcher of `run`, replacing one of an earlier run.
    fn watch(
        &mut self,
        service: ServiceName,
        kind: Watch,
        run: RunId,
        task: tokio::task::JoinHandle<()>,
    ) {
        if let Some((_, old)) = self.watchers.insert((service, kind), (run, task)) {
            old.abort();
        }
    }

    /// Aborts the watchers of runs that are no longer starting.
    fn drop_stale_watchers(&mut self) {
        let sup = &self.sup;
        self.watchers.retain(|(name, _), (run, task)| {
            let starting = sup.service(name).is_some_and(|s| {
                matches!(s.state(), State::Starting { run: r, .. } if r == run)
                    || matches!(s.state(), State::Launching { run: r } if r == run)
            });
            if !starting || task.is_finished() {
                task.abort();
            }
            starting && !task.is_finished()
        });
    }

    /// Whether any process group of `run` still has members (forgetting empty ones), or
    /// the service's cgroup does.
    fn run_alive(&mut self, service: &ServiceName, run: RunId) -> bool {
        self.groups
            .retain(|pgid, (_, r)| *r != run || group::group_alive(*pgid));
        self.groups.values().any(|(_, r)| *r == run)
            || self
                .service_cgroups
                .get(service)
                .is_some_and(|attached| !attached.cgroup.is_empty())
    }

    /// The main process of `run` ended with `status`: the exit input, with an OOM kill
    /// recognised and the run remembered as lingering while processes remain.
    fn main_exited(&mut self, service: ServiceName, run: RunId, status: ExitStatus) -> Input {
        // Its last words (an unfinished line) go before the note of its exit.
        if let Some(capture) = self.captures.get(&service) {
            capture.end_run();
        }
        let group_alive = self.run_alive(&service, run);
        let status = self.classify(&service, status);
        if group_alive {
            self.lingering.insert(service.clone(), run);
        }
        Input::Exited {
            service,
            run,
            status,
            group_alive,
        }
    }

    /// A SIGKILL of the main process that the cgroup's OOM counter accounts for.
    fn classify(&self, service: &ServiceName, status: ExitStatus) -> ExitStatus {
        let ExitStatus::Signaled {
            signal: nix::sys::signal::Signal::SIGKILL,
            ..
        } = status
        else {
            return status;
        };
        match self.service_cgroups.get(service) {
            Some(AttachedCgroup {
                cgroup,
                oom_kills: Some(before),
                ..
            }) if cgroup.oom_kills().is_some_and(|n| n > *before) => ExitStatus::OomKilled,
            _ => status,
        }
    }

    /// The service became inactive (stopped, failed, removed): remove its cgroup.
    fn forget_cgroup(&mut self, service: &ServiceName) {
        if let Some(attached) = self.service_cgroups.remove(service) {
            attached.cgroup.remove();
        }
    }

    /// The cgroup for the next process of `name`, with the current OOM-kill count. An
    /// automatic restart finds the service's cgroup still there (empty) and reuses it.
    fn prepare_cgroup(&mut self, name: &ServiceName, spec: &ServiceSpec) -> Result<(), String> {
        let Some(cgroups) = &self.cgroups else {
            if spec.cgroup != crate::model::CgroupLimits::default() {
                return Err(
                    "cgroup limits are configured but cgroups are unavailable (see `holdfast doctor`)"
                        .to_owned(),
                );
            }
            return Ok(());
        };
        if let Some(attached) = self.service_cgroups.get_mut(name) {
            if attached.limits == spec.cgroup {
                attached.oom_kills = attached.cgroup.oom_kills();
                return Ok(());
            }
        }
        let cgroup = cgroups
            .service(name.as_str(), &spec.cgroup)
            .map_err(|e| e.to_string())?;
        let attached = AttachedCgroup {
            oom_kills: cgroup.oom_kills(),
            cgroup,
            limits: spec.cgroup,
        };
        self.service_cgroups.insert(name.clone(), attached);
        Ok(())
    }

    /// A notification: from which service's run (by the sender's process group), and
    /// only a `MAINPID=` naming a process of that same run is kept.
    fn on_notify(&mut self, datagram: Datagram) -> Option<Input> {
        let owner = datagram
            .pgid
            .and_then(|pgid| self.groups.get(&pgid))
            .or_else(|| self.mains.get(&datagram.pid))
            .cloned()
            .or_else(|| self.unadopted_daemon_of(datagram.pid));
        let Some((service, run)) = owner else {
            tracing::debug!(
                pid = %datagram.pid,
                "ignored a notification from a process of no service"
            );
            return None;
        };
        // Before the liveness check of `MAINPID=` (see `ReapSeq::latest`).
        let alive_at = reap::ReapSeq::latest();
        let mut msgs = notify::parse(&datagram.text);
        msgs.retain(|msg| match msg {
            NotifyMsg::MainPid(pid) => {
                let ok = crate::process::proc_stat(*pid).is_ok_and(|stat| {
                    !stat.is_zombie() && self.groups.get(&stat.pgid).is_some_and(|(_, r)| *r == run)
                });
                if !ok {
                    tracing::warn!(
                        "{service}: ignored MAINPID={pid}: not a process of the service"
                    );
                }
                ok
            }
            _ => true,
        });
        if msgs.is_empty() {
            return None;
        }
        Some(Input::Notify {
            service,
            run,
            msgs,
            alive_at,
        })
    }

    /// A watcher's finding, unless it would give one service another's process: a
    /// pidfile (without cgroups, ownership is judged by parentage, and every main process
    /// is holdfast's child) must not name the main process of another run.
    fn vet_watcher_input(&self, input: Input) -> Option<Input> {
        if let Input::Adopted {
            service, run, pid, ..
        } = &input
        {
            if let Some((owner, owner_run)) = self.mains.get(pid) {
                if (owner, owner_run) != (service, run) {
                    tracing::warn!(
                        "{service}: ignored pidfile naming pid {pid}: it is the main process of {owner}"
                    );
                    return None;
                }
            }
        }
        Some(input)
    }

    /// The starting forking service whose cgroup holds `pid` while its pidfile has not
    /// named a daemon yet: the daemon left the spawned process's group and session, so
    /// only the cgroup knows it is the service's, and it may say `READY=1` before the
    /// pidfile is read. (Without cgroups such a notification cannot be attributed.)
    fn unadopted_daemon_of(&self, pid: Pid) -> Option<(ServiceName, RunId)> {
        self.sup.services().find_map(|s| {
            let State::Starting { run, .. } = s.state() else {
                return None;
            };
            let forking = matches!(s.spec().kind, ServiceKind::Forking { .. });
            if !forking || s.facts().main_pid.is_some() {
                return None;
            }
            let attached = self.service_cgroups.get(s.name())?;
            attached
                .cgroup
                .pids()
                .contains(&pid)
                .then(|| (s.name().clone(), *run))
        })
    }

    /// holdfast's own `READY=1` (once every autostart service is up or has given up),
    /// `STATUS=` summary and `STOPPING=1`, for a service manager that started holdfast.
    fn report_upstream(&mut self) {
        if self.sup.is_shutting_down() {
            self.upstream.stopping();
            return;
        }
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut settled = true;
        let mut total = 0;
        for s in self.sup.services() {
            total += 1;
            *counts.entry(state_name(s.state()).as_str()).or_default() += 1;
            if s.spec().autostart && s.is_coming_up() {
                settled = false;
            }
        }
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let summary = format!("{total} services: {}", parts.join(", "));
        self.upstream.status(summary);
        if settled {
            self.upstream.ready();
        }
    }

    fn spawn(&mut self, service: ServiceName, run: RunId, spec: &ServiceSpec) -> Input {
        match self.try_spawn(&service, spec) {
            Ok((pid, ready_pipe)) => {
                self.groups.insert(pid, (service.clone(), run));
                self.mains.insert(pid, (service.clone(), run));
                self.publish_senders();
                let target = self.target(&service, run);
                let watcher = match &spec.ready {
                    Readiness::Tcp(addr) => Some(startup::tcp(target, *addr)),
                    Readiness::Http(url) => Some(startup::http(target, url.clone())),
                    Readiness::Fd(_) => ready_pipe.map(|pipe| startup::fd(target, pipe)),
                    _ => None,
                };
                if let Some(task) = watcher {
                    self.watch(service.clone(), Watch::Readiness, run, task);
                }
                Input::Spawned { service, run, pid }
            }
            Err(error) => Input::SpawnFailed {
                service,
                run,
                error,
            },
        }
    }

    /// Spawns `spec`; returns the pid and, for `ready = { fd = N }`, the read end of the
    /// notification pipe whose write end the child has as fd N.
    fn try_spawn(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<(Pid, Option<std::os::fd::OwnedFd>), SpawnFailure> {
        // Also a run that fails to spawn is a run of its own (its hooks get its id).
        self.envs.begin_run(name);
        self.prepare_cgroup(name, spec)
            .map_err(SpawnFailure::Service)?;
        let log_dir = &self.sup.plan().daemon.log_dir;
        let capture = match self.captures.entry(name.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => {
                // Whatever the previous run's leftover processes wrote is its output, not
                // this run's.
                let capture = e.into_mut();
                capture.end_run();
                capture
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Capture::open(log_dir, name, spec.log).map_err(|e| {
                    let message = format!("cannot capture output in {}: {e}", log_dir.display());
                    io_failure(&e, message)
                })?)
            }
        };
        capture.set_spec(spec.log);
        let Recipe { mut env, rlimits } = self.recipe(spec);
        if spec.ready.needs_notify_socket() || spec.watchdog.is_some() {
            env.push((
                "NOTIFY_SOCKET".to_owned(),
                self.notify_path.display().to_string(),
            ));
        }
        if let Some(watchdog) = spec.watchdog {
            // Without WATCHDOG_PID, which systemd allows: the child's pid is only known
            // after fork, and sd_watchdog_enabled() accepts a missing one.
            env.push(("WATCHDOG_USEC".to_owned(), watchdog.as_micros().to_string()));
        }
        if let ServiceKind::Forking { pidfile } = &spec.kind {
            // A pidfile left by an earlier run would name a dead (or reused) pid.
            let _ = std::fs::remove_file(pidfile);
        }
        let ready_pipe = match spec.ready {
            Readiness::Fd(fd) => {
                let (read, write) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                        let message = format!("cannot create the readiness pipe: {e}");
                        spawn_failure(spawn::is_resource_shortage(e), message)
                    })?;
                Some((read, write, fd))
            }
            _ => None,
        };
        let extra_fds: Vec<_> = ready_pipe
            .iter()
            .map(|(_, write, fd)| (std::os::fd::AsFd::as_fd(write), *fd))
            .collect();
        let privileges = &spec.privileges;
        let procs = match self.service_cgroups.get(name) {
            Some(attached) => attached.cgroup.open_procs().map_err(|e| match &e {
                CgroupError::Io { source, .. } => io_failure(source, e.to_string()),
                _ => SpawnFailure::Service(e.to_string()),
            })?,
            None => Vec::new(),
        };
        let procs: Vec<std::os::fd::BorrowedFd<'_>> = procs.iter().map(AsFd::as_fd).collect();
        let capture = self.captures.get(name).expect("opened above");
        let request = spawn::SpawnRequest {
            program: &spec.command[0],
            args: &spec.command[1..],
            env: &env,
            working_dir: spec.working_dir.as_deref(),
            stdout: capture.stdout(),
            stderr: capture.stderr(),
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &extra_fds,
            setup: spawn::ProcessSetup {
                cgroup_procs: &procs,
                rlimits: &rlimits,
                cpu_affinity: privileges.cpu_affinity.as_deref(),
                oom_score_adjust: privileges.oom_score_adjust,
                umask: privileges.umask,
                credentials: privileges.credentials.as_ref(),
                capabilities: privileges.capabilities.as_deref(),
                no_new_privs: privileges.no_new_privs,
            },
        };
        let pid = {
            // The child may notify before `spawn` returns its pid.
            let _spawning = self.senders.spawning();
            let pid = spawn::spawn(&request)
                .map(|spawned| spawned.pid)
                .map_err(|e| spawn_failure(e.is_holdfast_resource_shortage(), e.to_string()))?;
            self.senders.admit(pid);
            pid
        };
        // Our copy of the write end goes, so the reader sees EOF once the service closes
        // its copy without writing a newline.
        Ok((pid, ready_pipe.map(|(read, _, _)| read)))
    }

    /// A deadline passed: a hook's or the core's (which one is not tracked, both look).
    fn on_deadline(&mut self) -> bool {
        for note in self.hooks.expire(Instant::now()) {
            self.note(note);
        }
        self.apply(Input::Tick)
    }

    /// Starts one health probe. Network probes run in a task that reports back through
    /// `probe_tx`; exec probes are children like services, so their result arrives from
    /// the reaper. Returns the result at once when the probe could not even start.
    fn start_probe(
        &mut self,
        service: ServiceName,
        run: RunId,
        spec: &ServiceSpec,
    ) -> Option<Input> {
        let health = spec
            .health
            .as_ref()
            .expect("probes are only started for services with health");
        let timeout = health.timeout;
        let Probe::Exec { command } = &health.probe else {
            let probe = health.probe.clone();
            let tx = self.probe_tx.clone();
            tokio::spawn(async move {
                let outcome = probe::run(&probe, timeout).await;
                // The loop may be gone (shutdown): nobody needs the result then.
                let _ = tx.send(ProbeMsg::Done(Input::ProbeResult {
                    service,
                    run,
                    outcome,
                }));
            });
            return None;
        };
        let recipe = self.recipe(spec);
        let request = spawn::SpawnRequest {
            program: &command[0],
            args: &command[1..],
            env: &recipe.env,
            working_dir: spec.working_dir.as_deref(),
            stdout: self.dev_null.as_fd(),
            stderr: self.dev_null.as_fd(),
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &[],
            setup: recipe.helper_setup(spec),
        };
        match spawn::spawn(&request) {
            Ok(spawned) => {
                let deadline = probe::ExecDeadline::NotReached;
                let exec = ExecProbe {
                    service,
                    run,
                    deadline,
                };
                self.probes.insert(spawned.pid, exec);
                let tx = self.probe_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = tx.send(ProbeMsg::ExecTimedOut {
                        pid: spawned.pid,
                        timeout,
                    });
                });
                None
            }
            Err(e) => Some(Input::ProbeResult {
                service,
                run,
                outcome: crate::health::ProbeOutcome::Failure(format!(
                    "failed to spawn probe command: {e}"
                )),
            }),
        }
    }

    fn on_probe(&mut self, msg: ProbeMsg) -> Option<Input> {
        match msg {
            ProbeMsg::Done(input) => Some(input),
            ProbeMsg::ExecTimedOut { pid, timeout } => {
                // Not in the map: its exit was handled already. In the map, it may still
                // have been reaped just now (the report is on its way): the group is
                // only killed while the reaper is held off from freeing the pid, and
                // the result is decided when the reap arrives.
                let exec = self.probes.get_mut(&pid)?;
                let kill = || group::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                match reap::while_unreaped(pid, kill) {
                    Some(Ok(_)) => exec.deadline = probe::ExecDeadline::KilledAfter(timeout),
                    Some(Err(e)) => tracing::warn!(
                        "{}: failed to kill timed-out probe {pid}: {e}",
                        exec.service
                    ),
                    None => {}
                }
                None
            }
        }
    }

    /// Appends the quarantine record (with the service's last log lines) to the queue.
    fn quarantine(&mut self, service: &ServiceName, status: ExitStatus, reason: String) {
        let log = self
            .captures
            .get(service)
            .map(|c| c.recent(defaults::QUARANTINE_LOG_LINES))
            .unwrap_or_default();
        let entry = quarantine::Entry::Quarantined {
            time: quarantine::now(),
            service: service.clone(),
            code: status.code(),
            signal: status.signal().map(|s| s.as_str().to_owned()),
            reason,
            log,
        };
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        match quarantine::append(&path, &entry) {
            Ok(()) => tracing::warn!(
                "{service}: quarantined, record appended to {}",
                path.display()
            ),
            Err(e) => tracing::error!(
                "{service}: quarantined, but failed to append the record to {}: {e}",
                path.display()
            ),
        }
    }

    fn quarantine_release(
        &mut self,
        name: &ServiceName,
        now: Instant,
    ) -> (Result<Reply, ControlError>, bool) {
        if self.sup.service(name).is_none() {
            return (Err(super::core::unknown_service(name)), false);
        }
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        let internal = |e: std::io::Error| ControlError {
            kind: ErrorKind::Internal,
            message: format!(
                "failed to update the quarantine queue {}: {e}",
                path.display()
            ),
        };
        match quarantine::is_pending(&path, name) {
            Ok(true) => {}
            Ok(false) => {
                let error = ControlError {
                    kind: ErrorKind::BadRequest,
                    message: format!("{name} has no pending quarantine record"),
                };
                return (Err(error), false);
            }
            Err(e) => return (Err(internal(e)), false),
        }
        let entry = quarantine::Entry::Released {
            time: quarantine::now(),
            service: name.clone(),
        };
        if let Err(e) = quarantine::append(&path, &entry) {
            return (Err(internal(e)), false);
        }
        let (reply, done) = self.command(Command::Start, name, now);
        let reply = reply.map(|r| match r {
            Reply::Accepted { message } => Reply::Accepted {
                message: format!("released {name} from quarantine; {message}"),
            },
            other => other,
        });
        (reply, done)
    }

    /// A start by hand of a quarantined service is its release: the queue records it
    /// (as `quarantine release` does) and the answer says so.
    fn start(&mut self, name: &ServiceName, now: Instant) -> (Result<Reply, ControlError>, bool) {
        let quarantined = self.sup.service(name).is_some_and(|s| {
            matches!(
                s.state(),
                State::Failed {
                    reason: FailReason::Quarantined(_)
                }
            )
        });
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        // A queue that cannot be read is reported by the release, not skipped.
        if quarantined && !matches!(quarantine::is_pending(&path, name), Ok(false)) {
            return self.quarantine_release(name, now);
        }
        self.command(Command::Start, name, now)
    }

    /// `restart`: of a service that is not running, a start (which also releases a
    /// quarantined one, so its queue record does not stay pending).
    fn restart(&mut self, name: &ServiceName, now: Instant) -> (Result<Reply, ControlError>, bool) {
        let runs = self.sup.service(name).is_some_and(Service::is_active);
        if runs {
            self.command(Command::Restart, name, now)
        } else {
            self.start(name, now)
        }
    }

    /// `holdfast signal`: the core picks the target from the current run; the main
    /// process is only signalled while it is not reaped.
    fn signal(
        &mut self,
        name: &ServiceName,
        signal: &str,
        all: bool,
    ) -> Result<Reply, ControlError> {
        let signal = config::value::parse_signal_arg(signal).map_err(|e| ControlError {
            kind: ErrorKind::BadRequest,
            message: format!("{}: {}", e.label, e.help),
        })?;
        let whom = if all {
            SignalWhom::All
        } else {
            SignalWhom::Main
        };
        let message = match self.sup.signal(name, signal, whom)? {
            Effect::SignalMain { pid, .. } => {
                self.signal_main(name, pid, signal)
                    .map_err(|message| ControlError {
                        kind: ErrorKind::BadRequest,
                        message,
                    })?;
                format!("sent {} to {name} (main pid {pid})", signal.as_str())
            }
            effect => {
                self.execute(vec![effect]);
                format!("sent {} to every process of {name}", signal.as_str())
            }
        };
        tracing::info!("{message}");
        if let Some(capture) = self.captures.get(name) {
            capture.note(&message);
        }
        Ok(Reply::Accepted { message })
    }

    /// Sends `signal` to main pid `pid` of `service`. The spawned process is our child:
    /// it is signalled only while not reaped, so a recycled pid is never hit. A main pid
    /// named by `MAINPID=` or a pidfile may be no child of ours (then no wait can hold
    /// its pid): it is signalled as the pid the core holds, which leaves the narrow
    /// window between that process's exit and the core learning of it.
    fn signal_main(
        &self,
        service: &ServiceName,
        pid: Pid,
        signal: nix::sys::signal::Signal,
    ) -> Result<(), String> {
        let send = || nix::sys::signal::kill(pid, signal);
        let leader = self.sup.service(service).and_then(Service::group) == Some(pid);
        let sent = match reap::while_unreaped(pid, send) {
            Some(sent) => sent,
            None if leader => {
                return Err(format!(
                    "cannot send {} to {service}: its main pid {pid} already exited",
                    signal.as_str()
                ));
            }
            None => send(),
        };
        sent.map_err(|e| {
            format!(
                "failed to send {} to {service} (main pid {pid}): {e}",
                signal.as_str()
            )
        })
    }

    /// Environment and limits of every process of `spec`: main, probes and hooks.
    fn recipe(&self, spec: &ServiceSpec) -> Recipe {
        self.envs.recipe(spec, self.nofile)
    }

    /// Turns a reaped process into an input: the exit of a service's main process, or the
    /// last member of a service's process group going away. A hook's exit is logged.
    fn on_reaped(&mut self, reaped: reap::Reaped) -> Vec<Input> {
        if let Some(event) = self.hooks.on_reaped(&reaped) {
            self.publish(&event);
            return Vec::new();
        }
        if let Some(exec) = self.probes.remove(&reaped.pid) {
            return vec![Input::ProbeResult {
                service: exec.service,
                run: exec.run,
                outcome: probe::exec_verdict(exec.deadline, reaped.status),
            }];
        }
        // A reap no later than an announced main pid was seen alive is of an earlier
        // process that had the same pid.
        let earlier = self
            .announced
            .get(&reaped.pid)
            .is_some_and(|alive_at| reaped.seq <= *alive_at);
        if !earlier {
            if let Some((service, run)) = self.mains.remove(&reaped.pid) {
                self.announced.remove(&reaped.pid);
                return vec![self.main_exited(service, run, reaped.status)];
            }
        }
        // The run of this process's group, and every run still waiting for its last
        // process (which may be in the cgroup only): which of them are empty now?
        let mut runs: Vec<(ServiceName, RunId)> = self
            .lingering
            .iter()
            .map(|(service, run)| (service.clone(), *run))
            .collect();
        match reaped.pgid.and_then(|pgid| self.groups.get(&pgid)).cloned() {
            Some(owner) if !runs.contains(&owner) => runs.push(owner),
            Some(_) => {}
            None if runs.is_empty() => {
                tracing::debug!(
                    pid = %reaped.pid,
                    "reaped a process claimed by nothing ({})",
                    reaped.status
                );
                if self.unclaimed.len() == UNCLAIMED_KEPT {
                    self.unclaimed.pop_front();
                }
                self.unclaimed.push_back(reaped);
                return Vec::new();
            }
            None => {}
        }
        let mut inputs = Vec::new();
        for (service, run) in runs {
            // The main process (wherever it is) still runs, or another group of the run
            // or its cgroup still has members: not empty yet.
            if self.run_alive(&service, run) || self.mains.values().any(|(_, r)| *r == run) {
                continue;
            }
            if self.lingering.get(&service) == Some(&run) {
                self.lingering.remove(&service);
            }
            inputs.push(Input::GroupEmpty { service, run });
        }
        inputs
    }

    /// Answers a control request after applying its transition. Returns true once the
    /// shutdown is complete.
    fn on_control(&mut self, msg: ControlMsg) -> bool {
        let now = Instant::now();
        let (reply, done) = match msg.request {
            Request::Status => (Ok(Reply::Status(self.status(now))), false),
            Request::Start { name } => self.start(&name, now),
            Request::Stop { name } => self.command(Command::Stop, &name, now),
            Request::Restart { name } => self.restart(&name, now),
            Request::Reload { dry_run } => (self.reload(dry_run).map(Reply::Reload), false),
            Request::Events { service, since, .. } => (self.events(service, since), false),
            Request::Shutdown => {
                let done = self.apply(Input::Shutdown);
                let message = "shutting down: stopping all services".to_owned();
                (Ok(Reply::Accepted { message }), done)
            }
            Request::QuarantineList => {
                let path = quarantine::path(&self.sup.plan().daemon.state_dir);
                let reply = quarantine::records(&path)
                    .map(|records| Reply::Quarantine { records })
                    .map_err(|e| ControlError {
                        kind: ErrorKind::Internal,
                        message: format!(
                            "failed to read the quarantine queue {}: {e}",
                            path.display()
                        ),
                    });
                (reply, false)
            }
            Request::QuarantineRelease { name } => self.quarantine_release(&name, now),
            Request::Signal { name, signal, all } => (self.signal(&name, &signal, all), false),
            Request::ResetFailed { names } => {
                let (result, effects) = self.sup.reset_failed(&names, now);
                let done = self.execute(effects);
                (result.map(|message| Reply::Accepted { message }), done)
            }
            // Read off this task by the control server, which only asks for `status`.
            Request::Logs { .. } => (
                Err(ControlError {
                    kind: ErrorKind::Internal,
                    message: "logs are served by the control server".to_owned(),
                }),
                false,
            ),
            // The control server answers it, from the requests inside and the event bus.
            Request::Wait { .. } => {
                let error = ControlError {
                    kind: ErrorKind::BadRequest,
                    message: "wait is answered by the control server".to_owned(),
                };
                (Err(error), false)
            }
        };
        // The requester may have given up waiting; the transition stands regardless.
        let _ = msg.reply.send(reply);
        done
    }

    fn command(
        &mut self,
        command: Command,
        name: &ServiceName,
        now: Instant,
    ) -> (Result<Reply, ControlError>, bool) {
        let (result, effects) = self.sup.command(command, name, now);
        let done = self.execute(effects);
        (result.map(|message| Reply::Accepted { message }), done)
    }

    /// Re-reads the config file; an invalid one changes nothing.
    fn reload(
        &mut self,
        dry_run: bool,
    ) -> Result<crate::control::protocol::ReloadPlan, ControlError> {
        if self.sup.is_shutting_down() {
            return Err(ControlError {
                kind: ErrorKind::ShuttingDown,
                message: "holdfast is shutting down: nothing to reload".to_owned(),
            });
        }
        let plan = config::load(&self.config_path).map_err(|e| ControlError {
            kind: ErrorKind::InvalidConfig,
            message: e.render_plain(),
        })?;
        if dry_run {
            return Ok(super::reload::diff(self.sup.plan(), &plan, true));
        }
        let (diff, effects) = self.sup.reload(plan, Instant::now());
        self.execute(effects);
        Ok(diff)
    }

    fn publish(&mut self, event: &Event) {
        if let (Some(service), EventKind::Stopped | EventKind::GaveUp { .. }) =
            (&event.service, &event.kind)
        {
            self.forget_cgroup(service);
        }
        if super::hooks::is_warning(&event.kind) {
            tracing::warn!("{event}");
        } else {
            tracing::info!("{event}");
        }
        if let Some(capture) = event.service.as_ref().and_then(|s| self.captures.get(s)) {
            capture.note(&event.to_string());
        }
        let record = self.bus.publish(event, SystemTime::now());
        // Hooks come from the current plan (a reload changes them without a restart); a
        // removed service has none left.
        let spec = record
            .service
            .as_ref()
            .and_then(|s| self.sup.plan().services.get(s));
        if let Some(spec) = spec {
            let capture = self.captures.get(&spec.name);
            let recipe = self.recipe(spec);
            let note = self
                .hooks
                .fire(&record, spec, &recipe, capture, Instant::now());
            match note {
                Some(Ok(note)) => self.note(note),
                Some(Err(failed)) => self.publish(&failed),
                None => {}
            }
        }
    }

    /// Recent events. A name that is neither configured nor in the history is an error,
    /// so a typo does not look like a quiet service.
    fn events(
        &self,
        service: Option<ServiceName>,
        since: Option<u64>,
    ) -> Result<Reply, ControlError> {
        let events = self.bus.recent(service.as_ref(), since);
        if let Some(name) = service {
            if events.is_empty() && self.sup.service(&name).is_none() {
                return Err(ControlError {
                    kind: ErrorKind::UnknownService,
                    message: format!("no service named \"{name}\""),
                });
            }
        }
        Ok(Reply::Events { events })
    }

    /// Logs a hook's news in holdfast's log and the service's.
    fn note(&self, note: Note) {
        if note.warning {
            tracing::warn!("{}: {}", note.service, note.text);
        } else {
            tracing::info!("{}: {}", note.service, note.text);
        }
        if let Some(capture) = self.captures.get(&note.service) {
            capture.note(&format!("{}: {}", note.service, note.text));
        }
    }

    fn status(&self, now: Instant) -> Status {
        let services = self
            .sup
            .services()
            .map(|s| self.service_status(s, now))
            .collect();
        Status {
            daemon: DaemonStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                config: self.config_path.display().to_string(),
                uptime_ms: millis(now.duration_since(self.started)),
                shutting_down: self.sup.is_shutting_down(),
            },
            services,
        }
    }

    fn service_status(&self, s: &Service, now: Instant) -> ServiceStatus {
        // The cgroup lists the run's processes (also those that left its group) without
        // a scan of all of /proc, which would block this task with many services stopping.
        let holding_up = match (s.state(), self.service_cgroups.get(s.name())) {
            (State::Stopping { .. }, Some(attached)) => group::members(attached.cgroup.pids()),
            (State::Stopping { pid, .. }, None) => group::group_members(*pid),
            _ => Vec::new(),
        }
        .into_iter()
        .map(|member| ProcessInfo {
            pid: member.pid.as_raw().unsigned_abs(),
            command: member.command,
        })
        .collect();
        let cgroup = self
            .service_cgroups
            .get(s.name())
            .map(|attached| &attached.cgroup);
        ServiceStatus {
            name: s.name().clone(),
            group: s.spec().group.clone(),
            state: state_name(s.state()),
            pid: s.pid().map(|p| p.as_raw() as u32),
            since_ms: millis(now.duration_since(s.since())),
            uptime_ms: s.spawned_at().map(|at| millis(now.duration_since(at))),
            restarts: s.restarts(),
            last_exit: s.last_exit().map(|(status, at)| ExitInfo {
                description: status.to_string(),
                code: status.code(),
                signal: status.signal().map(|sig| sig.as_str().to_owned()),
                ago_ms: millis(now.duration_since(at)),
            }),
            reason: self.reason(s, now),
            status_text: s.status_text().map(str::to_owned),
            holding_up,
            log: log_path(&self.sup.plan().daemon.log_dir, s.name()),
            health: s.health().map(|monitor| {
                let decay = monitor.decay();
                let (degraded, unhealthy) = decay.window_counts(now);
                HealthStatus {
                    state: decay.state().to_string(),
                    failures_degraded_window: degraded,
                    failures_unhealthy_window: unhealthy,
                    successes: decay.successes(),
                    probes: decay.probes(),
                    in_grace: decay.in_grace(now),
                    last_error: decay.last_error().map(str::to_owned),
                }
            }),
            env_overrides: s.env_overrides().clone(),
            // Two small kernel-generated files per service, read here on the supervisor
            // task: microseconds, and only when a client asks for status.
            memory_bytes: cgroup.and_then(ServiceCgroup::memory_bytes),
            tasks: cgroup.and_then(ServiceCgroup::tasks),
            last_restart_reason: s.last_restart().map(Cause::restart_reason),
        }
    }

    fn reason(&self, s: &Service, now: Instant) -> Option<String> {
        let secs = |d: Duration| humantime::format_duration(Duration::from_millis(millis(d)));
        match s.state() {
            State::Failed { reason } => Some(reason.to_string()),
            State::Backoff { until } => {
                let next = format!(
                    "restarting in {}",
                    secs(until.saturating_duration_since(now))
                );
                Some(match s.last_cause() {
                    Some(cause @ (Cause::NotReady { .. } | Cause::WatchdogTimeout { .. })) => {
                        format!("{next} after {cause}")
                    }
                    _ => next,
                })
            }
            State::Starting { .. } => s.start_wait(now),
            State::Waiting => {
                // Each dependency with its own state and reason, so the chain is visible:
                // `waiting for db (starting: waiting for READY=1 ...)`.
                let on: Vec<String> = self
                    .sup
                    .waiting_on(s.name())
                    .iter()
                    .map(|dep| match self.sup.service(dep) {
                        Some(d) => match self.reason(d, now) {
                            Some(why) => format!("{dep} ({}: {why})", state_name(d.state())),
                            None => format!("{dep} ({})", state_name(d.state())),
                        },
                        None => dep.to_string(),
                    })
                    .collect();
                Some(format!("waiting for {}", on.join(", ")))
            }
            State::Stopping {
                escalation,
                deadline,
                ..
            } => Some(match (escalation, deadline) {
                (Escalation::Graceful, Some(deadline)) => format!(
                    "{} sent {} ago, SIGKILL in {}",
                    s.spec().stop.signal.as_str(),
                    secs(now.duration_since(s.since())),
                    secs(deadline.saturating_duration_since(now))
                ),
                (Escalation::Graceful, None) => format!(
                    "{} sent {} ago, no SIGKILL (stop.timeout is infinity)",
                    s.spec().stop.signal.as_str(),
                    secs(now.duration_since(s.since())),
                ),
                (Escalation::Killed, _) => format!(
                    "SIGKILL sent {} ago, waiting for its processes to exit",
                    secs(now.duration_since(s.since()))
                ),
            }),
            _ => None,
        }
    }
}

/// A failed spawn step, blamed on holdfast when it ran short of its own resources.
fn spawn_failure(holdfast_short: bool, message: String) -> SpawnFailure {
    if holdfast_short {
        SpawnFailure::HoldfastResources(message)
    } else {
        SpawnFailure::Service(message)
    }
}

/// A spawn step's I/O error: holdfast's fault when its errno is a resource shortage.
fn io_failure(error: &std::io::Error, message: String) -> SpawnFailure {
    let errno = error.raw_os_error().map(nix::errno::Errno::from_raw);
    spawn_failure(errno.is_some_and(spawn::is_resource_shortage), message)
}

pub fn log_path(log_dir: &Path, name: &ServiceName) -> String {
    log_dir.join(format!("{name}.log")).display().to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sets up holdfast's parent cgroup, named after the control socket so that two
/// daemons on one host never share a service cgroup (the default socket gives
/// `holdfast`). `None`, with a warning, when cgroups are unavailable.
fn setup_cgroups(control: &Path) -> Option<Cgroups> {
    let name = cgroup_name(control);
    match Cgroups::setup(&cgroup::detect(), &name) {
        Ok(cgroups) => {
            tracing::info!(
                "cgroup {}: {} (controllers: {})",
                cgroups.version(),
                cgroups.parent_dir().display(),
                cgroups.controllers().join(", ")
            );
            Some(cgroups)
        }
        Err(e) => {
            tracing::warn!("cgroups unavailable, services are tracked by process group only: {e}");
            None
        }
    }
}

/// `holdfast` for the default control socket (one such daemon per host); else
/// `holdfast-<hash of the socket path>.<pid>`, so that several daemons never share a
/// cgroup and the cgroups of a dead one can be recognised and swept.
pub fn cgroup_name(control: &Path) -> String {
    if control == Path::new(defaults::CONTROL) {
        return "holdfast".to_owned();
    }
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let hash = control
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("holdfast-{hash:016x}.{}", std::process::id())
}

/// Seed for backoff jitter: different per daemon so that many holdfasts restarting the
/// same failing dependency don't retry in lockstep.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}
