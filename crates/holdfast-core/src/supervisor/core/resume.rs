//! The core across a re-execution of holdfast (`holdfast upgrade --self`): a
//! [`Snapshot`] of every service taken by the old image, fed to the new image's core as
//! `Input::Resume` right after `Supervisor::new`, in place of `Input::Boot`.

use std::time::Instant;

use super::{Effect, Supervisor};
use crate::model::ServiceName;
use crate::supervisor::service::{Resumed, ResumedState};

/// Everything the core hands over to the next image of holdfast.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The next run number: runs of the new image never repeat an old one.
    pub next_run: u64,
    pub services: Vec<Resumed>,
}

impl Supervisor {
    /// What the core hands over now, or why it cannot be handed over: a shutdown, a
    /// reload still replacing services, or a service in the middle of a transition (an
    /// upgrade, a stop, a draining run). Nothing changes either way.
    pub fn snapshot(&self, now: Instant) -> Result<Snapshot, String> {
        if self.shutting_down {
            return Err("holdfast is shutting down".to_owned());
        }
        if let Some(base) = self.canaries.keys().next() {
            return Err(format!("an upgrade of {base} is under way"));
        }
        if let Some(name) = self.held.keys().next() {
            return Err(format!("{name} waits for the services it replaces to stop"));
        }
        let services = self
            .services
            .values()
            .map(|service| service.snapshot(now))
            .collect::<Result<_, _>>()?;
        Ok(Snapshot {
            next_run: self.next_run,
            services,
        })
    }

    /// What a holdfast started after this one was killed may carry on: each service
    /// whose state can be handed over (see [`Supervisor::snapshot`]). Unlike a snapshot,
    /// a service in the middle of a transition is left out instead of refusing the
    /// whole: the next holdfast stops what is left of it and starts it afresh.
    pub fn carried(&self, now: Instant) -> Snapshot {
        let services = self
            .services
            .values()
            .filter_map(|service| service.snapshot(now).ok())
            .collect();
        Snapshot {
            next_run: self.next_run,
            services,
        }
    }

    /// Puts every service of `snapshot` back as it was. Services of the plan the
    /// snapshot does not name (new in this image's reading of the config) start if they
    /// are autostart, as at boot; services it names that the plan lacks are left out.
    pub(super) fn resume(&mut self, snapshot: Snapshot, now: Instant) -> Vec<Effect> {
        self.next_run = self.next_run.max(snapshot.next_run);
        let mut named = std::collections::BTreeSet::new();
        let mut start = Vec::new();
        for resumed in snapshot.services {
            let name = resumed.service.clone();
            if !self.services.contains_key(&name) {
                continue;
            }
            named.insert(name.clone());
            if resumed.state == ResumedState::Waiting {
                start.push(name.clone());
            }
            self.services.resume(&name, resumed, now);
        }
        let fresh: Vec<ServiceName> = self
            .services
            .values()
            .filter(|s| s.spec().autostart && !named.contains(s.name()))
            .map(|s| s.name().clone())
            .collect();
        start.extend(fresh);
        self.start_all(start, now)
    }
}
