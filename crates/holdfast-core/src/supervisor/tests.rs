//! Unit tests of the pure supervisor core, driven through the [`super::testkit`] harness.

mod backoff;
mod commands;
mod exit_codes;
mod health;
mod index;
mod observed;
mod ordering;
mod readiness;
mod reload;
mod restart;
mod resume;
mod shutdown;
mod stop;
mod upgrade;
mod verbs;

use super::testkit::*;

/// The shell's contract, checked once: ticks before a deadline change nothing.
#[test]
fn a_tick_before_any_deadline_has_no_effects() {
    let mut h = Harness::booted([svc("a")]);
    let deadline = h.sup.next_deadline().expect("starting has a deadline");
    h.skip(deadline - h.now - ms(1));
    assert_eq!(labels(&h.feed(Input::Tick)), Vec::<String>::new());
    assert_eq!(h.state("a"), "starting");
    assert_eq!(
        h.sup.next_deadline(),
        Some(deadline),
        "an early tick moves no deadline"
    );
}

#[test]
fn a_state_is_named_for_status() {
    assert_eq!(state_name(&State::Stopped), "stopped");
    assert_eq!(state_name(&State::Launching { run: RunId(1) }), "starting");
}
