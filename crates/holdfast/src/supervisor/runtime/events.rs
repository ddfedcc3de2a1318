//! Publishing events: holdfast's log, the service's log, the event bus, and the hooks
//! an event fires.

use std::time::{Instant, SystemTime};

use tracing::Level;

use super::Shell;
use crate::control::protocol::{ControlError, ErrorKind, Reply};
use crate::model::ServiceName;
use crate::observe::{event_log, metrics};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::hooks::{self, Note};
use crate::unix::Pid;

impl Shell {
    /// The pid the journal entries of `service`'s lines name after `event`, if it changes
    /// it: none while two runs overlap (an upgrade: both write to the same pipes, a line
    /// cannot be told whose), the survivor's once one of them exits.
    fn journal_pid(&self, service: &ServiceName, event: &Event) -> Option<Option<Pid>> {
        let now = self.sup.service(service)?;
        let overlapping = now.live_runs().nth(1).is_some();
        match event.kind {
            EventKind::Spawned { pid, .. } | EventKind::MainPidChanged { pid } => {
                Some((!overlapping).then_some(pid))
            }
            EventKind::Exited { .. } => Some(self.journal_pid_now(service)),
            _ => None,
        }
    }

    /// The pid `service`'s journal entries name as things stand: its run's, none while
    /// runs overlap.
    pub(super) fn journal_pid_now(&self, service: &ServiceName) -> Option<Pid> {
        let now = self.sup.service(service)?;
        if now.live_runs().nth(1).is_some() {
            return None;
        }
        now.pid()
    }

    pub(super) fn publish(&mut self, event: &Event) {
        self.roll_event(event);
        if let EventKind::Upgraded { .. } | EventKind::RolledBack { .. } = event.kind {
            self.link_follows(event);
        }
        let now = event.service.as_ref().and_then(|s| self.sup.service(s));
        self.proxies.on_event(event, now);
        if let (Some(service), EventKind::Stopped | EventKind::GaveUp { .. }) =
            (&event.service, &event.kind)
        {
            self.forget_cgroup(service);
        }
        if let Some(capture) = event.service.as_ref().and_then(|s| self.capture(s)) {
            if let Some(pid) = event
                .service
                .as_ref()
                .and_then(|s| self.journal_pid(s, event))
            {
                capture.set_pid(pid);
            }
            match event.kind {
                // A service that never prints gets no log file for its spawn alone.
                EventKind::Spawned { .. } | EventKind::Started { .. } => {
                    capture.note_routine(&event.to_string());
                }
                _ => capture.note(&event.to_string()),
            }
        }
        let record = self.bus.publish(event, SystemTime::now());
        event_log::log(&record, &event.to_string(), level(&event.kind));
        let restart_reason = match (&event.kind, &event.service) {
            (EventKind::RestartScheduled { .. }, Some(service)) => self
                .sup
                .service(service)
                .and_then(|s| s.last_restart())
                .map(|cause| metrics::reason_label(&cause.restart_reason())),
            _ => None,
        };
        self.metrics.on_event(event, restart_reason);
        if record.service.is_some() {
            // Every change of a service's state or processes is an event.
            self.ledger.behind();
        }
        // Hooks come from the current plan (a reload changes them without a restart); a
        // removed service has none left.
        let spec = record
            .service
            .as_ref()
            .and_then(|s| self.sup.plan().services.get(s));
        // Most events have no hook: no recipe is built for them.
        let Some(spec) = spec.filter(|spec| hooks::hook_for(spec, &record.kind).is_some()) else {
            return;
        };
        let recipe = self.recipe(spec);
        let capture = self.slots.get(&spec.name).and_then(|s| s.capture.as_ref());
        let note = hooks::fire(
            &mut self.table,
            &record,
            spec,
            recipe,
            capture,
            Instant::now(),
        );
        match note {
            Some(Ok(note)) => self.note(note),
            Some(Err(failed)) => self.publish(&failed),
            None => {}
        }
    }

    /// Recent events, only the `last` N when asked (`events -n N`, the newest event's
    /// number for `status --watch`): what the client would drop is not sent. A name that
    /// is neither configured nor in the history is an error, so a typo does not look
    /// like a quiet service.
    pub(super) fn events(
        &self,
        service: Option<ServiceName>,
        since: Option<u64>,
        last: Option<usize>,
    ) -> Result<Reply, ControlError> {
        let mut events = self.bus.recent(service.as_ref(), since);
        if let Some(n) = last {
            events.drain(..events.len().saturating_sub(n));
        }
        if let Some(name) = service {
            let instances = crate::supervisor::rolling::instances_named(self.sup.plan(), &name);
            if events.is_empty() && instances.is_empty() {
                return Err(ControlError {
                    kind: ErrorKind::UnknownService,
                    message: format!("no service named \"{name}\""),
                });
            }
        }
        Ok(Reply::Events { events })
    }

    /// Logs a hook's news in holdfast's log and the service's.
    pub(super) fn note(&self, note: Note) {
        if note.warning {
            tracing::warn!(service = %note.service, "{}: {}", note.service, note.text);
        } else {
            tracing::info!(service = %note.service, "{}: {}", note.service, note.text);
        }
        if let Some(capture) = self.capture(&note.service) {
            capture.note(&format!("{}: {}", note.service, note.text));
        }
    }
}

/// An event's level in holdfast's own log (the journal's `PRIORITY=`): a warning for
/// what someone should look at (a failure, a kill, a rollback, a crash, an upstream
/// gone), info for the rest. An exit is info: the crash report of one that crashed is
/// the warning.
fn level(kind: &EventKind) -> Level {
    match kind {
        EventKind::SpawnFailed { .. }
        | EventKind::GaveUp { .. }
        | EventKind::Escalated { .. }
        | EventKind::StopAbandoned { .. }
        | EventKind::HookFailed { .. }
        | EventKind::StartTimedOut { .. }
        | EventKind::WatchdogTimeout { .. }
        | EventKind::RolledBack { .. }
        | EventKind::UpgradeRefused { .. }
        | EventKind::CrashReported { .. }
        | EventKind::CoreDumped { .. }
        | EventKind::UpstreamRestartTimedOut { .. }
        | EventKind::UpstreamUnreachable { .. }
        | EventKind::UpstreamDuplicate { .. } => Level::WARN,
        EventKind::HookFinished { status, .. } if !status.is_clean() => Level::WARN,
        _ => Level::INFO,
    }
}
