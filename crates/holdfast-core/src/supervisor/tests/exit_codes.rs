//! `[service.X.exit_codes]` actions: restart with a delay or env overrides, quarantine,
//! ignore; unmapped exits follow the restart policy.

use std::collections::BTreeMap;

use super::*;
use crate::model::{ExitAction, ExitKey};
use crate::supervisor::service::FailReason;

fn mapped(n: &str, actions: &[(ExitKey, ExitAction)]) -> ServiceSpec {
    ServiceSpec {
        exit_codes: actions.iter().cloned().collect(),
        ..svc(n)
    }
}

fn restart_after(delay: Duration) -> ExitAction {
    ExitAction::Restart {
        delay: Some(delay),
        env: BTreeMap::new(),
    }
}

fn standby() -> ExitAction {
    ExitAction::Restart {
        delay: None,
        env: [("DB_HOST".to_owned(), "db-standby".to_owned())].into(),
    }
}

fn db_host(spec: &ServiceSpec) -> Option<&str> {
    spec.env.get("DB_HOST").map(String::as_str)
}

fn primary(spec: ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        env: [("DB_HOST".to_owned(), "db-primary".to_owned())].into(),
        ..spec
    }
}

#[test]
fn a_mapped_code_restarts_after_its_own_delay() {
    let mut h = Harness::running([mapped("a", &[(ExitKey::Code(101), restart_after(secs(2)))])]);
    let effects = h.exit("a", code(101));
    assert_eq!(
        delays(&effects),
        [secs(2)],
        "the action's delay, not restart_sec"
    );
    assert!(labels(&effects).contains(&"a ExitActionApplied".to_owned()));
    assert!(spawns(&h.advance(ms(1999))).is_empty());
    assert_eq!(spawns(&h.advance(ms(1))).len(), 1);
}

#[test]
fn an_unmapped_code_follows_the_restart_policy() {
    let mut h = Harness::running([mapped("a", &[(ExitKey::Code(101), restart_after(secs(2)))])]);
    let effects = h.exit("a", code(3));
    assert_eq!(delays(&effects), [ms(100)], "restart_sec");
    assert!(!labels(&effects).contains(&"a ExitActionApplied".to_owned()));
}

#[test]
fn a_restart_action_restarts_even_when_the_policy_says_no() {
    let spec = with_restart(
        RestartPolicy::No,
        mapped("a", &[(ExitKey::Code(101), restart_after(secs(2)))]),
    );
    let mut h = Harness::running([spec]);
    assert_eq!(delays(&h.exit("a", code(101))), [secs(2)]);
}

#[test]
fn the_start_limit_still_applies_to_exit_code_restarts() {
    let spec = with_limit(
        2,
        secs(60),
        mapped("a", &[(ExitKey::Code(101), restart_after(ms(10)))]),
    );
    let mut h = Harness::booted([spec]);
    for _ in 0..2 {
        h.exit("a", code(101));
        h.advance(ms(10));
    }
    h.exit("a", code(101));
    assert_eq!(h.state("a"), "failed");
}

#[test]
fn an_env_override_applies_to_later_spawns_until_a_clean_start() {
    let spec = primary(mapped("a", &[(ExitKey::Code(102), standby())]));
    let mut h = Harness::running([spec]);
    h.exit("a", code(102));
    let spawned = spawns(&h.advance(secs(1)));
    assert_eq!(db_host(&spawned[0].2), Some("db-standby"));
    assert_eq!(h.service("a").env_overrides().len(), 1);

    // It sticks across an ordinary failure...
    h.advance(secs(2));
    h.exit("a", code(1));
    let spawned = spawns(&h.advance(secs(1)));
    assert_eq!(
        db_host(&spawned[0].2),
        Some("db-standby"),
        "still overridden"
    );

    // ...until a run reaches running and exits cleanly.
    h.advance(secs(2));
    assert_eq!(h.state("a"), "running");
    h.exit("a", code(0));
    assert!(
        h.service("a").env_overrides().is_empty(),
        "clean start resets"
    );
    let spawned = spawns(&h.ok(Command::Start, "a"));
    assert_eq!(db_host(&spawned[0].2), Some("db-primary"));
}

#[test]
fn an_env_override_ends_with_a_run_longer_than_the_start_limit_interval() {
    let spec = primary(mapped("a", &[(ExitKey::Code(102), standby())]));
    let mut h = Harness::running([spec]);
    h.exit("a", code(102));
    h.advance(secs(1));
    h.advance(secs(11)); // start_limit.interval is 10 s
    h.exit("a", code(1));
    let spawned = spawns(&h.advance(secs(1)));
    assert_eq!(db_host(&spawned[0].2), Some("db-primary"));
}

#[test]
fn a_manual_restart_resets_env_overrides() {
    let spec = primary(mapped("a", &[(ExitKey::Code(102), standby())]));
    let mut h = Harness::running([spec]);
    h.exit("a", code(102));
    h.advance(secs(1));
    h.ok(Command::Restart, "a");
    let spawned = spawns(&h.exit("a", killed(Signal::SIGTERM)));
    assert_eq!(db_host(&spawned[0].2), Some("db-primary"));
}

#[test]
fn a_quarantined_exit_is_recorded_and_not_restarted_until_started_by_hand() {
    let spec = mapped("a", &[(ExitKey::Code(201), ExitAction::Quarantine)]);
    let mut h = Harness::running([spec]);
    let effects = h.exit("a", code(201));
    assert!(
        labels(&effects).contains(&"quarantine a".to_owned()),
        "{:?}",
        labels(&effects)
    );
    assert_eq!(h.state("a"), "quarantined");
    assert!(matches!(
        h.service("a").state(),
        State::Failed {
            reason: FailReason::Quarantined(_)
        }
    ));
    assert!(h.sup.next_deadline().is_none(), "nothing scheduled");
    assert_eq!(
        spawns(&h.ok(Command::Start, "a")).len(),
        1,
        "start brings it back"
    );
}

#[test]
fn an_ignored_exit_is_treated_as_success() {
    let spec = mapped(
        "a",
        &[(ExitKey::Signal(Signal::SIGSEGV as i32), ExitAction::Ignore)],
    );
    let mut h = Harness::running([spec]);
    h.exit("a", killed(Signal::SIGSEGV));
    assert_eq!(h.state("a"), "stopped", "no restart under on-failure");
    // Even an early exit: success is success.
    h.ok(Command::Start, "a");
    h.exit("a", killed(Signal::SIGSEGV));
    assert_eq!(h.state("a"), "stopped");
}
