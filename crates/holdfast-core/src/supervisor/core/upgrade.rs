//! `Input::Upgrade`: a rollout of one service, or of the instances of a base name one
//! at a time, the first as the canary. The next instance starts its rollout only once
//! the one before finished its bake and is healthy; a rollback of any instance halts
//! the roll and takes the instances already upgraded back to the old build as well.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::control::{reply, shutting_down};
use super::{Answer, Effect, Supervisor, unknown_service};
use crate::health::HealthState;
use crate::model::ServiceName;
use crate::supervisor::answer::{ControlError, ErrorKind};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::rolling::instances_named;
use crate::supervisor::service::{Order, RunId, State};

/// A roll of a new build over the instances of one base name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The build being rolled out.
    pub to: PathBuf,
    /// The instance whose rollout is under way (the canary first).
    pub current: ServiceName,
    /// Still on their old build, upgraded in this order.
    pub waiting: VecDeque<ServiceName>,
    /// Upgraded already, with the build each ran before (for a rollback).
    pub done: Vec<(ServiceName, PathBuf)>,
    /// The build `current` ran before its rollout (to go back to).
    pub current_from: PathBuf,
    /// `current` finished its rollout but is not healthy yet: the roll waits for it.
    pub paused: bool,
}

/// What one instance's upgrade began.
enum Begun {
    /// A rollout (or a switch of the build of an instance that does not run).
    Started(String, Vec<Effect>),
    /// It already runs that build.
    Already(String),
}

impl Supervisor {
    /// `Input::Upgrade`: answered with what happens next; an error changes nothing.
    pub(super) fn upgrade(&mut self, name: &ServiceName, to: PathBuf, now: Instant) -> Vec<Effect> {
        match self.begin_upgrade(name, to, now) {
            Ok((message, effects)) => reply(Ok(Answer::Accepted(message)), effects),
            Err(error) => vec![Effect::Reply(Err(error))],
        }
    }

    /// The roll of `base`'s instances under way, if any.
    pub fn canary(&self, base: &ServiceName) -> Option<&Canary> {
        self.canaries.get(base)
    }

    fn begin_upgrade(
        &mut self,
        name: &ServiceName,
        to: PathBuf,
        now: Instant,
    ) -> Result<(String, Vec<Effect>), ControlError> {
        if self.shutting_down {
            return Err(shutting_down());
        }
        let mut instances = VecDeque::from(instances_named(&self.plan, name));
        if instances.is_empty() || !instances.iter().all(|i| self.services.contains_key(i)) {
            return Err(unknown_service(name));
        }
        for instance in &instances {
            self.check_upgradable(instance)?;
        }
        if self.canaries.contains_key(name) {
            return Err(conflict(format!(
                "a rollout over the instances of {name} is under way"
            )));
        }
        let first = instances.pop_front().expect("not empty");
        if instances.is_empty() {
            return Ok(match self.upgrade_one(&first, &to, None, now)? {
                Begun::Started(message, effects) => (message, effects),
                Begun::Already(message) => (message, Vec::new()),
            });
        }
        let canary = Canary {
            to: to.clone(),
            current: first.clone(),
            waiting: instances,
            done: Vec::new(),
            current_from: self.build_of(&first),
            paused: false,
        };
        let rest: Vec<&str> = canary.waiting.iter().map(ServiceName::as_str).collect();
        let message = format!(
            "upgrading {first} first (the canary), then {} one at a time, to {}",
            rest.join(", "),
            to.display()
        );
        self.canaries.insert(name.clone(), canary);
        let effects = match self.upgrade_one(&first, &to, None, now)? {
            Begun::Started(_, effects) => effects,
            // The canary runs it already: the next one starts at once.
            Begun::Already(_) => self.canary_next(name, now),
        };
        Ok((message, effects))
    }

    /// Whether `name` can be upgraded at all: it has `[upgrade]` and no rollout.
    fn check_upgradable(&self, name: &ServiceName) -> Result<(), ControlError> {
        let service = &self.services[name];
        if service.build().is_none() {
            return Err(ControlError {
                kind: ErrorKind::BadRequest,
                message: format!(
                    "{name} has no [service.{}.upgrade] section: nothing to upgrade",
                    name.base()
                ),
            });
        }
        match service.rollout() {
            Some(rollout) => Err(conflict(format!(
                "an upgrade of {name} to {} is under way ({})",
                rollout.to.display(),
                rollout.phase.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// Begins the rollout of one service to `to` (`back`: restoring an older build).
    fn upgrade_one(
        &mut self,
        name: &ServiceName,
        to: &Path,
        back: Option<String>,
        now: Instant,
    ) -> Result<Begun, ControlError> {
        let service = &self.services[name];
        if service.build() == Some(to) {
            return Ok(Begun::Already(format!(
                "{name} already runs {}",
                to.display()
            )));
        }
        let order = match service.state() {
            State::Running { .. } => {
                let run = RunId(self.next_run);
                self.next_run += 1;
                Order::Upgrade {
                    run,
                    to: to.to_path_buf(),
                    back,
                }
            }
            State::Launching { .. } | State::Starting { .. } | State::Stopping { .. } => {
                return Err(conflict(format!(
                    "{name} is {}: upgrade it once it runs",
                    super::state_name(service.state())
                )));
            }
            _ => {
                let message = format!("{name} does not run: its next start runs {}", to.display());
                let effects = self.order(name, Order::SwitchBuild(to.to_path_buf()), now);
                return Ok(Begun::Started(message, effects));
            }
        };
        let effects = self.order(name, order, now);
        Ok(Begun::Started(
            format!("upgrading {name} to {}", to.display()),
            effects,
        ))
    }

    /// Follows the rolls over instances through the events of this input (and of the
    /// steps they take), settling each step like any other transition.
    pub(super) fn follow_canaries(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let mut seen = 0;
        while seen < effects.len() && !self.canaries.is_empty() {
            let event = match &effects[seen] {
                Effect::Emit(Event {
                    service: Some(name),
                    kind,
                }) => Some((name.clone(), kind.clone())),
                _ => None,
            };
            seen += 1;
            let Some((name, kind)) = event else {
                continue;
            };
            let more = self.canary_step(&name, &kind, now);
            if !more.is_empty() {
                effects.extend(more);
                self.settle(effects, now);
            }
        }
    }

    /// What `kind`, of instance `name`, means for the roll it belongs to.
    fn canary_step(&mut self, name: &ServiceName, kind: &EventKind, now: Instant) -> Vec<Effect> {
        let base = ServiceName::new(name.base()).expect("a base name is a valid name");
        let Some(canary) = self.canaries.get(&base) else {
            return Vec::new();
        };
        if canary.current != *name {
            return Vec::new();
        }
        let paused = canary.paused;
        match kind {
            EventKind::Upgraded { .. } if !self.is_healthy(name) => {
                self.canaries.get_mut(&base).expect("found above").paused = true;
                Vec::new()
            }
            EventKind::Upgraded { .. } => self.canary_next(&base, now),
            EventKind::HealthChanged {
                to: HealthState::Ok,
                ..
            } if paused => self.canary_next(&base, now),
            EventKind::RolledBack { reason, .. } => {
                let reason = format!("the rollout of {name} was rolled back: {reason}");
                self.canary_halt(&base, reason, now)
            }
            // Stopped by hand or gone while the roll waited for it to be healthy: the
            // roll ends there (the instances already upgraded keep the new build).
            EventKind::Stopped | EventKind::Removed | EventKind::GaveUp { .. } if paused => {
                self.canaries.remove(&base);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn is_healthy(&self, name: &ServiceName) -> bool {
        let health = (self.services.get(name))
            .and_then(|s| s.health())
            .map(|h| h.decay().state());
        health.is_none_or(|h| h == HealthState::Ok)
    }

    /// The build `name` runs now (checked to exist when the roll began).
    fn build_of(&self, name: &ServiceName) -> PathBuf {
        (self.services.get(name))
            .and_then(|s| s.build())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The current instance is done: the next one begins, or the roll is finished.
    /// Instances a reload removed meanwhile are skipped.
    fn canary_next(&mut self, base: &ServiceName, now: Instant) -> Vec<Effect> {
        if let Some(canary) = self.canaries.get_mut(base) {
            let from = std::mem::take(&mut canary.current_from);
            canary.done.push((canary.current.clone(), from));
        }
        loop {
            let Some(canary) = self.canaries.get_mut(base) else {
                return Vec::new();
            };
            let Some(next) = canary.waiting.pop_front() else {
                self.canaries.remove(base);
                return Vec::new();
            };
            if !self.services.contains_key(&next) {
                continue;
            }
            let to = canary.to.clone();
            let from = self.build_of(&next);
            let canary = self.canaries.get_mut(base).expect("found above");
            canary.current = next.clone();
            canary.current_from = from;
            canary.paused = false;
            match self.upgrade_one(&next, &to, None, now) {
                Ok(Begun::Started(_, effects)) => return effects,
                // Already there: on to the next one.
                Ok(Begun::Already(_)) => {}
                Err(error) => return self.canary_halt(base, error.message, now),
            }
        }
    }

    /// The roll stops: the instances it upgraded go back to their old build, each
    /// through a rollout of its own that ends in `rolled_back`.
    fn canary_halt(&mut self, base: &ServiceName, reason: String, now: Instant) -> Vec<Effect> {
        let Some(canary) = self.canaries.remove(base) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        for (instance, from) in canary.done {
            if !self.services.contains_key(&instance) {
                continue;
            }
            if let Ok(Begun::Started(_, more)) =
                self.upgrade_one(&instance, &from, Some(reason.clone()), now)
            {
                effects.extend(more);
            }
        }
        effects
    }
}

fn conflict(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::Conflict,
        message,
    }
}
