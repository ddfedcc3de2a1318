//! After a takeover holdfast runs the service, and still asks its old upstream every
//! `sync_interval`: an upstream that came back (supervisord started again) may run
//! its own copy of the program beside holdfast's. That is reported
//! (`upstream_duplicate`, and in `status`), never acted on: the copy is the
//! upstream's, and which one should go is for a person to say.

use std::time::Instant;

use super::{Effect, Service, UpstreamReport, UpstreamState};
use crate::clock::later;
use crate::supervisor::event::EventKind;
use crate::unix::Pid;

/// The watch of a taken-over service's old upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// When the next sync is due; `None` while one is in flight.
    sync_due: Option<Instant>,
    duplicate: Option<Duplicate>,
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
    /// old upstream is asked every `sync_interval`.
    pub(super) fn watch_upstream(&mut self, now: Instant) {
        self.watch = self.spec.managed_by.as_ref().map(|m| Watch {
            sync_due: Some(later(now, m.sync_interval)),
            duplicate: None,
        });
    }

    /// The upstream's own copy, while it runs one beside holdfast's.
    pub fn duplicate(&self) -> Option<&Duplicate> {
        self.watch.as_ref()?.duplicate.as_ref()
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
            upstream: managed.upstream.clone(),
            timeout: managed.arbiter_timeout,
        })
    }

    /// What the old upstream said: a copy of its own that runs while holdfast's does
    /// (another pid) is a duplicate, reported once (again if its pid changes). An
    /// upstream that does not answer says nothing new.
    pub(super) fn watch_report(&mut self, report: UpstreamReport, now: Instant) -> Vec<Effect> {
        let Some(managed) = self.spec.managed_by.clone() else {
            return Vec::new();
        };
        let ours = self.run().and(self.pid());
        let Some(watch) = self.watch.as_mut() else {
            return Vec::new();
        };
        watch.sync_due = Some(later(now, managed.sync_interval));
        let UpstreamReport::Seen(view) = report else {
            return Vec::new();
        };
        let copy = match view.state {
            UpstreamState::Running | UpstreamState::Starting => view.pid,
            _ => None,
        };
        let duplicate = copy
            .filter(|pid| ours.is_some_and(|o| o != *pid))
            .map(|pid| Duplicate {
                pid,
                detail: view.detail,
            });
        let new = duplicate
            .as_ref()
            .is_some_and(|d| watch.duplicate.as_ref().is_none_or(|o| o.pid != d.pid));
        watch.duplicate = duplicate;
        match (new, &watch.duplicate) {
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
