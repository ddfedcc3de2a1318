//! Taking an observed service over: its upstream stayed unreachable past
//! `arbiter_timeout` with `takeover = true`. holdfast adopts the process the upstream
//! last showed running, or starts `command`; from then on the service is holdfast's
//! (and its old upstream is watched: `watch.rs`).

use std::time::Instant;

use super::arbitration::GONE_AFTER_FAILURES;
use super::{
    Arbitrated, Arbitration, Effect, Reach, RunId, Runner, Service, State, Verdict, Watchdog,
};
use crate::clock::later;
use crate::health::Monitor;
use crate::model::Takeover;
use crate::supervisor::core::Attempt;
use crate::supervisor::event::EventKind;
use crate::unix::Pid;

impl Service {
    /// The upstream stayed unreachable for `arbiter_timeout`: report it (once), and
    /// take over when allowed.
    pub(super) fn unreachable_past_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let managed = self.managed().clone();
        let name = self.spec.name.clone();
        let observation = self.observation_mut();
        let Reach::Unreachable {
            since,
            error,
            verdict,
            failures,
        } = &mut observation.reach
        else {
            return Vec::new();
        };
        if *verdict == Verdict::GivenUp
            || *failures < GONE_AFTER_FAILURES
            || later(*since, managed.arbiter_timeout) > now
        {
            return Vec::new();
        }
        let reported = *verdict == Verdict::Retrying;
        *verdict = Verdict::GivenUp;
        let error = error.clone();
        let takeover = managed.takeover == Takeover::Allowed;
        let run = observation.run;
        // Only a process the upstream last showed running may be adopted.
        let process = observation.view.as_ref().and_then(|view| {
            let (pid, _) = view.start_mark()?;
            Some((pid, view.proc_start?))
        });
        let upstream_pid = observation.view.as_ref().and_then(|v| v.upstream_pid);
        if takeover {
            observation.arbitration = Arbitration::TakingOver;
        } else if let Arbitration::Rejoining { .. } = observation.arbitration {
            // No answer will decide: observed as any service of a silent upstream,
            // which holds nothing up and takes no restart.
            observation.arbitration = Arbitration::Idle;
        }
        let mut effects = Vec::new();
        if !reported {
            self.arbitrated = Some(Arbitrated::Unreachable(error.clone()));
            effects.push(self.emit(EventKind::UpstreamUnreachable {
                upstream: managed.upstream.to_string(),
                error,
                takeover,
            }));
        }
        if takeover {
            effects.push(Effect::TakeOver {
                service: name,
                run,
                process,
                upstream: upstream_pid,
                attempt: if reported {
                    Attempt::Again
                } else {
                    Attempt::First
                },
            });
        }
        effects
    }

    /// Gone back to the upstream on a start, which no longer runs the copy its last
    /// answer showed: holdfast runs the service again, by starting `command`.
    pub(super) fn copy_gone(&mut self, now: Instant) -> Vec<Effect> {
        let observation = self.observation_mut();
        let run = observation.run;
        observation.arbitration = Arbitration::TakingOver;
        self.taken_over(run, None, now)
    }

    /// The shell answered `Effect::TakeOver`: holdfast runs the service from now on,
    /// as the adopted process (`Some`, held and reaped by the shell) or by starting it.
    pub(super) fn taken_over(
        &mut self,
        run: RunId,
        adopted: Option<Pid>,
        now: Instant,
    ) -> Vec<Effect> {
        let observation = self.observation_mut();
        if observation.run != run || observation.arbitration != Arbitration::TakingOver {
            return Vec::new();
        }
        self.runner = Runner::Holdfast;
        self.arbitrated = Some(Arbitrated::TakenOver(adopted));
        self.watch_upstream(run, adopted, now);
        let mut effects = vec![self.emit(EventKind::TakenOver {
            pid: adopted.map(Pid::as_raw),
        })];
        match adopted {
            Some(pid) => {
                let mut watchdog = Watchdog::default();
                watchdog.arm(now);
                let state = State::Running {
                    run,
                    pid,
                    spawned: now,
                    main_pid: None,
                    watchdog,
                };
                self.health = self.spec.health.as_ref().map(|h| Monitor::new(h, now));
                self.enter(state, now);
            }
            None => effects.extend(self.launch(run, now)),
        }
        effects
    }
}
