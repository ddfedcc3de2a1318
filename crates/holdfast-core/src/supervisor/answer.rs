//! What the core answers with: the errors of a command, a reload's plan, a restart's
//! reason. They travel to the control client unchanged, so they are serde types; they
//! live beside the core (not in `control::protocol`, which re-exports them) so that the
//! core depends on nothing of the wire layer.

use serde::{Deserialize, Serialize};

use super::event::variant_names;
use crate::model::ServiceName;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request line was not valid JSON or not a known request.
    BadRequest,
    /// Protocol version mismatch.
    Version,
    UnknownService,
    /// The config given to `reload` is invalid; `message` is the rendered diagnostic.
    InvalidConfig,
    PermissionDenied,
    ShuttingDown,
    Internal,
    /// An `events` follower fell too far behind the event stream and was disconnected.
    Lagged,
    /// The request conflicts with work under way (an upgrade of the service).
    Conflict,
    /// Too many control connections (from this uid or in total): the connection is
    /// closed after this answer, without reading the request; try again later.
    Busy,
}

/// What ended the run that holdfast then restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestartReason {
    /// The process exited or was killed; `early` when before `start_secs` had passed.
    Exit {
        /// `exited 3`, `killed by SIGSEGV (core dumped)`.
        description: String,
        code: Option<i32>,
        signal: Option<String>,
        early: bool,
    },
    /// The process could not be started (a setup step or `execve` failed).
    SpawnError { error: String },
    /// Not ready within `start_timeout`.
    NotReady { timeout_ms: u64 },
    /// No `WATCHDOG=1` within the watchdog interval.
    Watchdog { interval_ms: u64 },
    /// Health probes made it UNHEALTHY.
    Health {
        failures: u32,
        last_error: Option<String>,
    },
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms));
        match self {
            Self::Exit {
                description, early, ..
            } => {
                write!(f, "{description}")?;
                if *early {
                    f.write_str(" before start_secs")?;
                }
                Ok(())
            }
            Self::SpawnError { error } => write!(f, "spawn error: {error}"),
            Self::NotReady { timeout_ms } => write!(f, "not ready within {}", ms(*timeout_ms)),
            Self::Watchdog { interval_ms } => {
                write!(f, "watchdog: no keep-alive within {}", ms(*interval_ms))
            }
            Self::Health {
                failures,
                last_error,
            } => {
                write!(f, "health: unhealthy after {failures} failed probes")?;
                match last_error {
                    Some(error) => write!(f, ", last: {error}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// What a reload changes (or would change, with `dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReloadPlan {
    pub dry_run: bool,
    pub added: Vec<ServiceName>,
    pub removed: Vec<ServiceName>,
    /// Changed services, restarted with the new definition.
    pub changed: Vec<ServiceName>,
    pub unchanged: Vec<ServiceName>,
    /// `[holdfast]` settings that changed but need a daemon restart to apply.
    pub ignored: Vec<String>,
    /// `[holdfast]` settings that changed and a reload applies in place, each with its
    /// change: `[holdfast].http: 127.0.0.1:9700 -> 0.0.0.0:9700`. Filled by the shell,
    /// which applies them (or moves one to `not_applied`, saying why it could not).
    #[serde(default)]
    pub applied: Vec<String>,
    /// `[holdfast]` settings that a reload applies in place but this one could not, each
    /// with why and where things stay: `[holdfast].http (cannot listen on ...; still on
    /// 127.0.0.1:9700)`. No restart is needed: the next reload tries again.
    #[serde(default)]
    pub not_applied: Vec<String>,
}

impl ReloadPlan {
    /// One line for a log: `added: a; changed (restart): b, c; unchanged: 3`.
    pub fn summary(&self) -> String {
        let names = |names: &[ServiceName]| {
            names
                .iter()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed (restart)", &self.changed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}: {}", names(list)));
            }
        }
        parts.push(format!("unchanged: {}", self.unchanged.len()));
        if !self.applied.is_empty() {
            parts.push(format!("applied: {}", self.applied.join(", ")));
        }
        if !self.not_applied.is_empty() {
            parts.push(format!("not applied: {}", self.not_applied.join(", ")));
        }
        if !self.ignored.is_empty() {
            parts.push(format!(
                "ignored until restart: {}",
                self.ignored.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// A service's state as `status` and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Stopped,
    Waiting,
    Starting,
    Running,
    Stopping,
    Backoff,
    Failed,
    /// Failed, and its exit recorded for review (`holdfast quarantine`).
    Quarantined,
    /// Observed (`managed_by`), and its upstream says nothing holdfast can name, or
    /// does not answer.
    Unknown,
}

impl ServiceState {
    /// The name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        variant_names::<Self>()[self as usize]
    }
}

/// Compares with a state's name, as scripts and tests read it from the wire.
impl PartialEq<&str> for ServiceState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceState;

    #[test]
    fn a_state_is_named_as_on_the_wire() {
        for state in [
            ServiceState::Stopped,
            ServiceState::Backoff,
            ServiceState::Quarantined,
        ] {
            assert_eq!(
                serde_json::to_value(state).expect("states serialize"),
                state.as_str()
            );
        }
        assert_eq!(ServiceState::Running.to_string(), "running");
    }
}
