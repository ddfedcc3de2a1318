//! A run from its launch until it is up: spawn, readiness, notify messages, the adopted
//! daemon of a forking service, health probes, and the start deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::unix::Pid;

use super::{
    AfterStop, Cause, Effect, ForkerExit, MainProcess, RESOURCE_RETRY, RunId, Service,
    SpawnFailure, Start, State, Watchdog,
};
use crate::clock::later;
use crate::health::{Monitor, ProbeOutcome};
use crate::model::{ExitStatus, Readiness, ServiceKind, ServiceSpec, UnhealthyAction};
use crate::notify::NotifyMsg;
use crate::supervisor::event::EventKind;
use crate::unix::ReapSeq;

impl Service {
    /// Begins a spawn. `run` is fresh (allocated by the supervisor).
    pub(super) fn launch(&mut self, run: RunId, now: Instant) -> Vec<Effect> {
        if self.observes() {
            return self.observe(run, now);
        }
        if let Some(effects) = self.back_to_upstream(run, now) {
            return effects;
        }
        self.status_text = None;
        self.last_cause = None;
        self.enter(State::Launching { run }, now);
        let build = self.build.as_ref().map(|b| b.display().to_string());
        let spec = if self.env_overrides.is_empty() && build.is_none() {
            Arc::clone(&self.spec)
        } else {
            let mut spec = ServiceSpec::clone(&self.spec);
            spec.env.extend(self.env_overrides.clone());
            if let Some(build) = build {
                // The pinned build, not whatever the configured path points to now.
                spec.command[0] = build;
            }
            Arc::new(spec)
        };
        vec![Effect::Spawn {
            service: self.spec.name.clone(),
            run,
            spec,
        }]
    }

    pub(super) fn spawned(&mut self, run: RunId, pid: Pid, now: Instant) -> Vec<Effect> {
        if self.state != (State::Launching { run }) {
            return Vec::new();
        }
        // The new run of a rollout has `ready_timeout` to come up.
        let timeout = match (&self.rollout, &self.spec.upgrade) {
            (Some(_), Some(upgrade)) => crate::model::Timeout::After(upgrade.ready_timeout),
            _ => self.spec.start_timeout,
        };
        let start = Start {
            ready: self.spec.ready == Readiness::None,
            deadline: timeout.deadline(now),
            watchdog: self.spec.watchdog,
            forker: None,
        };
        let state = State::Starting {
            run,
            pid,
            spawned: now,
            main_pid: None,
            start,
        };
        self.enter(state, now);
        self.health = self.spec.health.as_ref().map(|h| Monitor::new(h, now));
        let mut effects = vec![self.emit(EventKind::Spawned { run, pid })];
        if self.spec.start_secs.is_zero() && self.is_up() {
            effects.extend(self.promote(now));
        }
        effects
    }

    /// Starting becomes running: up for `start_secs` and up in every required sense.
    pub(super) fn promote(&mut self, now: Instant) -> Vec<Effect> {
        let State::Starting {
            run,
            pid,
            spawned,
            main_pid,
            ref start,
        } = self.state
        else {
            return Vec::new();
        };
        let mut watchdog = Watchdog {
            interval: start.watchdog,
            deadline: None,
        };
        watchdog.arm(now);
        let running = State::Running {
            run,
            pid,
            spawned,
            main_pid,
            watchdog,
        };
        self.enter(running, now);
        let main = main_pid.unwrap_or(pid);
        let mut effects = vec![self.emit(EventKind::Started { run, pid: main })];
        effects.extend(self.rollout_up(now));
        effects
    }

    pub(super) fn spawn_failed(
        &mut self,
        run: RunId,
        failure: SpawnFailure,
        now: Instant,
    ) -> Vec<Effect> {
        if self.state != (State::Launching { run }) {
            return Vec::new();
        }
        let mut effects = vec![self.emit(EventKind::SpawnFailed {
            run,
            error: failure.to_string(),
        })];
        match failure {
            SpawnFailure::Service(error) => {
                effects.extend(self.after_run(Cause::SpawnFailed(error), now, false));
            }
            SpawnFailure::HoldfastResources(_) => effects.extend(self.retry_spawn(now)),
        }
        effects
    }

    /// holdfast's own shortage stopped the spawn: try again later, leaving the restart
    /// policy, the start limit and the backoff attempt untouched.
    fn retry_spawn(&mut self, now: Instant) -> Vec<Effect> {
        self.enter(
            State::Backoff {
                until: now + RESOURCE_RETRY,
            },
            now,
        );
        vec![self.emit(EventKind::RestartScheduled {
            delay: RESOURCE_RETRY,
            attempt: self.attempt,
        })]
    }

    /// While starting: what the service still waits for, for `status`.
    pub fn start_wait(&self, now: Instant) -> Option<String> {
        let State::Starting {
            main_pid, start, ..
        } = &self.state
        else {
            return None;
        };
        if self.is_up() {
            return None;
        }
        let what = match (&self.spec.kind, main_pid) {
            (ServiceKind::Forking { pidfile }, None) => {
                format!("waiting for pidfile {}", pidfile.display())
            }
            _ => match &self.spec.ready {
                Readiness::Notify => "waiting for READY=1".to_owned(),
                Readiness::Fd(fd) => format!("waiting for a newline on fd {fd}"),
                Readiness::Tcp(addr) => format!("waiting for tcp {addr} to accept"),
                Readiness::Http(url) => format!("waiting for {url} to answer 2xx"),
                Readiness::Health => "waiting for a passing health probe".to_owned(),
                Readiness::None => return None,
            },
        };
        let Some(deadline) = start.deadline else {
            return Some(format!("{what} (no timeout)"));
        };
        let left = deadline.saturating_duration_since(now);
        Some(format!(
            "{what} (timeout in {})",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        ))
    }

    /// The readiness condition of `run` was met (a newline on the notification fd, a
    /// TCP connect or HTTP answer, a passing health probe). Ignored unless starting.
    pub(super) fn ready(&mut self, run: RunId) -> Vec<Effect> {
        match &mut self.state {
            State::Starting { run: r, start, .. } if *r == run && !start.ready => {
                start.ready = true;
                self.became_ready(run)
            }
            _ => Vec::new(),
        }
    }

    /// Messages from the service on `NOTIFY_SOCKET` (the shell checked that the sender
    /// belongs to `run`, and that a `MAINPID=` names a process of the service).
    pub(super) fn notify(
        &mut self,
        run: RunId,
        msgs: Vec<NotifyMsg>,
        alive_at: ReapSeq,
        now: Instant,
    ) -> Vec<Effect> {
        let live = matches!(
            self.state,
            State::Starting { run: r, .. } | State::Running { run: r, .. } if r == run
        );
        if !live {
            // A stopping service may still say what it is doing.
            if self.run() == Some(run) {
                for msg in msgs {
                    if let NotifyMsg::Status(text) = msg {
                        self.status_text = Some(text).filter(|t| !t.is_empty());
                    }
                }
            }
            return Vec::new();
        }
        let mut effects = Vec::new();
        for msg in msgs {
            effects.extend(self.notified(run, msg, alive_at, now));
        }
        effects
    }

    /// One message from the live `run`.
    fn notified(
        &mut self,
        run: RunId,
        msg: NotifyMsg,
        alive_at: ReapSeq,
        now: Instant,
    ) -> Vec<Effect> {
        let notify_ready = self.spec.ready == Readiness::Notify;
        match (msg, &mut self.state) {
            (NotifyMsg::Ready, State::Starting { start, .. }) if notify_ready && !start.ready => {
                start.ready = true;
                return self.became_ready(run);
            }
            (NotifyMsg::Status(text), _) => {
                self.status_text = Some(text).filter(|t| !t.is_empty());
            }
            (NotifyMsg::Watchdog, State::Running { watchdog, .. }) => watchdog.arm(now),
            (NotifyMsg::WatchdogTrigger, State::Running { watchdog, .. })
                if watchdog.interval.is_some() =>
            {
                watchdog.deadline = Some(now);
            }
            (NotifyMsg::WatchdogUsec(interval), State::Starting { start, .. }) => {
                start.watchdog = Some(interval);
            }
            (NotifyMsg::WatchdogUsec(interval), State::Running { watchdog, .. }) => {
                watchdog.interval = Some(interval);
                watchdog.arm(now);
            }
            (NotifyMsg::ExtendTimeout(by), State::Starting { start, .. }) => {
                if let Some(deadline) = &mut start.deadline {
                    *deadline = (*deadline).max(later(now, by));
                }
            }
            (NotifyMsg::MainPid(pid), _) => return self.set_main_pid(run, pid, alive_at),
            (NotifyMsg::Reloading, _) => return self.notified_event("reloading".to_owned()),
            (NotifyMsg::Stopping, _) => return self.notified_event("stopping".to_owned()),
            (NotifyMsg::Errno(errno), _) => return self.notified_event(format!("errno {errno}")),
            _ => {}
        }
        Vec::new()
    }

    fn notified_event(&self, what: String) -> Vec<Effect> {
        vec![self.emit(EventKind::Notified { what })]
    }

    /// The pidfile of a forking service named `pid`, a live process of the service: it
    /// becomes the main process.
    pub(super) fn adopted(&mut self, run: RunId, pid: Pid, alive_at: ReapSeq) -> Vec<Effect> {
        match self.state {
            State::Starting {
                run: r,
                main_pid: None,
                ..
            } if r == run => self.set_main_pid(run, pid, alive_at),
            _ => Vec::new(),
        }
    }

    fn set_main_pid(&mut self, run: RunId, pid: Pid, alive_at: ReapSeq) -> Vec<Effect> {
        let unchanged = self.state.main_pid().or(self.group()) == Some(pid);
        if unchanged {
            return Vec::new();
        }
        let was_up = self.is_up();
        match &mut self.state {
            State::Starting { main_pid, .. }
            | State::Running { main_pid, .. }
            | State::Stopping { main_pid, .. } => *main_pid = Some(pid),
            _ => return Vec::new(),
        }
        let mut effects = vec![
            self.emit(EventKind::MainPidChanged { pid }),
            Effect::MainPid {
                service: self.spec.name.clone(),
                run,
                pid,
                alive_at,
            },
        ];
        if !was_up && self.is_up() {
            effects.push(self.emit(EventKind::BecameReady { run }));
        }
        effects
    }

    fn became_ready(&mut self, run: RunId) -> Vec<Effect> {
        if self.is_up() {
            vec![self.emit(EventKind::BecameReady { run })]
        } else {
            Vec::new()
        }
    }

    /// The spawned process of a forking service exited. Exit 0 before a daemon was
    /// adopted is the expected double fork: keep starting and read the pidfile.
    pub(super) fn forker_exited(
        &mut self,
        run: RunId,
        pid: Pid,
        status: ExitStatus,
        group_alive: bool,
    ) -> Option<Vec<Effect>> {
        let ServiceKind::Forking { pidfile } = &self.spec.kind else {
            return None;
        };
        let State::Starting {
            main_pid: None,
            start,
            ..
        } = &mut self.state
        else {
            return None;
        };
        if start.forker.is_some() || status != ExitStatus::Exited(0) {
            return None;
        }
        start.forker = Some(ForkerExit {
            status,
            group_alive,
        });
        let path = pidfile.clone();
        Some(vec![
            self.emit(EventKind::Exited { run, pid, status }),
            self.emit(EventKind::AwaitingPidfile { path: path.clone() }),
            Effect::ReadPidfile {
                service: self.spec.name.clone(),
                run,
                path,
            },
        ])
    }

    /// `start_timeout` passed without the service becoming ready: a failed start. Its
    /// processes are stopped first; the restart policy applies once they are gone.
    pub(super) fn not_ready(&mut self, now: Instant) -> Vec<Effect> {
        let State::Starting {
            pid,
            spawned,
            ref start,
            ..
        } = self.state
        else {
            return Vec::new();
        };
        let forker = start.forker;
        let timeout = start
            .deadline
            .unwrap_or(now)
            .saturating_duration_since(spawned);
        let cause = Cause::NotReady { timeout };
        self.last_cause = Some(cause.clone());
        let mut effects = vec![self.emit(EventKind::StartTimedOut { timeout })];
        let then = AfterStop::Exit {
            cause: cause.clone(),
            early: true,
        };
        let signal = self.spec.stop.signal;
        effects.extend(match forker {
            Some(ForkerExit {
                status,
                group_alive: true,
            }) => self.begin_stop(signal, pid, MainProcess::Exited(status), then, now),
            Some(_) => self.end_run(cause, now, true),
            None => self.begin_stop(signal, pid, MainProcess::Alive, then, now),
        });
        effects
    }

    /// Starts a health probe if one is due: returns the effect asking the shell to run
    /// it. Probes run only while the service is starting or running.
    pub(super) fn probe_if_due(&mut self, now: Instant) -> Option<Effect> {
        let run = match self.state {
            State::Starting { run, .. } | State::Running { run, .. } => run,
            _ => return None,
        };
        let monitor = self.health.as_mut()?;
        monitor.start_if_due(now).then(|| Effect::StartProbe {
            service: self.spec.name.clone(),
            run,
            spec: Arc::clone(&self.spec),
        })
    }

    /// A probe of `run` finished. Results of earlier runs, or arriving after the run
    /// left starting/running, are dropped.
    pub(super) fn probe_result(
        &mut self,
        run: RunId,
        outcome: ProbeOutcome,
        now: Instant,
    ) -> Vec<Effect> {
        let current = matches!(
            self.state,
            State::Starting { run: r, .. } | State::Running { run: r, .. } if r == run
        );
        if !current {
            return Vec::new();
        }
        let Some(monitor) = self.health.as_mut() else {
            return Vec::new();
        };
        let passed = outcome == ProbeOutcome::Success;
        let change = monitor.finished(outcome, now);
        let mut effects = Vec::new();
        if passed && self.spec.ready == Readiness::Health {
            // `ready = "health"`: the first passing probe makes the run ready.
            effects.extend(self.ready(run));
        }
        let Some(change) = change else {
            return effects;
        };
        effects.push(self.health_changed(run, &change));
        let action = self.spec.health.as_ref().map(|h| h.unhealthy_action);
        let unhealthy = change.to == crate::health::HealthState::Unhealthy;
        if unhealthy {
            let reason = format!("turned unhealthy after {} failed probes", change.failures);
            if let Some(rollback) = self.roll_back_unhealthy(run, reason, now) {
                effects.extend(rollback);
                return effects;
            }
        }
        if unhealthy && action == Some(UnhealthyAction::Restart) {
            // The normal stop path; the restart policy then acts on the failure (so the
            // backoff delay and the start limit apply, and the restart is counted).
            let then = AfterStop::Exit {
                cause: Cause::Unhealthy {
                    failures: change.failures,
                    last_error: change.last_error,
                },
                early: false,
            };
            effects.extend(self.stop_run(then, now));
        }
        effects
    }
}
