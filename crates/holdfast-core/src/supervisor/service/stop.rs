//! Stopping a run: the stop signal, escalation to SIGKILL, and what follows the stop.
//! Also the deadlines that lead there (`tick`).

use std::time::Instant;

use crate::unix::Pid;
use crate::unix::Signal;

use super::{
    AfterStop, Cause, Drain, Effect, Escalation, FollowUp, ForkerExit, KILL_WAIT, MainProcess,
    Policy, RunId, Service, State,
};
use crate::clock::later;
use crate::supervisor::event::EventKind;

impl Service {
    /// Time passed; act on an expired deadline if there is one.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let Some(deadline) = self.deadline() else {
            return Vec::new();
        };
        if deadline > now {
            return Vec::new();
        }
        match self.state {
            State::Starting { .. } if self.is_up() => self.promote(now),
            State::Starting { .. } => self.not_ready(now),
            State::Running { .. } => self.watchdog_timeout(now),
            State::Backoff { .. } => {
                self.restarts += 1;
                self.follow_up = Some(FollowUp::Start);
                Vec::new()
            }
            State::Stopping {
                escalation: Escalation::Dumping { next: Some(signal) },
                ..
            } => self.after_dump(signal, now),
            State::Stopping {
                escalation: Escalation::Dumping { next: None },
                ..
            } => self.kill(now),
            State::Stopping {
                escalation: Escalation::Graceful,
                ..
            } => self.escalate(now),
            State::Stopping {
                run,
                pid,
                main_pid,
                main,
                escalation: Escalation::Killed,
                ..
            } => {
                // Its processes may still exit later: that exit is the abandoned run's.
                self.draining.push(Drain {
                    run,
                    group: pid,
                    pid: main_pid.unwrap_or(pid),
                    main,
                    deadline: None,
                    escalation: Escalation::Killed,
                });
                let mut effects = vec![self.emit(EventKind::StopAbandoned {
                    pid,
                    scope: self.kill_scope,
                })];
                // Shutdown is not blocked by an unkillable process either; during one,
                // the pending restart (`then`) is dropped like for any other stop.
                effects.extend(self.finish_stop(now));
                effects
            }
            _ => Vec::new(),
        }
    }

    /// No keep-alive in time: SIGABRT (like systemd's `WatchdogSignal=`), then the
    /// restart policy.
    fn watchdog_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let State::Running {
            pid,
            main_pid,
            ref mut watchdog,
            ..
        } = self.state
        else {
            return Vec::new();
        };
        let interval = watchdog.interval.unwrap_or_default();
        watchdog.deadline = None;
        let main = main_pid.unwrap_or(pid);
        let mut effects = vec![self.emit(EventKind::WatchdogTimeout {
            pid: main,
            interval,
        })];
        let then = AfterStop::Exit {
            cause: Cause::WatchdogTimeout { interval },
            early: false,
        };
        self.last_cause = Some(Cause::WatchdogTimeout { interval });
        effects.extend(self.begin_stop(Signal::SIGABRT, pid, MainProcess::Alive, then, now));
        effects
    }

    /// The graceful signal was not enough in time: the dump signal first if there is
    /// one (and the run was not dumped already), else SIGKILL.
    fn escalate(&mut self, now: Instant) -> Vec<Effect> {
        let dumped = matches!(&self.state, State::Stopping { then, .. } if hung(then));
        match self.spec.stop.dump {
            Some(_) if !dumped => self.dump(None, now),
            _ => self.kill(now),
        }
    }

    /// Sends the dump signal to the stopping run and gives it `dump.wait` to print its
    /// stacks; `next` (or SIGKILL) follows at that deadline.
    fn dump(&mut self, next: Option<Signal>, now: Instant) -> Vec<Effect> {
        let Some(dump) = self.spec.stop.dump else {
            return Vec::new();
        };
        let deadline = Some(later(now, dump.wait));
        let Some((run, group)) = self.escalate_to(Escalation::Dumping { next }, deadline, now)
        else {
            return Vec::new();
        };
        let mut effects = vec![self.emit(EventKind::DumpRequested {
            signal: dump.signal,
            wait: dump.wait,
        })];
        effects.extend(self.signal_awake(run, group, dump.signal));
        effects
    }

    /// The dump's time is up: the graceful signal, with the stop timeout from now.
    fn after_dump(&mut self, first: Signal, now: Instant) -> Vec<Effect> {
        let timeout = self.spec.stop.timeout;
        let deadline = timeout.deadline(now);
        let Some((run, group)) = self.escalate_to(Escalation::Graceful, deadline, now) else {
            return Vec::new();
        };
        let mut effects = vec![self.emit(EventKind::StopRequested {
            signal: first,
            timeout,
            scope: self.kill_scope,
        })];
        effects.extend(self.signal_awake(run, group, first));
        effects
    }

    /// SIGKILL to the stopping run, and a last deadline.
    fn kill(&mut self, now: Instant) -> Vec<Effect> {
        let deadline = Some(later(now, KILL_WAIT));
        let Some((run, group)) = self.escalate_to(Escalation::Killed, deadline, now) else {
            return Vec::new();
        };
        vec![
            self.emit(EventKind::Escalated {
                pid: group,
                scope: self.kill_scope,
            }),
            self.signal_run(run, group, Signal::SIGKILL),
        ]
    }

    /// Moves the stopping run to the `escalation` step, due again at `deadline`; its
    /// run and group, for the signals of that step (`None` when no run is stopping).
    fn escalate_to(
        &mut self,
        escalation: Escalation,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<(RunId, Pid)> {
        let State::Stopping {
            run,
            pid,
            escalation: ref mut step,
            deadline: ref mut due,
            ..
        } = self.state
        else {
            return None;
        };
        *step = escalation;
        *due = deadline;
        self.since = now;
        Some((run, pid))
    }

    /// `signal` to every process of `run`, whose group `group` leads.
    pub(super) fn signal_run(&self, run: RunId, group: Pid, signal: Signal) -> Effect {
        Effect::Signal {
            service: self.spec.name.clone(),
            run,
            group,
            signal,
        }
    }

    /// `signal`, then SIGCONT: a stopped (SIGSTOP) process would never act on it.
    pub(super) fn signal_awake(&self, run: RunId, group: Pid, signal: Signal) -> [Effect; 2] {
        [
            self.signal_run(run, group, signal),
            self.signal_run(run, group, Signal::SIGCONT),
        ]
    }

    /// Stop by hand (`then = Stay`), for a restart (`Start`), or for removal (`Remove`).
    /// A stopped or failed service has nothing to stop: no effects.
    pub(super) fn stop(&mut self, then: AfterStop, now: Instant) -> Vec<Effect> {
        match &mut self.state {
            State::Starting { .. } | State::Running { .. } => self.stop_run(then, now),
            State::Stopping { then: slot, .. } => {
                // A pending policy decision on an exit is overridden by a request; the
                // signals already sent stay as they are.
                *slot = match (&*slot, then) {
                    (AfterStop::Remove, _) | (_, AfterStop::Remove) => AfterStop::Remove,
                    (_, then) => then,
                };
                Vec::new()
            }
            State::Waiting | State::Backoff { .. } => {
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::Stopped)]
            }
            State::Launching { .. } => unreachable!("launching is resolved before other input"),
            // An observed service's orders never come here (see `observed_order`).
            State::Stopped | State::Failed { .. } | State::Observed(_) => Vec::new(),
        }
    }

    /// Stops the starting or running run. A forking service's launcher may have exited
    /// already (the daemon not adopted yet): then only its leftovers are stopped, and
    /// with none left the stop is complete at once (no exit will come to finish it).
    pub(super) fn stop_run(&mut self, then: AfterStop, now: Instant) -> Vec<Effect> {
        let Some((run, pid, spawned)) = self.state.live() else {
            return Vec::new();
        };
        let launcher_gone = match &self.state {
            State::Starting {
                main_pid: None,
                start,
                ..
            } => start.forker,
            _ => None,
        };
        let signal = self.spec.stop.signal;
        match launcher_gone {
            None => self.begin_stop(signal, pid, MainProcess::Alive, then, now),
            Some(ForkerExit {
                status,
                group_alive: true,
            }) => self.begin_stop(signal, pid, MainProcess::Exited(status), then, now),
            Some(ForkerExit { status, .. }) => {
                // Nothing left to signal (its group may even be reused): done at once.
                let stopping = State::Stopping {
                    run,
                    pid,
                    spawned,
                    main_pid: None,
                    main: MainProcess::Exited(status),
                    escalation: Escalation::Killed,
                    deadline: None,
                    then,
                };
                self.enter(stopping, now);
                self.finish_stop(now)
            }
        }
    }

    /// Sends `first` (the configured stop signal, or SIGABRT for a watchdog timeout) to
    /// `group` of the live run, and waits for the group to empty.
    pub(super) fn begin_stop(
        &mut self,
        first: Signal,
        group: Pid,
        main: MainProcess,
        then: AfterStop,
        now: Instant,
    ) -> Vec<Effect> {
        let Some((run, _, spawned)) = self.state.live() else {
            return Vec::new();
        };
        let stop = crate::model::StopSpec {
            signal: first,
            ..self.spec.stop
        };
        let dump_first = stop.dump.is_some() && hung(&then);
        let stopping = State::Stopping {
            run,
            pid: group,
            spawned,
            main_pid: self.state.main_pid(),
            main,
            escalation: Escalation::Graceful,
            deadline: stop.timeout.deadline(now),
            then,
        };
        self.enter(stopping, now);
        if dump_first {
            // A hung run: its stacks first, then the stop as usual.
            return self.dump(Some(first), now);
        }
        let mut effects = vec![self.emit(EventKind::StopRequested {
            signal: stop.signal,
            timeout: stop.timeout,
            scope: self.kill_scope,
        })];
        effects.extend(self.signal_awake(run, group, stop.signal));
        effects
    }

    /// The stop is complete: do what was to follow it. During a shutdown nothing starts
    /// again.
    pub(super) fn finish_stop(&mut self, now: Instant) -> Vec<Effect> {
        let State::Stopping { then, .. } = &self.state else {
            return Vec::new();
        };
        match (then.clone(), self.policy) {
            (AfterStop::Exit { cause, early }, _) => self.end_run(cause, now, early),
            (AfterStop::Remove, _) if self.has_runs_to_wait_for() => {
                // Forgotten once the earlier runs are gone (see `rollout_progress`).
                self.enter(State::Stopped, now);
                self.forget_when_drained = true;
                vec![self.emit(EventKind::Stopped)]
            }
            (AfterStop::Remove, _) => {
                self.enter(State::Stopped, now);
                self.follow_up = Some(FollowUp::Forget);
                vec![
                    self.emit(EventKind::Stopped),
                    self.emit(EventKind::Removed),
                    Effect::Remove {
                        service: self.spec.name.clone(),
                    },
                ]
            }
            (AfterStop::Start, Policy::Apply) => {
                self.enter(State::Stopped, now);
                self.follow_up = Some(FollowUp::Start);
                vec![self.emit(EventKind::Stopped)]
            }
            _ => {
                self.enter(State::Stopped, now);
                vec![self.emit(EventKind::Stopped)]
            }
        }
    }
}

/// Whether a stop is holdfast's answer to a hung run (no keep-alive, UNHEALTHY): one
/// that gets the dump signal first.
fn hung(then: &AfterStop) -> bool {
    matches!(
        then,
        AfterStop::Exit {
            cause: Cause::WatchdogTimeout { .. } | Cause::Unhealthy { .. },
            ..
        }
    )
}
