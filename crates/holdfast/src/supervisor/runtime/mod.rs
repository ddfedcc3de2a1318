//! The imperative shell around the supervisor core.
//!
//! One task owns the `Supervisor`. Each `select!` arm only turns a source (reaped child,
//! deadline, control request, Unix signal) into an input; `apply` executes the effects.
//! When nothing happens the task sleeps: the only timer is the core's next deadline.
//!
//! Who every pid is lives in one place, the process [`table`]; what the shell keeps per
//! service (log capture, cgroup, start-up watchers) in its [`Slot`]. The life of one
//! exit: the reaper reports it, the table says whose it was (`exits`), the core gets an
//! input and answers with effects, which `execute` carries out.

mod adopt;
mod arbiter;
mod cgroups;
mod control;
mod crashes;
mod events;
mod exits;
mod handover;
mod instances;
mod launch;
mod ledger;
mod notify;
mod own_signals;
mod owner;
mod probes;
mod quarantine_io;
mod reexec;
mod sockets;
mod status;
pub mod table;
mod upgrades;
mod watchers;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;

use self::cgroups::AttachedCgroup;
use self::own_signals::Signals;
use self::table::ProcessTable;
use super::bus::EventBus;
use super::core::{Effect, Input, Supervisor};
use super::recipe::{Environments, Inherited, Recipe};
use super::service::{KILL_WAIT, KillScope, RunId};
use crate::control::feed::EventFeed;
use crate::control::server::{self, ControlMsg};
use crate::logs::Capture;
use crate::model::{Plan, ServiceName, ServiceSpec};
use crate::notify::upstream::Upstream;
use crate::process::{limits, reap, spawn};

pub use self::cgroups::cgroup_name;
pub use self::owner::control_of;
pub use self::reexec::{Handed, fall_back, inherited};
pub use self::status::log_path;

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

fn setup_error(what: &str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.to_owned();
    move |source| RuntimeError::Setup { what, source }
}

/// Runs the daemon until a shutdown completes; with `inherited`, as the re-execution of
/// a daemon that handed over its services (`upgrade --self`).
pub async fn run(
    config_path: PathBuf,
    plan: Plan,
    mut inherited: Option<Handed>,
) -> Result<(), RuntimeError> {
    let mut signals = Signals::new()?;
    reap::become_subreaper().map_err(setup_error("child subreaper"))?;
    let (reaped_tx, reaped) = mpsc::unbounded_channel();
    // Exits of processes adopted from a killed holdfast come in as reaps too.
    let adopted_tx = reaped_tx.clone();
    reap::start(reaped_tx).map_err(setup_error("child reaper"))?;
    if let Err(e) = spawn::start_spawner() {
        // Every spawn still works, cloned from holdfast's own fd table instead: each
        // costs more the more services there are.
        tracing::warn!("no spawner thread ({e}); spawning from holdfast's own thread");
    }
    let daemon = plan.daemon.clone();
    for (what, dir) in [("state", &daemon.state_dir), ("log", &daemon.log_dir)] {
        std::fs::create_dir_all(dir)
            .map_err(setup_error(&format!("{what} directory {}", dir.display())))?;
    }
    // Before anything in the state directory is touched (the notify socket).
    let _owner = owner::claim(&daemon.state_dir, &daemon.control)
        .map_err(setup_error("the state directory"))?;
    // This holdfast owns the state directory now: a temp file there is a write an
    // earlier one did not finish (the ledger's or the HTTP token's).
    crate::private_file::sweep_temps(&daemon.state_dir, std::time::Duration::ZERO);
    let (mut shell, mut sources, server) =
        Shell::setup(config_path, plan, reaped, inherited.as_mut())?;
    shell.adoptions = adopt::Adoptions::new(adopted_tx);
    shell.follow_watches();
    let mut done = match inherited {
        Some(inherited) => shell.resume(inherited),
        None => shell.recover(ledger::read(&daemon.state_dir)),
    };
    while !done {
        done = shell.next(&mut sources, &mut signals).await;
        if let Some(program) = shell.selfup.due.take() {
            // Crash reports still being written go out first: the new image could not
            // finish them.
            done |= shell.finish_crash_reports(&mut sources.done).await;
            // Returns only if the exec failed.
            done |= shell.reexec(program, &mut sources).await;
        }
    }
    shell.kill_probes();
    shell.drain_hooks(&mut sources).await;
    let _ = shell.finish_crash_reports(&mut sources.done).await;
    sources.notify_task.abort();
    let _ = std::fs::remove_file(&shell.notify_path);
    // Pending requests are answered "shutting down"; replies in flight (the one to
    // `shutdown` itself) still reach their clients.
    drop(sources.control);
    // Dropping the shell closes the event bus: `events -f` followers write out the
    // events of the shutdown itself, then a last line, and end.
    shell.remove_cgroups();
    shell.ledger.remove().await;
    shell.flush_captures().await;
    let web = shell.web.take_server();
    drop(shell);
    server.close(server::CLOSE_GRACE).await;
    // After the control server, which held the event feed until now: the dashboard's
    // event streams end with the feed.
    if let Some(web) = web {
        web.close(server::CLOSE_GRACE).await;
    }
    server::unlink(&daemon.control);
    tracing::info!("holdfast stopped");
    Ok(())
}

/// Everything the loop waits on besides signals and its one timer.
struct Sources {
    reaped: mpsc::UnboundedReceiver<reap::Reaped>,
    control: mpsc::Receiver<ControlMsg>,
    probes: mpsc::UnboundedReceiver<probes::ProbeMsg>,
    notes: mpsc::Receiver<crate::notify::server::Datagram>,
    inputs: mpsc::UnboundedReceiver<Input>,
    /// Results of work done off the loop (config loading, quarantine queue writes).
    done: mpsc::UnboundedReceiver<Finished>,
    upstream_ping: Option<tokio::time::Interval>,
    notify_task: tokio::task::JoinHandle<()>,
}

/// Work the loop handed to another task, finished.
enum Finished {
    /// A reload's config file was read.
    Loaded(control::Loaded),
    /// A quarantine release is recorded: the service starts.
    Released(control::Released),
    /// A quarantine record is on disk: the effects held back for it can go on.
    Quarantined(quarantine_io::Appended),
    /// The new binary and the config of an `upgrade --self` were checked.
    Reexec(reexec::Checked),
    /// The proxies wound down for `upgrade --self`: the exec of `program` is due.
    WoundDown {
        program: std::path::PathBuf,
        left: usize,
    },
    /// The ledger was written (see `ledger`).
    Ledger,
    /// A watched link flipped, a build was checked, a `verify` command timed out.
    Upgrade(upgrades::UpgradeMsg),
    /// A crash report was written, or a core dump joined one.
    Crash(crashes::CrashMsg),
}

/// What the shell keeps of one service besides its processes (those are in the table).
#[derive(Default)]
struct Slot {
    /// Log capture, opened at its first spawn and kept across restarts.
    capture: Option<Capture>,
    /// Its cgroup while the service is active, so an automatic restart reuses it (no
    /// mkdir/rmdir per respawn).
    cgroup: Option<AttachedCgroup>,
    /// Start-up watchers of the starting run, at most one of each kind: a forking
    /// service awaits its readiness condition and its pidfile at once.
    watchers: Vec<watchers::Watcher>,
}

struct Shell {
    sup: Supervisor,
    config_path: PathBuf,
    /// Whose every pid is.
    table: ProcessTable,
    /// Per service: capture, cgroup, watchers.
    slots: HashMap<ServiceName, Slot>,
    /// The services whose slot holds watchers: only theirs can turn stale.
    watched: BTreeSet<ServiceName>,
    /// Runs whose main process is gone while other processes remained: every reap
    /// re-checks them, since a process that left the process groups (setsid) is only
    /// found through the cgroup. Kept apart from the slots so that a reap looks at
    /// these few, not at every service. Two runs of one service can linger at once (the
    /// old and the new run of a rollout).
    lingering: BTreeSet<(ServiceName, RunId)>,
    /// What services inherit, and the `INVOCATION_ID` of each one's current run.
    envs: Environments,
    started: Instant,
    /// Numbered, stamped events: history for `events`, broadcast for `events -f`.
    bus: EventBus,
    /// Where watchers send their findings.
    inputs_tx: mpsc::UnboundedSender<Input>,
    /// Where work done off the loop reports back.
    done_tx: mpsc::UnboundedSender<Finished>,
    /// Reads the config file for reloads, off the loop.
    loader: mpsc::UnboundedSender<control::ReloadBy>,
    /// Effects held back until a quarantine record is on disk (see `quarantine_io`).
    held: quarantine_io::Held,
    /// The latest crash report of each service (see `crashes`).
    crashes: crashes::Crashes,
    notify_path: PathBuf,
    /// Who may notify, as far as the notify socket's task needs to know (see
    /// [`Shell::publish_senders`]).
    senders: crate::notify::server::Senders,
    /// holdfast's own sd_notify reports to whoever started it.
    upstream: Upstream,
    /// Results of network probes and timeouts of exec probes, from their tasks.
    probe_tx: mpsc::UnboundedSender<probes::ProbeMsg>,
    /// Output of exec probes goes nowhere (their exit status is the result).
    dev_null: std::os::fd::OwnedFd,
    /// holdfast's parent cgroup; `None` when cgroups are unavailable (process groups
    /// only, and no cgroup limits can be enforced).
    cgroups: Option<crate::cgroup::Cgroups>,
    /// holdfast's own RLIMIT_NOFILE before raising it, restored in children.
    nofile: Option<limits::NofileBaseline>,
    /// The `listen` sockets of services, kept open across their runs.
    sockets: sockets::Sockets,
    /// Rolling restarts of services with instances, and their steps due.
    rolls: crate::supervisor::rolling::Rolls,
    roll_steps: Vec<crate::supervisor::rolling::Step>,
    /// Re-executions of holdfast (`upgrade --self`).
    selfup: reexec::SelfUpgrade,
    /// Watched links, builds being verified, link texts to roll back to.
    upgrades: upgrades::Upgrades,
    /// Proxy-mode services: their public listeners, runs' private ports and routes.
    proxies: crate::upgrade::proxy::Proxies,
    /// A second stop signal came during the shutdown (see `own_signals`): everything
    /// was killed, and holdfast exits at this deadline whatever is left.
    forced: Option<Instant>,
    /// What runs, written down for a successor if holdfast is killed (see `ledger`).
    ledger: ledger::Writer,
    /// Processes adopted from a holdfast that was killed (see `adopt`).
    adoptions: adopt::Adoptions,
    /// The HTTP server (off while `[holdfast] http` is not set).
    web: crate::web::Web,
    /// Counted from the events; `/metrics` reads them.
    metrics: crate::observe::metrics::Metrics,
}

impl Shell {
    /// Opens the sockets and builds the shell. The cgroup is the last step that can
    /// fail, so a failed start leaves no cgroup behind.
    fn setup(
        config_path: PathBuf,
        plan: Plan,
        reaped: mpsc::UnboundedReceiver<reap::Reaped>,
        inherited: Option<&mut Handed>,
    ) -> Result<(Shell, Sources, server::Server), RuntimeError> {
        let nofile = limits::raise_nofile()
            .inspect_err(|e| tracing::warn!("cannot raise holdfast's RLIMIT_NOFILE: {e}"))
            .ok();
        let (daemon, resumed) = (plan.daemon.clone(), inherited.is_some());
        let groups = server::Groups::of(&daemon);
        let notify_path = crate::notify::server::socket_path(&daemon.state_dir);
        let (listener, notify_socket) = reexec::sockets(&daemon, &notify_path, inherited)?;
        let selfup = reexec::SelfUpgrade::new(&listener, &notify_socket);
        let (notes_tx, notes) = mpsc::channel(crate::notify::server::QUEUE);
        let senders = crate::notify::server::Senders::default();
        let notify_task = crate::notify::server::serve(notify_socket, senders.clone(), notes_tx);
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        let upstream = Upstream::from_env();
        let upstream_ping = upstream.ping_interval().map(tokio::time::interval);
        let (control_tx, control) = mpsc::channel(64);
        let (probe_tx, probes) = mpsc::unbounded_channel();
        let dev_null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(setup_error("/dev/null for probe output"))?;
        let events = EventFeed::new();
        let metrics = crate::observe::metrics::Metrics::default();
        let web = start_web(&daemon, control_tx.clone(), &events, &metrics, resumed)?;
        let cgroups = cgroups::setup(&daemon.control);
        let server = server::serve_with_events(listener, groups, control_tx, events.clone());
        log_up(&config_path, &plan);
        let now = Instant::now();
        let scope = cgroups
            .as_ref()
            .map_or(KillScope::ProcessGroup, |_| KillScope::Cgroup);
        let mut sockets = sockets::Sockets::default();
        sockets.migrate_requests(&plan);
        let shell = Shell {
            sup: Supervisor::new(plan, now, seed()).with_kill_scope(scope),
            sockets,
            loader: control::loader(config_path.clone(), done_tx.clone()),
            config_path,
            table: ProcessTable::new(),
            slots: HashMap::new(),
            watched: BTreeSet::new(),
            lingering: BTreeSet::new(),
            envs: Environments::new(Inherited::capture(&daemon.pass_env)),
            started: now,
            bus: EventBus::new(events),
            inputs_tx,
            done_tx,
            held: quarantine_io::Held::default(),
            crashes: crashes::Crashes::default(),
            notify_path,
            senders,
            upstream,
            probe_tx,
            dev_null: dev_null.into(),
            cgroups,
            nofile,
            rolls: crate::supervisor::rolling::Rolls::default(),
            roll_steps: Vec::new(),
            selfup,
            upgrades: upgrades::Upgrades::default(),
            proxies: crate::upgrade::proxy::Proxies::default(),
            forced: None,
            ledger: ledger::Writer::new(&daemon.state_dir),
            adoptions: adopt::Adoptions::default(),
            web,
            metrics,
        };
        let sources = Sources {
            reaped,
            control,
            probes,
            notes,
            inputs,
            done,
            upstream_ping,
            notify_task,
        };
        Ok((shell, sources, server))
    }

    /// Waits for the next source and handles it. Returns true once the shutdown is
    /// complete.
    async fn next(&mut self, sources: &mut Sources, signals: &mut Signals) -> bool {
        let deadline = [
            self.sup.next_deadline(),
            super::hooks::next_deadline(&self.table),
            self.forced,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(r) = sources.reaped.recv() => {
                let mut done = false;
                for input in self.on_reaped(r) {
                    done |= self.apply(input);
                }
                done
            }
            // Requests wait while a quarantine record is written: whatever they would
            // show of the service, its record is on disk by then.
            Some(msg) = sources.control.recv(), if !self.held.is_holding() => self.on_control(msg),
            Some(finished) = sources.done.recv() => self.on_finished(finished),
            Some(msg) = sources.probes.recv() => match self.on_probe(msg) {
                Some(input) => self.apply(input),
                None => false,
            },
            Some(datagram) = sources.notes.recv() => match self.on_notify(datagram) {
                Some(input) => self.apply(input),
                None => false,
            },
            Some(input) = sources.inputs.recv() => match self.vet_watcher_input(input) {
                Some(input) => self.apply(input),
                None => false,
            },
            () = tick_opt(&mut sources.upstream_ping) => {
                self.upstream.watchdog();
                false
            }
            () = sleep_until(deadline) => {
                // How late the timer fired: the loop's lag, measured without a wakeup
                // of its own.
                if let Some(at) = deadline {
                    self.metrics.loop_lag(tokio::time::Instant::now().saturating_duration_since(at));
                }
                self.on_deadline()
            }
            asked = signals.recv() => self.on_signal(asked),
        }
    }

    fn on_finished(&mut self, finished: Finished) -> bool {
        match finished {
            Finished::Loaded(loaded) => self.on_loaded(loaded),
            Finished::Released(released) => self.on_released(released),
            Finished::Quarantined(appended) => self.on_appended(appended),
            Finished::Reexec(checked) => self.on_reexec_checked(checked),
            Finished::WoundDown { program, left } => {
                self.on_wound_down(program, left);
                false
            }
            Finished::Ledger => {
                self.ledger_written();
                false
            }
            Finished::Upgrade(msg) => {
                self.on_upgrade_msg(msg);
                false
            }
            Finished::Crash(msg) => {
                self.on_crash_msg(msg);
                false
            }
        }
    }

    /// Hooks fired by the last events (a pager on `stopped`, say) may still finish
    /// within their timeout; past it they are killed like any hook. Bounded even for a
    /// hook that SIGKILL cannot end, so that shutdown always completes.
    async fn drain_hooks(&mut self, sources: &mut Sources) {
        self.kill_hooks_if_forced();
        let last = super::hooks::last_deadline(&self.table).unwrap_or_else(Instant::now);
        let bound = crate::clock::later(last, KILL_WAIT);
        let drain = async {
            while self.table.hooks().next().is_some() {
                let deadline =
                    super::hooks::next_deadline(&self.table).map(tokio::time::Instant::from_std);
                tokio::select! {
                    Some(r) = sources.reaped.recv() => { self.on_reaped(r); }
                    // `status` still answers (every service stopped, shutting down); the
                    // core refuses what would start anything.
                    Some(msg) = sources.control.recv() => { self.on_control(msg); }
                    () = sleep_until(deadline) => { self.on_deadline(); }
                }
            }
        };
        if tokio::time::timeout_at(bound.into(), drain).await.is_err() {
            tracing::warn!("hooks survived SIGKILL; exiting without them");
        }
    }

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
            if self.held.is_holding() {
                // A quarantine record is being written: what follows it waits, so that
                // its event is never seen before the record is on disk.
                self.held.push(effect);
                continue;
            }
            exit |= self.execute_one(effect, &mut queue);
        }
        self.drop_stale_watchers();
        self.report_upstream();
        self.write_ledger();
        exit | self.roll_on()
    }

    /// Carries out one effect; the inputs it produces go through the core at once and
    /// their effects join `queue`.
    fn execute_one(&mut self, effect: Effect, queue: &mut VecDeque<Effect>) -> bool {
        let input = match effect {
            Effect::Spawn { service, run, spec } => {
                let first = self.start_spawn(service, run, spec);
                self.spawn_ahead(first, queue);
                None
            }
            Effect::Signal {
                service,
                run,
                group,
                signal,
            } => {
                self.signal_run(&service, run, group, signal);
                None
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
                None
            }
            Effect::Emit(event) => {
                self.publish(&event);
                None
            }
            Effect::Remove { service } => {
                self.remove_slot(&service);
                None
            }
            // Taken out by the caller that fed the control input.
            Effect::Reply(_) => None,
            Effect::Exit => return true,
            Effect::StartProbe { service, run, spec } => self.start_probe(service, run, &spec),
            Effect::Quarantine {
                service,
                status,
                reason,
            } => {
                self.quarantine(&service, status, reason);
                None
            }
            Effect::MainPid {
                service,
                run,
                pid,
                alive_at,
            } => self.main_pid(service, run, pid, alive_at),
            Effect::ReadPidfile { service, run, path } => {
                self.read_pidfile(service, run, path);
                None
            }
            effect @ (Effect::SyncUpstream { .. }
            | Effect::WatchUpstream { .. }
            | Effect::RestartUpstream { .. }
            | Effect::TakeOver { .. }) => self.arbiter(effect),
        };
        if let Some(input) = input {
            queue.extend(self.sup.handle(input, Instant::now()));
        }
        false
    }

    /// The slot of `service`, made on first use.
    fn slot(&mut self, service: &ServiceName) -> &mut Slot {
        self.slots.entry(service.clone()).or_default()
    }

    fn capture(&self, service: &ServiceName) -> Option<&Capture> {
        self.slots.get(service)?.capture.as_ref()
    }

    /// Waits until every note asked for is in its log file: the capture tasks end with
    /// the runtime, which ends with this daemon.
    async fn flush_captures(&self) {
        let flushed: Vec<_> = self
            .slots
            .values()
            .filter_map(|slot| slot.capture.as_ref().map(Capture::flushed))
            .collect();
        for flushed in flushed {
            flushed.await;
        }
    }

    /// The service is gone from the plan: its capture and cgroup go too (its watchers
    /// are aborted with the slot).
    fn remove_slot(&mut self, service: &ServiceName) {
        self.lingering.retain(|(name, _)| name != service);
        self.crashes.forget(service);
        if let Some(slot) = self.slots.remove(service) {
            if let Some(attached) = slot.cgroup {
                attached.cgroup.remove();
            }
            for watcher in slot.watchers {
                watcher.abort();
            }
        }
    }

    /// A deadline passed: a hook's or the core's (which one is not tracked, both look).
    fn on_deadline(&mut self) -> bool {
        if self.force_expired(Instant::now()) {
            return true;
        }
        for note in super::hooks::expire(&mut self.table, Instant::now()) {
            self.note(note);
        }
        self.apply(Input::Tick)
    }

    /// Environment and limits of every process of `spec`: main, probes and hooks.
    fn recipe(&self, spec: &ServiceSpec) -> Recipe {
        self.envs.recipe(spec, self.nofile)
    }
}

/// The HTTP server, before any service starts: a port in use fails `up` here. A
/// re-executed holdfast (`upgrade --self`) goes on without it rather than drop the
/// services it was handed (a reload tries again).
fn start_web(
    daemon: &crate::model::DaemonSettings,
    control: mpsc::Sender<ControlMsg>,
    events: &EventFeed,
    metrics: &crate::observe::metrics::Metrics,
    resumed: bool,
) -> Result<crate::web::Web, RuntimeError> {
    let mut web = crate::web::Web::new(daemon, control, events, metrics.clone());
    match daemon.http.map(|addr| web.open(addr)) {
        None | Some(Ok(())) => {}
        Some(Err(e)) if resumed => {
            tracing::error!("the HTTP server is off after upgrade --self: {e}");
        }
        Some(Err(e)) => return Err(setup_error("the HTTP server")(e)),
    }
    Ok(web)
}

fn log_up(config_path: &std::path::Path, plan: &Plan) {
    tracing::info!(
        config = %config_path.display(),
        control = %plan.daemon.control.display(),
        services = plan.services.len(),
        "holdfast {} up",
        env!("CARGO_PKG_VERSION")
    );
    for (_, held_back) in held_back_by_no_new_privs(plan) {
        tracing::warn!("{held_back}");
    }
}

/// The services of `plan` with `no_new_privs = false`, which holdfast cannot honour
/// while it runs with no_new_privs itself (its unit's `NoNewPrivileges=yes`, generated
/// while every service kept it): a setuid program they run gains nothing. Each with
/// what to do about it.
pub(super) fn held_back_by_no_new_privs(plan: &Plan) -> Vec<(ServiceName, String)> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let holdfast_has_it = status
        .lines()
        .any(|line| line.split_whitespace().eq(["NoNewPrivs:", "1"]));
    if !holdfast_has_it {
        return Vec::new();
    }
    (plan.services.values())
        .filter(|spec| !spec.privileges.no_new_privs)
        .map(|spec| {
            let what = format!(
                "[service.{}].no_new_privs = false (holdfast itself runs with no_new_privs, \
                 as its unit's NoNewPrivileges=yes says: regenerate the unit with \
                 `holdfast gen systemd --self` and restart holdfast)",
                spec.name
            );
            (spec.name.clone(), what)
        })
        .collect()
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

/// Seed for backoff jitter: different per daemon so that many holdfasts restarting the
/// same failing dependency don't retry in lockstep.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}
