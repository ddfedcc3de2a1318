//! Spawning a service's main process: its log capture, cgroup, readiness pipe and
//! watcher, and its entry in the process table.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::Shell;
use super::table::{Process, Role};
use super::watchers::Watch;
use crate::logs::Capture;
use crate::model::{Readiness, ServiceKind, ServiceName, ServiceSpec, SpawnErrorKind};
use crate::notify::server::Spawning;
use crate::process::{reap, spawn};
use crate::supervisor::core::{Effect, Input};
use crate::supervisor::recipe::{Output, Setup};
use crate::supervisor::service::{RunId, SpawnFailure};
use crate::supervisor::spawn_failure;
use crate::supervisor::startup;

/// A spawn under way: the child may still be cloning and exec'ing in the spawner
/// thread while holdfast prepares the next one.
pub(super) struct Launching {
    service: ServiceName,
    run: RunId,
    spec: Arc<ServiceSpec>,
    /// The latest reap before the spawn: the child's exit is reaped with a greater number.
    alive_at: reap::ReapSeq,
    started: Result<Started, SpawnFailure>,
}

/// What a submitted spawn leaves to finish.
struct Started {
    pending: spawn::Pending,
    /// For `ready = { fd = N }`: the read end of the notification pipe.
    ready_pipe: Option<OwnedFd>,
    /// The child may notify before its pid is known.
    _spawning: Spawning,
}

/// How many spawns may be under way at once: enough to keep the spawner thread busy
/// while holdfast prepares the next services, few enough that their fds in flight stay
/// far below any limit.
const SPAWN_AHEAD: usize = 32;

impl Shell {
    /// Finishes `first` and every spawn that directly follows it in `queue` (a boot or a
    /// reload starts many services at once), keeping up to [`SPAWN_AHEAD`] under way: the
    /// next ones are submitted before the oldest is waited for, so that holdfast prepares
    /// one service while the spawner thread clones and execs the one before. The core
    /// gets each answer in the order of its spawns, and each answer's effects join the
    /// back of `queue` at once, exactly as if they were spawned one at a time.
    pub(super) fn spawn_ahead(&mut self, first: Launching, queue: &mut VecDeque<Effect>) {
        let mut under_way = VecDeque::from([first]);
        while !under_way.is_empty() {
            while under_way.len() < SPAWN_AHEAD {
                let next = match queue.front() {
                    Some(Effect::Spawn { service, .. })
                        if !under_way.iter().any(|l| &l.service == service) =>
                    {
                        queue.pop_front()
                    }
                    _ => None,
                };
                let Some(Effect::Spawn { service, run, spec }) = next else {
                    break;
                };
                under_way.push_back(self.start_spawn(service, run, spec));
            }
            let oldest = under_way.pop_front().expect("not empty");
            let input = self.finish_spawn(oldest);
            queue.extend(self.sup.handle(input, Instant::now()));
        }
    }

    /// Prepares and submits the spawn, without waiting for the child's exec.
    pub(super) fn start_spawn(
        &mut self,
        service: ServiceName,
        run: RunId,
        spec: Arc<ServiceSpec>,
    ) -> Launching {
        let alive_at = reap::latest();
        let mut spec = spec;
        let started = self.try_spawn(&service, run, &mut spec);
        Launching {
            service,
            run,
            spec,
            alive_at,
            started,
        }
    }

    /// Waits for the child's exec and records it (process table, readiness watcher).
    pub(super) fn finish_spawn(&mut self, launching: Launching) -> Input {
        let Launching {
            service,
            run,
            spec,
            alive_at,
            started,
        } = launching;
        let started = started.and_then(|started| {
            let pid = started
                .pending
                .wait()
                .map_err(|e| spawn_failure::from_spawn(&e))?
                .pid;
            self.senders.admit(pid);
            Ok((pid, started.ready_pipe))
        });
        let (pid, ready_pipe) = match started {
            Ok(spawned) => spawned,
            Err(error) => {
                return Input::SpawnFailed {
                    service,
                    run,
                    error,
                };
            }
        };
        let role = match spec.kind {
            ServiceKind::Forking { .. } => Role::Forker(run),
            _ => Role::Main(run),
        };
        let owner = super::table::Owner {
            service: service.clone(),
            run,
        };
        self.table.add_group(pid, owner);
        self.table.insert(
            pid,
            Process {
                service: service.clone(),
                role,
                alive_at,
            },
        );
        self.publish_senders();
        let target = self.target(&service, run);
        let watcher = match &spec.ready {
            Readiness::Tcp(addr) => Some(startup::tcp(target, *addr)),
            Readiness::Http(url) => Some(startup::http(target, url.clone())),
            Readiness::Fd(_) => ready_pipe.map(|pipe| startup::fd(target, pipe)),
            _ => None,
        };
        if let Some(task) = watcher {
            self.watch(&service, Watch::Readiness, run, task);
        }
        Input::Spawned { service, run, pid }
    }

    /// The service's log capture, opened at its first spawn; a later spawn first ends the
    /// previous run's output (whatever its leftover processes wrote is its output, not
    /// this run's).
    fn open_capture(&mut self, name: &ServiceName, spec: &ServiceSpec) -> Result<(), SpawnFailure> {
        let log_dir = self.sup.plan().daemon.log_dir.clone();
        let slot = self.slot(name);
        match &slot.capture {
            Some(capture) => {
                capture.end_run();
                capture.set_spec(spec.log);
            }
            None => {
                let capture = Capture::open(&log_dir, name, spec.log).map_err(|e| {
                    let message = format!("cannot capture output in {}: {e}", log_dir.display());
                    spawn_failure::from_io(SpawnErrorKind::Other, &e, message)
                })?;
                slot.capture = Some(capture);
            }
        }
        Ok(())
    }

    /// Prepares and submits the spawn of `spec`: the fds the child needs are passed along
    /// (ours close when this returns). For `ready = { fd = N }`, also the read end of
    /// the notification pipe whose write end the child gets as fd N. A proxy-mode
    /// service's run gets its private port: `spec` becomes the run's own (`{port}`
    /// substituted), which its readiness watcher then uses.
    fn try_spawn(
        &mut self,
        name: &ServiceName,
        run: RunId,
        spec: &mut Arc<ServiceSpec>,
    ) -> Result<Started, SpawnFailure> {
        // Also a run that fails to spawn is a run of its own (its hooks get its id).
        self.envs.begin_run(name);
        let procs = self.prepare_cgroup(name, spec)?;
        self.open_capture(name, spec)?;
        self.sockets
            .bind(spec)
            .map_err(|e| spawn_failure::from_io(SpawnErrorKind::Other, &e.source, e.to_string()))?;
        let public = || self.sockets.public(name.base());
        *spec = self
            .proxies
            .prepare_run(name, run, spec, public)
            .map_err(|e| {
                let message = format!("proxy mode: {e}");
                spawn_failure::from_io(SpawnErrorKind::Other, &e, message)
            })?;
        let spec: &ServiceSpec = spec;
        let mut recipe = self.recipe(spec);
        if spec.ready.needs_notify_socket() || spec.watchdog.is_some() {
            recipe.set("NOTIFY_SOCKET", self.notify_path.display().to_string());
        }
        if let Some(watchdog) = spec.watchdog {
            // Without WATCHDOG_PID, which systemd allows: the child's pid is only known
            // after fork, and sd_watchdog_enabled() accepts a missing one.
            recipe.set("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
        if let ServiceKind::Forking { pidfile } = &spec.kind {
            // A pidfile left by an earlier run would name a dead (or reused) pid.
            let _ = std::fs::remove_file(pidfile);
        }
        let ready_pipe = ready_pipe(spec)?;
        let extra_fds: Vec<_> = ready_pipe
            .iter()
            .map(|(_, write, fd)| (write.as_fd(), *fd))
            .collect();
        let procs: Vec<BorrowedFd<'_>> = procs.iter().map(AsFd::as_fd).collect();
        let capture = self.capture(name).expect("opened above");
        let output = Output {
            stdout: capture.stdout(),
            stderr: capture.stderr(),
        };
        let (listen_fds, listen_fd_names) = self.sockets.for_spawn(spec);
        let setup = Setup::Main {
            cgroup_procs: &procs,
            listen_fds: &listen_fds,
            listen_fd_names: &listen_fd_names,
            extra_fds: &extra_fds,
        };
        let request = recipe.request(spec, &spec.command, setup, output);
        // The child may notify before its pid is known.
        let spawning = self.senders.spawning();
        let pending = spawn::submit(&request);
        // Our copy of the write end goes, so the reader sees EOF once the service closes
        // its copy without writing a newline.
        Ok(Started {
            pending,
            ready_pipe: ready_pipe.map(|(read, _, _)| read),
            _spawning: spawning,
        })
    }
}

/// For `ready = { fd = N }`: the notification pipe (read end, write end) and N.
fn ready_pipe(spec: &ServiceSpec) -> Result<Option<(OwnedFd, OwnedFd, i32)>, SpawnFailure> {
    let Readiness::Fd(fd) = spec.ready else {
        return Ok(None);
    };
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        let message = format!("cannot create the readiness pipe: {e}");
        spawn_failure::from_errno(SpawnErrorKind::Other, e, message)
    })?;
    Ok(Some((read, write, fd)))
}
