//! The runtime shell around the pure core ([`holdfast_core::supervisor`]): it executes the
//! core's effects and turns the outside world into its inputs.
//!
//! Invariant: the runtime task is the only owner of the `Supervisor`; every other task
//! talks to it through channels.

pub mod bus;
pub mod hooks;
pub mod recipe;
pub mod record;
pub mod runtime;
mod spawn_failure;
mod startup;
#[cfg(test)]
mod with_config;

pub use holdfast_core::supervisor::{
    Answer, Command, Effect, Input, SignalWhom, Supervisor, core, event, reload, rolling, service,
    state_name, take_reply,
};
