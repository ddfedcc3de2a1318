//! The sd_notify side of the app: `READY=1` once the listener accepts, `STOPPING=1`
//! when draining starts, and `WATCHDOG=1` pings while the app is healthy enough to
//! send them. Every call is a no-op without `NOTIFY_SOCKET`.

use std::{net::SocketAddr, sync::Arc};

use sd_notify::NotifyState;

use crate::state::Shared;

/// Tells the service manager we are serving on `addr`.
pub fn ready(addr: SocketAddr) {
    let status = format!("serving on {addr}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells the service manager we are draining.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pings the watchdog every half `WATCHDOG_USEC` (when it is set for our pid), until
/// the app hangs. Returns at once when there is no watchdog.
pub async fn watchdog(shared: Arc<Shared>) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval(timeout / 2);
    loop {
        ticks.tick().await;
        if shared.is_hung() {
            return;
        }
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        eprintln!("failed to notify the service manager: {error}");
    }
}
