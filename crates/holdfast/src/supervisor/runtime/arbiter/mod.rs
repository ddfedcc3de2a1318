//! Observer mode's shell: asks the upstream (systemd, supervisord) of a `managed_by`
//! service what it says of it, asks it to restart it, and takes the service over when
//! the core decides so.

use super::Shell;
use crate::supervisor::core::{Effect, Input};

impl Shell {
    /// Carries out an effect of observer mode.
    pub(super) fn arbiter(&mut self, effect: Effect) -> Option<Input> {
        tracing::warn!("observer mode is not wired yet: {effect:?}");
        None
    }
}
