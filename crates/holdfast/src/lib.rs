//! holdfast as a library: the binary is a thin clap front over these modules, and the
//! integration tests drive the binary.
//!
//! Layering (functional core, imperative shell):
//! `config` → `model::Plan` → `supervisor::core` (pure state machines) ← events from the
//! shell (`supervisor::runtime`, `process`, `logs`, `control`).

#![forbid(unsafe_code)]
// The shell stays in functions a reader can hold in their head (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod cli;
pub mod config;
pub mod control;
pub mod crash;
pub mod health;
pub mod interop;
pub mod logs;
pub mod notify;
pub mod observe;
pub mod private_file;
pub mod quarantine;
pub mod supervisor;
pub mod upgrade;
pub mod web;

pub use holdfast_core::{clock, model, unix};
pub use holdfast_sys::{cgroup, os, process};
