//! Health probes. Network probes run in a task that reports back; exec probes are
//! children in the process table, so their result arrives from the reaper.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::unix::Pid;

use super::Shell;
use super::table::{ExecProbe, Process, Role};
use crate::health::{ProbeFailure, ProbeOutcome, probe};
use crate::model::{Probe, ServiceName, ServiceSpec};
use crate::process::{group, reap, spawn};
use crate::supervisor::core::Input;
use crate::supervisor::recipe::{Output, Setup};
use crate::supervisor::service::RunId;
use crate::supervisor::spawn_failure;

/// What probe tasks report to the runtime loop.
#[derive(Debug)]
pub(super) enum ProbeMsg {
    /// A network probe of `run` finished (or timed out).
    Done {
        service: ServiceName,
        run: RunId,
        outcome: ProbeOutcome,
    },
    /// An exec probe's timeout passed; if it is not reaped yet, it is killed.
    ExecTimedOut { pid: Pid, timeout: Duration },
}

impl Shell {
    /// Starts one health probe. Returns the result at once when the probe could not
    /// even start.
    pub(super) fn start_probe(
        &mut self,
        service: ServiceName,
        run: RunId,
        spec: &ServiceSpec,
    ) -> Option<Input> {
        // A proxy-mode run's probes reach it on its private port.
        let spec = self.proxies.run_spec(&service, run, spec);
        let spec: &ServiceSpec = &spec;
        let health = spec
            .health
            .as_ref()
            .expect("probes are only started for services with health");
        let timeout = health.timeout;
        let Probe::Exec { command } = &health.probe else {
            let probe = health.probe.clone();
            let tx = self.probe_tx.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let began = std::time::Instant::now();
                let outcome = probe::run(&probe, timeout).await;
                let kind = match probe {
                    Probe::Http { .. } => "http",
                    Probe::Tcp { .. } => "tcp",
                    Probe::Exec { .. } => "exec",
                };
                metrics.probe_took(service.as_str(), kind, &outcome, began.elapsed());
                // The loop may be gone (shutdown): nobody needs the result then.
                let _ = tx.send(ProbeMsg::Done {
                    service,
                    run,
                    outcome,
                });
            });
            return None;
        };
        let recipe = self.recipe(spec);
        let output = Output {
            stdout: self.dev_null.as_fd(),
            stderr: self.dev_null.as_fd(),
        };
        let request = recipe.request(spec, command, Setup::Helper, output);
        let alive_at = reap::latest();
        let began = Instant::now();
        let pid = match spawn::spawn(&request) {
            Ok(spawned) => spawned.pid,
            Err(e) => {
                let outcome = ProbeOutcome::Failure(ProbeFailure::Spawn(spawn_failure::cause(&e)));
                return Some(self.exec_probe_result(service, run, began, outcome));
            }
        };
        let role = Role::Probe(run, ExecProbe::new(began));
        let process = Process {
            service,
            role,
            alive_at,
        };
        self.table.insert(pid, process);
        let tx = self.probe_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = tx.send(ProbeMsg::ExecTimedOut { pid, timeout });
        });
        None
    }

    /// At shutdown: exec probes and `verify` commands still running are killed (their
    /// process group), since no service is left to judge and they are in no service
    /// cgroup that a stop reaches. An exec probe is marked cancelled first, so that its
    /// exit is neither a result nor a `fail` in the probe timings.
    pub(super) fn kill_probes(&mut self) {
        let probes: Vec<Pid> = self
            .table
            .processes()
            .filter(|(_, p)| matches!(p.role, Role::Probe(..) | Role::Verify(_)))
            .map(|(pid, _)| pid)
            .collect();
        for pid in probes {
            if let Some(Process {
                role: Role::Probe(_, exec),
                ..
            }) = self.table.process_mut(pid)
            {
                exec.deadline = probe::ExecDeadline::Cancelled;
            }
            if let Some(Err(e)) = kill_group(pid) {
                tracing::warn!("failed to kill the exec probe {pid}: {e}");
            }
        }
    }

    pub(super) fn on_probe(&mut self, msg: ProbeMsg) -> Option<Input> {
        match msg {
            ProbeMsg::Done {
                service,
                run,
                outcome,
            } => Some(Input::ProbeResult {
                service,
                run,
                outcome,
            }),
            ProbeMsg::ExecTimedOut { pid, timeout } => {
                // Not in the table: its exit was handled already. In the table, it may
                // still have been reaped just now (the report is on its way): the group
                // is only killed while the reaper is held off from freeing the pid, and
                // the result is decided when the reap arrives.
                let process = self.table.process_mut(pid)?;
                let Role::Probe(_, exec) = &mut process.role else {
                    return None;
                };
                match kill_group(pid) {
                    Some(Ok(_)) => exec.deadline = probe::ExecDeadline::KilledAfter(timeout),
                    Some(Err(e)) => tracing::warn!(
                        "{}: failed to kill timed-out probe {pid}: {e}",
                        process.service
                    ),
                    None => {}
                }
                None
            }
        }
    }

    /// The result of an exec probe of `run` begun at `began` that ended with `outcome`
    /// (reaped, or not even spawned), timed for `/metrics` like a network probe.
    pub(super) fn exec_probe_result(
        &self,
        service: ServiceName,
        run: RunId,
        began: Instant,
        outcome: ProbeOutcome,
    ) -> Input {
        let took = began.elapsed();
        self.metrics
            .probe_took(service.as_str(), "exec", &outcome, took);
        Input::ProbeResult {
            service,
            run,
            outcome,
        }
    }
}

/// SIGKILL to the process group a helper (an exec probe, a `verify` command) leads, only
/// while it is not reaped (so that a freed, reused pid is never hit); `None` once it was.
pub(super) fn kill_group(pid: Pid) -> Option<Result<bool, nix::errno::Errno>> {
    reap::while_unreaped(pid, || {
        group::signal_group(pid, crate::unix::Signal::SIGKILL)
    })
}
