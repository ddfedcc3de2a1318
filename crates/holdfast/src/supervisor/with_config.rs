//! Core tests whose services come from a config file through the real `config::parse`:
//! they check the core against what validation produces (its defaults, its bounds), so
//! they live here, beside the config loader, and drive the core through its test
//! harness (`holdfast_core::supervisor::testkit`).

mod durations;

use crate::notify::NotifyMsg;
use crate::supervisor::service::Cause;
use holdfast_core::supervisor::testkit::*;

/// Service `n` as the config file makes it: `ready = "notify"` plus `extra` lines, with
/// every default the validator picks (start_secs among them).
fn configured_notify(n: &str, extra: &str) -> ServiceSpec {
    let src = format!("[service.{n}]\ncommand = [\"/bin/true\"]\nready = \"notify\"\n{extra}");
    let mut plan = crate::config::parse(&src, "holdfast.toml", std::path::Path::new("/"))
        .expect("the test config is valid");
    plan.services
        .remove(&name(n))
        .expect("the service is in the plan")
}

#[test]
fn a_ready_service_without_start_secs_is_running_as_soon_as_it_is_ready() {
    let mut h = Harness::booted([configured_notify("a", "")]);
    h.advance(ms(10));
    assert_eq!(h.state("a"), "starting", "not ready yet");
    assert_eq!(
        labels(&h.notify("a", vec![NotifyMsg::Ready])),
        ["a BecameReady", "a Started"],
        "running at READY=1, not a start_secs later"
    );
    assert_eq!(h.state("a"), "running");
}

#[test]
fn a_dependent_of_a_ready_service_is_spawned_at_its_readiness() {
    let mut h = Harness::booted([configured_notify("db", ""), svc_after("api", &["db"])]);
    h.advance(ms(10));
    assert_eq!(h.state("api"), "waiting");
    assert_eq!(
        labels(&h.notify("db", vec![NotifyMsg::Ready])),
        ["db BecameReady", "db Started", "spawn api", "api Spawned"],
        "the `after` link costs nothing beyond db's readiness"
    );
}

#[test]
fn an_explicit_start_secs_still_delays_running_after_readiness() {
    let mut h = Harness::booted([configured_notify("a", "start_secs = \"1s\"")]);
    h.advance(ms(200));
    assert_eq!(
        labels(&h.notify("a", vec![NotifyMsg::Ready])),
        ["a BecameReady"]
    );
    assert_eq!(h.state("a"), "starting");
    assert_eq!(labels(&h.advance(ms(799))), Vec::<String>::new());
    assert_eq!(labels(&h.advance(ms(1))), ["a Started"]);
}

#[test]
fn a_ready_service_that_exits_once_ready_is_not_an_early_exit() {
    let mut h = Harness::booted([configured_notify("a", "")]);
    h.notify("a", vec![NotifyMsg::Ready]);
    let effects = h.exit("a", code(0));
    assert_eq!(
        labels(&effects),
        ["a Exited", "a Stopped"],
        "a clean exit of a started run"
    );
    assert_eq!(h.state("a"), "stopped");
}

#[test]
fn a_ready_service_that_exits_before_it_is_ready_failed_its_start_even_with_code_0() {
    let mut h = Harness::booted([configured_notify("a", "")]);
    h.advance(ms(5000));
    let effects = h.exit("a", code(0));
    assert_eq!(
        labels(&effects),
        ["a Exited", "a RestartScheduled"],
        "on-failure restarts a failed start"
    );
    let early = Cause::ExitedEarly {
        status: code(0),
        after: secs(5),
    };
    assert_eq!(
        early.to_string(),
        "exited 0 after 5s (before it was running)"
    );
}
