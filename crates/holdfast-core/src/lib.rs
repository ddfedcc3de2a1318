//! holdfast's pure core: what a service supervisor decides, with no way to act.
//!
//! - [`model`]: the validated configuration (`Plan`, `ServiceSpec`) the rest works from.
//! - [`supervisor`]: the `Service` and `Supervisor` state machines. They take inputs
//!   (a process exited, a deadline passed, an operator asked for a restart) at an instant
//!   and return effects (spawn this, signal that, emit this event); the shell executes
//!   the effects and feeds the results back.
//! - [`health`]: the OK/DEGRADED/UNHEALTHY decay of probe results.
//! - [`notify`]: the sd_notify datagram parser.
//! - [`unix`]: process ids, signals and reap numbers as plain data.
//! - [`stable_hash`]: a hash for what one holdfast writes down and the next recomputes.
//!
//! Nothing here depends on an async runtime, the OS or the filesystem, so every decision
//! is unit-tested with a fake clock.

#![forbid(unsafe_code)]

pub mod clock;
pub mod health;
pub mod model;
pub mod notify;
pub mod stable_hash;
pub mod supervisor;
pub mod unix;
