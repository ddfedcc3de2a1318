//! Zero-downtime upgrades: what the shell does besides the core's rollout.

pub mod proxy;
