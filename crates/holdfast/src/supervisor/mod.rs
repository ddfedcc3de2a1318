//! The supervisor: a pure core (`core`, `service`) that decides, and a runtime shell that
//! executes its effects and turns the outside world into its inputs.
//!
//! Invariant: the runtime task is the only owner of the `Supervisor`; every other task
//! talks to it through channels.

pub mod answer;
pub mod bus;
pub mod core;
pub mod event;
pub mod hooks;
pub mod recipe;
pub mod record;
pub mod reload;
pub mod runtime;
pub mod service;
mod startup;

#[cfg(test)]
mod tests;

pub use self::core::{Command, Effect, Input, SignalWhom, Supervisor, state_name};
