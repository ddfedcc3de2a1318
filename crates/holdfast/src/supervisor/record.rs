//! Events on the wire: the one conversion from a core [`Event`] to an [`EventRecord`].
//!
//! Invariants:
//! - [`describe`] matches every [`EventKind`] without a wildcard, so a new variant does
//!   not compile until it has a wire name and its data;
//! - every name [`describe`] returns is in [`KINDS`] (a unit test holds it to that), so
//!   config validation of `[service.X.on]` keys knows all of them;
//! - data keys are snake_case and become hook environment variables as
//!   `HOLDFAST_<KEY>` (see [`env_name`]), so they are chosen to read well there too.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use super::event::{Event, EventKind};
use super::service::{Cause, FailReason, KillScope};
use crate::control::protocol::EventRecord;
use crate::model::{ExitAction, ExitKey, ExitStatus, ServiceName, Timeout};
use crate::unix::Signal;

/// Every event kind's wire name, in the order of [`EventKind`]'s variants.
pub const KINDS: &[&str] = &[
    "spawned",
    "spawn_failed",
    "waiting",
    "started",
    "exited",
    "restart_scheduled",
    "gave_up",
    "stop_requested",
    "escalated",
    "stop_abandoned",
    "stopped",
    "failure_reset",
    "removed",
    "reconfigured",
    "shutdown_started",
    "shutdown_completed",
    "hook_finished",
    "hook_failed",
    "became_ready",
    "start_timed_out",
    "watchdog_timed_out",
    "main_pid_changed",
    "awaiting_pidfile",
    "notified",
    "health_changed",
    "exit_action_applied",
];

/// Kinds no hook may be configured for: a hook on a hook's outcome could loop.
pub const NOT_HOOKABLE: &[&str] = &["hook_finished", "hook_failed"];

/// Stamps `event` as number `seq`, published at `time`.
pub fn record(seq: u64, time: SystemTime, event: &Event) -> EventRecord {
    let (kind, data) = describe(&event.kind);
    // The message is the event's sentence without the `name: ` prefix: the service is a
    // field of its own.
    let message = Event {
        service: None,
        kind: event.kind.clone(),
    }
    .to_string();
    EventRecord {
        seq,
        time: humantime::format_rfc3339_millis(time).to_string(),
        service: event.service.clone(),
        kind: kind.to_owned(),
        message,
        data,
    }
}

/// The wire name of an event kind and its data.
pub fn describe(kind: &EventKind) -> (&'static str, BTreeMap<String, Value>) {
    let mut data = Data::default();
    let name = match kind {
        EventKind::Spawned { run, pid } => {
            data.put("run", run.0).put("pid", pid.as_raw());
            "spawned"
        }
        EventKind::SpawnFailed { run, error } => {
            data.put("run", run.0).put("error", error.as_str());
            "spawn_failed"
        }
        EventKind::Waiting { on } => {
            let on: Vec<&str> = on.iter().map(ServiceName::as_str).collect();
            data.put("on", on);
            "waiting"
        }
        EventKind::Started { run, pid } => {
            data.put("run", run.0).put("pid", pid.as_raw());
            "started"
        }
        EventKind::Exited { run, pid, status } => {
            data.put("run", run.0).put("pid", pid.as_raw());
            data.status(*status);
            "exited"
        }
        EventKind::RestartScheduled { delay, attempt } => {
            data.put("delay_ms", millis(*delay))
                .put("attempt", *attempt);
            "restart_scheduled"
        }
        EventKind::GaveUp { reason } => {
            data.put("reason", reason.to_string());
            let cause = match reason {
                FailReason::StartLimitHit { restarts, last, .. } => {
                    data.put("restarts", *restarts);
                    last
                }
                FailReason::NoRestart(cause) => cause,
                FailReason::Quarantined(cause) => {
                    data.put("quarantined", true);
                    cause
                }
            };
            match cause {
                Cause::Exited(status) | Cause::ExitedEarly { status, .. } => {
                    data.status(*status);
                }
                Cause::SpawnFailed(error) => {
                    data.put("error", error.to_string());
                }
                Cause::NotReady { timeout } => {
                    data.put("timeout_ms", millis(*timeout));
                }
                Cause::WatchdogTimeout { interval } => {
                    data.put("interval_ms", millis(*interval));
                }
                Cause::Unhealthy {
                    failures,
                    last_error,
                } => {
                    data.put("failures", *failures);
                    if let Some(error) = last_error {
                        data.put("last_error", error.to_string());
                    }
                }
            }
            "gave_up"
        }
        EventKind::StopRequested {
            signal,
            timeout,
            scope,
        } => {
            data.put("signal", signal.as_str())
                .put("scope", scope_name(*scope));
            // Absent with `stop.timeout = "infinity"`: no SIGKILL is coming.
            if let Timeout::After(timeout) = timeout {
                data.put("timeout_ms", millis(*timeout));
            }
            "stop_requested"
        }
        EventKind::Escalated { pid, scope } => {
            data.put("pid", pid.as_raw())
                .put("scope", scope_name(*scope));
            "escalated"
        }
        EventKind::StopAbandoned { pid, scope } => {
            data.put("pid", pid.as_raw())
                .put("scope", scope_name(*scope));
            "stop_abandoned"
        }
        EventKind::Stopped => "stopped",
        EventKind::FailureReset => "failure_reset",
        EventKind::Removed => "removed",
        EventKind::Reconfigured => "reconfigured",
        EventKind::ShutdownStarted => "shutdown_started",
        EventKind::ShutdownCompleted => "shutdown_completed",
        EventKind::HookFinished {
            hook,
            pid,
            status,
            timed_out,
        } => {
            data.put("hook", hook.as_str()).put("pid", pid.as_raw());
            data.status(*status);
            data.put("timed_out", timed_out.is_some());
            "hook_finished"
        }
        EventKind::HookFailed { hook, error } => {
            data.put("hook", hook.as_str()).put("error", error.as_str());
            "hook_failed"
        }
        EventKind::BecameReady { run } => {
            data.put("run", run.0);
            "became_ready"
        }
        EventKind::StartTimedOut { timeout } => {
            data.put("timeout_ms", millis(*timeout));
            "start_timed_out"
        }
        EventKind::WatchdogTimeout { pid, interval } => {
            data.put("pid", pid.as_raw())
                .put("interval_ms", millis(*interval));
            "watchdog_timed_out"
        }
        EventKind::MainPidChanged { pid } => {
            data.put("pid", pid.as_raw());
            "main_pid_changed"
        }
        EventKind::AwaitingPidfile { path } => {
            data.put("path", path.display().to_string());
            "awaiting_pidfile"
        }
        EventKind::Notified { what } => {
            data.put("what", what.as_str());
            "notified"
        }
        EventKind::HealthChanged {
            run,
            from,
            to,
            failures,
            last_error,
        } => {
            data.put("run", run.0)
                .put("from", from.to_string())
                .put("to", to.to_string())
                .put("failures", *failures);
            if let Some(error) = last_error {
                data.put("last_error", error.as_str());
            }
            "health_changed"
        }
        EventKind::ExitActionApplied { key, action } => {
            match key {
                ExitKey::Code(code) => data.put("exit_code", *code),
                ExitKey::Signal(n) => match Signal::try_from(*n) {
                    Ok(signal) => data.put("signal", signal.as_str()),
                    Err(_) => data.put("signal", *n),
                },
            };
            match action {
                ExitAction::Restart { delay, env } => {
                    data.put("action", "restart");
                    if let Some(delay) = delay {
                        data.put("delay_ms", millis(*delay));
                    }
                    if !env.is_empty() {
                        let vars: Vec<String> =
                            env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        data.put("env", vars);
                    }
                }
                ExitAction::Quarantine => {
                    data.put("action", "quarantine");
                }
                ExitAction::Ignore => {
                    data.put("action", "ignore");
                }
            }
            "exit_action_applied"
        }
    };
    (name, data.0)
}

/// `exit_code` → `HOLDFAST_EXIT_CODE`.
pub fn env_name(key: &str) -> String {
    format!("HOLDFAST_{}", key.to_ascii_uppercase())
}

/// A data value as an environment variable value: strings as they are, arrays joined
/// with commas, everything else in its JSON form.
pub fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(env_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn scope_name(scope: KillScope) -> &'static str {
    match scope {
        KillScope::Cgroup => "cgroup",
        KillScope::ProcessGroup => "process_group",
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Data(BTreeMap<String, Value>);

impl Data {
    fn put(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// `exit_code` for an exit, `signal` (and `core_dumped`) for a death by signal.
    fn status(&mut self, status: ExitStatus) -> &mut Self {
        match status {
            ExitStatus::Exited(code) => self.put("exit_code", code),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => self
                .put("signal", signal.as_str())
                .put("core_dumped", core_dumped),
            ExitStatus::OomKilled => self.put("signal", "SIGKILL").put("oom_killed", true),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::unix::Pid;
    use crate::unix::Signal;
    use serde_json::json;

    use super::*;
    use crate::health::HealthState;
    use crate::supervisor::service::RunId;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).expect("test names are valid")
    }

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    /// One event of every kind, in the order of `KINDS`.
    fn one_of_each() -> Vec<EventKind> {
        let run = RunId(3);
        let pid = Pid::from_raw(42);
        vec![
            EventKind::Spawned { run, pid },
            EventKind::SpawnFailed {
                run,
                error: "exec: no such file".to_owned(),
            },
            EventKind::Waiting {
                on: vec![name("db"), name("cache")],
            },
            EventKind::Started { run, pid },
            EventKind::Exited {
                run,
                pid,
                status: ExitStatus::Exited(3),
            },
            EventKind::RestartScheduled {
                delay: Duration::from_millis(1500),
                attempt: 2,
            },
            EventKind::GaveUp {
                reason: FailReason::NoRestart(Cause::Exited(ExitStatus::Exited(1))),
            },
            EventKind::StopRequested {
                signal: Signal::SIGTERM,
                timeout: crate::model::Timeout::After(Duration::from_secs(10)),
                scope: KillScope::Cgroup,
            },
            EventKind::Escalated {
                pid,
                scope: KillScope::Cgroup,
            },
            EventKind::StopAbandoned {
                pid,
                scope: KillScope::ProcessGroup,
            },
            EventKind::Stopped,
            EventKind::FailureReset,
            EventKind::Removed,
            EventKind::Reconfigured,
            EventKind::ShutdownStarted,
            EventKind::ShutdownCompleted,
            EventKind::HookFinished {
                hook: "exited".to_owned(),
                pid,
                status: ExitStatus::Signaled {
                    signal: Signal::SIGKILL,
                    core_dumped: false,
                },
                timed_out: Some(Duration::from_secs(10)),
            },
            EventKind::HookFailed {
                hook: "exited".to_owned(),
                error: "4 hooks of api are still running".to_owned(),
            },
            EventKind::BecameReady { run },
            EventKind::StartTimedOut {
                timeout: Duration::from_secs(90),
            },
            EventKind::WatchdogTimeout {
                pid,
                interval: Duration::from_secs(10),
            },
            EventKind::MainPidChanged { pid },
            EventKind::AwaitingPidfile {
                path: "/run/api.pid".into(),
            },
            EventKind::Notified {
                what: "STATUS=warming up".to_owned(),
            },
            EventKind::HealthChanged {
                run,
                from: HealthState::Ok,
                to: HealthState::Degraded,
                failures: 2,
                last_error: Some("connection refused".to_owned()),
            },
            EventKind::ExitActionApplied {
                key: ExitKey::Code(102),
                action: ExitAction::Restart {
                    delay: None,
                    env: BTreeMap::from([("DB_HOST".to_owned(), "db-standby".to_owned())]),
                },
            },
        ]
    }

    #[test]
    fn every_kind_has_a_listed_unique_snake_case_name() {
        let names: Vec<&str> = one_of_each().iter().map(|k| describe(k).0).collect();
        assert_eq!(names, KINDS, "KINDS lists every kind, in variant order");
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "names are unique: {names:?}");
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is snake_case"
            );
        }
    }

    #[test]
    fn an_exit_becomes_a_record_with_its_code_pid_and_run() {
        let event = Event {
            service: Some(name("api")),
            kind: EventKind::Exited {
                run: RunId(7),
                pid: Pid::from_raw(42),
                status: ExitStatus::Exited(3),
            },
        };
        let rec = record(12, at(1_700_000_001_234), &event);
        assert_eq!(rec.seq, 12);
        assert_eq!(rec.time, "2023-11-14T22:13:21.234Z");
        assert_eq!(rec.service, Some(name("api")));
        assert_eq!(rec.kind, "exited");
        assert_eq!(rec.message, "pid 42 exited 3", "no service prefix");
        assert_eq!(
            serde_json::to_value(&rec.data).expect("data serializes"),
            json!({"run": 7, "pid": 42, "exit_code": 3})
        );
    }

    #[test]
    fn a_death_by_signal_carries_the_signal_name_instead_of_a_code() {
        let (kind, data) = describe(&EventKind::Exited {
            run: RunId(1),
            pid: Pid::from_raw(9),
            status: ExitStatus::Signaled {
                signal: Signal::SIGSEGV,
                core_dumped: true,
            },
        });
        assert_eq!(kind, "exited");
        assert_eq!(data["signal"], json!("SIGSEGV"));
        assert_eq!(data["core_dumped"], json!(true));
        assert!(!data.contains_key("exit_code"));
    }

    #[test]
    fn a_scheduled_restart_carries_its_delay_and_attempt() {
        let (kind, data) = describe(&EventKind::RestartScheduled {
            delay: Duration::from_millis(1500),
            attempt: 2,
        });
        assert_eq!(kind, "restart_scheduled");
        assert_eq!(data["delay_ms"], json!(1500));
        assert_eq!(data["attempt"], json!(2));
    }

    #[test]
    fn giving_up_carries_the_reason_and_the_last_exit() {
        let (kind, data) = describe(&EventKind::GaveUp {
            reason: FailReason::StartLimitHit {
                restarts: 5,
                interval: Duration::from_secs(10),
                last: Cause::ExitedEarly {
                    status: ExitStatus::Exited(2),
                    after: Duration::from_millis(20),
                },
            },
        });
        assert_eq!(kind, "gave_up");
        assert_eq!(data["restarts"], json!(5));
        assert_eq!(data["exit_code"], json!(2));
        assert!(
            data["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("start limit hit: 5 restarts")),
            "{data:?}"
        );
    }

    #[test]
    fn a_hook_killed_at_its_timeout_says_so() {
        let kinds = one_of_each();
        let killed = kinds
            .iter()
            .find(|k| matches!(k, EventKind::HookFinished { .. }))
            .expect("listed");
        let rec = record(
            1,
            at(0),
            &Event {
                service: Some(name("api")),
                kind: killed.clone(),
            },
        );
        assert_eq!(rec.message, "hook \"exited\" timed out after 10s, killed");
        assert_eq!(
            serde_json::to_value(&rec.data).expect("data serializes"),
            json!({"hook": "exited", "pid": 42, "signal": "SIGKILL", "core_dumped": false, "timed_out": true})
        );
    }

    #[test]
    fn an_exit_code_action_carries_the_code_action_and_env_override() {
        let kinds = one_of_each();
        let applied = kinds
            .iter()
            .find(|k| matches!(k, EventKind::ExitActionApplied { .. }))
            .expect("listed");
        let (_, data) = describe(applied);
        assert_eq!(
            serde_json::to_value(&data).expect("data serializes"),
            json!({"exit_code": 102, "action": "restart", "env": ["DB_HOST=db-standby"]})
        );
    }

    #[test]
    fn daemon_events_have_no_service() {
        let event = Event {
            service: None,
            kind: EventKind::ShutdownStarted,
        };
        let rec = record(1, at(0), &event);
        assert_eq!(rec.service, None);
        assert_eq!(rec.kind, "shutdown_started");
        assert_eq!(rec.message, "shutting down");
        assert!(rec.data.is_empty());
    }

    #[test]
    fn data_becomes_environment_variables() {
        assert_eq!(env_name("exit_code"), "HOLDFAST_EXIT_CODE");
        assert_eq!(env_value(&json!("SIGTERM")), "SIGTERM");
        assert_eq!(env_value(&json!(42)), "42");
        assert_eq!(env_value(&json!(true)), "true");
        assert_eq!(env_value(&json!(["db", "cache"])), "db,cache");
    }

    #[test]
    fn records_round_trip_through_json() {
        for (seq, kind) in one_of_each().into_iter().enumerate() {
            let rec = record(
                seq as u64,
                at(0),
                &Event {
                    service: Some(name("api")),
                    kind,
                },
            );
            let text = serde_json::to_string(&rec).expect("records serialize");
            let back: EventRecord = serde_json::from_str(&text).expect("records parse");
            assert_eq!(back, rec);
        }
    }
}
