//! The imperative shell around the supervisor core.
//!
//! One task owns the `Supervisor`. Each `select!` arm only turns a source (reaped child,
//! deadline, control request, Unix signal) into an input; `apply` executes the effects.
//! When nothing happens the task sleeps: the only timer is the core's next deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::core::{Command, Effect, Input, Supervisor, state_name};
use super::event::Event;
use super::service::{Escalation, RunId, Service, State};
use crate::cgroup::{self, Cgroups, ServiceCgroup};
use crate::config;
use crate::control::protocol::{
    ControlError, DaemonStatus, ErrorKind, ExitInfo, Reply, Request, ServiceStatus, Status,
};
use crate::control::server::{self, ControlMsg};
use crate::logs::Capture;
use crate::model::ExitStatus;
use crate::model::{Plan, ServiceName, ServiceSpec};
use crate::process::{group, limits, reap, spawn};

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
    let nofile = limits::raise_nofile()
        .inspect_err(|e| tracing::warn!("cannot raise holdfast's RLIMIT_NOFILE: {e}"))
        .ok();
    let cgroups = setup_cgroups(&plan.daemon.control);

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
    let server = server::serve(
        listener,
        daemon.control_group.as_ref().map(|g| g.gid),
        control_tx,
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
        cgroups,
        service_cgroups: HashMap::new(),
        lingering: HashSet::new(),
        nofile,
    };
    let mut done = shell.apply(Input::Boot);
    while !done {
        let deadline = shell
            .sup
            .next_deadline()
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
            () = sleep_until(deadline) => shell.apply(Input::Tick),
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
    server.close(Duration::from_secs(1)).await;
    server::unlink(&daemon.control);
    for (cgroup, _) in shell.service_cgroups.values() {
        cgroup.remove();
    }
    if let Some(cgroups) = &shell.cgroups {
        cgroups.remove();
    }
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
    /// holdfast's parent cgroup; `None` when cgroups are unavailable (process groups
    /// only, and no cgroup limits can be enforced).
    cgroups: Option<Cgroups>,
    /// The cgroup of each service that has one, with its OOM-kill count at the spawn.
    service_cgroups: HashMap<ServiceName, (ServiceCgroup, Option<u64>)>,
    /// Groups (by pgid, keys of `groups`) whose main process is gone but that still had
    /// members: every reap re-checks them, since a member that left the process group
    /// (setsid) is only found through the cgroup.
    lingering: HashSet<Pid>,
    /// holdfast's own RLIMIT_NOFILE before raising it, restored in children.
    nofile: Option<limits::NofileBaseline>,
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
                } => self.signal(&service, pgid, signal),
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

    /// Signals the whole service: through its cgroup when it has one (which also reaches
    /// processes that left the process group), else its process group.
    fn signal(&self, service: &ServiceName, pgid: Pid, signal: nix::sys::signal::Signal) {
        if let Some((cgroup, _)) = self.service_cgroups.get(service) {
            if cgroup.signal(signal) > 0 {
                return;
            }
        }
        if let Err(e) = group::signal_group(pgid, signal) {
            tracing::warn!("{service}: failed to send {signal} to process group {pgid}: {e}");
        }
    }

    /// Whether any process of the service is left: in its process group or its cgroup.
    fn alive(&self, service: &ServiceName, pgid: Pid) -> bool {
        group::group_alive(pgid)
            || self
                .service_cgroups
                .get(service)
                .is_some_and(|(cgroup, _)| !cgroup.is_empty())
    }

    /// The service is gone entirely: remove its (empty) cgroup.
    fn forget_cgroup(&mut self, service: &ServiceName) {
        if let Some((cgroup, _)) = self.service_cgroups.remove(service) {
            cgroup.remove();
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
            Some((cgroup, Some(before))) if cgroup.oom_kills().is_some_and(|n| n > *before) => {
                ExitStatus::OomKilled
            }
            _ => status,
        }
    }

    /// The cgroup for the next process of `name`, with the current OOM count.
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
        let cgroup = cgroups
            .service(name.as_str(), &spec.cgroup)
            .map_err(|e| e.to_string())?;
        let baseline = cgroup.oom_kills();
        self.service_cgroups
            .insert(name.clone(), (cgroup, baseline));
        Ok(())
    }

    fn try_spawn(&mut self, name: &ServiceName, spec: &ServiceSpec) -> Result<Pid, String> {
        self.prepare_cgroup(name, spec)?;
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
        let privileges = &spec.privileges;
        let identity = limits::identity_env(privileges.credentials.as_ref());
        env.retain(|(k, _)| !identity.iter().any(|(i, _)| i == k) || spec.env.contains_key(k));
        env.extend(
            identity
                .into_iter()
                .filter(|(k, _)| !spec.env.contains_key(k)),
        );
        let rlimits = limits::rlimit_settings(&spec.limits, self.nofile);
        let procs = match self.service_cgroups.get(name) {
            Some((cgroup, _)) => cgroup.open_procs().map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let procs: Vec<std::os::fd::BorrowedFd<'_>> =
            procs.iter().map(std::os::fd::AsFd::as_fd).collect();
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
        spawn::spawn(&request)
            .map(|spawned| spawned.pid)
            .map_err(|e| e.to_string())
    }

    /// Turns a reaped process into an input: the exit of a service's main process, or the
    /// last member of a service's process group going away.
    fn on_reaped(&mut self, reaped: reap::Reaped) -> Vec<Input> {
        if let Some((service, run)) = self.groups.get(&reaped.pid).cloned() {
            let group_alive = self.alive(&service, reaped.pid);
            let status = self.classify(&service, reaped.status);
            if group_alive {
                self.lingering.insert(reaped.pid);
            } else {
                self.groups.remove(&reaped.pid);
                self.forget_cgroup(&service);
            }
            return vec![Input::Exited {
                service,
                run,
                status,
                group_alive,
            }];
        }
        // Another process went: any lingering group may have lost its last member, be it
        // in the process group or only in the cgroup.
        let pgids: Vec<Pid> = self.lingering.iter().copied().collect();
        let mut inputs = Vec::new();
        for pgid in pgids {
            let Some((service, run)) = self.groups.get(&pgid).cloned() else {
                self.lingering.remove(&pgid);
                continue;
            };
            if self.alive(&service, pgid) {
                continue;
            }
            self.lingering.remove(&pgid);
            self.groups.remove(&pgid);
            self.forget_cgroup(&service);
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
            Request::Start { name } => self.command(Command::Start, &name, now),
            Request::Stop { name } => self.command(Command::Stop, &name, now),
            Request::Restart { name } => self.command(Command::Restart, &name, now),
            Request::Reload { dry_run } => (self.reload(dry_run).map(Reply::Reload), false),
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
        tracing::info!("{event}");
        if let Some(capture) = event.service.as_ref().and_then(|s| self.captures.get(s)) {
            capture.note(&event.to_string());
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

/// `holdfast` for the default control socket, else `holdfast-<hash of its path>`.
pub fn cgroup_name(control: &Path) -> String {
    if control == Path::new(crate::model::defaults::CONTROL) {
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
    format!("holdfast-{hash:016x}")
}

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
