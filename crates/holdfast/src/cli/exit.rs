//! Exit codes of the `holdfast` command, documented in one place (README "Exit codes"
//! repeats this table).
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; `status`: every (named) service is in its wanted state; `is-active`: running; `is-failed`: failed |
//! | 1 | failure: the request failed, the daemon reported an error, or a waited `start`/`restart`/`reload` ended with a service failed; `is-failed`: not failed |
//! | 2 | usage error (clap) |
//! | 3 | `check`, `up`, `reload`: invalid config; `status`: some service is not in its wanted state; `is-active`: not running (systemctl's "program is not running") |
//! | 4 | the daemon is not reachable on its control socket |
//! | 5 | a waiting verb (`start`, `stop`, `restart`, `reload`, `shutdown`) gave up at its `--timeout` |
//!
//! A service is in its wanted state when it is `running`, or `stopped` (stopped by hand,
//! `autostart = false` and never started, or ended by a clean exit that is not
//! restarted). `starting`, `waiting` and `stopping` are on their way, not there yet;
//! `backoff`, `failed` and `quarantined` are not where anyone wants them.

use crate::control::client::ClientError;
use crate::control::protocol::{ControlError, ErrorKind, ServiceState};

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const INVALID_CONFIG: u8 = 3;
/// `status` and `is-active`: not (every service) in the wanted state.
pub const NOT_WANTED: u8 = 3;
/// `is-failed`: the service is not failed.
pub const NOT_FAILED: u8 = 1;
pub const UNREACHABLE: u8 = 4;
pub const TIMED_OUT: u8 = 5;

/// The exit code for a failed call to the daemon.
pub fn of_error(error: &ClientError) -> u8 {
    match error {
        ClientError::Unreachable { .. } => UNREACHABLE,
        ClientError::Daemon(ControlError {
            kind: ErrorKind::InvalidConfig,
            ..
        }) => INVALID_CONFIG,
        ClientError::Daemon(_) | ClientError::Protocol(_) => FAILURE,
    }
}

/// Whether a service in `state` is where it should be (see the module docs).
pub fn is_wanted(state: ServiceState) -> bool {
    matches!(state, ServiceState::Running | ServiceState::Stopped)
}

/// Whether `state` counts as failed for `is-failed`.
pub fn is_failed(state: ServiceState) -> bool {
    matches!(state, ServiceState::Failed | ServiceState::Quarantined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceState::*;

    #[test]
    fn only_running_and_stopped_are_wanted_states() {
        for state in [Running, Stopped] {
            assert!(is_wanted(state), "{state}");
        }
        for state in [Starting, Waiting, Stopping, Backoff, Failed, Quarantined] {
            assert!(!is_wanted(state), "{state}");
        }
    }

    #[test]
    fn quarantined_counts_as_failed() {
        assert!(is_failed(Failed) && is_failed(Quarantined));
        assert!(!is_failed(Backoff) && !is_failed(Running));
    }
}
