//! sd_notify in both directions.
//!
//! - [`message`]: the pure parser of notification datagrams into typed messages.
//! - [`server`]: the `NOTIFY_SOCKET` holdfast runs for its services: one AF_UNIX datagram
//!   socket with `SO_PASSCRED`, so every datagram carries the sender's pid as checked by
//!   the kernel. The runtime maps that pid to a service through its process group: a
//!   service can only notify for itself.
//! - [`upstream`]: holdfast's own notifications to the service manager that started it
//!   (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`), when `NOTIFY_SOCKET` is set.
//! - [`outer`]: which manager (systemd, supervisord) runs holdfast itself.

pub mod outer;
pub mod server;
pub mod upstream;

pub use holdfast_core::notify::{NotifyMsg, message, parse};
