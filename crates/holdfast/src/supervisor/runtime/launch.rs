//! Spawning a service's main process: its log capture, cgroup, readiness pipe and
//! watcher, and its entry in the process table.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::unix::Pid;

use super::Shell;
use super::table::{Process, Role};
use super::watchers::Watch;
use crate::logs::Capture;
use crate::model::{Readiness, ServiceKind, ServiceName, ServiceSpec, SpawnErrorKind};
use crate::process::{reap, spawn};
use crate::supervisor::core::Input;
use crate::supervisor::recipe::{Output, Setup};
use crate::supervisor::service::{RunId, SpawnFailure};
use crate::supervisor::spawn_failure;
use crate::supervisor::startup;

impl Shell {
    pub(super) fn spawn(&mut self, service: ServiceName, run: RunId, spec: &ServiceSpec) -> Input {
        // Before the spawn: the child's exit is reaped with a greater number.
        let alive_at = reap::latest();
        let (pid, ready_pipe) = match self.try_spawn(&service, spec) {
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
            instance: service.instance_index().unwrap_or(0),
            run,
        };
        self.table.add_group(pid, owner);
        self.table.insert(
            pid,
            Process {
                service: service.clone(),
                instance: service.instance_index().unwrap_or(0),
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
            Some(capture) => capture.end_run(),
            None => {
                let capture = Capture::open(&log_dir, name, spec.log).map_err(|e| {
                    let message = format!("cannot capture output in {}: {e}", log_dir.display());
                    spawn_failure::from_io(SpawnErrorKind::Other, &e, message)
                })?;
                slot.capture = Some(capture);
            }
        }
        if let Some(capture) = &slot.capture {
            capture.set_spec(spec.log);
        }
        Ok(())
    }

    /// Spawns `spec`; returns the pid and, for `ready = { fd = N }`, the read end of the
    /// notification pipe whose write end the child has as fd N.
    fn try_spawn(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<(Pid, Option<OwnedFd>), SpawnFailure> {
        // Also a run that fails to spawn is a run of its own (its hooks get its id).
        self.envs.begin_run(name);
        let procs = self.prepare_cgroup(name, spec)?;
        self.open_capture(name, spec)?;
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
        let setup = Setup::Main {
            cgroup_procs: &procs,
            extra_fds: &extra_fds,
        };
        let request = recipe.request(spec, &spec.command, setup, output);
        let pid = {
            // The child may notify before `spawn` returns its pid.
            let _spawning = self.senders.spawning();
            let pid = spawn::spawn(&request)
                .map(|spawned| spawned.pid)
                .map_err(|e| spawn_failure::from_spawn(&e))?;
            self.senders.admit(pid);
            pid
        };
        // Our copy of the write end goes, so the reader sees EOF once the service closes
        // its copy without writing a newline.
        Ok((pid, ready_pipe.map(|(read, _, _)| read)))
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
