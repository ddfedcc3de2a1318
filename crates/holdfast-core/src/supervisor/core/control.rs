//! Control inputs: start, stop, restart, signal, reset-failed and reload. Each is
//! answered by one `Effect::Reply`; an error changes nothing.

use std::sync::Arc;
use std::time::Instant;

use crate::unix::Signal;

use super::{Answer, Command, Effect, SignalWhom, Supervisor, state_name};
use crate::model::{Plan, ServiceName};
use crate::supervisor::answer::{ControlError, ErrorKind};
use crate::supervisor::event::EventKind;
use crate::supervisor::reload;
use crate::supervisor::service::{AfterStop, FailReason, Order, State};

impl Supervisor {
    /// A control request. The reply says what happens next; errors change nothing.
    pub(super) fn command(
        &mut self,
        command: Command,
        name: &ServiceName,
        now: Instant,
    ) -> Vec<Effect> {
        match self.decide(command, name, now) {
            Ok((message, effects)) => reply(Ok(Answer::Accepted(message)), effects),
            Err(error) => vec![Effect::Reply(Err(error))],
        }
    }

    /// Every command x state pair is decided here, s6-style.
    fn decide(
        &mut self,
        command: Command,
        name: &ServiceName,
        now: Instant,
    ) -> Result<(String, Vec<Effect>), ControlError> {
        if self.shutting_down {
            return Err(shutting_down());
        }
        let service = self
            .services
            .get(name)
            .ok_or_else(|| unknown_service(name))?;
        let state = service.state();
        let stop = |then| Order::Stop(then);
        let (message, orders) = match (command, state) {
            (
                Command::Start | Command::Restart,
                State::Stopping {
                    then: AfterStop::Remove,
                    ..
                },
            ) => {
                return Err(ControlError {
                    kind: ErrorKind::UnknownService,
                    message: format!("{name} was removed from the config and is stopping"),
                });
            }
            (Command::Start | Command::Restart, State::Stopping { .. }) => (
                format!("{name} is stopping; it will start again once stopped"),
                vec![stop(AfterStop::Start)],
            ),
            (Command::Start | Command::Restart, State::Waiting | State::Launching { .. })
            | (Command::Start, State::Starting { .. } | State::Running { .. }) => {
                (format!("{name} is already {}", state_name(state)), vec![])
            }
            (
                Command::Start | Command::Restart,
                State::Stopped | State::Failed { .. } | State::Backoff { .. },
            ) => {
                self.order(name, Order::ResetFailures, now);
                return Ok((format!("starting {name}"), self.start(name, now)));
            }
            (Command::Start, State::Observed(_)) => (format!("{name} is already observed"), vec![]),
            (Command::Restart, State::Observed(observation)) => {
                if let Some(why) = observation.why_no_restart() {
                    return Err(ControlError {
                        kind: ErrorKind::Conflict,
                        message: format!("not restarting {name}: {why}"),
                    });
                }
                (
                    format!("asking the upstream of {name} to restart it"),
                    vec![stop(AfterStop::Start)],
                )
            }
            (Command::Restart, State::Starting { .. } | State::Running { .. }) => (
                format!("restarting {name}"),
                vec![Order::ResetFailures, stop(AfterStop::Start)],
            ),
            (Command::Stop, State::Stopped | State::Failed { .. }) => {
                (format!("{name} is not running"), vec![])
            }
            (Command::Stop, _) => (format!("stopping {name}"), vec![stop(AfterStop::Stay)]),
        };
        let mut effects = Vec::new();
        for order in orders {
            effects.extend(self.order(name, order, now));
        }
        Ok((message, effects))
    }

    /// `holdfast signal`: the signal for the current run's main process (or all its
    /// processes). Only a run with processes can be signalled; the error says why not.
    pub(super) fn signal(
        &self,
        name: &ServiceName,
        signal: Signal,
        whom: SignalWhom,
    ) -> Vec<Effect> {
        match self.signal_target(name, signal, whom) {
            Ok(effect) => {
                let message = match &effect {
                    Effect::SignalMain { pid, .. } => {
                        format!("sent {} to {name} (main pid {pid})", signal.as_str())
                    }
                    _ => format!("sent {} to every process of {name}", signal.as_str()),
                };
                reply(Ok(Answer::Accepted(message)), vec![effect])
            }
            Err(error) => vec![Effect::Reply(Err(error))],
        }
    }

    fn signal_target(
        &self,
        name: &ServiceName,
        signal: Signal,
        whom: SignalWhom,
    ) -> Result<Effect, ControlError> {
        let service = self
            .services
            .get(name)
            .ok_or_else(|| unknown_service(name))?;
        let not_running = |why: String| ControlError {
            kind: ErrorKind::BadRequest,
            message: format!("cannot send {} to {name}: {why}", signal.as_str()),
        };
        let (Some(run), Some(group)) = (service.run(), service.group()) else {
            let state = state_name(service.state());
            return Err(not_running(format!("it is {state}, no process runs")));
        };
        match whom {
            SignalWhom::All => Ok(Effect::Signal {
                service: name.clone(),
                run,
                group,
                signal,
            }),
            SignalWhom::Main => match service.pid() {
                Some(pid) => Ok(Effect::SignalMain {
                    service: name.clone(),
                    run,
                    pid,
                    signal,
                }),
                None => Err(not_running(
                    "it has no main process now (exited, or not yet named by its pidfile); --all signals its other processes".to_owned(),
                )),
            },
        }
    }

    /// `holdfast reset-failed`: the named services (all failed ones without names) get a
    /// fresh start limit, and the failed ones among them are stopped again. A quarantined
    /// service stays so: it awaits review (`quarantine release`). An unknown name is an
    /// error and changes nothing.
    pub(super) fn reset_failed(&mut self, names: &[ServiceName], now: Instant) -> Vec<Effect> {
        let names: Vec<ServiceName> = if names.is_empty() {
            self.services
                .values()
                .filter(|s| is_plain_failed(s.state()))
                .map(|s| s.name().clone())
                .collect()
        } else {
            names.to_vec()
        };
        if let Some(name) = names.iter().find(|n| !self.services.contains_key(n)) {
            return vec![Effect::Reply(Err(unknown_service(name)))];
        }
        let mut effects = Vec::new();
        let mut lines = Vec::new();
        for name in &names {
            let was_failed = is_plain_failed(self.services[name].state());
            effects.extend(self.order(name, Order::ResetFailed, now));
            let service = &self.services[name];
            let quarantined = matches!(
                service.state(),
                State::Failed {
                    reason: FailReason::Quarantined(_)
                }
            );
            lines.push(if was_failed {
                format!("{name}: failed -> stopped, start limit reset")
            } else if quarantined {
                format!(
                    "{name}: quarantined, left for review (`holdfast quarantine release {name}` or `holdfast start {name}`)"
                )
            } else {
                let state = state_name(service.state());
                format!("{name}: {state}, start limit reset")
            });
        }
        if lines.is_empty() {
            lines.push("no failed services".to_owned());
        }
        reply(Ok(Answer::Accepted(lines.join("\n"))), effects)
    }

    /// Applies a new plan: added services start (if autostart), removed ones stop and are
    /// forgotten, changed ones restart with the new definition, others are untouched.
    pub(super) fn reload(&mut self, new: Plan, now: Instant) -> Vec<Effect> {
        let diff = reload::diff(&self.plan, &new, false);
        if let Some(error) = self.upstream_still_runs(&diff.changed, &new) {
            return reply(Err(error), Vec::new());
        }
        let mut effects = Vec::new();
        for name in &diff.removed {
            effects.extend(self.order(name, Order::Stop(AfterStop::Remove), now));
            // Waiting and backoff stop at once (without acting on `then`): remove those
            // here, like services that were not running at all.
            if self.services[name].is_inactive() {
                self.services.remove(name, now);
                effects.push(Effect::emit(name, EventKind::Removed));
                effects.push(Effect::Remove {
                    service: name.clone(),
                });
            }
        }
        let mut to_start = Vec::new();
        for name in &diff.changed {
            effects.push(Effect::emit(name, EventKind::Reconfigured));
            let spec = Arc::new(new.services[name].clone());
            if self.reconfigure(name, spec, &mut effects, now) {
                to_start.push(name.clone());
            }
        }
        // Unchanged services may have new labels (group, hooks): take them without a
        // restart, so that status shows what the file says.
        for name in &diff.unchanged {
            let spec = &new.services[name];
            if **self.services[name].spec() != *spec {
                let reconfigured =
                    self.order(name, Order::Reconfigure(Arc::new(spec.clone())), now);
                effects.extend(reconfigured);
            }
        }
        for name in &diff.added {
            let spec = new.services[name].clone();
            let autostart = spec.autostart && !self.shutting_down;
            if self.services.contains_key(name) {
                // Removed by an earlier reload and still stopping: let that stop finish
                // (its process group is still there), then run the new definition.
                let then = if autostart {
                    AfterStop::Start
                } else {
                    AfterStop::Stay
                };
                self.order(name, Order::Reconfigure(Arc::new(spec)), now);
                self.order(name, Order::CancelRemoval(then), now);
            } else {
                self.insert(spec, now);
                let blockers: Vec<ServiceName> = (diff.removed.iter())
                    .filter(|r| r.base() == name.base() && self.services.contains_key(r))
                    .cloned()
                    .collect();
                match (autostart, blockers.is_empty()) {
                    (true, true) => to_start.push(name.clone()),
                    (true, false) => {
                        self.held.insert(name.clone(), blockers);
                    }
                    (false, _) => {}
                }
            }
        }
        effects.extend(self.start_all(to_start, now));
        // Daemon settings that need a restart keep their running values.
        let daemon = self.plan.daemon.clone();
        self.plan = Plan { daemon, ..new };
        reply(Ok(Answer::Reload(diff)), effects)
    }

    /// A reload that moves an observed service away from its upstream while the
    /// upstream still runs its copy would start a second one: refused, naming how to
    /// stop the upstream's first.
    fn upstream_still_runs(&self, changed: &[ServiceName], new: &Plan) -> Option<ControlError> {
        use crate::model::Upstream;
        use crate::supervisor::service::UpstreamState;
        let blocked = changed.iter().find_map(|name| {
            let State::Observed(observation) = self.services.get(name)?.state() else {
                return None;
            };
            let old = self.plan.services.get(name)?.managed_by.as_ref()?;
            let moved = new
                .services
                .get(name)?
                .managed_by
                .as_ref()
                .map(|m| &m.upstream)
                != Some(&old.upstream);
            let runs = observation.view.as_ref().is_some_and(|v| {
                matches!(v.state, UpstreamState::Running | UpstreamState::Starting)
            });
            (moved && runs).then_some((name, &old.upstream))
        })?;
        let (name, upstream) = blocked;
        let stop = match upstream {
            Upstream::Systemd { unit } => format!("systemctl stop {unit}"),
            Upstream::Supervisord { program } => format!("supervisorctl stop {program}"),
        };
        Some(ControlError {
            kind: ErrorKind::Conflict,
            message: format!(
                "{name}: {upstream} still runs it; moving it would start a second copy: \
                 stop it there first ({stop}), then reload"
            ),
        })
    }

    /// A changed definition for `name`: the stop uses the old definition (its signal
    /// and timeout), the next spawn the new one. Returns whether it must start now.
    fn reconfigure(
        &mut self,
        name: &ServiceName,
        spec: Arc<crate::model::ServiceSpec>,
        effects: &mut Vec<Effect>,
        now: Instant,
    ) -> bool {
        let service = &self.services[name];
        // A stop by hand (or for shutdown) in progress stays a stop.
        let stopping_for_good = matches!(
            service.state(),
            State::Stopping {
                then: AfterStop::Stay,
                ..
            }
        );
        let restart = service.is_active() && !stopping_for_good;
        // Waiting out a backoff with the old definition would make the changed one wait
        // for nothing: it starts now, with a fresh start limit (the failures were the
        // old definition's).
        let start_now = matches!(service.state(), State::Backoff { .. });
        let mut stop = Vec::new();
        if restart {
            stop = self.order(name, Order::Stop(AfterStop::Start), now);
        }
        if start_now {
            self.order(name, Order::ResetFailures, now);
        }
        // An observed service takes a new check at once and may report it.
        let reconfigured = self.order(name, Order::Reconfigure(spec), now);
        effects.extend(stop);
        effects.extend(reconfigured);
        start_now
    }
}

/// The answer first, then the effects of the transition it made.
pub(super) fn reply(answer: Result<Answer, ControlError>, effects: Vec<Effect>) -> Vec<Effect> {
    let mut all = vec![Effect::Reply(answer)];
    all.extend(effects);
    all
}

/// Failed for a cause `reset-failed` clears (not quarantined: that awaits review).
fn is_plain_failed(state: &State) -> bool {
    matches!(state, State::Failed { reason } if !matches!(reason, FailReason::Quarantined(_)))
}

pub fn unknown_service(name: &ServiceName) -> ControlError {
    ControlError {
        kind: ErrorKind::UnknownService,
        message: format!("no service named \"{name}\""),
    }
}

pub(super) fn shutting_down() -> ControlError {
    ControlError {
        kind: ErrorKind::ShuttingDown,
        message: "holdfast is shutting down".to_owned(),
    }
}
