//! Why a run ended and why a service gave up: what `status` and the events tell people.

use std::fmt;
use std::time::Duration;

use crate::health::ProbeFailure;
use crate::model::{ExitStatus, SpawnCause};

#[derive(Debug, Clone, PartialEq)]
pub enum FailReason {
    StartLimitHit {
        restarts: u32,
        interval: Duration,
        last: Cause,
    },
    /// No restart configured and the exit was not clean (or too early).
    NoRestart(Cause),
    /// `[service.X.exit_codes]` says to stop and record the exit for review; only a
    /// start by hand (or `quarantine release`) brings the service back.
    Quarantined(Cause),
}

/// Why a spawn failed, which decides who is to blame for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnFailure {
    /// Something about the service (its program, user, directory, limits): a failed
    /// start like a crash, under its restart policy and start limit.
    Service(SpawnCause),
    /// holdfast itself was short of descriptors, memory or processes (EMFILE, ENFILE,
    /// ENOMEM, EAGAIN while creating pipes or the child): not the service's fault. It is
    /// retried after [`RESOURCE_RETRY`], whatever its restart policy, without counting
    /// against its start limit, so that a passing shortage (a connection flood) cannot
    /// leave it failed for good.
    HoldfastResources(SpawnCause),
}

impl fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnFailure::Service(error) => write!(f, "{error}"),
            SpawnFailure::HoldfastResources(error) => {
                write!(f, "{error} (holdfast is short of resources; retrying)")
            }
        }
    }
}

/// What ended a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    Exited(ExitStatus),
    /// Exited before it was running: before `start_secs` had passed, or before it was
    /// ready.
    ExitedEarly {
        status: ExitStatus,
        after: Duration,
    },
    SpawnFailed(SpawnCause),
    /// The readiness condition was not met within `start_timeout` (or the pidfile of a
    /// forking service never named a live daemon).
    NotReady {
        timeout: Duration,
    },
    /// No `WATCHDOG=1` within the watchdog interval (or `WATCHDOG=trigger`).
    WatchdogTimeout {
        interval: Duration,
    },
    /// Stopped because its health probes made it UNHEALTHY (`unhealthy.action = "restart"`).
    Unhealthy {
        failures: u32,
        last_error: Option<ProbeFailure>,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Exited(status) => write!(f, "{status}"),
            Cause::ExitedEarly { status, after } => write!(
                f,
                "{status} after {} (before it was running)",
                humantime::format_duration(round_ms(*after))
            ),
            Cause::SpawnFailed(error) => write!(f, "spawn failed: {error}"),
            Cause::Unhealthy {
                failures,
                last_error,
            } => {
                write!(f, "unhealthy after {failures} failed probes")?;
                match last_error {
                    Some(error) => write!(f, ", last: {error}"),
                    None => Ok(()),
                }
            }
            Cause::NotReady { timeout } => write!(
                f,
                "not ready within {}",
                humantime::format_duration(round_ms(*timeout))
            ),
            Cause::WatchdogTimeout { interval } => write!(
                f,
                "watchdog timeout (no keep-alive within {})",
                humantime::format_duration(round_ms(*interval))
            ),
        }
    }
}

impl Cause {
    /// The typed reason `status` shows for a restart this cause led to.
    pub fn restart_reason(&self) -> crate::supervisor::answer::RestartReason {
        use crate::supervisor::answer::RestartReason;
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let exit = |status: &ExitStatus, early: bool| RestartReason::Exit {
            description: status.to_string(),
            code: status.code(),
            signal: status.signal().map(|s| s.as_str().to_owned()),
            early,
        };
        match self {
            Cause::Exited(status) => exit(status, false),
            Cause::ExitedEarly { status, .. } => exit(status, true),
            Cause::SpawnFailed(error) => RestartReason::SpawnError {
                error: error.to_string(),
            },
            Cause::NotReady { timeout } => RestartReason::NotReady {
                timeout_ms: ms(timeout),
            },
            Cause::WatchdogTimeout { interval } => RestartReason::Watchdog {
                interval_ms: ms(interval),
            },
            Cause::Unhealthy {
                failures,
                last_error,
            } => RestartReason::Health {
                failures: *failures,
                last_error: last_error.as_ref().map(ToString::to_string),
            },
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::StartLimitHit {
                restarts,
                interval,
                last,
            } => write!(
                f,
                "start limit hit: {restarts} restarts within {}, last {last}",
                humantime::format_duration(*interval)
            ),
            FailReason::NoRestart(cause) => write!(f, "{cause} (restart disabled)"),
            FailReason::Quarantined(cause) => write!(
                f,
                "quarantined after {cause}; `holdfast quarantine release` starts it again"
            ),
        }
    }
}

pub(crate) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
