//! How the fields of an [`EventKind`](super::EventKind) look on the wire (`events
//! --json`, hook environments): flat snake_case keys that read well as `HOLDFAST_<KEY>`,
//! durations in milliseconds, signals by name.
//!
//! Events are written, never read back: some data is a rendering (`gave_up`'s `reason`,
//! `hook_finished`'s `timed_out`). `EventKind` derives `Deserialize` only so that serde
//! can list its kinds (see [`super::kinds`]); every field adapted here refuses to be read.

use std::path::Path;
use std::time::Duration;

use crate::unix::Pid;
use crate::unix::Signal;
use serde::de::Error as _;
use serde::{Deserializer, Serialize, Serializer};

use crate::model::{ExitAction, ExitKey, ExitStatus, Timeout};
use crate::supervisor::service::{Cause, FailReason, KillScope, RunId};

/// The deserializer of every adapted field: it refuses.
pub fn unread<'de, D: Deserializer<'de>, T>(_: D) -> Result<T, D::Error> {
    Err(D::Error::custom(
        "holdfast does not read events back: their data is written for people and scripts",
    ))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub mod run {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(run: &RunId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(run.0)
    }
}

pub mod pid {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(pid: &Pid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(pid.as_raw())
    }
}

pub mod signal {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(signal: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(signal.as_str())
    }
}

pub mod ms {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(*d))
    }
}

pub mod scope {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(scope: &KillScope, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match scope {
            KillScope::Cgroup => "cgroup",
            KillScope::ProcessGroup => "process_group",
        })
    }
}

pub mod path {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&path.display())
    }
}

/// `hook_finished`'s `timed_out`: whether it was killed (the message says after how long).
pub mod killed {
    pub use super::unread as deserialize;
    use super::*;

    pub fn serialize<S: Serializer>(after: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(after.is_some())
    }
}

/// `timeout_ms`, absent with `Timeout::Never` (no SIGKILL is coming). Flattened.
pub mod timeout {
    pub use super::unread as deserialize;
    use super::*;

    #[derive(Serialize)]
    struct Wire {
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    }

    pub fn serialize<S: Serializer>(timeout: &Timeout, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            timeout_ms: timeout.duration().map(millis),
        }
        .serialize(s)
    }
}

/// An exit status, flattened: `exit_code` for an exit, `signal` (and `core_dumped`) for
/// a death by signal, `signal` and `oom_killed` for the OOM killer.
pub mod status {
    pub use super::unread as deserialize;
    use super::*;

    #[derive(Serialize)]
    pub(super) struct Wire {
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        core_dumped: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        oom_killed: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status_unknown: Option<bool>,
    }

    pub(super) fn wire(status: ExitStatus) -> Wire {
        let none = Wire {
            exit_code: None,
            signal: None,
            core_dumped: None,
            oom_killed: None,
            status_unknown: None,
        };
        match status {
            ExitStatus::Exited(code) => Wire {
                exit_code: Some(code),
                ..none
            },
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => Wire {
                signal: Some(signal.as_str()),
                core_dumped: Some(core_dumped),
                ..none
            },
            ExitStatus::OomKilled => Wire {
                signal: Some(Signal::SIGKILL.as_str()),
                oom_killed: Some(true),
                ..none
            },
            ExitStatus::Unknown => Wire {
                status_unknown: Some(true),
                ..none
            },
        }
    }

    pub fn serialize<S: Serializer>(status: &ExitStatus, s: S) -> Result<S::Ok, S::Error> {
        wire(*status).serialize(s)
    }
}

/// Why a service gave up, flattened: the `reason` sentence, `restarts` for a start
/// limit, `quarantined`, and the facts of the last cause (its exit status, `error`,
/// `timeout_ms`, `interval_ms`, `failures` and `last_error`).
pub mod fail_reason {
    pub use super::unread as deserialize;
    use super::*;

    #[derive(Serialize)]
    struct Wire {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        restarts: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantined: Option<bool>,
        #[serde(flatten)]
        status: Option<status::Wire>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failures: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    }

    pub fn serialize<S: Serializer>(reason: &FailReason, s: S) -> Result<S::Ok, S::Error> {
        let (restarts, quarantined, cause) = match reason {
            FailReason::StartLimitHit { restarts, last, .. } => (Some(*restarts), None, last),
            FailReason::NoRestart(cause) => (None, None, cause),
            FailReason::Quarantined(cause) => (None, Some(true), cause),
        };
        let mut wire = Wire {
            reason: reason.to_string(),
            restarts,
            quarantined,
            status: None,
            error: None,
            timeout_ms: None,
            interval_ms: None,
            failures: None,
            last_error: None,
        };
        match cause {
            Cause::Exited(st) | Cause::ExitedEarly { status: st, .. } => {
                wire.status = Some(status::wire(*st));
            }
            Cause::SpawnFailed(error) => wire.error = Some(error.to_string()),
            Cause::NotReady { timeout } => wire.timeout_ms = Some(millis(*timeout)),
            Cause::WatchdogTimeout { interval } => wire.interval_ms = Some(millis(*interval)),
            Cause::Unhealthy {
                failures,
                last_error,
            } => {
                wire.failures = Some(*failures);
                wire.last_error = last_error.as_ref().map(ToString::to_string);
            }
        }
        wire.serialize(s)
    }
}

/// An exit-code key, flattened: `exit_code`, or `signal` by name (by number when the
/// number names no signal).
pub mod exit_key {
    pub use super::unread as deserialize;
    use super::*;

    #[derive(Serialize)]
    #[serde(untagged)]
    enum SignalWire {
        Name(&'static str),
        Number(i32),
    }

    #[derive(Serialize)]
    struct Wire {
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<SignalWire>,
    }

    pub fn serialize<S: Serializer>(key: &ExitKey, s: S) -> Result<S::Ok, S::Error> {
        let wire = match *key {
            ExitKey::Code(code) => Wire {
                exit_code: Some(code),
                signal: None,
            },
            ExitKey::Signal(n) => Wire {
                exit_code: None,
                signal: Some(match Signal::try_from(n) {
                    Ok(signal) => SignalWire::Name(signal.as_str()),
                    Err(_) => SignalWire::Number(n),
                }),
            },
        };
        wire.serialize(s)
    }
}

/// An exit-code action, flattened: `action` (`restart`, `quarantine`, `ignore`), and for
/// a restart its `delay_ms` and `env` overrides (`KEY=value` strings), when given.
pub mod exit_action {
    pub use super::unread as deserialize;
    use super::*;

    #[derive(Serialize)]
    struct Wire {
        action: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    }

    pub fn serialize<S: Serializer>(action: &ExitAction, s: S) -> Result<S::Ok, S::Error> {
        let wire = match action {
            ExitAction::Restart { delay, env } => Wire {
                action: "restart",
                delay_ms: delay.map(millis),
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            },
            ExitAction::Quarantine => Wire {
                action: "quarantine",
                delay_ms: None,
                env: Vec::new(),
            },
            ExitAction::Ignore => Wire {
                action: "ignore",
                delay_ms: None,
                env: Vec::new(),
            },
        };
        wire.serialize(s)
    }
}
