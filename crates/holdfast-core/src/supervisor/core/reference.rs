//! The core as it was before its index (test only): every round of `settle` walks every
//! service, `next_deadline` looks at all. The differential test runs it beside the
//! indexed core on random plans and scripts: both must do exactly the same.

use std::time::Instant;

use super::{Effect, Event, EventKind, Input, Supervisor};
use crate::model::ServiceName;
use crate::supervisor::service::{AfterStop, Order, Service, State};

impl Supervisor {
    /// [`Supervisor::handle`], following up by walking every service.
    pub(crate) fn handle_walking_all(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut effects = self.take(input, now);
        self.settle_walking_all(&mut effects, now);
        effects
    }

    /// [`Supervisor::next_deadline`] by looking at every service.
    pub(crate) fn next_deadline_walking_all(&self) -> Option<Instant> {
        self.services.values().filter_map(Service::wakeup).min()
    }

    /// Checks the index against the services it indexes, at the `now` of the last input.
    pub(crate) fn check_index(&self, now: Instant) {
        self.services.check(now);
    }

    fn settle_walking_all(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        loop {
            let before = effects.len();
            for name in &self.services.names() {
                self.follow_up(name, effects, now);
            }
            self.step_walking_all(effects, now);
            if effects.len() == before {
                break;
            }
        }
    }

    fn step_walking_all(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let names = self.services.names();
        for name in &names {
            effects.extend(self.order(name, Order::Tick, now));
            self.follow_up(name, effects, now);
        }
        if self.shutting_down {
            self.shutdown_step_walking_all(effects, now);
            return;
        }
        for name in &names {
            let waiting = self
                .services
                .get(name)
                .is_some_and(|s| *s.state() == State::Waiting);
            if waiting && self.blockers(name).is_empty() {
                effects.extend(self.start(name, now));
            }
        }
    }

    fn shutdown_step_walking_all(&mut self, effects: &mut Vec<Effect>, now: Instant) {
        let stoppable: Vec<ServiceName> = self
            .services
            .values()
            .filter(|s| matches!(s.state(), State::Starting { .. } | State::Running { .. }))
            .filter(|s| !self.has_active_dependent(s.name()))
            .map(|s| s.name().clone())
            .collect();
        for name in stoppable {
            effects.extend(self.order(&name, Order::Stop(AfterStop::Stay), now));
        }
        let done = self.services.values().all(Service::is_inactive);
        if done && !self.shutdown_completed {
            self.shutdown_completed = true;
            effects.push(Effect::Emit(Event {
                service: None,
                kind: EventKind::ShutdownCompleted,
            }));
            effects.push(Effect::Exit);
        }
    }

    fn has_active_dependent(&self, name: &ServiceName) -> bool {
        self.services
            .values()
            .any(|s| s.is_active() && s.spec().after.contains(name))
    }
}
