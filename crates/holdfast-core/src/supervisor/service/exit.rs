//! The end of a run: its exit, its process group emptying, and the restart policy
//! (exit-code actions, start limit, backoff).

use std::time::{Duration, Instant};

use crate::unix::Pid;

use super::upgrade::Rollback;
use super::{
    AfterStop, Cause, Effect, FailReason, MainProcess, Policy, RunId, Service, Start, State,
};
use crate::clock::later;
use crate::model::{Backoff, ExitAction, ExitKey, ExitStatus, RestartPolicy};
use crate::supervisor::event::EventKind;

impl Service {
    /// The main process of `run` was reaped. `group_alive`: other processes of its group
    /// are still around (they are stopped before the restart policy applies).
    pub(super) fn exited(
        &mut self,
        run: RunId,
        status: ExitStatus,
        group_alive: bool,
        now: Instant,
    ) -> Vec<Effect> {
        if let Some(at) = self.draining.iter().position(|d| d.run == run) {
            return self.drain_exited(at, status, group_alive);
        }
        if let Some(effects) = self.serving_exited(run, status, group_alive, now) {
            return effects;
        }
        let Some((current, leader, spawned)) = self.state.live() else {
            return Vec::new();
        };
        if current != run {
            return Vec::new();
        }
        let pid = self.state.main_pid().unwrap_or(leader);
        if let Some(effects) = self.forker_exited(run, pid, status, group_alive) {
            return effects;
        }
        self.last_exit = Some((status, now));
        let mut effects = vec![self.emit(EventKind::Exited { run, pid, status })];
        match &mut self.state {
            State::Starting { .. } | State::Running { .. } => {
                effects.extend(self.run_exited(pid, spawned, status, group_alive, now));
            }
            State::Stopping { main, .. } if group_alive => *main = MainProcess::Exited(status),
            State::Stopping { .. } => effects.extend(self.finish_stop(now)),
            _ => {}
        }
        effects
    }

    /// The main process of the earlier, draining run at `at` exited: reported as that
    /// run's exit; the current run and the restart policy are not concerned.
    fn drain_exited(&mut self, at: usize, status: ExitStatus, group_alive: bool) -> Vec<Effect> {
        let drain = &mut self.draining[at];
        drain.main = MainProcess::Exited(status);
        let (run, pid) = (drain.run, drain.pid);
        if !group_alive {
            self.draining.remove(at);
        }
        vec![self.emit(EventKind::Exited { run, pid, status })]
    }

    /// The main process `pid` of a starting or running run exited on its own.
    fn run_exited(
        &mut self,
        pid: Pid,
        spawned: Instant,
        status: ExitStatus,
        group_alive: bool,
        now: Instant,
    ) -> Vec<Effect> {
        let ran_for = now.duration_since(spawned);
        // The start_secs timer and the exit can be ready together, and the shell may
        // take the exit first: the time actually run decides. A service that exits
        // before it is ready failed its start too, like systemd's Type=notify (its
        // start_secs is usually 0, so time alone would not say).
        let starting = matches!(self.state, State::Starting { .. });
        let early = starting && (ran_for < self.spec.start_secs || !self.is_up());
        if ran_for >= self.failure_memory() {
            self.attempt = 0;
        }
        // A clean start ends exit-code env overrides: the run got to running and
        // exited cleanly, or stayed up longer than the start limit window.
        if (!starting && status.is_clean()) || ran_for >= self.spec.start_limit.interval {
            self.env_overrides.clear();
        }
        let cause = if early {
            Cause::ExitedEarly {
                status,
                after: ran_for,
            }
        } else {
            Cause::Exited(status)
        };
        if group_alive {
            // Leftover processes of the group are stopped first, like systemd's
            // control-group kill mode; the policy applies once they are gone.
            let then = AfterStop::Exit { cause, early };
            let signal = self.spec.stop.signal;
            return self.begin_stop(signal, pid, MainProcess::Exited(status), then, now);
        }
        self.end_run(cause, now, early)
    }

    /// The last process of `run`'s group is gone (the main process was reaped earlier).
    pub(super) fn group_empty(&mut self, run: RunId, now: Instant) -> Vec<Effect> {
        if let Some(at) = self.draining.iter().position(|d| d.run == run) {
            // Nothing of that earlier run is left.
            self.draining.remove(at);
            return Vec::new();
        }
        match &mut self.state {
            State::Starting {
                run: r,
                start:
                    Start {
                        forker: Some(forker),
                        ..
                    },
                ..
            } => {
                if *r == run {
                    forker.group_alive = false;
                }
                Vec::new()
            }
            State::Stopping {
                run: r,
                main: MainProcess::Exited(_),
                ..
            } if *r == run => self.finish_stop(now),
            _ => Vec::new(),
        }
    }

    /// A run ended and nothing of it is left: the restart policy decides, unless the
    /// daemon is shutting down.
    pub(super) fn end_run(&mut self, cause: Cause, now: Instant, early: bool) -> Vec<Effect> {
        match self.policy {
            Policy::Apply => self.after_run(cause, now, early),
            Policy::Suspended => {
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::Stopped)]
            }
        }
    }

    /// Applies the restart policy to the end of a run.
    pub(super) fn after_run(&mut self, cause: Cause, now: Instant, early: bool) -> Vec<Effect> {
        // A new build that fails during its rollout is rolled back, whatever the
        // policy would do with the exit.
        let mut effects = match self.roll_back_on_end(&cause, now) {
            Some(Rollback::Handled(effects)) => return effects,
            Some(Rollback::Then(effects)) => effects,
            None => Vec::new(),
        };
        // An early exit is a failed start for a restart policy that restarts failures,
        // but an exit 0 stays a clean exit: with `restart = "no"` the service is done,
        // not failed.
        let mut clean = match &cause {
            Cause::Exited(status) | Cause::ExitedEarly { status, .. } => status.is_clean(),
            Cause::SpawnFailed(_)
            | Cause::NotReady { .. }
            | Cause::WatchdogTimeout { .. }
            | Cause::Unhealthy { .. } => false,
        };
        let mut early = early;
        let status = match &cause {
            Cause::Exited(status) | Cause::ExitedEarly { status, .. } => Some(*status),
            Cause::SpawnFailed(_)
            | Cause::NotReady { .. }
            | Cause::WatchdogTimeout { .. }
            | Cause::Unhealthy { .. } => None,
        };
        let mapped = status.and_then(|s| {
            let key = ExitKey::of(s)?;
            self.spec.exit_codes.get(&key).map(|a| (key, a.clone()))
        });
        let mut forced_delay = None;
        let mut forced_restart = false;
        if let Some((key, action)) = mapped {
            effects.push(self.emit(EventKind::ExitActionApplied {
                key,
                action: action.clone(),
            }));
            match action {
                ExitAction::Ignore => {
                    clean = true;
                    early = false;
                }
                ExitAction::Quarantine => {
                    effects.push(Effect::Quarantine {
                        service: self.spec.name.clone(),
                        status: status.expect("only exits are mapped"),
                        reason: cause.to_string(),
                    });
                    effects.extend(self.give_up(FailReason::Quarantined(cause), now));
                    return effects;
                }
                ExitAction::Restart { delay, env } => {
                    forced_restart = true;
                    forced_delay = delay;
                    self.env_overrides.extend(env);
                }
            }
        }
        effects.extend(self.apply_policy(cause, now, clean, early, forced_restart, forced_delay));
        effects
    }

    /// The restart policy proper (`after_run` without exit-code actions). A forced
    /// restart (from an exit-code action) restarts whatever the policy says, still
    /// within the start limit; `forced_delay` replaces the backoff delay.
    fn apply_policy(
        &mut self,
        cause: Cause,
        now: Instant,
        clean: bool,
        early: bool,
        forced_restart: bool,
        forced_delay: Option<Duration>,
    ) -> Vec<Effect> {
        let restart = forced_restart
            || match self.spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean || early,
                RestartPolicy::No => false,
            };
        if !restart {
            if clean {
                self.enter(State::Stopped, now);
                return vec![self.emit(EventKind::Stopped)];
            }
            return self.give_up(FailReason::NoRestart(cause), now);
        }

        let limit = self.spec.start_limit;
        while let Some(&t) = self.restart_times.front() {
            if now.duration_since(t) >= limit.interval {
                self.restart_times.pop_front();
            } else {
                break;
            }
        }
        if self.restart_times.len() >= limit.burst as usize {
            let reason = FailReason::StartLimitHit {
                restarts: self.restart_times.len() as u32,
                interval: limit.interval,
                last: cause,
            };
            return self.give_up(reason, now);
        }
        self.restart_times.push_back(now);
        self.attempt += 1;
        self.last_restart = Some(cause);
        let delay = match forced_delay {
            Some(delay) => delay,
            None => self.delay(self.attempt),
        };
        self.enter(
            State::Backoff {
                until: later(now, delay),
            },
            now,
        );
        vec![self.emit(EventKind::RestartScheduled {
            delay,
            attempt: self.attempt,
        })]
    }

    fn give_up(&mut self, reason: FailReason, now: Instant) -> Vec<Effect> {
        self.enter(
            State::Failed {
                reason: reason.clone(),
            },
            now,
        );
        vec![self.emit(EventKind::GaveUp { reason })]
    }

    /// A run at least this long forgets earlier failures for the backoff delay.
    fn failure_memory(&self) -> Duration {
        match self.spec.backoff {
            Backoff::Exponential { reset_after, .. } => reset_after,
            Backoff::Fixed(_) => self.spec.start_limit.interval,
        }
    }

    /// Restart delay for the n-th consecutive failure (n >= 1).
    fn delay(&mut self, attempt: u32) -> Duration {
        match self.spec.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                max,
                factor,
                jitter,
                ..
            } => {
                let exp = factor.powi(attempt.saturating_sub(1).min(64) as i32);
                let base = (initial.as_secs_f64() * exp).min(max.as_secs_f64());
                let spread = 1.0 + jitter * (2.0 * self.rng.f64() - 1.0);
                // `try_`: a float too large for a Duration must not panic the daemon.
                Duration::try_from_secs_f64((base * spread).clamp(0.0, max.as_secs_f64()))
                    .unwrap_or(max)
            }
        }
    }
}
