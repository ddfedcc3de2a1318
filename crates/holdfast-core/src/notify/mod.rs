//! The sd_notify protocol's messages: [`message`] parses a notification datagram into
//! typed messages, which the service state machine consumes.

pub mod message;

pub use message::{NotifyMsg, parse};
