//! Health checking: probes (`probe`), the decay state machine (`decay`) and the per-run
//! probe schedule (`Monitor`).
//!
//! The split follows the functional core: `Monitor` and `Decay` are pure and live inside
//! the service's state machine; the runtime runs the probes the core asks for
//! (`Effect::StartProbe`) and feeds their outcomes back (`Input::ProbeResult`).

pub mod decay;

use std::time::{Duration, Instant};

pub use decay::{Decay, HealthState, ProbeFailure, ProbeOutcome, Transition};

use crate::clock::later;
use crate::model::HealthSpec;

/// Health of one run: its decay machine and when its next probe is due.
///
/// Invariant: at most one probe per run is in flight; the next one is due `interval`
/// after the previous one started (a probe times out before that, validation makes sure
/// `timeout <= interval`).
#[derive(Debug, Clone)]
pub struct Monitor {
    decay: Decay,
    interval: Duration,
    /// `None` while a probe is in flight.
    next_due: Option<Instant>,
    /// When the probe in flight (or the last one) started.
    started: Instant,
}

impl Monitor {
    /// A fresh monitor for a run spawned at `spawned`; the first probe runs one interval
    /// later.
    pub fn new(spec: &HealthSpec, spawned: Instant) -> Self {
        Self {
            decay: Decay::new(spec.decay, spawned),
            interval: spec.interval,
            next_due: Some(later(spawned, spec.interval)),
            started: spawned,
        }
    }

    /// A new check for the same run (a reload): its thresholds and interval apply from
    /// now on, its history stays. A probe in flight finishes; otherwise the next is
    /// due one new interval after the last one started (at once if that has passed).
    /// Returns the step down of a state the new thresholds no longer bear out.
    pub fn reconfigure(&mut self, spec: &HealthSpec, now: Instant) -> Option<Transition> {
        self.interval = spec.interval;
        if self.next_due.is_some() {
            self.next_due = Some(later(self.started, spec.interval).max(now));
        }
        self.decay.reconfigure(spec.decay, now)
    }

    pub fn decay(&self) -> &Decay {
        &self.decay
    }

    /// When the next probe is due; `None` while one is in flight.
    pub fn due(&self) -> Option<Instant> {
        self.next_due
    }

    /// Marks a probe as started if one is due at `now`; returns whether it was.
    pub fn start_if_due(&mut self, now: Instant) -> bool {
        match self.next_due {
            Some(due) if due <= now => {
                self.next_due = None;
                self.started = now;
                true
            }
            _ => false,
        }
    }

    /// The probe in flight finished with `outcome`. A result with no probe in flight
    /// (cannot happen with a well-behaved shell) is ignored.
    pub fn finished(&mut self, outcome: ProbeOutcome, now: Instant) -> Option<Transition> {
        if self.next_due.is_some() {
            return None;
        }
        self.next_due = Some(later(self.started, self.interval).max(now));
        self.decay.handle(outcome, now)
    }
}
