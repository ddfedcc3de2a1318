//! The health decay state machine: OK → DEGRADED → UNHEALTHY on failures within sliding
//! windows, back to OK only after enough consecutive successes (hysteresis).
//!
//! Pure: no I/O, no clock reads; `handle` takes the probe outcome and `now`. One `Decay`
//! lives for one run of a service and starts at OK with its grace period running.
//!
//! Rules (every state × outcome pair):
//! - A failure before `grace` has passed (counted from the run's spawn) is ignored,
//!   except that it becomes the last error. Successes always count.
//! - A failure is remembered with its time; it counts towards a threshold while it is at
//!   most `within` old (inclusive). A success in between does not erase it: "2 failures
//!   within 60 s" means exactly that, whatever happened between them.
//! - On a failure: UNHEALTHY if the unhealthy threshold is reached (from OK or DEGRADED;
//!   OK → UNHEALTHY directly when both thresholds are reached by the same failure, e.g.
//!   with equal failure counts, so no transition is hidden behind another), else
//!   DEGRADED from OK if the degraded threshold is reached.
//! - States never improve on their own, nor step down UNHEALTHY → DEGRADED as old
//!   failures leave the window: the only way back is to OK, after `recover_successes`
//!   consecutive successes. Reaching OK forgets the failures, so the next one starts
//!   counting afresh. The one exception is a reload that loosens the thresholds of an
//!   UNHEALTHY run (`reconfigure`): it steps down at once to what the new thresholds
//!   say of the failures counted.
//!
//! Allowed edges: OK→DEGRADED, OK→UNHEALTHY, DEGRADED→UNHEALTHY, DEGRADED→OK,
//! UNHEALTHY→OK; UNHEALTHY→DEGRADED only on a reload.

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{DecaySpec, ExitStatus, SpawnCause};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    Degraded,
    Unhealthy,
}

impl HealthState {
    /// The name, as the wire and `status` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// Compares with a state's name, as scripts and tests read it from the wire.
impl PartialEq<&str> for HealthState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure(ProbeFailure),
}

/// Why a probe (a health probe or a readiness check) failed. Kept typed until it is
/// shown; the texts are the ones status and events have always carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// `connect 127.0.0.1:80: Connection refused (os error 111)`.
    Connect { address: String, error: String },
    /// The connection was made but HTTP could not start on it.
    Handshake { authority: String, error: String },
    /// The request could not be sent or its answer not read.
    Request { path: String, error: String },
    /// The status line came, the body broke off.
    ReadBody { path: String, error: String },
    /// `HTTP 503 (expected 200-399)`.
    Status {
        code: u16,
        expected: RangeInclusive<u16>,
    },
    /// The answer's body lacks the configured text.
    BodyMismatch { code: u16, needle: String },
    /// No answer (or no connection) within the probe's timeout.
    TimedOut(Duration),
    /// An exec probe exited unsuccessfully.
    Command(ExitStatus),
    /// An exec probe could not be started.
    Spawn(SpawnCause),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Connect { address, error } => write!(f, "connect {address}: {error}"),
            ProbeFailure::Handshake { authority, error } => {
                write!(f, "HTTP handshake with {authority}: {error}")
            }
            ProbeFailure::Request { path, error } => write!(f, "GET {path}: {error}"),
            ProbeFailure::ReadBody { path, error } => {
                write!(f, "GET {path}: reading the body: {error}")
            }
            ProbeFailure::Status { code, expected } => write!(
                f,
                "HTTP {code} (expected {}-{})",
                expected.start(),
                expected.end()
            ),
            ProbeFailure::BodyMismatch { code, needle } => {
                write!(f, "HTTP {code}: body does not contain {needle:?}")
            }
            ProbeFailure::TimedOut(timeout) => {
                write!(
                    f,
                    "timed out after {}",
                    humantime::format_duration(*timeout)
                )
            }
            ProbeFailure::Command(status) => write!(f, "probe command {status}"),
            ProbeFailure::Spawn(cause) => write!(f, "failed to spawn probe command: {cause}"),
        }
    }
}

/// A change of health state, with what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// Failures in the window of the threshold that was reached (for a recovery: in the
    /// unhealthy window, just before they were forgotten).
    pub failures: u32,
    /// Consecutive successes (for a recovery, `recover_successes`).
    pub successes: u32,
    pub last_error: Option<ProbeFailure>,
}

#[derive(Debug, Clone)]
pub struct Decay {
    spec: DecaySpec,
    state: HealthState,
    grace_until: Instant,
    /// Times of counted failures, oldest first, none older than the longer window.
    failures: VecDeque<Instant>,
    successes: u32,
    last_error: Option<ProbeFailure>,
    probes: u64,
}

impl Decay {
    /// A fresh machine for a run spawned at `spawned`: OK, grace running.
    pub fn new(spec: DecaySpec, spawned: Instant) -> Self {
        Self {
            spec,
            state: HealthState::Ok,
            grace_until: crate::clock::later(spawned, spec.grace),
            failures: VecDeque::new(),
            successes: 0,
            last_error: None,
            probes: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// New thresholds for the same run, its history kept: the failures counted, the
    /// state and the start its grace runs from. The next probe result is judged by
    /// them, except that an UNHEALTHY state the old thresholds still bear out and the
    /// new ones do not steps down now (to DEGRADED, or OK), returned as the
    /// transition: UNHEALTHY never moves on a failure, so waiting for the next result
    /// would leave a loosened check acting on the old verdict (an observed service's
    /// upstream asked to restart it again). It is the loosening that steps it down,
    /// never the reload itself: failures that aged out under the old thresholds leave
    /// UNHEALTHY in place, as they do without a reload. A tighter check is not applied
    /// early: it judges the next failure, as a state never worsens without one.
    ///
    /// Failures older than the old longer window were already dropped: a widened
    /// window counts only those the old one kept, so it may undercount until new
    /// failures fill it.
    pub fn reconfigure(&mut self, spec: DecaySpec, now: Instant) -> Option<Transition> {
        let start = self.grace_until.checked_sub(self.spec.grace);
        if let Some(start) = start {
            self.grace_until = crate::clock::later(start, spec.grace);
        }
        let bore =
            self.failures_within(self.spec.unhealthy.within, now) >= self.spec.unhealthy.failures;
        self.spec = spec;
        let (degraded, unhealthy) = self.window_counts(now);
        if self.state != HealthState::Unhealthy || !bore || unhealthy >= spec.unhealthy.failures {
            return None;
        }
        // The failures stay counted (unlike a recovery): they did happen, in the window.
        if degraded >= spec.degraded.failures {
            Some(self.go(HealthState::Degraded, degraded))
        } else {
            Some(self.go(HealthState::Ok, degraded))
        }
    }

    /// The most recent probe error, kept after later successes.
    pub fn last_error(&self) -> Option<&ProbeFailure> {
        self.last_error.as_ref()
    }

    /// Consecutive successes since the last failure.
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Probe results handled so far.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    pub fn in_grace(&self, now: Instant) -> bool {
        now < self.grace_until
    }

    /// Counted failures at most `within` old at `now`.
    pub fn failures_within(&self, within: Duration, now: Instant) -> u32 {
        let n = self
            .failures
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) <= within)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// (failures in the degraded window, failures in the unhealthy window) at `now`.
    pub fn window_counts(&self, now: Instant) -> (u32, u32) {
        (
            self.failures_within(self.spec.degraded.within, now),
            self.failures_within(self.spec.unhealthy.within, now),
        )
    }

    /// Feeds one probe result; returns the state change it causes, if any.
    pub fn handle(&mut self, outcome: ProbeOutcome, now: Instant) -> Option<Transition> {
        self.probes += 1;
        match outcome {
            ProbeOutcome::Success => self.success(now),
            ProbeOutcome::Failure(error) => self.failure(error, now),
        }
    }

    fn success(&mut self, now: Instant) -> Option<Transition> {
        self.successes = self.successes.saturating_add(1);
        if self.state == HealthState::Ok || self.successes < self.spec.recover_successes {
            return None;
        }
        let failures = self.failures_within(self.spec.unhealthy.within, now);
        self.failures.clear();
        Some(self.go(HealthState::Ok, failures))
    }

    fn failure(&mut self, error: ProbeFailure, now: Instant) -> Option<Transition> {
        self.last_error = Some(error);
        self.successes = 0;
        if self.in_grace(now) {
            return None;
        }
        self.failures.push_back(now);
        let longest = self.spec.degraded.within.max(self.spec.unhealthy.within);
        while let Some(&t) = self.failures.front() {
            if now.saturating_duration_since(t) > longest {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        let (degraded, unhealthy) = self.window_counts(now);
        match self.state {
            HealthState::Unhealthy => None,
            _ if unhealthy >= self.spec.unhealthy.failures => {
                Some(self.go(HealthState::Unhealthy, unhealthy))
            }
            HealthState::Ok if degraded >= self.spec.degraded.failures => {
                Some(self.go(HealthState::Degraded, degraded))
            }
            HealthState::Ok | HealthState::Degraded => None,
        }
    }

    fn go(&mut self, to: HealthState, failures: u32) -> Transition {
        let from = self.state;
        self.state = to;
        Transition {
            from,
            to,
            failures,
            successes: self.successes,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Threshold;

    const S: Duration = Duration::from_secs(1);

    fn spec() -> DecaySpec {
        DecaySpec {
            grace: Duration::ZERO,
            degraded: Threshold {
                failures: 2,
                within: 60 * S,
            },
            unhealthy: Threshold {
                failures: 4,
                within: 120 * S,
            },
            recover_successes: 3,
        }
    }

    fn http_503() -> ProbeFailure {
        ProbeFailure::Status {
            code: 503,
            expected: 200..=399,
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failure(http_503())
    }

    /// Feeds `(seconds since t0, outcome)` pairs and returns the transitions as
    /// `(second, from, to)`.
    fn run(spec: DecaySpec, steps: &[(u64, bool)]) -> Vec<(u64, HealthState, HealthState)> {
        let t0 = Instant::now();
        let mut decay = Decay::new(spec, t0);
        steps
            .iter()
            .filter_map(|&(sec, ok)| {
                let outcome = if ok { ProbeOutcome::Success } else { fail() };
                decay
                    .handle(outcome, t0 + Duration::from_secs(sec))
                    .map(|t| (sec, t.from, t.to))
            })
            .collect()
    }

    use HealthState::{Degraded, Ok as Fine, Unhealthy};

    #[test]
    fn degrades_at_exactly_the_degraded_failure_count() {
        let changes = run(spec(), &[(0, false), (5, false)]);
        assert_eq!(
            changes,
            vec![(5, Fine, Degraded)],
            "second failure degrades"
        );
        assert!(
            run(spec(), &[(0, false)]).is_empty(),
            "one failure is not enough"
        );
    }

    #[test]
    fn becomes_unhealthy_at_exactly_the_unhealthy_failure_count() {
        let steps = [(0, false), (5, false), (10, false), (15, false)];
        assert_eq!(
            run(spec(), &steps),
            vec![(5, Fine, Degraded), (15, Degraded, Unhealthy)]
        );
        assert_eq!(run(spec(), &steps[..3]), vec![(5, Fine, Degraded)]);
    }

    #[test]
    fn failures_count_while_at_most_within_old_and_expire_after() {
        // 60 s apart: still within the (inclusive) window.
        assert_eq!(
            run(spec(), &[(0, false), (60, false)]),
            vec![(60, Fine, Degraded)]
        );
        // 61 s apart: the first one has left the window.
        assert!(run(spec(), &[(0, false), (61, false)]).is_empty());
    }

    #[test]
    fn the_unhealthy_window_counts_failures_the_degraded_window_has_forgotten() {
        // Failures every 50 s: the first pair degrades; at most three fit in 120 s,
        // one short of unhealthy.
        let steps = [(0, false), (50, false), (100, false), (150, false)];
        assert_eq!(run(spec(), &steps), vec![(50, Fine, Degraded)]);
        // At 30 s spacing four fit in 120 s.
        let steps = [(0, false), (30, false), (60, false), (90, false)];
        assert_eq!(
            run(spec(), &steps),
            vec![(30, Fine, Degraded), (90, Degraded, Unhealthy)]
        );
    }

    #[test]
    fn successes_in_between_do_not_erase_failures_in_the_window() {
        let steps = [(0, false), (5, true), (10, true), (15, false)];
        assert_eq!(run(spec(), &steps), vec![(15, Fine, Degraded)]);
    }

    #[test]
    fn recovery_needs_the_configured_consecutive_successes() {
        let steps = [
            (0, false),
            (5, false), // degraded
            (10, true),
            (15, true),
            (20, false), // resets the success streak
            (25, true),
            (30, true),
            (35, true), // third in a row: ok
        ];
        assert_eq!(
            run(spec(), &steps),
            vec![(5, Fine, Degraded), (35, Degraded, Fine)]
        );
    }

    #[test]
    fn an_unhealthy_service_stays_unhealthy_until_it_recovers_fully() {
        let mut steps: Vec<(u64, bool)> = (0..4).map(|i| (i * 5, false)).collect();
        // Long after every failure left both windows, still unhealthy: no step down.
        steps.push((1000, true));
        steps.push((1005, true));
        let changes = run(spec(), &steps);
        assert_eq!(changes.last(), Some(&(15, Degraded, Unhealthy)));
        steps.push((1010, true));
        assert_eq!(run(spec(), &steps).last(), Some(&(1010, Unhealthy, Fine)));
    }

    #[test]
    fn recovery_forgets_old_failures() {
        let steps = [
            (0, false),
            (1, false), // degraded
            (2, true),
            (3, true),
            (4, true), // ok
            (5, false),
        ];
        // Without forgetting, three failures within 60 s would degrade again at 5 s.
        assert_eq!(
            run(spec(), &steps),
            vec![(1, Fine, Degraded), (4, Degraded, Fine)]
        );
    }

    #[test]
    fn flapping_does_not_flap_the_state() {
        // fail, ok, fail, ok, ... every 25 s: degraded once (two failures 50 s apart),
        // never unhealthy (at most three within 120 s), never back to ok (never three
        // successes in a row): one transition in 1000 s of flapping.
        let steps: Vec<(u64, bool)> = (0..40).map(|i| (i * 25, i % 2 == 1)).collect();
        let changes = run(spec(), &steps);
        assert_eq!(changes, vec![(50, Fine, Degraded)]);
    }

    #[test]
    fn failures_during_grace_do_not_count_but_are_reported() {
        let spec = DecaySpec {
            grace: 30 * S,
            ..spec()
        };
        let t0 = Instant::now();
        let mut decay = Decay::new(spec, t0);
        for sec in [0, 10, 20, 29] {
            assert_eq!(
                decay.handle(fail(), t0 + Duration::from_secs(sec)),
                None,
                "in grace at {sec}s"
            );
        }
        assert_eq!(decay.last_error(), Some(&http_503()));
        assert_eq!(decay.window_counts(t0 + 29 * S), (0, 0));
        assert_eq!(
            decay.handle(fail(), t0 + 30 * S),
            None,
            "grace over: counts"
        );
        let t = decay
            .handle(fail(), t0 + 35 * S)
            .expect("second counted failure");
        assert_eq!((t.from, t.to, t.failures), (Fine, Degraded, 2));
    }

    #[test]
    fn equal_thresholds_go_straight_from_ok_to_unhealthy() {
        let spec = DecaySpec {
            degraded: Threshold {
                failures: 3,
                within: 60 * S,
            },
            unhealthy: Threshold {
                failures: 3,
                within: 60 * S,
            },
            ..spec()
        };
        let changes = run(spec, &[(0, false), (1, false), (2, false)]);
        assert_eq!(changes, vec![(2, Fine, Unhealthy)]);
    }

    #[test]
    fn transitions_report_failures_and_the_last_error() {
        let t0 = Instant::now();
        let mut decay = Decay::new(spec(), t0);
        let refused = ProbeFailure::Connect {
            address: "127.0.0.1:80".to_owned(),
            error: "refused".to_owned(),
        };
        decay.handle(ProbeOutcome::Failure(refused), t0);
        let t = decay
            .handle(ProbeOutcome::Failure(ProbeFailure::TimedOut(2 * S)), t0 + S)
            .expect("degrades");
        assert_eq!(t.failures, 2);
        assert_eq!(
            t.last_error.map(|e| e.to_string()).as_deref(),
            Some("timed out after 2s")
        );
    }

    /// Property: over many pseudo-random timelines, every transition follows an allowed
    /// edge, starts from the state the machine was in, worsens only when the threshold
    /// of its target is met, and recovers only after `recover_successes` successes.
    #[test]
    fn states_only_move_along_allowed_edges() {
        for seed in 0..2000_u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let spec = DecaySpec {
                grace: Duration::from_millis(rng.u64(0..3000)),
                degraded: Threshold {
                    failures: rng.u32(1..5),
                    within: Duration::from_millis(rng.u64(100..5000)),
                },
                unhealthy: Threshold {
                    failures: rng.u32(5..9),
                    within: Duration::from_millis(rng.u64(100..8000)),
                },
                recover_successes: rng.u32(1..5),
            };
            let t0 = Instant::now();
            let mut now = t0;
            let mut decay = Decay::new(spec, t0);
            let mut state = HealthState::Ok;
            let fail_bias = rng.f64();
            for _ in 0..200 {
                now += Duration::from_millis(rng.u64(0..1500));
                let failed = rng.f64() < fail_bias;
                let outcome = if failed {
                    fail()
                } else {
                    ProbeOutcome::Success
                };
                let change = decay.handle(outcome, now);
                let (degraded, unhealthy) = decay.window_counts(now);
                if let Some(t) = &change {
                    let context = format!("seed {seed}, {spec:?}, {t:?}");
                    assert_eq!(t.from, state, "{context}");
                    assert!(
                        matches!(
                            (t.from, t.to),
                            (Fine, Degraded)
                                | (Fine, Unhealthy)
                                | (Degraded, Unhealthy)
                                | (Degraded, Fine)
                                | (Unhealthy, Fine)
                        ),
                        "edge not allowed: {context}"
                    );
                    match t.to {
                        Degraded => {
                            assert!(failed && degraded >= spec.degraded.failures, "{context}")
                        }
                        Unhealthy => {
                            assert!(failed && unhealthy >= spec.unhealthy.failures, "{context}")
                        }
                        Fine => {
                            assert!(!failed, "{context}");
                            assert!(t.successes >= spec.recover_successes, "{context}");
                        }
                    }
                    state = t.to;
                } else if failed && !decay.in_grace(now) {
                    // No change on a counted failure: no threshold newly met.
                    let context = format!("seed {seed}, {spec:?}, state {state}");
                    match state {
                        Fine => assert!(
                            degraded < spec.degraded.failures
                                && unhealthy < spec.unhealthy.failures,
                            "{context}"
                        ),
                        Degraded => assert!(unhealthy < spec.unhealthy.failures, "{context}"),
                        Unhealthy => {}
                    }
                }
                assert_eq!(decay.state(), state, "seed {seed}");
            }
        }
    }

    #[test]
    fn new_thresholds_judge_the_next_result_and_keep_the_counted_failures_and_the_start() {
        let t0 = Instant::now();
        let at = |sec: u64| t0 + Duration::from_secs(sec);
        let mut decay = Decay::new(
            DecaySpec {
                grace: 10 * S,
                ..spec()
            },
            t0,
        );
        assert_eq!(decay.handle(fail(), at(11)), None);
        assert_eq!(decay.handle(fail(), at(12)).map(|t| t.to), Some(Degraded));
        let tighter = DecaySpec {
            grace: 30 * S,
            unhealthy: Threshold {
                failures: 3,
                within: 120 * S,
            },
            ..spec()
        };
        assert_eq!(decay.reconfigure(tighter, at(12)), None);
        // The grace now ends 30 s after the start, not after the reload.
        assert!(decay.in_grace(at(29)) && !decay.in_grace(at(30)));
        assert_eq!(decay.failures_within(120 * S, at(12)), 2, "kept");
        let third = decay
            .handle(fail(), at(31))
            .map(|t| (t.from, t.to, t.failures));
        assert_eq!(third, Some((Degraded, Unhealthy, 3)));
    }

    #[test]
    fn looser_thresholds_step_an_unhealthy_run_down_at_once_and_tighter_ones_wait() {
        let t0 = Instant::now();
        let at = |sec: u64| t0 + Duration::from_secs(sec);
        let mut decay = Decay::new(spec(), t0);
        for sec in 0..4 {
            decay.handle(fail(), at(sec));
        }
        assert_eq!(decay.state(), Unhealthy);
        // 4 failures still bear out 4 within 120 s: nothing changes.
        assert_eq!(decay.reconfigure(spec(), at(4)), None);
        let looser = |degraded: u32| DecaySpec {
            degraded: Threshold {
                failures: degraded,
                within: 60 * S,
            },
            unhealthy: Threshold {
                failures: 1000,
                within: 120 * S,
            },
            ..spec()
        };
        let t = decay.reconfigure(looser(2), at(4)).expect("steps down");
        assert_eq!((t.from, t.to, t.failures), (Unhealthy, Degraded, 4));
        assert_eq!(decay.failures_within(120 * S, at(4)), 4, "still counted");
        // Back to the old check: it judges the next failure, not the reload.
        assert_eq!(decay.reconfigure(spec(), at(5)), None);
        let t = decay.handle(fail(), at(5)).expect("the next failure");
        assert_eq!((t.from, t.to), (Degraded, Unhealthy));
        // Loose enough for both: OK.
        let t = decay.reconfigure(looser(100), at(6)).expect("steps down");
        assert_eq!((t.from, t.to), (Unhealthy, Fine));
    }

    #[test]
    fn a_reload_does_not_step_down_an_unhealthy_run_whose_failures_aged_out() {
        let t0 = Instant::now();
        let at = |sec: u64| t0 + Duration::from_secs(sec);
        let mut decay = Decay::new(spec(), t0);
        for sec in 0..4 {
            decay.handle(fail(), at(sec));
        }
        assert_eq!(decay.state(), Unhealthy);
        // Long after, none of the 4 is within 120 s: UNHEALTHY stays (only successes
        // end it), with the same thresholds or looser ones.
        assert_eq!(decay.reconfigure(spec(), at(600)), None);
        let looser = DecaySpec {
            unhealthy: Threshold {
                failures: 10,
                within: 120 * S,
            },
            ..spec()
        };
        assert_eq!(decay.reconfigure(looser, at(601)), None);
        assert_eq!(decay.state(), Unhealthy);
    }
}
