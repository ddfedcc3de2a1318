//! holdfast's operating-system layer: spawning (the only `unsafe` of holdfast), reaping,
//! process groups, rlimits, credentials and cgroups. It speaks the core's plain types
//! ([`holdfast_core::unix`]) at its edges and the kernel's inside.

pub mod cgroup;
pub mod os;
pub mod process;

use holdfast_core::model;
