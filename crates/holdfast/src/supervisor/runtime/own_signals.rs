//! The signals holdfast itself acts on, like nginx's: SIGTERM/SIGINT stop (a second one
//! during the stop kills at once), SIGHUP reloads, SIGUSR1 reopens the log files. They
//! arrive through tokio's signal driver, as one more source of the loop.

use std::time::Instant;

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{RuntimeError, Shell, control, probes, setup_error};
use crate::process::group;
use crate::supervisor::core::Input;
use crate::supervisor::service::KILL_WAIT;
use crate::unix::Signal as Sig;

/// What a signal to holdfast asks for.
pub(super) enum Asked {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
    /// SIGUSR1.
    ReopenLogs,
}

/// The Unix signals holdfast acts on.
pub(super) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
}

impl Signals {
    pub(super) fn new() -> Result<Self, RuntimeError> {
        let handler = |kind: SignalKind, name: &str| signal(kind).map_err(setup_error(name));
        Ok(Self {
            term: handler(SignalKind::terminate(), "SIGTERM handler")?,
            int: handler(SignalKind::interrupt(), "SIGINT handler")?,
            hup: handler(SignalKind::hangup(), "SIGHUP handler")?,
            usr1: handler(SignalKind::user_defined1(), "SIGUSR1 handler")?,
        })
    }

    /// The next signal to holdfast.
    pub(super) async fn recv(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::ReopenLogs,
        }
    }
}

impl Shell {
    /// Acts on a signal to holdfast. Returns true once the shutdown is complete.
    pub(super) fn on_signal(&mut self, asked: Asked) -> bool {
        match asked {
            Asked::Stop if self.sup.is_shutting_down() => {
                self.force_stop();
                false
            }
            Asked::Stop => self.apply(Input::Shutdown),
            Asked::Reload => {
                self.start_reload(control::ReloadBy::Sighup);
                false
            }
            Asked::ReopenLogs => {
                // holdfast's own log is its stderr, which it does not open: only the
                // services' files are reopened.
                for capture in self.slots.values().filter_map(|s| s.capture.as_ref()) {
                    capture.reopen();
                }
                tracing::info!("reopening the log files on SIGUSR1");
                false
            }
        }
    }

    /// A second stop signal during a shutdown: whoever sent it will not wait for stop
    /// timeouts. Every process of every service gets SIGKILL; their exits end the
    /// shutdown as usual, and should one survive SIGKILL (stuck in the kernel), holdfast
    /// exits without it once `KILL_WAIT` passed.
    fn force_stop(&mut self) {
        if self.forced.is_some() {
            return;
        }
        tracing::warn!("second stop signal during the shutdown: killing every process now");
        self.forced = Some(crate::clock::later(Instant::now(), KILL_WAIT));
        for attached in self.slots.values().filter_map(|s| s.cgroup.as_ref()) {
            attached.cgroup.signal(Sig::SIGKILL);
        }
        self.kill_every_group();
    }

    /// After a forced stop, hooks that the last events started are not waited for
    /// either.
    pub(super) fn kill_hooks_if_forced(&self) {
        if self.forced.is_some() {
            self.kill_every_group();
        }
    }

    fn kill_every_group(&self) {
        // Without cgroups (or for what left them), by process group: every run's and
        // every helper's (probes, hooks, verify commands).
        let groups: Vec<_> = self.table.groups().map(|(pgid, _)| pgid).collect();
        for pgid in groups {
            let _ = group::signal_group(pgid, Sig::SIGKILL);
        }
        let pids: Vec<_> = self.table.processes().map(|(pid, _)| pid).collect();
        for pid in pids {
            // Not every process leads a group: ESRCH is expected.
            let _ = probes::kill_group(pid);
        }
    }

    /// Whether a forced stop ran out of time: holdfast exits without waiting further.
    pub(super) fn force_expired(&self, now: Instant) -> bool {
        let expired = self.forced.is_some_and(|at| at <= now);
        if expired {
            tracing::warn!("processes survived SIGKILL; exiting without them");
        }
        expired
    }
}
