//! The supervisor's decisions: `Service` (one service's lifecycle) and `Supervisor` (all
//! services, their order and the commands operators give). Both are pure: an input at an
//! instant in, effects out. The shell (the `holdfast` crate's runtime) owns the only
//! `Supervisor` and executes what it asks for.

pub mod answer;
pub mod core;
pub mod event;
pub mod reload;
pub mod rolling;
pub mod service;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use self::core::{
    Answer, Command, Effect, Input, SignalWhom, Supervisor, state_name, take_reply,
};
