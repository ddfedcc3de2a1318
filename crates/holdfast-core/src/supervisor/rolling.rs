//! Instances by their base name, and `restart web` one instance at a time.
//!
//! A service with `instances = N` runs as `web@0` .. `web@{N-1}` (see
//! `config::validate::instances`). A command naming `web` means all of them; a restart
//! of `web` is *rolling*: `web@1` is restarted only once `web@0` is back up (its new run
//! counted as started, which for a service with `ready` means ready), so some copies
//! serve throughout. The order is decided here, purely, from the events the core
//! publishes; the runtime shell restarts whatever [`Rolls::on_event`] says is due. The
//! daemon drives it, so `--no-block`, a waited restart and any other client get the
//! same behaviour.
//!
//! An instance that does not come back (it gave up, went into backoff, was stopped or
//! removed) halts its roll: the instances after it keep their running copies.

use std::collections::{BTreeMap, VecDeque};

use crate::model::{Plan, ServiceName};

use super::event::EventKind;

/// The services a command target names: the service itself, or every instance of the
/// service `target` when that runs as instances, by number (`web@2` before `web@10`,
/// which the plan's name order would swap). Empty when neither exists.
pub fn instances_named(plan: &Plan, target: &ServiceName) -> Vec<ServiceName> {
    if plan.services.contains_key(target) {
        return vec![target.clone()];
    }
    let mut instances: Vec<(u32, ServiceName)> = plan
        .services
        .values()
        .filter_map(|spec| {
            let instance = spec.instance.as_ref()?;
            (instance.base == *target && spec.name != instance.base)
                .then(|| (instance.index, spec.name.clone()))
        })
        .collect();
    instances.sort_unstable();
    instances.into_iter().map(|(_, name)| name).collect()
}

/// One rolling restart in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Roll {
    /// Restarted, not yet back up.
    current: ServiceName,
    /// Still running their old copy, restarted in this order.
    waiting: VecDeque<ServiceName>,
}

/// What an event means for a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Restart this instance now.
    Restart(ServiceName),
    /// Every instance was restarted and is back up.
    Finished(ServiceName),
    /// `instance` did not come back; the rest keep their old runs.
    Halted {
        base: ServiceName,
        instance: ServiceName,
    },
}

/// What a `restart` of a base name does to its rolls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// A new roll: restart this instance now.
    Restart(ServiceName),
    /// A roll was under way and goes on; these instances are restarted (again) at its end.
    Joined { again: Vec<ServiceName> },
    /// No instances to restart.
    Nothing,
}

/// The rolling restarts in progress, by base name: at most one per service.
#[derive(Debug, Default)]
pub struct Rolls {
    rolls: BTreeMap<ServiceName, Roll>,
}

impl Rolls {
    /// Begins restarting `instances` (in this order) of `base`. A roll of `base` already
    /// under way is kept, never started over (that would take a second copy down while
    /// the current one is still coming back): the instances it already restarted, and
    /// the one coming back, are queued again at its end, so each copy still gets a run
    /// newer than this request.
    pub fn begin(&mut self, base: ServiceName, instances: Vec<ServiceName>) -> Begin {
        if let Some(roll) = self.rolls.get_mut(&base) {
            let again: Vec<ServiceName> = instances
                .into_iter()
                .filter(|i| !roll.waiting.contains(i))
                .collect();
            roll.waiting.extend(again.iter().cloned());
            return Begin::Joined { again };
        }
        let mut waiting = VecDeque::from(instances);
        let Some(current) = waiting.pop_front() else {
            return Begin::Nothing;
        };
        let roll = Roll {
            current: current.clone(),
            waiting,
        };
        self.rolls.insert(base, roll);
        Begin::Restart(current)
    }

    /// Drops the roll of the service `name` is an instance of (a stop or start by hand
    /// takes over).
    pub fn cancel(&mut self, name: &ServiceName) {
        self.rolls.retain(|base, _| base.as_str() != name.base());
    }

    /// A base name whose rolling restart is under way, if any.
    pub fn any(&self) -> Option<&ServiceName> {
        self.rolls.keys().next()
    }

    /// Whether a roll of `base` is under way.
    pub fn is_rolling(&self, base: &ServiceName) -> bool {
        self.rolls.contains_key(base)
    }

    /// What `kind`, published for `service`, means for the roll it belongs to.
    pub fn on_event(&mut self, service: &ServiceName, kind: &EventKind) -> Option<Step> {
        let (base, roll) = self
            .rolls
            .iter_mut()
            .find(|(_, roll)| roll.current == *service)?;
        let base = base.clone();
        match kind {
            EventKind::Started { .. } => match roll.waiting.pop_front() {
                Some(next) => {
                    roll.current = next.clone();
                    Some(Step::Restart(next))
                }
                None => {
                    self.rolls.remove(&base);
                    Some(Step::Finished(base))
                }
            },
            EventKind::GaveUp { .. }
            | EventKind::RestartScheduled { .. }
            | EventKind::Removed
            | EventKind::FailureReset
            | EventKind::ShutdownStarted => {
                let instance = roll.current.clone();
                self.rolls.remove(&base);
                Some(Step::Halted { base, instance })
            }
            _ => None,
        }
    }

    /// A restart that the shell could not even begin halts the roll like a failure.
    pub fn refused(&mut self, instance: &ServiceName) -> Option<Step> {
        let base = self
            .rolls
            .iter()
            .find(|(_, roll)| roll.current == *instance)
            .map(|(base, _)| base.clone())?;
        self.rolls.remove(&base);
        Some(Step::Halted {
            base,
            instance: instance.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::unix::Pid;

    use super::*;
    use crate::model::{ExitStatus, Instance, ServiceSpec};
    use crate::supervisor::service::RunId;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).unwrap()
    }

    fn web() -> Vec<ServiceName> {
        vec![name("web@0"), name("web@1"), name("web@2")]
    }

    fn started() -> EventKind {
        EventKind::Started {
            run: RunId(7),
            pid: Pid::from_raw(42),
        }
    }

    fn stopped_by_hand() -> EventKind {
        EventKind::Exited {
            run: RunId(7),
            pid: Pid::from_raw(42),
            status: ExitStatus::Exited(0),
        }
    }

    #[test]
    fn each_instance_is_restarted_once_the_one_before_is_back_up() {
        let mut rolls = Rolls::default();
        assert_eq!(
            rolls.begin(name("web"), web()),
            Begin::Restart(name("web@0"))
        );
        // Its old run ending, or other instances' news, changes nothing.
        assert_eq!(rolls.on_event(&name("web@0"), &stopped_by_hand()), None);
        assert_eq!(rolls.on_event(&name("web@1"), &started()), None);
        assert_eq!(
            rolls.on_event(&name("web@0"), &started()),
            Some(Step::Restart(name("web@1")))
        );
        assert_eq!(rolls.on_event(&name("web@0"), &started()), None);
        assert_eq!(
            rolls.on_event(&name("web@1"), &started()),
            Some(Step::Restart(name("web@2")))
        );
        assert!(rolls.is_rolling(&name("web")));
        assert_eq!(
            rolls.on_event(&name("web@2"), &started()),
            Some(Step::Finished(name("web")))
        );
        assert!(!rolls.is_rolling(&name("web")));
    }

    #[test]
    fn an_instance_that_does_not_come_back_halts_the_roll() {
        let mut rolls = Rolls::default();
        rolls.begin(name("web"), web());
        let backoff = EventKind::RestartScheduled {
            delay: std::time::Duration::from_secs(1),
            attempt: 1,
        };
        assert_eq!(
            rolls.on_event(&name("web@0"), &backoff),
            Some(Step::Halted {
                base: name("web"),
                instance: name("web@0")
            })
        );
        assert_eq!(rolls.on_event(&name("web@0"), &started()), None);
    }

    #[test]
    fn a_refused_restart_or_a_stop_by_hand_ends_the_roll() {
        let mut rolls = Rolls::default();
        rolls.begin(name("web"), web());
        assert!(
            rolls.refused(&name("web@1")).is_none(),
            "not the current one"
        );
        assert!(matches!(
            rolls.refused(&name("web@0")),
            Some(Step::Halted { .. })
        ));
        assert_eq!(
            rolls.begin(name("web"), web()),
            Begin::Restart(name("web@0"))
        );
        rolls.cancel(&name("web@2"));
        assert!(!rolls.is_rolling(&name("web")));
    }

    #[test]
    fn a_second_restart_during_a_roll_joins_it_and_never_takes_two_copies_down() {
        let mut rolls = Rolls::default();
        assert_eq!(
            rolls.begin(name("web"), web()),
            Begin::Restart(name("web@0"))
        );
        assert_eq!(
            rolls.on_event(&name("web@0"), &started()),
            Some(Step::Restart(name("web@1")))
        );
        // web@1 is coming back: nothing is restarted now; web@0 and web@1, restarted
        // before this request, are queued again after web@2.
        assert_eq!(
            rolls.begin(name("web"), web()),
            Begin::Joined {
                again: vec![name("web@0"), name("web@1")]
            }
        );
        // A third request adds nothing already queued.
        assert_eq!(
            rolls.begin(name("web"), web()),
            Begin::Joined { again: vec![] }
        );
        assert_eq!(rolls.on_event(&name("web@0"), &started()), None);
        let mut order = Vec::new();
        let mut current = name("web@1");
        while let Some(Step::Restart(next)) = rolls.on_event(&current, &started()) {
            order.push(next.clone());
            current = next;
        }
        assert_eq!(order, [name("web@2"), name("web@0"), name("web@1")]);
        assert!(!rolls.is_rolling(&name("web")));
    }

    fn plan_with_web(count: u32) -> Plan {
        let mut plan = crate::supervisor::testkit::plan([]);
        for index in 0..count {
            let mut spec = ServiceSpec::with_defaults(name("web").instance(index), vec![]);
            spec.instance = Some(Instance {
                base: name("web"),
                index,
            });
            plan.services.insert(spec.name.clone(), spec);
        }
        plan
    }

    #[test]
    fn instances_are_named_by_number_not_by_name_order() {
        let plan = plan_with_web(12);
        let expected: Vec<ServiceName> = (0..12).map(|i| name("web").instance(i)).collect();
        assert_eq!(instances_named(&plan, &name("web")), expected);
    }

    #[test]
    fn a_base_name_means_its_instances_and_a_plain_name_itself() {
        let mut plan = plan_with_web(2);
        let db = ServiceSpec::with_defaults(name("db"), vec![]);
        plan.services.insert(name("db"), db);
        assert_eq!(
            instances_named(&plan, &name("web")),
            [name("web@0"), name("web@1")]
        );
        assert_eq!(instances_named(&plan, &name("web@1")), [name("web@1")]);
        assert_eq!(instances_named(&plan, &name("db")), [name("db")]);
        assert!(instances_named(&plan, &name("nope")).is_empty());
    }
}
