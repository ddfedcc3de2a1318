//! Reaped processes become inputs: the process table says whose each one was, and its
//! role what the exit means (the run's end, a probe's result, a hook's finish, or
//! maybe the last process of a run gone).

use crate::unix::Pid;

use super::Shell;
use super::table::{Adoption, Claim, Owner, Process, Role};
use crate::health::probe;
use crate::model::{ExitStatus, ServiceName};
use crate::process::{group, reap};
use crate::supervisor::core::Input;
use crate::supervisor::service::RunId;

impl Shell {
    /// Turns a reaped process into inputs: the exit of a service's main process, an exec
    /// probe's result, or the last process of a run going away. A hook's exit is
    /// published as its event.
    pub(super) fn on_reaped(&mut self, reaped: reap::Reaped) -> Vec<Input> {
        self.adoptions.processes.remove(&reaped.pid);
        let claimed = match self.table.claim(&reaped) {
            Claim::Process(process) => return self.process_exited(reaped, process),
            Claim::InGroup(owner) => Some(owner),
            Claim::Unclaimed => None,
        };
        if claimed.is_none() && self.lingering.is_empty() {
            tracing::debug!(
                pid = %reaped.pid,
                "reaped a process claimed by nothing ({})",
                reaped.status
            );
            return Vec::new();
        }
        self.emptied_runs(claimed)
    }

    /// What the exit of a process of the table means, by its role.
    fn process_exited(&mut self, reaped: reap::Reaped, process: Process) -> Vec<Input> {
        let Process { service, role, .. } = process;
        tracing::debug!(
            "{service}: reaped pid {} ({}): {}",
            reaped.pid,
            role.describe(),
            reaped.status
        );
        match role {
            Role::Main(run) | Role::Forker(run) => {
                vec![self.main_exited(service, run, reaped.status)]
            }
            Role::Probe(_, exec) if exec.deadline == probe::ExecDeadline::Cancelled => Vec::new(),
            Role::Probe(run, exec) => {
                let outcome = probe::exec_verdict(exec.deadline, reaped.status);
                vec![self.exec_probe_result(service, run, exec.began, outcome)]
            }
            Role::Hook(hook) => {
                let event = crate::supervisor::hooks::finished(&service, hook, &reaped);
                self.publish(&event);
                Vec::new()
            }
            Role::Member(run) => {
                let owner = Owner { service, run };
                self.emptied_runs(Some(owner))
            }
            Role::Verify(verify) => {
                self.verify_exited(verify, reaped.status);
                Vec::new()
            }
            // Its output was read to the end: that is its answer (see `arbiter`).
            Role::Systemctl => Vec::new(),
        }
    }

    /// Runs whose last process may be gone: `owner` (the run of the reaped process) and
    /// every run still waiting for its last process (which may be in the cgroup only).
    fn emptied_runs(&mut self, owner: Option<Owner>) -> Vec<Input> {
        let mut runs = self.lingering();
        if let Some(owner) = owner {
            let run = (owner.service, owner.run);
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
        let mut inputs = Vec::new();
        for (service, run) in runs {
            // The main process (wherever it is) still runs, or another group of the run
            // or its cgroup still has members: not empty yet.
            if self.run_alive(&service, run) || self.table.has_main(run) {
                continue;
            }
            self.lingering.remove(&(service.clone(), run));
            inputs.push(Input::GroupEmpty { service, run });
        }
        inputs
    }

    /// Runs whose main process exited while other processes remained.
    fn lingering(&self) -> Vec<(ServiceName, RunId)> {
        self.lingering.iter().cloned().collect()
    }

    /// Whether any process group of `run` still has members (forgetting empty ones), or
    /// the service's cgroup does.
    fn run_alive(&mut self, service: &ServiceName, run: RunId) -> bool {
        let mut alive = false;
        for pgid in self.table.groups_of(run) {
            if group::group_alive(pgid) {
                alive = true;
            } else {
                self.table.forget_group(pgid);
            }
        }
        alive
            || (!self.overlapping(service, run)
                && self.cgroup(service).is_some_and(|c| !c.is_empty()))
    }

    /// The main process of `run` ended with `status`: the exit input, with an OOM kill
    /// recognised and the run remembered as lingering while processes remain.
    pub(super) fn main_exited(
        &mut self,
        service: ServiceName,
        run: RunId,
        status: ExitStatus,
    ) -> Input {
        // Its last words (an unfinished line) go before the note of its exit. Not while
        // another run of the service writes to the same pipes: that would cut its line.
        if !self.overlapping(&service, run)
            && let Some(capture) = self.capture(&service)
        {
            capture.end_run();
        }
        let group_alive = self.run_alive(&service, run);
        let status = self.classify(&service, status);
        self.report_crash(&service, run, status);
        if group_alive {
            self.lingering.insert((service.clone(), run));
        }
        Input::Exited {
            service,
            run,
            status,
            group_alive,
        }
    }

    /// `pid` is now the main process of `run`. Returns its exit if it was already reaped:
    /// only a reap after `alive_at` can be, an earlier one was of an earlier process.
    pub(super) fn main_pid(
        &mut self,
        service: ServiceName,
        run: RunId,
        pid: Pid,
        alive_at: reap::ReapSeq,
    ) -> Option<Input> {
        let owner = Owner {
            service: service.clone(),
            run,
        };
        if let Adoption::Exited(reaped) = self.table.adopt_main(pid, owner.clone(), alive_at) {
            return Some(self.main_exited(service, run, reaped.status));
        }
        if let Ok(stat) = crate::process::proc_stat(pid) {
            self.table.add_group(stat.pgid, owner);
        }
        self.publish_senders();
        None
    }
}
