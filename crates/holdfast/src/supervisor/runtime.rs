//! The imperative shell around the supervisor core.
//!
//! One task owns the `Supervisor`. Each `select!` arm only turns a source (reaped child,
//! deadline, control request, Unix signal) into an input; `apply` executes the effects.
//! When nothing happens the task sleeps: the only timer is the core's next deadline.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::bus::{self, EventBus};
use super::core::{Command, Effect, Input, Supervisor, state_name};
use super::event::Event;
use super::hooks::{HookRunner, Note};
use super::service::{Escalation, RunId, Service, State};
use crate::config;
use crate::control::protocol::{
    ControlError, DaemonStatus, ErrorKind, ExitInfo, Reply, Request, ServiceStatus, Status,
};
use crate::control::server::{self, ControlMsg};
use crate::logs::Capture;
use crate::model::{Plan, ServiceName, ServiceSpec};
use crate::process::{group, reap, spawn};

/// Variables of holdfast's own environment that describe holdfast's situation, not the
/// service's: passing them on would make a service answer holdfast's systemd.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "HOLDFAST_CONFIG",
    "HOLDFAST_SOCKET",
];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to set up {what}: {source}")]
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Runs the daemon until a shutdown completes.
pub async fn run(config_path: PathBuf, plan: Plan) -> Result<(), RuntimeError> {
    let setup = |what| move |source| RuntimeError::Setup { what, source };
    let mut sigterm = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(setup("SIGINT handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(setup("SIGHUP handler"))?;
    reap::become_subreaper().map_err(setup("child subreaper"))?;
    let (reaped_tx, mut reaped) = mpsc::unbounded_channel();
    reap::start(reaped_tx).map_err(setup("child reaper"))?;

    let daemon = plan.daemon.clone();
    for dir in [&daemon.state_dir, &daemon.log_dir] {
        std::fs::create_dir_all(dir).map_err(setup("state and log directories"))?;
    }
    let listener = server::bind(
        &daemon.control,
        daemon.control_group.as_ref().map(|g| g.gid),
    )
    .map_err(setup("control socket"))?;
    let (control_tx, mut control) = mpsc::channel(64);
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
        sup: Supervisor::new(plan, now, seed()),
        config_path,
        captures: HashMap::new(),
        groups: HashMap::new(),
        base_env: base_env(),
        started: now,
        bus: EventBus::new(bus::HISTORY, events),
        hooks: HookRunner::default(),
    };
    let mut done = shell.apply(Input::Boot);
    while !done {
        let deadline = [shell.sup.next_deadline(), shell.hooks.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        done = tokio::select! {
            Some(r) = reaped.recv() => match shell.on_reaped(r) {
                Some(input) => shell.apply(input),
                None => false,
            },
            Some(msg) = control.recv() => shell.on_control(msg),
            () = sleep_until(deadline) => shell.on_deadline(),
            _ = sigterm.recv() => shell.apply(Input::Shutdown),
            _ = sigint.recv() => shell.apply(Input::Shutdown),
            _ = sighup.recv() => {
                match shell.reload(false) {
                    Ok(plan) => tracing::info!(?plan, "reloaded on SIGHUP"),
                    Err(e) => tracing::error!("reload on SIGHUP rejected, keeping the running config:\n{}", e.message),
                }
                false
            }
        };
    }
    // Pending requests are answered "shutting down"; replies in flight (the one to
    // `shutdown` itself) still reach their clients.
    drop(control);
    // Dropping the shell closes the event bus: `events -f` followers get a last line
    // and end, instead of holding up the close.
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

struct Shell {
    sup: Supervisor,
    config_path: PathBuf,
    /// Log capture per service, opened at its first spawn and kept across restarts.
    captures: HashMap<ServiceName, Capture>,
    /// Process groups that may still have members, keyed by group id (= main pid).
    groups: HashMap<Pid, (ServiceName, RunId)>,
    base_env: Vec<(String, String)>,
    started: Instant,
    /// Numbered, stamped events: history for `events`, broadcast for `events -f`.
    bus: EventBus,
    /// Running `[service.X.on]` hooks.
    hooks: HookRunner,
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
                    group: pgid,
                    signal,
                    ..
                } => match group::signal_group(pgid, signal) {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        "{service}: failed to send {signal} to process group {pgid}: {e}"
                    ),
                },
                Effect::Emit(event) => self.publish(&event),
                Effect::Remove { service } => {
                    self.captures.remove(&service);
                }
                Effect::StartAgain { .. } => unreachable!("consumed by the core"),
                Effect::Exit => exit = true,
            }
        }
        exit
    }

    fn spawn(&mut self, service: ServiceName, run: RunId, spec: &ServiceSpec) -> Input {
        match self.try_spawn(&service, spec) {
            Ok(pid) => {
                self.groups.insert(pid, (service.clone(), run));
                Input::Spawned { service, run, pid }
            }
            Err(error) => Input::SpawnFailed {
                service,
                run,
                error,
            },
        }
    }

    fn try_spawn(&mut self, name: &ServiceName, spec: &ServiceSpec) -> Result<Pid, String> {
        let log_dir = &self.sup.plan().daemon.log_dir;
        let capture = match self.captures.entry(name.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                Capture::open(log_dir, name, spec.log)
                    .map_err(|e| format!("cannot capture output in {}: {e}", log_dir.display()))?,
            ),
        };
        capture.set_spec(spec.log);
        let mut env = self.base_env.clone();
        env.retain(|(k, _)| !spec.env.contains_key(k));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("HOLDFAST_SERVICE".to_owned(), name.to_string()));
        let request = spawn::SpawnRequest {
            program: &spec.command[0],
            args: &spec.command[1..],
            env: &env,
            working_dir: spec.working_dir.as_deref(),
            stdout: capture.stdout(),
            stderr: capture.stderr(),
            listen_fds: &[],
            listen_fd_names: &[],
        };
        spawn::spawn(&request)
            .map(|spawned| spawned.pid)
            .map_err(|e| e.to_string())
    }

    /// A deadline passed: a hook's or the core's (which one is not tracked, both look).
    fn on_deadline(&mut self) -> bool {
        for note in self.hooks.expire(Instant::now()) {
            self.note(note);
        }
        self.apply(Input::Tick)
    }

    /// Turns a reaped process into an input: the exit of a service's main process, or the
    /// last member of a service's process group going away. A hook's exit is logged.
    fn on_reaped(&mut self, reaped: reap::Reaped) -> Option<Input> {
        if let Some(event) = self.hooks.on_reaped(&reaped) {
            self.publish(&event);
            return None;
        }
        if let Some((service, run)) = self.groups.get(&reaped.pid).cloned() {
            let group_alive = group::group_alive(reaped.pid);
            if !group_alive {
                self.groups.remove(&reaped.pid);
            }
            return Some(Input::Exited {
                service,
                run,
                status: reaped.status,
                group_alive,
            });
        }
        let pgid = reaped.pgid?;
        let (service, run) = self.groups.get(&pgid).cloned()?;
        if group::group_alive(pgid) {
            return None;
        }
        self.groups.remove(&pgid);
        Some(Input::GroupEmpty { service, run })
    }

    /// Answers a control request after applying its transition. Returns true once the
    /// shutdown is complete.
    fn on_control(&mut self, msg: ControlMsg) -> bool {
        let now = Instant::now();
        let (reply, done) = match msg.request {
            Request::Status => (Ok(Reply::Status(self.status(now))), false),
            Request::Start { name } => self.command(Command::Start, &name, now),
            Request::Stop { name } => self.command(Command::Stop, &name, now),
            Request::Restart { name } => self.command(Command::Restart, &name, now),
            Request::Reload { dry_run } => (self.reload(dry_run).map(Reply::Reload), false),
            Request::Events { service, since, .. } => (self.events(service, since), false),
            Request::Shutdown => {
                let done = self.apply(Input::Shutdown);
                let message = "shutting down: stopping all services".to_owned();
                (Ok(Reply::Accepted { message }), done)
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
        if super::hooks::is_warning(&event.kind) {
            tracing::warn!("{event}");
        } else {
            tracing::info!("{event}");
        }
        if let Some(capture) = event.service.as_ref().and_then(|s| self.captures.get(s)) {
            capture.note(&event.to_string());
        }
        let record = self.bus.publish(event, SystemTime::now());
        // Hooks follow the live definition; a removed service has none left.
        let spec = record
            .service
            .as_ref()
            .and_then(|s| self.sup.service(s))
            .map(|s| s.spec().clone());
        if let Some(spec) = spec {
            let capture = self.captures.get(&spec.name);
            let note = self
                .hooks
                .fire(&record, &spec, &self.base_env, capture, Instant::now());
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
        let holding_up = match s.state() {
            State::Stopping { pid, .. } => group::group_members(*pid),
            _ => Vec::new(),
        };
        ServiceStatus {
            name: s.name().clone(),
            state: state_name(s.state()).to_owned(),
            pid: s.pid().map(|p| p.as_raw() as u32),
            since_ms: millis(now.duration_since(s.since())),
            restarts: s.restarts(),
            last_exit: s.last_exit().map(|(status, at)| ExitInfo {
                description: status.to_string(),
                code: status.code(),
                signal: status.signal().map(|sig| sig.as_str().to_owned()),
                ago_ms: millis(now.duration_since(at)),
            }),
            reason: self.reason(s, now),
            holding_up,
            log: log_path(&self.sup.plan().daemon.log_dir, s.name()),
        }
    }

    fn reason(&self, s: &Service, now: Instant) -> Option<String> {
        let secs = |d: Duration| humantime::format_duration(Duration::from_millis(millis(d)));
        match s.state() {
            State::Failed { reason } => Some(reason.to_string()),
            State::Backoff { until } => Some(format!(
                "restarting in {}",
                secs(until.saturating_duration_since(now))
            )),
            State::Waiting => {
                let on: Vec<String> = self
                    .sup
                    .waiting_on(s.name())
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                Some(format!("waiting for {}", on.join(", ")))
            }
            State::Stopping {
                escalation,
                deadline,
                ..
            } => Some(match escalation {
                Escalation::Graceful => format!(
                    "{} sent {} ago, SIGKILL in {}",
                    s.spec().stop.signal.as_str(),
                    secs(now.duration_since(s.since())),
                    secs(deadline.saturating_duration_since(now))
                ),
                Escalation::Killed => format!(
                    "SIGKILL sent {} ago, waiting for the process group to exit",
                    secs(now.duration_since(s.since()))
                ),
            }),
            _ => None,
        }
    }
}

pub fn log_path(log_dir: &Path, name: &ServiceName) -> String {
    log_dir.join(format!("{name}.log")).display().to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// holdfast's environment minus what only concerns holdfast itself.
fn base_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !PRIVATE_ENV.contains(&k.as_str()))
        .collect()
}

/// Seed for backoff jitter: different per daemon so that many holdfasts restarting the
/// same failing dependency don't retry in lockstep.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}
