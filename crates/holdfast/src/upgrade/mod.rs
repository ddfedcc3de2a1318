//! Zero-downtime upgrades, the parts outside the core: what starts one (a flip of the
//! watched symlink, [`watch`]), the checks a build passes before anything changes
//! ([`verify`]), and the link pointed back on a rollback ([`link`]). The rollout itself
//! is the core's; the supervisor's runtime wires these to it.

pub mod link;
pub mod verify;
pub mod watch;
