//! What operators watch holdfast with: its own log (human, JSON lines or native
//! journald entries), service output forwarded to journald, and metrics.

pub mod event_log;
mod human;
pub mod journald;
pub mod log;
pub mod metrics;
