//! `holdfast upgrade --self`: holdfast re-executes the binary now at its path, in place.
//! The pid stays, so every service stays its child; the control and notify sockets, the
//! services' listen sockets and output pipes cross `execve` as inherited fds, and the
//! supervision state in a memfd ([`handover`]).
//!
//! The old image: checks first (the binary is there, the config file still loads to the
//! running plan, no service is in a transition that cannot be carried), then answers
//! the client, winds the proxies' client connections down (they live in this image
//! only; the routes go along), pauses the reaper (a child that exits from then on stays a zombie for
//! the new image to reap), stops the captures reading (what they hold is written, their
//! partial lines go along), takes the snapshot, and execs. A failed exec leaves it
//! running as it was, the error in `status`; a new image that cannot read the config
//! goes back to it ([`fall_back`]).
//!
//! The new image: `holdfast up` finds `HOLDFAST_RESUME`, rebuilds the shell around the
//! inherited fds ([`Handed`]), then [`Shell::resume`] restores the process table, the
//! captures and cgroups, and feeds the core `Input::Resume` in place of `Input::Boot`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::net::{UnixDatagram, UnixListener};
use tokio::sync::oneshot;

use super::handover::{self, Fds, Handover, RESUME_ENV};
use super::{Finished, RuntimeError, Shell, Sources, setup_error};
use crate::config;
use crate::control::protocol::{ControlError, ErrorKind, Reply};
use crate::control::server;
use crate::logs::Capture;
use crate::model::{DaemonSettings, Plan, Readiness, ServiceName};
use crate::process::{reap, reexec};
use crate::supervisor::core::{Input, Snapshot};
use crate::supervisor::service::State;
use crate::supervisor::startup;

use super::watchers::Watch;

type Answer = Result<Reply, ControlError>;

/// How long `upgrade --self` waits for the proxies' client connections to end: a
/// request under way finishes (and its connection closes), idle keep-alive ones close
/// within a second; a long download or an open TCP session is cut after this.
const PROXY_WIND_DOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// What the shell keeps for self-upgrades.
#[derive(Debug, Default)]
pub(super) struct SelfUpgrade {
    /// Re-executions of this daemon so far.
    pub(super) execs: u32,
    /// Why the last attempt failed to exec.
    pub(super) error: Option<String>,
    /// The binary to exec once the loop gets to it (the client was answered).
    pub(super) due: Option<PathBuf>,
    /// The path holdfast was started from, read at start: a deploy that renames the
    /// old binary away (`mv holdfast holdfast.old`) moves what `/proc/self/exe` names,
    /// not where the new one is.
    pub(super) program: Option<PathBuf>,
    /// The fds of the control and notify sockets (owned by their tasks).
    pub(super) control_fd: RawFd,
    pub(super) notify_fd: RawFd,
}

impl SelfUpgrade {
    pub(super) fn new(control: &impl AsRawFd, notify: &impl AsRawFd) -> Self {
        Self {
            control_fd: control.as_raw_fd(),
            notify_fd: notify.as_raw_fd(),
            program: reexec::own_path().ok(),
            ..Self::default()
        }
    }
}

/// The control and notify sockets: bound anew, or as the previous image served on them.
pub(super) fn sockets(
    daemon: &DaemonSettings,
    notify_path: &Path,
    inherited: Option<&mut Handed>,
) -> Result<(UnixListener, UnixDatagram), RuntimeError> {
    let gid = daemon.control_group.as_ref().map(|g| g.gid);
    Ok(match inherited {
        Some(inherited) => (
            inherited
                .control()
                .map_err(setup_error("inherited control socket"))?,
            inherited
                .notify()
                .map_err(setup_error("inherited notify socket"))?,
        ),
        None => (
            server::bind(&daemon.control, gid).map_err(setup_error("control socket"))?,
            crate::notify::server::bind(notify_path).map_err(setup_error("notify socket"))?,
        ),
    })
}

/// What the checks off the loop found.
pub(super) struct Checked {
    reply: oneshot::Sender<Answer>,
    found: Result<(PathBuf, Plan), ControlError>,
}

/// The fds and state the previous image handed over, taken as the shell is set up.
pub struct Handed {
    handover: Handover,
    control: Option<OwnedFd>,
    notify: Option<OwnedFd>,
    /// The further fds, by name (the services' listen sockets, see [`Shell::extra_fds`]).
    extra: BTreeMap<String, OwnedFd>,
    /// The previous image's binary, to go back to ([`fall_back`]); closed once this
    /// image took over.
    previous: Option<OwnedFd>,
}

fn refused(kind: ErrorKind, message: String) -> ControlError {
    ControlError { kind, message }
}

/// The handover of a previous image, if this process is one's re-execution.
///
/// # Errors
/// The handover could not be read: the services live on, but this image cannot know
/// them.
pub fn inherited() -> Result<Option<Handed>, String> {
    let Some(value) = std::env::var_os(RESUME_ENV) else {
        return Ok(None);
    };
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{RESUME_ENV}={value:?} is no fd number"))?;
    let bytes = reexec::read_memfd(fd).map_err(|e| format!("reading the handover: {e}"))?;
    let handover = Handover::from_bytes(&bytes)?;
    let adopt = |fd: RawFd| reexec::adopt(fd).map_err(|e| format!("inherited fd {fd}: {e}"));
    let extra = (handover.fds.extra.iter())
        .map(|(name, fd)| Ok((name.clone(), adopt(*fd)?)))
        .collect::<Result<_, String>>()?;
    Ok(Some(Handed {
        control: Some(adopt(handover.fds.control)?),
        notify: Some(adopt(handover.fds.notify)?),
        extra,
        previous: handover.previous.map(adopt).transpose()?,
        handover,
    }))
}

impl Handed {
    /// The control socket's listener, as the previous image served on it.
    fn control(&mut self) -> std::io::Result<UnixListener> {
        let fd = self.control.take().ok_or_else(taken)?;
        let listener = std::os::unix::net::UnixListener::from(fd);
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    }

    /// The notify socket, as the previous image served on it.
    fn notify(&mut self) -> std::io::Result<UnixDatagram> {
        let fd = self.notify.take().ok_or_else(taken)?;
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        socket.set_nonblocking(true)?;
        UnixDatagram::from_std(socket)
    }
}

fn taken() -> std::io::Error {
    std::io::Error::other("inherited fd already taken")
}

impl Shell {
    /// `upgrade --self` asked: a refusal now if a service is in transit, else the checks
    /// that touch the disk, off the loop ([`Shell::on_reexec_checked`] goes on).
    pub(super) fn ask_reexec(&mut self, reply: oneshot::Sender<Answer>) {
        if self.proxies.winding_down() {
            let message = "holdfast is re-executing itself already".to_owned();
            let _ = reply.send(Err(refused(ErrorKind::BadRequest, message)));
            return;
        }
        self.selfup.error = None;
        if let Err(why) = self.resumable() {
            let message = format!("cannot re-execute holdfast now: {why}");
            let _ = reply.send(Err(refused(ErrorKind::BadRequest, message)));
            return;
        }
        let config_path = self.config_path.clone();
        let program = self.selfup.program.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let found = check(program, &config_path);
            let _ = done.send(Finished::Reexec(Checked { reply, found }));
        });
    }

    /// The binary and the config passed their checks (or not): refuses, or answers and
    /// leaves the exec to the loop ([`Shell::reexec`]), once this input is done.
    pub(super) fn on_reexec_checked(&mut self, checked: Checked) -> bool {
        let Checked { reply, found } = checked;
        let answer = found.and_then(|(program, plan)| {
            if !same_plan(&plan, self.sup.plan()) {
                let message = "the config file changed since it was loaded: \
                               `holdfast reload` first, then upgrade"
                    .to_owned();
                return Err(refused(ErrorKind::BadRequest, message));
            }
            self.resumable().map_err(|why| {
                refused(
                    ErrorKind::BadRequest,
                    format!("cannot re-execute holdfast now: {why}"),
                )
            })?;
            let message = format!(
                "re-executing {} (pid {}); services keep running",
                program.display(),
                std::process::id()
            );
            self.wind_down_proxies(program);
            Ok(Reply::Accepted { message })
        });
        let _ = reply.send(answer);
        false
    }

    /// The proxies' client connections live in this image only: they end first, at
    /// points their clients expect (new ones wait in the backlog for the new image),
    /// while the loop goes on (routes follow the events, requests are answered); the
    /// exec is due once they did ([`Shell::on_wound_down`]).
    fn wind_down_proxies(&mut self, program: PathBuf) {
        let wound = self.proxies.wind_down(PROXY_WIND_DOWN);
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let left = wound.await;
            let _ = done.send(Finished::WoundDown { program, left });
        });
    }

    /// The proxies accept again on their services' public sockets (see
    /// `Proxies::resume`): as the previous image `handed` them over, or after a failed
    /// exec as before their wind-down.
    fn resume_proxies(&mut self, handed: Option<crate::upgrade::proxy::ProxyForm>) {
        let sockets = &self.sockets;
        let specs = self.sup.plan().services.values();
        self.proxies
            .resume(handed, specs, |base| sockets.public(base));
    }

    /// The proxies wound down: the exec is due, unless holdfast is shutting down.
    pub(super) fn on_wound_down(&mut self, program: PathBuf, left: usize) {
        if self.sup.is_shutting_down() {
            return;
        }
        if left > 0 {
            tracing::warn!(
                "{left} proxied connections still open after {PROXY_WIND_DOWN:?}: the \
                 re-execution closes them"
            );
        }
        self.selfup.due = Some(program);
    }

    /// Execs `program` in place; returns only if that failed (holdfast goes on as it
    /// was, the error logged and shown in `status`), with whether the shutdown is
    /// complete.
    pub(super) async fn reexec(&mut self, program: PathBuf, sources: &mut Sources) -> bool {
        tracing::info!("re-executing {}", program.display());
        self.upstream.reloading();
        // Give the answer a moment to reach the client: its connection closes at exec.
        tokio::task::yield_now().await;
        reap::pause();
        // Exits reaped before the pause are handled here; later ones wait as zombies.
        let mut done = false;
        while let Ok(reaped) = sources.reaped.try_recv() {
            for input in self.on_reaped(reaped) {
                done |= self.apply(input);
            }
        }
        // Every note asked for so far, those of the exits above too, is in its file, and
        // what services write from here on waits in the pipes for the new image.
        let partial = self.freeze_captures().await;
        let error = match self.handover(partial.clone()) {
            Ok(handover) => exec(reexec::Program::Path(&program), handover),
            Err(why) => format!("cannot re-execute holdfast now: {why}"),
        };
        for (name, partial) in partial {
            if let Some(capture) = self.capture(&name) {
                capture.thaw(partial);
            }
        }
        reap::unpause();
        self.resume_proxies(None);
        tracing::error!("upgrade --self failed, holdfast goes on as it was: {error}");
        self.selfup.error = Some(error);
        self.upstream.ready_again();
        done
    }

    /// The core's snapshot, or why the state cannot be handed over now: what is under
    /// way in the shell (a quarantine record being written, a rolling restart, a build
    /// being verified) or in
    /// the core (see `Supervisor::snapshot`) would not be carried on.
    fn resumable(&self) -> Result<Snapshot, String> {
        if self.held.is_holding() {
            return Err("a quarantine record is being written".to_owned());
        }
        if let Some(base) = self.rolls.any() {
            return Err(format!("a rolling restart of {base} is under way"));
        }
        if let Some(target) = self.verifying() {
            return Err(format!("a new build of {target} is being verified"));
        }
        self.sup.snapshot(Instant::now())
    }

    /// Stops every capture reading its pipes; the partial lines each held.
    async fn freeze_captures(&self) -> BTreeMap<ServiceName, [Vec<u8>; 2]> {
        let frozen: Vec<_> = (self.slots.iter())
            .filter_map(|(name, slot)| Some((name.clone(), slot.capture.as_ref()?.freeze())))
            .collect();
        let mut partial = BTreeMap::new();
        for (name, lines) in frozen {
            partial.insert(name, lines.await);
        }
        partial
    }

    /// What the new image needs, or why the state cannot be handed over now.
    fn handover(&self, partial: BTreeMap<ServiceName, [Vec<u8>; 2]>) -> Result<Handover, String> {
        let now = Instant::now();
        let snapshot = self.resumable()?;
        let (last_event, events) = self.bus.history();
        let captures = self
            .slots
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.capture.as_ref()?.handover_fds())))
            .collect();
        Ok(Handover {
            format: handover::FORMAT,
            execs: self.selfup.execs + 1,
            uptime: now.duration_since(self.started),
            next_run: snapshot.next_run,
            services: handover::services(&snapshot),
            processes: handover::processes(&self.table),
            fds: Fds {
                control: self.selfup.control_fd,
                notify: self.selfup.notify_fd,
                captures,
                extra: self.extra_fds(),
            },
            partial,
            invocations: self.envs.invocations().clone(),
            last_event,
            events,
            args: std::env::args_os().collect(),
            previous: None,
            refused: None,
            adopted: (self.adoptions.processes.iter())
                .map(|(pid, (start, group))| (pid.as_raw(), (*start, group.as_raw())))
                .collect(),
            metrics: self.metrics.counted(),
            proxies: self.proxies.handover(),
        })
    }

    /// Further fds to hand over, by name: the services' listen sockets, which the new
    /// image takes back instead of binding them again (their backlogs stay).
    fn extra_fds(&self) -> BTreeMap<String, RawFd> {
        self.sockets.handover_fds()
    }

    /// The new image: every service back as the old one left it. Returns true once the
    /// shutdown is complete (never, in practice).
    pub(super) fn resume(&mut self, inherited: Handed) -> bool {
        let mut handover = inherited.handover;
        self.selfup.execs = handover.execs;
        self.selfup.error.clone_from(&handover.refused);
        self.bus
            .resume(handover.last_event, std::mem::take(&mut handover.events));
        // Before the resumed services publish anything: what they count adds to it.
        self.metrics.resume(std::mem::take(&mut handover.metrics));
        let mut extra = inherited.extra;
        self.sockets.adopt(self.sup.plan(), &mut extra);
        if !extra.is_empty() {
            let names: Vec<&String> = extra.keys().collect();
            tracing::warn!("handed-over fds nobody takes, closed: {names:?}");
        }
        // Before the core resumes: its first events (exits during the exec) move them.
        self.resume_proxies(Some(std::mem::take(&mut handover.proxies)));
        self.started = Instant::now()
            .checked_sub(handover.uptime)
            .unwrap_or(self.started);
        self.table = handover.table();
        self.publish_senders();
        let log_dir = self.sup.plan().daemon.log_dir.clone();
        for (name, fds) in &handover.fds.captures {
            // Every fd is taken, so that none is left for a child to inherit.
            let fds = fds.map(reexec::adopt);
            let Some(spec) = self.sup.plan().services.get(name).map(|s| s.log) else {
                continue;
            };
            let adopted = fds
                .into_iter()
                .collect::<std::io::Result<Vec<_>>>()
                .and_then(|fds| {
                    let fds: [OwnedFd; 4] = fds.try_into().expect("four fds");
                    let partial = handover.partial.get(name).cloned().unwrap_or_default();
                    Capture::adopt(&log_dir, name, spec, fds, partial)
                });
            match adopted {
                Ok(capture) => self.slot(name).capture = Some(capture),
                Err(e) => tracing::warn!("{name}: output capture not resumed: {e}"),
            }
        }
        self.rewatch_adopted(&handover.adopted);
        let done = self.apply(Input::Resume(handover.snapshot()));
        // The resumed captures know no pid yet: the runs they read are the snapshot's.
        for (name, slot) in &self.slots {
            if let Some(capture) = &slot.capture {
                capture.set_pid(self.journal_pid_now(name));
            }
        }
        self.rewatch();
        self.look_at_links();
        tracing::info!(
            "holdfast {} resumed (re-execution {}): {} services",
            env!("CARGO_PKG_VERSION"),
            self.selfup.execs,
            handover.services.len()
        );
        done
    }

    /// Cgroups and readiness watchers of the live runs, as at their spawn.
    pub(super) fn rewatch(&mut self) {
        let live: Vec<_> = self
            .sup
            .services()
            .filter_map(|s| Some((s.name().clone(), s.run()?, s.spec().clone(), s.is_up())))
            .collect();
        for (name, run, spec, up) in live {
            if self.cgroups.is_some() {
                if let Err(e) = self.prepare_cgroup(&name, &spec) {
                    tracing::warn!("{name}: cgroup not resumed: {e}");
                }
            }
            let starting = matches!(
                self.sup.service(&name).map(|s| s.state()),
                Some(State::Starting { .. })
            );
            if !starting || up {
                continue;
            }
            let target = self.target(&name, run);
            // A proxied run's own spec: its readiness is on its private port.
            let spec = self.proxies.run_spec(&name, run, &spec);
            let task = match &spec.ready {
                Readiness::Tcp(addr) => startup::tcp(target, *addr),
                Readiness::Http(url) => startup::http(target, url.clone()),
                _ => continue,
            };
            self.watch(&name, Watch::Readiness, run, task);
        }
    }
}

/// Whether the config file's `read` plan is the running one. The build a service with
/// `[upgrade]` runs is no part of it: the file's is where its link points now (a flip
/// not rolled out yet, or one rolled out since the load), while the build that runs is
/// handed over with the service.
fn same_plan(read: &Plan, running: &Plan) -> bool {
    let unpinned = |plan: &Plan| {
        let mut plan = plan.clone();
        for spec in plan.services.values_mut() {
            if let Some(upgrade) = &mut spec.upgrade {
                upgrade.build = PathBuf::new();
            }
        }
        plan
    };
    unpinned(read) == unpinned(running)
}

/// The binary now at holdfast's path, and the config file's plan.
fn check(
    program: Option<PathBuf>,
    config_path: &std::path::Path,
) -> Result<(PathBuf, Plan), ControlError> {
    let program = match program {
        Some(program) => program,
        None => reexec::own_path().map_err(|e| {
            refused(
                ErrorKind::Internal,
                format!("cannot tell holdfast's own path: {e}"),
            )
        })?,
    };
    use crate::process::program::FileKind;
    let problem = match FileKind::of(&program) {
        FileKind::File { executable: true } => None,
        FileKind::File { executable: false } => Some("is not executable"),
        FileKind::Directory => Some("is a directory"),
        FileKind::Missing => Some("does not exist"),
    };
    if let Some(problem) = problem {
        let message = format!(
            "no new holdfast to execute: {} {problem}",
            program.display()
        );
        return Err(refused(ErrorKind::BadRequest, message));
    }
    let plan = config::load(config_path)
        .map_err(|e| refused(ErrorKind::InvalidConfig, e.render_plain()))?;
    Ok((program, plan))
}

/// Clears `FD_CLOEXEC` on exactly the handed-over fds and execs `program` with the
/// handover's command line; on failure, sets the flag again and says why. The running
/// binary goes along, open, for a new image that cannot take over to come back to.
fn exec(program: reexec::Program<'_>, mut handover: Handover) -> String {
    let previous = match handover.previous {
        // Going back: the binary is the one to run, not one to hand on.
        Some(_) => None,
        None => match reexec::own_binary() {
            Ok(fd) => Some(fd),
            Err(e) => return format!("cannot open holdfast's own binary: {e}"),
        },
    };
    handover.previous = previous.as_ref().map(AsRawFd::as_raw_fd);
    let memfd = match reexec::memfd("holdfast-handover", &handover.to_bytes()) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot write the handover: {e}"),
    };
    let mut fds = handover.fds.all();
    fds.push(memfd.as_raw_fd());
    fds.extend(handover.previous);
    if let Err(e) = reexec::set_inheritable(&fds, true) {
        let _ = reexec::set_inheritable(&fds, false);
        return format!("cannot hand over the fds: {e}");
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k != RESUME_ENV)
        .collect();
    env.push((RESUME_ENV.into(), memfd.as_raw_fd().to_string().into()));
    let error = reexec::exec(program, &handover.args, &env);
    let _ = reexec::set_inheritable(&fds, false);
    match program {
        reexec::Program::Path(path) => format!("exec {}: {error}", path.display()),
        reexec::Program::Fd(_) => format!("exec the previous holdfast: {error}"),
    }
}

/// The new image cannot take over (`why`: its reading of the config failed): executes
/// the previous image again with the same handover, which then runs on as it was and
/// shows `why` as the failed upgrade's error. Returns only if that failed too.
pub fn fall_back(handed: Handed, why: &str) -> String {
    let Handed {
        mut handover,
        control,
        notify,
        extra,
        previous,
    } = handed;
    let Some(previous) = previous else {
        return "no previous holdfast to go back to".to_owned();
    };
    handover.execs = handover.execs.saturating_sub(1);
    handover.refused = Some(format!("the new holdfast did not take over: {why}"));
    let error = exec(reexec::Program::Fd(previous.as_fd()), handover);
    // Held open until here: their numbers are in the handover.
    drop((control, notify, extra));
    error
}
