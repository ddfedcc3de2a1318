//! The services of the core with an index of what each input must look at: whose
//! deadline is due, who left a follow-up, which waiting service may start, which may be
//! stopped in a shutdown. One respawn among 1000 idle services then costs what it costs
//! among 1: the core looks at the services that changed, never at all of them.
//!
//! The index is derived from each service's state, so every change of a service goes
//! through [`Services::handle`] (or `insert`/`remove`), which re-reads the facts of that
//! one service and updates what they feed. No `&mut Service` leaves this module: the
//! index cannot fall behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use super::{Effect, state_name};
use crate::model::{ServiceName, ServiceSpec};
use crate::supervisor::answer::ServiceState;
use crate::supervisor::service::{KillScope, Order, Service, State};

/// What the index knows of one service: the part of its state that the core's
/// follow-ups, timers, start ordering and shutdown ordering depend on.
#[derive(Debug, Clone)]
struct Facts {
    wakeup: Option<Instant>,
    follow_up: bool,
    waiting: bool,
    coming_up: bool,
    active: bool,
    /// Starting or running: what a shutdown stops (once no active service is after it).
    live: bool,
    inactive: bool,
    state: ServiceState,
    /// An autostart service on its way up: holdfast's own start-up is not over.
    unsettled: bool,
    /// The definition, for its `after` list.
    spec: Arc<ServiceSpec>,
}

impl Facts {
    fn of(service: &Service) -> Self {
        Self {
            wakeup: service.wakeup(),
            follow_up: service.has_follow_up(),
            waiting: *service.state() == State::Waiting,
            coming_up: service.is_coming_up(),
            active: service.is_active(),
            live: matches!(
                service.state(),
                State::Starting { .. } | State::Running { .. }
            ),
            inactive: service.is_inactive(),
            state: state_name(service.state()),
            unsettled: service.holds_start_up(),
            spec: Arc::clone(service.spec()),
        }
    }

    /// The `after` dependencies whose shutdown this service holds up.
    fn holds_up(&self) -> &[ServiceName] {
        if self.active { &self.spec.after } else { &[] }
    }
}

#[derive(Debug, Default)]
pub(super) struct Services {
    map: BTreeMap<ServiceName, Service>,
    facts: HashMap<ServiceName, Facts>,
    /// Every service with a wakeup, earliest first: the shell's one timer is the first.
    wakeups: BTreeSet<(Instant, ServiceName)>,
    /// Services whose wakeup has come, as of the `now` of the input being handled.
    due: BTreeSet<ServiceName>,
    /// Services that left the core something to do (`Service::take_follow_up`).
    follow_ups: BTreeSet<ServiceName>,
    /// Waiting services none of whose `after` dependencies is coming up: they start.
    unblocked: BTreeSet<ServiceName>,
    /// Starting or running services no active service is `after`: a shutdown stops them.
    stoppable: BTreeSet<ServiceName>,
    /// Reverse `after` edges: who names each service (which may not exist) in `after`.
    dependents: HashMap<ServiceName, BTreeSet<ServiceName>>,
    /// For each name, how many active services are `after` it.
    active_dependents: HashMap<ServiceName, usize>,
    /// Services neither stopped nor failed.
    busy: usize,
    /// How many services are in each state (a state with none may be missing).
    states: BTreeMap<ServiceState, usize>,
    /// Autostart services on their way up.
    unsettled: usize,
}

impl Services {
    pub(super) fn get(&self, name: &ServiceName) -> Option<&Service> {
        self.map.get(name)
    }
    pub(super) fn contains_key(&self, name: &ServiceName) -> bool {
        self.map.contains_key(name)
    }
    pub(super) fn values(&self) -> impl Iterator<Item = &Service> {
        self.map.values()
    }
    pub(super) fn names(&self) -> Vec<ServiceName> {
        self.map.keys().cloned().collect()
    }

    pub(super) fn insert(&mut self, service: Service, now: Instant) {
        let name = service.name().clone();
        self.map.insert(name.clone(), service);
        self.reindex(&name, now);
    }

    pub(super) fn remove(&mut self, name: &ServiceName, now: Instant) -> Option<Service> {
        let service = self.map.remove(name);
        self.reindex(name, now);
        service
    }

    /// Hands `order` to service `name`, if it exists, and re-reads its facts.
    pub(super) fn handle(
        &mut self,
        name: &ServiceName,
        order: Order,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        let effects = self.map.get_mut(name)?.handle(order, now);
        self.reindex(name, now);
        Some(effects)
    }

    pub(super) fn take_follow_up(
        &mut self,
        name: &ServiceName,
        now: Instant,
    ) -> Option<crate::supervisor::service::FollowUp> {
        let follow_up = self.map.get_mut(name)?.take_follow_up();
        self.reindex(name, now);
        follow_up
    }

    /// Puts service `name` back as a snapshot of an earlier image described it (see
    /// `core::resume`), and re-reads its facts.
    pub(super) fn resume(
        &mut self,
        name: &ServiceName,
        resumed: crate::supervisor::service::Resumed,
        now: Instant,
    ) {
        if let Some(service) = self.map.get_mut(name) {
            service.resume(resumed, now);
            self.reindex(name, now);
        }
    }

    /// Says how stop signals reach every service (no fact of the index depends on it).
    pub(super) fn set_kill_scope(&mut self, scope: KillScope) {
        for service in self.map.values_mut() {
            service.set_kill_scope(scope);
        }
    }

    /// The earliest wakeup of any service.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        self.wakeups.first().map(|(at, _)| *at)
    }

    /// Marks the services whose wakeup has come by `now` as due; the other changes of
    /// this input keep the mark up to date (they all happen at this `now`).
    pub(super) fn mark_due(&mut self, now: Instant) {
        self.due.clear();
        for (at, name) in &self.wakeups {
            if *at > now {
                break;
            }
            self.due.insert(name.clone());
        }
    }

    pub(super) fn is_due(&self, name: &ServiceName) -> bool {
        self.due.contains(name)
    }

    /// The first service after `cursor` (in name order) with a follow-up.
    pub(super) fn next_follow_up(&self, cursor: Option<&ServiceName>) -> Option<ServiceName> {
        first_after(&self.follow_ups, cursor)
    }

    /// The first service after `cursor` that is due or has a follow-up.
    pub(super) fn next_due_or_follow_up(
        &self,
        cursor: Option<&ServiceName>,
    ) -> Option<ServiceName> {
        let due = first_after(&self.due, cursor);
        let follow_up = first_after(&self.follow_ups, cursor);
        match (due, follow_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first service after `cursor` that waits with no dependency coming up.
    pub(super) fn next_unblocked(&self, cursor: Option<&ServiceName>) -> Option<ServiceName> {
        first_after(&self.unblocked, cursor)
    }

    /// What a shutdown stops now, in name order: starting and running services that no
    /// active service is after (dependents first).
    pub(super) fn stoppable(&self) -> Vec<ServiceName> {
        self.stoppable.iter().cloned().collect()
    }

    /// Every service is stopped or failed.
    pub(super) fn all_inactive(&self) -> bool {
        self.busy == 0
    }

    /// How many services are in each state, in the order of states; none with 0.
    pub(super) fn census(&self) -> impl Iterator<Item = (ServiceState, usize)> + '_ {
        self.states.iter().map(|(state, n)| (*state, *n))
    }

    /// No autostart service is on its way up.
    pub(super) fn settled(&self) -> bool {
        self.unsettled == 0
    }

    /// Re-reads the facts of `name` (gone if removed) and updates the index where they
    /// changed.
    fn reindex(&mut self, name: &ServiceName, now: Instant) {
        let new = self.map.get(name).map(Facts::of);
        let old = match (&new, self.facts.get_mut(name)) {
            (Some(facts), Some(slot)) => Some(std::mem::replace(slot, facts.clone())),
            (Some(facts), None) => self.facts.insert(name.clone(), facts.clone()),
            (None, _) => self.facts.remove(name),
        };
        let (old, new) = (old.as_ref(), new.as_ref());
        let wakeup = |f: Option<&Facts>| f.and_then(|f| f.wakeup);
        if wakeup(old) != wakeup(new) {
            if let Some(at) = wakeup(old) {
                self.wakeups.remove(&(at, name.clone()));
            }
            if let Some(at) = wakeup(new) {
                self.wakeups.insert((at, name.clone()));
            }
        }
        put(&mut self.due, name, wakeup(new).is_some_and(|at| at <= now));
        put(&mut self.follow_ups, name, new.is_some_and(|f| f.follow_up));
        let busy = |f: Option<&Facts>| usize::from(f.is_some_and(|f| !f.inactive));
        self.busy = self.busy + busy(new) - busy(old);
        let unsettled = |f: Option<&Facts>| usize::from(f.is_some_and(|f| f.unsettled));
        self.unsettled = self.unsettled + unsettled(new) - unsettled(old);
        self.recount_state(old.map(|f| f.state), new.map(|f| f.state));
        let spec = |f: Option<&Facts>| f.map(|f| Arc::clone(&f.spec));
        let spec_changed = match (spec(old), spec(new)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(&a, &b),
            (a, b) => a.is_some() != b.is_some(),
        };
        if spec_changed {
            self.relink(name, old, new);
        }
        self.recount_holds(old, new);
        let coming_up = |f: Option<&Facts>| f.is_some_and(|f| f.coming_up);
        if coming_up(old) != coming_up(new) {
            let dependents: Vec<ServiceName> = self
                .dependents
                .get(name)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default();
            for dependent in &dependents {
                self.review_unblocked(dependent);
            }
        }
        self.review_unblocked(name);
        self.review_stoppable(name);
    }

    fn recount_state(&mut self, old: Option<ServiceState>, new: Option<ServiceState>) {
        if old == new {
            return;
        }
        if let Some(state) = old {
            let count = self.states.get_mut(&state).expect("counted when entered");
            *count -= 1;
            if *count == 0 {
                self.states.remove(&state);
            }
        }
        if let Some(state) = new {
            *self.states.entry(state).or_default() += 1;
        }
    }

    /// `name`'s definition changed: its reverse `after` edges follow.
    fn relink(&mut self, name: &ServiceName, old: Option<&Facts>, new: Option<&Facts>) {
        for dep in old.map_or(&[][..], |f| &f.spec.after) {
            if let Some(dependents) = self.dependents.get_mut(dep) {
                dependents.remove(name);
                if dependents.is_empty() {
                    self.dependents.remove(dep);
                }
            }
        }
        for dep in new.map_or(&[][..], |f| &f.spec.after) {
            self.dependents
                .entry(dep.clone())
                .or_default()
                .insert(name.clone());
        }
    }

    /// Moves the shutdown hold of a service from its old `after` list (if it was
    /// active) to its new one (if it is), and reviews the dependencies concerned.
    fn recount_holds(&mut self, old: Option<&Facts>, new: Option<&Facts>) {
        let (before, after) = (
            old.map_or(&[][..], Facts::holds_up),
            new.map_or(&[][..], Facts::holds_up),
        );
        if before == after {
            return;
        }
        for dep in before {
            let count = self
                .active_dependents
                .get_mut(dep)
                .expect("counted when it was held up");
            *count -= 1;
            if *count == 0 {
                self.active_dependents.remove(dep);
            }
        }
        for dep in after {
            *self.active_dependents.entry(dep.clone()).or_default() += 1;
        }
        for dep in before.iter().chain(after) {
            self.review_stoppable(dep);
        }
    }

    fn review_unblocked(&mut self, name: &ServiceName) {
        let unblocked = self.facts.get(name).is_some_and(|f| {
            f.waiting
                && !(f.spec.after.iter())
                    .any(|dep| self.facts.get(dep).is_some_and(|d| d.coming_up))
        });
        put(&mut self.unblocked, name, unblocked);
    }

    fn review_stoppable(&mut self, name: &ServiceName) {
        let stoppable = self.facts.get(name).is_some_and(|f| f.live)
            && !self.active_dependents.contains_key(name);
        put(&mut self.stoppable, name, stoppable);
    }
}

impl std::ops::Index<&ServiceName> for Services {
    type Output = Service;
    fn index(&self, name: &ServiceName) -> &Service {
        &self.map[name]
    }
}

/// Puts `name` in `set` or takes it out.
fn put(set: &mut BTreeSet<ServiceName>, name: &ServiceName, member: bool) {
    if !member {
        set.remove(name);
    } else if !set.contains(name) {
        set.insert(name.clone());
    }
}

fn first_after(set: &BTreeSet<ServiceName>, cursor: Option<&ServiceName>) -> Option<ServiceName> {
    let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
    set.range::<ServiceName, _>((from, Bound::Unbounded))
        .next()
        .cloned()
}

#[cfg(test)]
impl Services {
    /// Panics unless every part of the index says what walking every service says.
    pub(super) fn check(&self, now: Instant) {
        let all = || self.map.values();
        let names = |f: &dyn Fn(&Service) -> bool| -> BTreeSet<ServiceName> {
            all().filter(|s| f(s)).map(|s| s.name().clone()).collect()
        };
        let wakeups: BTreeSet<(Instant, ServiceName)> = all()
            .filter_map(|s| Some((s.wakeup()?, s.name().clone())))
            .collect();
        assert_eq!(self.wakeups, wakeups, "wakeups");
        let due = names(&|s| s.wakeup().is_some_and(|at| at <= now));
        assert_eq!(self.due, due, "due");
        assert_eq!(
            self.follow_ups,
            names(&Service::has_follow_up),
            "follow-ups"
        );
        let coming_up = |dep: &ServiceName| self.map.get(dep).is_some_and(Service::is_coming_up);
        let unblocked =
            names(&|s| *s.state() == State::Waiting && !s.spec().after.iter().any(coming_up));
        assert_eq!(self.unblocked, unblocked, "unblocked");
        let held_up =
            |name: &ServiceName| all().any(|s| s.is_active() && s.spec().after.contains(name));
        let stoppable = names(&|s| {
            matches!(s.state(), State::Starting { .. } | State::Running { .. })
                && !held_up(s.name())
        });
        assert_eq!(self.stoppable, stoppable, "stoppable");
        assert_eq!(
            self.busy,
            all().filter(|s| !s.is_inactive()).count(),
            "busy"
        );
        let mut states = BTreeMap::new();
        for s in all() {
            *states.entry(state_name(s.state())).or_default() += 1;
        }
        assert_eq!(self.states, states, "states");
        let unsettled = all().filter(|s| s.holds_start_up());
        assert_eq!(self.unsettled, unsettled.count(), "unsettled");
    }
}
