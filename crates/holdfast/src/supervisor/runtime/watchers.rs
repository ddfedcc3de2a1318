//! Start-up watchers of starting runs (readiness conditions, pidfiles), kept in the
//! service's slot and aborted as soon as the run is no longer starting.

use std::path::PathBuf;

use tokio::task::JoinHandle;

use super::Shell;
use crate::model::ServiceName;
use crate::supervisor::service::{RunId, Service, State};
use crate::supervisor::startup;

/// What a start-up watcher waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Watch {
    /// The readiness condition (`ready = tcp | http | fd`).
    Readiness,
    /// The pidfile of a forking service naming its daemon.
    Pidfile,
}

/// One watcher task of one run.
pub(super) struct Watcher {
    kind: Watch,
    run: RunId,
    task: JoinHandle<()>,
}

impl Watcher {
    pub(super) fn abort(&self) {
        self.task.abort();
    }
}

impl Shell {
    pub(super) fn read_pidfile(&mut self, service: ServiceName, run: RunId, path: PathBuf) {
        let Some(leader) = self.sup.service(&service).and_then(Service::group) else {
            return;
        };
        let target = self.target(&service, run);
        let lineage = startup::Lineage {
            leader,
            me: holdfast_sys::os::getpid(),
            cgroup: self.cgroup(&service).cloned(),
        };
        let task = startup::pidfile(target, path, lineage);
        self.watch(&service, Watch::Pidfile, run, task);
    }

    pub(super) fn target(&self, service: &ServiceName, run: RunId) -> startup::Target {
        startup::Target {
            service: service.clone(),
            run,
            tx: self.inputs_tx.clone(),
        }
    }

    /// Keeps `task` as the `kind` watcher of `run`, replacing one of an earlier run.
    pub(super) fn watch(
        &mut self,
        service: &ServiceName,
        kind: Watch,
        run: RunId,
        task: JoinHandle<()>,
    ) {
        self.watched.insert(service.clone());
        let watchers = &mut self.slot(service).watchers;
        watchers.retain(|w| {
            if w.kind == kind {
                w.abort();
            }
            w.kind != kind
        });
        watchers.push(Watcher { kind, run, task });
    }

    /// Aborts the watchers of runs that are no longer starting. Only services with
    /// watchers are looked at: this runs after every input.
    pub(super) fn drop_stale_watchers(&mut self) {
        let (sup, slots) = (&self.sup, &mut self.slots);
        self.watched.retain(|name| {
            let Some(slot) = slots.get_mut(name) else {
                return false;
            };
            let current = sup.service(name).and_then(|s| match s.state() {
                State::Starting { run, .. } | State::Launching { run } => Some(*run),
                _ => None,
            });
            slot.watchers.retain(|w| {
                let keep = current == Some(w.run) && !w.task.is_finished();
                if !keep {
                    w.abort();
                }
                keep
            });
            !slot.watchers.is_empty()
        });
    }
}
