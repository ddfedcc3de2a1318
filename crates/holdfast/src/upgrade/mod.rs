//! Zero-downtime upgrades, the parts outside the core: what starts one (a flip of the
//! watched symlink, [`watch`]), the checks a build passes before anything changes
//! ([`verify`]), the link pointed back on a rollback ([`link`]), and the proxy that keeps
//! the port of services that cannot take a socket ([`proxy`]). The rollout itself is the
//! core's; the supervisor's runtime wires these to it.

pub mod link;
pub mod proxy;
pub mod verify;
pub mod watch;
