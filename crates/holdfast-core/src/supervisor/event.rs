//! Events: the past-tense record of every transition.
//!
//! The core emits them as `Effect::Emit`; the shell stamps them with wall-clock time,
//! logs them and fans them out. Metrics, the dashboard and `events -f` are built from
//! events only, so every state change must produce one.

use std::fmt;
use std::time::Duration;

use crate::unix::Pid;
use crate::unix::Signal;

use super::service::{FailReason, KillScope, RunId, round_ms};
use crate::health::HealthState;
use crate::model::{ExitAction, ExitKey, ExitStatus, ServiceName, Timeout};

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `None` for events of the daemon itself.
    pub service: Option<ServiceName>,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A process was forked and exec'd.
    Spawned {
        run: RunId,
        pid: Pid,
    },
    /// fork/exec failed; the error says at which stage.
    SpawnFailed {
        run: RunId,
        error: String,
    },
    /// Waiting for `after` dependencies before starting.
    Waiting {
        on: Vec<ServiceName>,
    },
    /// The process stayed up for `start_secs`: it counts as started.
    Started {
        run: RunId,
        pid: Pid,
    },
    /// The main process ended.
    Exited {
        run: RunId,
        pid: Pid,
        status: ExitStatus,
    },
    RestartScheduled {
        delay: Duration,
        attempt: u32,
    },
    /// Too many restarts, or a failure with no restart configured.
    GaveUp {
        reason: FailReason,
    },
    StopRequested {
        signal: Signal,
        timeout: Timeout,
        scope: KillScope,
    },
    /// The stop timeout passed: the run's processes got SIGKILL.
    Escalated {
        pid: Pid,
        scope: KillScope,
    },
    /// Even SIGKILL did not end every process (uninterruptible sleep): holdfast stops
    /// waiting for them.
    StopAbandoned {
        pid: Pid,
        scope: KillScope,
    },
    Stopped,
    /// `reset-failed`: a failed service is stopped again, its start limit fresh.
    FailureReset,
    /// Removed from the plan by a reload.
    Removed,
    /// The definition changed in a reload.
    Reconfigured,
    ShutdownStarted,
    ShutdownCompleted,
    /// A `[service.X.on]` hook ended (`timed_out`: it was SIGKILLed at `hook_timeout`).
    /// Published by the shell, not the core.
    HookFinished {
        hook: String,
        pid: Pid,
        status: ExitStatus,
        timed_out: Option<Duration>,
    },
    /// A hook did not run: it could not be spawned, or too many of the service's hooks
    /// were still running. Published by the shell, not the core.
    HookFailed {
        hook: String,
        error: String,
    },
    /// The readiness condition of the run was met. It counts as started at once, unless
    /// an explicit `start_secs` has not passed yet.
    BecameReady {
        run: RunId,
    },
    /// Not ready within `start_timeout`: the start failed.
    StartTimedOut {
        timeout: Duration,
    },
    /// No keep-alive within the watchdog interval: SIGABRT, then the stop escalation.
    WatchdogTimeout {
        pid: Pid,
        interval: Duration,
    },
    /// The main process changed (`MAINPID=`, or the daemon named by a pidfile).
    MainPidChanged {
        pid: Pid,
    },
    /// A forking service's first process exited 0; waiting for its pidfile.
    AwaitingPidfile {
        path: std::path::PathBuf,
    },
    /// The service reported something on `NOTIFY_SOCKET` (reloading, stopping, errno).
    Notified {
        what: String,
    },
    /// The health decay machine changed state (see `health::decay`).
    HealthChanged {
        run: RunId,
        from: HealthState,
        to: HealthState,
        /// Failures within the window of the threshold that was reached.
        failures: u32,
        last_error: Option<String>,
    },
    /// An exit matched `[service.X.exit_codes]`; `action` replaces the restart policy's
    /// decision (what follows is reported by the usual events).
    ExitActionApplied {
        key: ExitKey,
        action: ExitAction,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(service) = &self.service {
            write!(f, "{service}: ")?;
        }
        match &self.kind {
            EventKind::Spawned { pid, .. } => write!(f, "spawned pid {pid}"),
            EventKind::SpawnFailed { error, .. } => write!(f, "failed to spawn: {error}"),
            EventKind::Waiting { on } => {
                let names: Vec<&str> = on.iter().map(ServiceName::as_str).collect();
                write!(f, "waiting for {}", names.join(", "))
            }
            EventKind::Started { pid, .. } => write!(f, "started (pid {pid})"),
            EventKind::Exited { pid, status, .. } => write!(f, "pid {pid} {status}"),
            // Jittered delays have nanoseconds nobody needs to read.
            EventKind::RestartScheduled { delay, attempt } => write!(
                f,
                "restarting in {} (attempt {attempt})",
                humantime::format_duration(round_ms(*delay))
            ),
            EventKind::GaveUp { reason } => write!(f, "failed: {reason}"),
            EventKind::StopRequested {
                signal,
                timeout,
                scope,
            } => {
                let to = match scope {
                    KillScope::Cgroup => "the cgroup",
                    KillScope::ProcessGroup => "the process group",
                };
                match timeout {
                    Timeout::After(timeout) => write!(
                        f,
                        "stopping: {} to {to}, SIGKILL in {}",
                        signal.as_str(),
                        humantime::format_duration(*timeout)
                    ),
                    Timeout::Never => write!(
                        f,
                        "stopping: {} to {to}, no SIGKILL (stop.timeout is infinity)",
                        signal.as_str()
                    ),
                }
            }
            EventKind::Escalated { pid, scope } => {
                write!(f, "stop timed out: SIGKILL to {}", targets(*scope, *pid))
            }
            EventKind::StopAbandoned { pid, scope } => write!(
                f,
                "{} survived SIGKILL (uninterruptible sleep?): no longer waiting for it",
                targets(*scope, *pid)
            ),
            EventKind::Stopped => f.write_str("stopped"),
            EventKind::FailureReset => f.write_str("failure reset: stopped, start limit cleared"),
            EventKind::Removed => f.write_str("removed from the config"),
            EventKind::Reconfigured => f.write_str("definition changed"),
            EventKind::ShutdownStarted => f.write_str("shutting down"),
            EventKind::ShutdownCompleted => f.write_str("all services stopped"),
            EventKind::HookFinished {
                hook,
                timed_out: Some(after),
                ..
            } => write!(
                f,
                "hook \"{hook}\" timed out after {}, killed",
                humantime::format_duration(*after)
            ),
            EventKind::HookFinished {
                hook, pid, status, ..
            } => write!(f, "hook \"{hook}\" (pid {pid}) {status}"),
            EventKind::HookFailed { hook, error } => write!(f, "hook \"{hook}\" not run: {error}"),
            EventKind::BecameReady { .. } => f.write_str("ready"),
            EventKind::StartTimedOut { timeout } => write!(
                f,
                "not ready within {}: start failed",
                humantime::format_duration(*timeout)
            ),
            EventKind::WatchdogTimeout { pid, interval } => write!(
                f,
                "watchdog timeout: no keep-alive within {}, SIGABRT to pid {pid}'s group",
                humantime::format_duration(*interval)
            ),
            EventKind::MainPidChanged { pid } => write!(f, "main pid is now {pid}"),
            EventKind::AwaitingPidfile { path } => {
                write!(f, "waiting for pidfile {}", path.display())
            }
            EventKind::Notified { what } => write!(f, "service reports: {what}"),
            EventKind::HealthChanged {
                from,
                to,
                failures,
                last_error,
                ..
            } => {
                write!(f, "health {from} -> {to}")?;
                if *to == HealthState::Ok {
                    write!(f, " (recovered)")
                } else {
                    write!(f, " after {failures} failed probes")?;
                    match last_error {
                        Some(error) => write!(f, ", last: {error}"),
                        None => Ok(()),
                    }
                }
            }
            EventKind::ExitActionApplied { key, action } => {
                write!(f, "{key} is mapped to ")?;
                match action {
                    ExitAction::Ignore => f.write_str("ignore: treated as a clean exit"),
                    ExitAction::Quarantine => f.write_str("quarantine: not restarting"),
                    ExitAction::Restart { delay, env } => {
                        f.write_str("restart")?;
                        if let Some(delay) = delay {
                            write!(f, " after {}", humantime::format_duration(*delay))?;
                        }
                        if !env.is_empty() {
                            let vars: Vec<String> =
                                env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            write!(f, " with {}", vars.join(" "))?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The processes a kill reached, for people: the cgroup holds the whole run.
fn targets(scope: KillScope, pid: Pid) -> String {
    match scope {
        KillScope::Cgroup => format!("the cgroup of main pid {pid}"),
        KillScope::ProcessGroup => format!("process group {pid}"),
    }
}
