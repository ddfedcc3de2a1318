//! Writing quarantine records off the supervisor task.
//!
//! A record is appended and fsync'd by a blocking task. Until it is on disk, the effects
//! that follow it (the `gave_up` event first) are held back, and control requests wait
//! (see the loop): nobody can see the service quarantined, by event or by status,
//! before its record can be read.

use std::collections::VecDeque;
use std::path::PathBuf;

use super::{Finished, Shell};
use crate::model::{ExitStatus, ServiceName, defaults};
use crate::quarantine;
use crate::supervisor::core::Effect;

/// Effects waiting for a quarantine record to reach the disk.
#[derive(Default)]
pub(super) struct Held {
    writing: bool,
    effects: VecDeque<Effect>,
}

impl Held {
    pub(super) fn is_holding(&self) -> bool {
        self.writing
    }

    pub(super) fn push(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }
}

/// A record's append, finished.
pub(super) struct Appended {
    service: ServiceName,
    path: PathBuf,
    result: std::io::Result<()>,
}

impl Shell {
    /// Appends the quarantine record (with the service's last log lines) to the queue,
    /// off this task; what follows waits for it.
    pub(super) fn quarantine(&mut self, service: &ServiceName, status: ExitStatus, reason: String) {
        // Asked now, answered by the capture's task once the notes and the end of run
        // queued before are applied: the record shows the run's last words.
        let log = self
            .capture(service)
            .map(|c| c.recent(defaults::QUARANTINE_LOG_LINES));
        let time = quarantine::now();
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        let done = self.done_tx.clone();
        let service = service.clone();
        self.held.writing = true;
        tokio::spawn(async move {
            let log = match log {
                Some(log) => log.await,
                None => Vec::new(),
            };
            let entry = quarantine::Entry::Quarantined {
                time,
                service: service.clone(),
                code: status.code(),
                signal: status.signal().map(|s| s.as_str().to_owned()),
                reason,
                log,
            };
            let append_path = path.clone();
            let result =
                tokio::task::spawn_blocking(move || quarantine::append(&append_path, &entry))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let appended = Appended {
                service,
                path,
                result,
            };
            // The loop may be gone (shutdown): nobody waits then.
            let _ = done.send(Finished::Quarantined(appended));
        });
    }

    /// A record is on disk (or failed to get there): the held effects go on. Returns
    /// true once the shutdown is complete.
    pub(super) fn on_appended(&mut self, appended: Appended) -> bool {
        let Appended {
            service,
            path,
            result,
        } = appended;
        match result {
            Ok(()) => tracing::warn!(
                "{service}: quarantined, record appended to {}",
                path.display()
            ),
            Err(e) => tracing::error!(
                "{service}: quarantined, but failed to append the record to {}: {e}",
                path.display()
            ),
        }
        self.held.writing = false;
        let effects = std::mem::take(&mut self.held.effects);
        self.execute(effects.into())
    }
}
