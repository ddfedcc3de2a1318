//! Processes: spawning (the only place with `unsafe`, fork and exec), reaping, signalling
//! process groups, and the subreaper setting.

pub mod group;
pub mod reap;
pub mod spawn;
