//! After a takeover holdfast runs the service, and still asks its old upstream every
//! `sync_interval`: an upstream that came back (supervisord started again) may run
//! its own copy of the program beside holdfast's. That is reported
//! (`upstream_duplicate`, and in `status`), never acted on: the copy is the
//! upstream's, and which one should go is for a person to say. But holdfast starts no
//! copy of its own beside it: a start while the upstream's last answer shows its own
//! copy running (after `holdfast stop`, a reload, a crash of holdfast's copy) goes back
//! to observing it (`back_to_upstream`) instead of spawning `command`. That answer may
//! be old: if the next one shows the copy gone, holdfast starts `command` after all.

use std::time::Instant;

use super::{Effect, RunId, Runner, Service, UpstreamReport, UpstreamState, UpstreamView};
use crate::clock::later;
use crate::supervisor::event::EventKind;
use crate::unix::Pid;

/// The watch of a taken-over service's old upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Its syncs carry it: an answer to an earlier watch (one in flight when this
    /// one began) is dropped, or two chains of syncs would run.
    run: RunId,
    /// When the next sync is due; `None` while one is in flight.
    sync_due: Option<Instant>,
    /// The upstream's pid for the service at its last answer (running or starting).
    theirs: Option<Pid>,
    /// The upstream's own copy at its last answer: `theirs` unless it is holdfast's
    /// process (the one it adopted).
    copy: Option<Duplicate>,
    /// Whether `copy` was reported: it ran beside a process of holdfast's.
    reported: bool,
    /// The upstream's last answer whole: observing its copy again begins with it.
    last: Option<UpstreamView>,
}

/// The upstream's own copy of a service holdfast took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub pid: Pid,
    /// The upstream's own words for its state (`RUNNING`).
    pub detail: String,
}

impl Service {
    /// holdfast took the service over (or was re-executed with it): from now on its
    /// old upstream is asked every `sync_interval`. `adopted`: the upstream's process
    /// holdfast runs now, which the upstream may still name later. `run`: the
    /// observation's that ended in the takeover (each is new), which its answers carry.
    pub(super) fn watch_upstream(&mut self, run: RunId, adopted: Option<Pid>, now: Instant) {
        self.watch = self.spec.managed_by.as_ref().map(|m| Watch {
            run,
            sync_due: Some(later(now, m.sync_interval)),
            theirs: adopted,
            copy: None,
            reported: false,
            last: None,
        });
    }

    /// The upstream's own copy, while it runs one beside holdfast's.
    pub fn duplicate(&self) -> Option<&Duplicate> {
        let watch = self.watch.as_ref()?;
        watch.copy.as_ref().filter(|_| watch.reported)
    }

    /// A start while the upstream runs its own copy: holdfast observes that copy again
    /// instead of starting a second one. `None` when it runs none (as last seen).
    pub(super) fn back_to_upstream(&mut self, run: RunId, now: Instant) -> Option<Vec<Effect>> {
        let copy = self.watch.as_ref()?.copy.clone()?;
        let upstream = self.spec.managed_by.as_ref()?.upstream.to_string();
        let last = self.watch.take().and_then(|w| w.last);
        self.runner = Runner::Upstream;
        // No longer holdfast's: `status` must not say taken over once it stops.
        self.arbitrated = None;
        let mut effects = vec![self.emit(EventKind::BackToUpstream {
            upstream,
            pid: copy.pid.as_raw(),
        })];
        effects.extend(self.rejoin(run, last, now));
        Some(effects)
    }

    pub(super) fn watch_wakeup(&self) -> Option<Instant> {
        self.watch.as_ref()?.sync_due
    }

    /// Asks the upstream when its sync is due.
    pub(super) fn watch_tick(&mut self, now: Instant) -> Option<Effect> {
        let managed = self.spec.managed_by.as_ref()?;
        let watch = self.watch.as_mut()?;
        if watch.sync_due.is_none_or(|due| due > now) {
            return None;
        }
        watch.sync_due = None;
        Some(Effect::WatchUpstream {
            service: self.spec.name.clone(),
            run: watch.run,
            upstream: managed.upstream.clone(),
            timeout: managed.arbiter_timeout,
        })
    }

    /// What the old upstream said: a copy of its own that runs while holdfast's does
    /// (another pid) is a duplicate, reported once (again if its pid changes). An
    /// upstream that does not answer says nothing new; the copy it last showed stands.
    pub(super) fn watch_report(
        &mut self,
        run: RunId,
        report: UpstreamReport,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(managed) = self.spec.managed_by.clone() else {
            return Vec::new();
        };
        let ours = self.run().and(self.pid());
        let Some(watch) = self.watch.as_mut().filter(|w| w.run == run) else {
            return Vec::new();
        };
        watch.sync_due = Some(later(now, managed.sync_interval));
        let UpstreamReport::Seen(view) = report else {
            return Vec::new();
        };
        watch.last = Some(view.clone());
        let theirs = match view.state {
            UpstreamState::Running | UpstreamState::Starting => view.pid,
            _ => None,
        };
        // holdfast's own process, as the upstream still names it (the one adopted):
        // while holdfast runs none, the same pid as last time is judged as last time.
        let own = |pid: Pid| match ours {
            Some(o) => o == pid,
            None => watch.theirs == Some(pid) && watch.copy.is_none(),
        };
        let copy = theirs.filter(|pid| !own(*pid)).map(|pid| Duplicate {
            pid,
            detail: view.detail,
        });
        watch.theirs = theirs;
        if copy.as_ref().map(|c| c.pid) != watch.copy.as_ref().map(|c| c.pid) {
            watch.reported = false;
        }
        watch.copy = copy;
        let new = !watch.reported && ours.is_some() && watch.copy.is_some();
        watch.reported |= new;
        match (new, &watch.copy) {
            (true, Some(d)) => {
                let kind = EventKind::UpstreamDuplicate {
                    upstream: managed.upstream.to_string(),
                    pid: d.pid.as_raw(),
                    detail: d.detail.clone(),
                };
                vec![self.emit(kind)]
            }
            _ => Vec::new(),
        }
    }
}
