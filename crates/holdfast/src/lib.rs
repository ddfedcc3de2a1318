//! holdfast as a library: the binary is a thin clap front over these modules, and the
//! integration tests drive the binary.
//!
//! Layering (functional core, imperative shell):
//! `config` → `model::Plan` → `supervisor::core` (pure state machines) ← events from the
//! shell (`supervisor::runtime`, `process`, `logs`, `control`).

pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod health;
pub mod logs;
pub mod model;
pub mod notify;
pub mod process;
pub mod quarantine;
pub mod supervisor;
