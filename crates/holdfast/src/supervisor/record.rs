//! Events on the wire: the one conversion from a core [`Event`] to an [`EventRecord`].
//!
//! The record's `kind` and `data` are the serde form of [`EventKind`] (its variant name
//! and fields, shaped in `event::wire`), so a new kind or field reaches the wire, the
//! hook environment and config validation of `[service.X.on]` without a line here.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use super::event::{Event, EventKind};
use crate::control::protocol::EventRecord;

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
        kind,
        message,
        data,
    }
}

/// The wire name of an event kind and its data: serde writes a unit variant as its
/// name, a struct variant as `{name: {fields}}`.
pub fn describe(kind: &EventKind) -> (String, BTreeMap<String, Value>) {
    match serde_json::to_value(kind) {
        Ok(Value::String(name)) => (name, BTreeMap::new()),
        Ok(Value::Object(map)) => match map.into_iter().next() {
            Some((name, Value::Object(data))) => (name, data.into_iter().collect()),
            other => unreachable!("a struct variant serializes as a map of fields: {other:?}"),
        },
        other => unreachable!("an event kind serializes as a name or a map: {other:?}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::unix::Pid;
    use crate::unix::Signal;
    use serde_json::json;

    use super::*;
    use crate::health::HealthState;
    use crate::model::{ExitAction, ExitKey, ExitStatus, ServiceName};
    use crate::supervisor::event::{NOT_HOOKABLE, kinds};
    use crate::supervisor::service::{Cause, FailReason, KillScope, RunId};

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).expect("test names are valid")
    }

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    /// One event of every kind, in the order of `kinds()`.
    pub(crate) fn one_of_each() -> Vec<EventKind> {
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
            EventKind::DumpRequested {
                signal: Signal::SIGQUIT,
                wait: Duration::from_secs(2),
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
            EventKind::UpgradeStarted {
                from: "/opt/api/a/server".into(),
                to: "/opt/api/b/server".into(),
            },
            EventKind::Draining {
                run,
                pid,
                drain: Duration::from_secs(30),
            },
            EventKind::Baking {
                bake: Duration::from_secs(60),
            },
            EventKind::Upgraded {
                build: "/opt/api/b/server".into(),
            },
            EventKind::RolledBack {
                build: "/opt/api/a/server".into(),
                from: "/opt/api/b/server".into(),
                reason: "exited 1 before it was ready".to_owned(),
            },
            EventKind::UpgradeRefused {
                build: "/opt/api/b/server".into(),
                reason: "not executable".to_owned(),
            },
            EventKind::CrashReported {
                id: "api-20260101T000000000Z-42".to_owned(),
                pid,
                summary: "panic: boom at main.go:3".to_owned(),
            },
            EventKind::CoreDumped {
                pid,
                id: "api-20260101T000000000Z-42".to_owned(),
                truncated: false,
                backtrace: true,
            },
            EventKind::Observing {
                upstream: "supervisord:web".to_owned(),
            },
            EventKind::UpstreamState {
                state: holdfast_core::supervisor::service::UpstreamState::Running,
                detail: "RUNNING".to_owned(),
                pid: Some(42),
            },
            EventKind::UpstreamRestartRequested {
                upstream: "supervisord:web".to_owned(),
                reason: "turned unhealthy".to_owned(),
            },
            EventKind::UpstreamRestartTimedOut {
                timeout: Duration::from_secs(5),
            },
            EventKind::UpstreamUnreachable {
                upstream: "supervisord:web".to_owned(),
                error: "connection refused".to_owned(),
                takeover: true,
            },
            EventKind::TakenOver { pid: Some(42) },
            EventKind::UpstreamDuplicate {
                upstream: "supervisord:web".to_owned(),
                pid: 43,
                detail: "RUNNING".to_owned(),
            },
            EventKind::BackToUpstream {
                upstream: "supervisord:web".to_owned(),
                pid: 43,
            },
        ]
    }

    #[test]
    fn every_kind_has_a_listed_unique_snake_case_name() {
        let names: Vec<String> = one_of_each().iter().map(|k| describe(k).0).collect();
        assert_eq!(names, kinds(), "kinds() lists every kind, in variant order");
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "names are unique: {names:?}");
        for name in NOT_HOOKABLE {
            assert!(kinds().contains(name), "{name} is a kind");
        }
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

    #[test]
    fn every_kind_keeps_its_wire_name_and_data() {
        let expected = [
            ("spawned", json!({"pid": 42, "run": 3})),
            (
                "spawn_failed",
                json!({"error": "exec: no such file", "run": 3}),
            ),
            ("waiting", json!({"on": ["db", "cache"]})),
            ("started", json!({"pid": 42, "run": 3})),
            ("exited", json!({"exit_code": 3, "pid": 42, "run": 3})),
            ("restart_scheduled", json!({"attempt": 2, "delay_ms": 1500})),
            (
                "gave_up",
                json!({"exit_code": 1, "reason": "exited 1 (restart disabled)"}),
            ),
            (
                "stop_requested",
                json!({"scope": "cgroup", "signal": "SIGTERM", "timeout_ms": 10000}),
            ),
            ("escalated", json!({"pid": 42, "scope": "cgroup"})),
            (
                "dump_requested",
                json!({"signal": "SIGQUIT", "wait_ms": 2000}),
            ),
            (
                "stop_abandoned",
                json!({"pid": 42, "scope": "process_group"}),
            ),
            ("stopped", json!({})),
            ("failure_reset", json!({})),
            ("removed", json!({})),
            ("reconfigured", json!({})),
            ("shutdown_started", json!({})),
            ("shutdown_completed", json!({})),
            (
                "hook_finished",
                json!({"core_dumped": false, "hook": "exited", "pid": 42, "signal": "SIGKILL", "timed_out": true}),
            ),
            (
                "hook_failed",
                json!({"error": "4 hooks of api are still running", "hook": "exited"}),
            ),
            ("became_ready", json!({"run": 3})),
            ("start_timed_out", json!({"timeout_ms": 90000})),
            (
                "watchdog_timed_out",
                json!({"interval_ms": 10000, "pid": 42}),
            ),
            ("main_pid_changed", json!({"pid": 42})),
            ("awaiting_pidfile", json!({"path": "/run/api.pid"})),
            ("notified", json!({"what": "STATUS=warming up"})),
            (
                "health_changed",
                json!({"failures": 2, "from": "ok", "last_error": "connection refused", "run": 3, "to": "degraded"}),
            ),
            (
                "exit_action_applied",
                json!({"action": "restart", "env": ["DB_HOST=db-standby"], "exit_code": 102}),
            ),
            (
                "upgrade_started",
                json!({"from": "/opt/api/a/server", "to": "/opt/api/b/server"}),
            ),
            ("draining", json!({"run": 3, "pid": 42, "drain_ms": 30000})),
            ("baking", json!({"bake_ms": 60000})),
            ("upgraded", json!({"build": "/opt/api/b/server"})),
            (
                "rolled_back",
                json!({"build": "/opt/api/a/server", "from": "/opt/api/b/server",
                       "reason": "exited 1 before it was ready"}),
            ),
            (
                "upgrade_refused",
                json!({"build": "/opt/api/b/server", "reason": "not executable"}),
            ),
            (
                "crash_reported",
                json!({"id": "api-20260101T000000000Z-42", "pid": 42,
                       "summary": "panic: boom at main.go:3"}),
            ),
            (
                "core_dumped",
                json!({"id": "api-20260101T000000000Z-42", "pid": 42,
                       "truncated": false, "backtrace": true}),
            ),
            ("observing", json!({"upstream": "supervisord:web"})),
            (
                "upstream_state",
                json!({"detail": "RUNNING", "pid": 42, "state": "running"}),
            ),
            (
                "upstream_restart_requested",
                json!({"reason": "turned unhealthy", "upstream": "supervisord:web"}),
            ),
            ("upstream_restart_timed_out", json!({"timeout_ms": 5000})),
            (
                "upstream_unreachable",
                json!({"error": "connection refused", "takeover": true,
                       "upstream": "supervisord:web"}),
            ),
            ("taken_over", json!({"pid": 42})),
            (
                "upstream_duplicate",
                json!({"detail": "RUNNING", "pid": 43, "upstream": "supervisord:web"}),
            ),
            (
                "back_to_upstream",
                json!({"pid": 43, "upstream": "supervisord:web"}),
            ),
        ];
        let actual: Vec<(String, Value)> = one_of_each()
            .iter()
            .map(|k| {
                let (name, data) = describe(k);
                (name, serde_json::to_value(data).expect("data serializes"))
            })
            .collect();
        let expected: Vec<(String, Value)> = expected
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn a_stop_without_sigkill_has_no_timeout_and_an_oom_kill_says_so() {
        let (_, data) = describe(&EventKind::StopRequested {
            signal: Signal::SIGTERM,
            timeout: crate::model::Timeout::Never,
            scope: KillScope::ProcessGroup,
        });
        assert_eq!(
            serde_json::to_value(&data).expect("data serializes"),
            json!({"scope": "process_group", "signal": "SIGTERM"})
        );
        let (_, data) = describe(&EventKind::Exited {
            run: RunId(1),
            pid: Pid::from_raw(9),
            status: ExitStatus::OomKilled,
        });
        assert_eq!(
            serde_json::to_value(&data).expect("data serializes"),
            json!({"oom_killed": true, "pid": 9, "run": 1, "signal": "SIGKILL"})
        );
    }

    #[test]
    fn events_are_not_read_back() {
        let read: Result<EventKind, _> = serde_json::from_str(r#"{"spawned":{"run":1,"pid":2}}"#);
        assert!(read.is_err());
    }
}
