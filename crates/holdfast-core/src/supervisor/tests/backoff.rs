//! Exponential backoff: growth, cap, jitter and forgetting.

use super::*;

fn exponential(jitter: f64) -> ServiceSpec {
    let spec = ServiceSpec {
        backoff: Backoff::Exponential {
            initial: secs(1),
            max: secs(10),
            factor: 2.0,
            jitter,
            reset_after: secs(60),
        },
        ..svc("a")
    };
    // The start limit is not under test here.
    with_limit(1000, secs(10), spec)
}

/// Crashes `a` right after it started, `n` times; returns the delays scheduled.
fn quick_crash_delays(h: &mut Harness, n: usize) -> Vec<Duration> {
    (0..n)
        .flat_map(|_| delays(&h.crash_after("a", ms(1500))))
        .collect()
}

#[test]
fn exponential_delays_grow_by_the_factor_up_to_max() {
    let mut h = Harness::booted([exponential(0.0)]);
    assert_eq!(
        quick_crash_delays(&mut h, 7),
        [1, 2, 4, 8, 10, 10, 10].map(secs)
    );
}

#[test]
fn restart_scheduled_counts_consecutive_attempts() {
    let mut h = Harness::booted([exponential(0.0)]);
    let attempts: Vec<u32> = (0..3)
        .flat_map(|_| events_of(&h.crash_after("a", ms(1500)), "a"))
        .filter_map(|k| match k {
            EventKind::RestartScheduled { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[test]
fn jitter_stays_within_its_bounds_for_many_seeds() {
    let jitter = 0.25;
    let mut first_delays = BTreeSet::new();
    for seed in 0..300 {
        let mut h = Harness::with_seed([exponential(jitter)], seed);
        h.feed(Input::Boot);
        for (n, delay) in quick_crash_delays(&mut h, 6).into_iter().enumerate() {
            let base = (2f64.powi(n as i32)).min(10.0);
            let (low, high) = (base * (1.0 - jitter), (base * (1.0 + jitter)).min(10.0));
            let d = delay.as_secs_f64();
            assert!(
                (low - 1e-9..=high + 1e-9).contains(&d),
                "seed {seed}, attempt {}: {d} s outside [{low}, {high}]",
                n + 1
            );
            if n == 0 {
                first_delays.insert(delay);
            }
        }
    }
    assert!(
        first_delays.len() > 100,
        "jitter actually spreads the delays"
    );
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let run = || {
        let mut h = Harness::with_seed([exponential(0.5)], 42);
        h.feed(Input::Boot);
        quick_crash_delays(&mut h, 5)
    };
    assert_eq!(run(), run());
}

#[test]
fn attempts_reset_after_a_run_longer_than_reset_after() {
    let mut h = Harness::booted([exponential(0.0)]);
    assert_eq!(quick_crash_delays(&mut h, 3), [1, 2, 4].map(secs));
    let effects = h.crash_after("a", secs(60));
    assert_eq!(
        delays(&effects),
        [secs(1)],
        "a stable run forgets the failures"
    );
    assert_eq!(quick_crash_delays(&mut h, 1), [secs(2)]);
}

#[test]
fn a_run_shorter_than_reset_after_keeps_the_delay_growing() {
    let mut h = Harness::booted([exponential(0.0)]);
    assert_eq!(quick_crash_delays(&mut h, 2), [1, 2].map(secs));
    assert_eq!(delays(&h.crash_after("a", secs(59))), [secs(4)]);
}

#[test]
fn a_jittered_restart_delay_is_shown_to_the_millisecond() {
    let mut h = Harness::booted([exponential(0.25)]);
    let effects = h.crash_after("a", ms(1500));
    let delay = delays(&effects)[0];
    assert_ne!(
        delay.subsec_nanos() % 1_000_000,
        0,
        "the seed gives a delay with sub-millisecond digits: {delay:?}"
    );
    let shown = effects
        .iter()
        .find_map(|e| match e {
            Effect::Emit(
                event @ Event {
                    kind: EventKind::RestartScheduled { .. },
                    ..
                },
            ) => Some(event.to_string()),
            _ => None,
        })
        .expect("a restart is scheduled");
    let rounded = humantime::format_duration(ms(delay.as_millis() as u64));
    assert_eq!(shown, format!("a: restarting in {rounded} (attempt 1)"));
}
