//! holdfast's own notifications to the service manager that runs it (systemd
//! `Type=notify` with `WatchdogSec=`).
//!
//! Everything is a no-op unless holdfast's environment has `NOTIFY_SOCKET` (the runtime
//! never passes it, nor `WATCHDOG_*`, on to services). `READY=1` is sent once; `STATUS=`
//! only when the text changed; `WATCHDOG=1` from the supervisor task itself, so pings
//! stop when its loop stops turning.

use std::time::Duration;

use sd_notify::NotifyState;

use super::outer::OuterManager;

#[derive(Debug)]
pub struct Upstream {
    /// Who started holdfast, if a service manager did.
    manager: Option<OuterManager>,
    enabled: bool,
    ready_sent: bool,
    stopping_sent: bool,
    last_status: Option<String>,
    watchdog: Option<Duration>,
}

impl Upstream {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let manager = OuterManager::detect();
        if let Some(manager) = &manager {
            tracing::info!("running under {manager}: it restarts holdfast if holdfast dies");
        }
        Self {
            manager,
            enabled,
            ready_sent: false,
            stopping_sent: false,
            last_status: None,
            watchdog: if enabled {
                sd_notify::watchdog_enabled()
            } else {
                None
            },
        }
    }

    /// How often to send `WATCHDOG=1`: half the manager's interval, like sd_notify(3)
    /// recommends. Capped, since tokio's interval adds it to an instant unchecked.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog
            .map(|d| (d / 2).clamp(Duration::from_millis(1), crate::clock::FAR_FUTURE))
    }

    pub fn manager(&self) -> Option<&OuterManager> {
        self.manager.as_ref()
    }

    pub fn is_ready_sent(&self) -> bool {
        self.ready_sent
    }

    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    pub fn status(&mut self, text: String) {
        if self.last_status.as_deref() != Some(text.as_str()) {
            self.send(&[NotifyState::Status(&text)]);
            self.last_status = Some(text);
        }
    }

    /// `WATCHDOG=1`; while holdfast starts (no `READY=1` yet: its services are coming
    /// up, which may take longer than any fixed start timeout), also
    /// `EXTEND_TIMEOUT_USEC=` of one watchdog interval: the start goes on while these
    /// pings come, and times out as a hung loop would be killed once started.
    pub fn watchdog(&self) {
        match self.watchdog.filter(|_| !self.ready_sent) {
            Some(interval) => {
                let usec = u32::try_from(interval.as_micros()).unwrap_or(u32::MAX);
                self.send(&[NotifyState::Watchdog, NotifyState::ExtendTimeoutUsec(usec)]);
            }
            None => self.send(&[NotifyState::Watchdog]),
        }
    }

    /// holdfast re-executes itself (`upgrade --self`): the manager sees a reload, which
    /// the new image ends with its `READY=1` (or this one with [`Upstream::ready_again`]).
    pub fn reloading(&mut self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1000)
            .unwrap_or_default();
        self.send(&[NotifyState::Reloading, NotifyState::MonotonicUsec(now)]);
    }

    /// The re-execution failed: this image serves on, ready as before.
    pub fn ready_again(&mut self) {
        if self.ready_sent {
            self.send(&[NotifyState::Ready]);
        }
    }

    /// Sent once, at the start of the shutdown.
    pub fn stopping(&mut self) {
        if !self.stopping_sent {
            self.stopping_sent = true;
            self.send(&[NotifyState::Stopping]);
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::debug!("failed to notify the service manager: {error}");
        }
    }
}
