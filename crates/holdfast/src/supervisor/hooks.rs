//! Event hooks (`[service.X.on]`): a command run when a service publishes an event of a
//! chosen kind, with the event in `HOLDFAST_*` environment variables.
//!
//! Part of the runtime shell; the runtime task is its only user.
//!
//! Invariants:
//! - a hook can never block holdfast: it is spawned like a service (its own session and
//!   process group, output into the service's log capture) and never waited for here;
//!   it is a `Hook` in the process table, which claims its exit by pid so it is not
//!   mistaken for an orphan, and [`finished`] makes the exit its event;
//! - every running hook has a deadline (`hook_timeout`); the runtime's single timer
//!   includes [`next_deadline`], and [`expire`] SIGKILLs the hook's whole process group
//!   when it passes;
//! - a hook storm is bounded: at most [`MAX_PER_SERVICE`] hooks of one service run at
//!   once; further events of that service fire no hook (a `hook_failed` event says so);
//! - hooks never fire on hook events (`hook_finished`, `hook_failed`), so they cannot
//!   feed themselves.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::Instant;

use crate::unix::Pid;
use crate::unix::Signal;

use super::event::{Event, EventKind, NOT_HOOKABLE};
use super::recipe::{Output, Recipe, Setup};
use super::runtime::table::{Hook, Process, ProcessTable, Role};
use crate::control::protocol::EventRecord;
use crate::logs::Capture;
use crate::model::{ExitStatus, ServiceName, ServiceSpec};
use crate::process::{group, reap, spawn};

/// Hooks of one service allowed to run at the same time.
pub const MAX_PER_SERVICE: usize = 4;

/// Something worth telling about a hook that is no event (it started; a kill failed),
/// for holdfast's log and the service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub service: ServiceName,
    pub text: String,
    /// A problem (a kill that failed) rather than routine.
    pub warning: bool,
}

/// The command `spec` runs on events of `kind`, if any.
pub fn hook_for<'a>(spec: &'a ServiceSpec, kind: &str) -> Option<&'a Vec<String>> {
    if NOT_HOOKABLE.contains(&kind) {
        return None;
    }
    spec.hooks.on.get(kind)
}

/// Runs `spec`'s hook for `event`, if it has one, as a process of the service
/// (`recipe`: its environment, user and limits) recorded in `table`; output goes to
/// `capture` (or nowhere when the service has none yet).
/// Says that it started (`Ok`), or gives the `hook_failed` event to publish.
pub fn fire(
    table: &mut ProcessTable,
    event: &EventRecord,
    spec: &ServiceSpec,
    mut recipe: Recipe,
    capture: Option<&Capture>,
    now: Instant,
) -> Option<Result<Note, Event>> {
    let command = hook_for(spec, &event.kind)?;
    let service = spec.name.clone();
    let failed = |error: String| Event {
        service: Some(service.clone()),
        kind: EventKind::HookFailed {
            hook: event.kind.clone(),
            error,
        },
    };
    let busy = table.hooks().filter(|(_, s, _)| **s == service).count();
    if busy >= MAX_PER_SERVICE {
        return Some(Err(failed(format!(
            "{busy} hooks of {service} are still running (at most {MAX_PER_SERVICE}); event {} dropped",
            event.seq
        ))));
    }
    recipe.env = hook_env(&recipe.env, event);
    let alive_at = reap::latest();
    match spawn_helper(&recipe, spec, command, capture) {
        Ok(pid) => {
            let timeout = spec.hooks.timeout;
            let hook = Hook {
                event: event.kind.clone(),
                deadline: crate::clock::later(now, timeout),
                timeout,
                killed: false,
            };
            let process = Process {
                service: service.clone(),
                role: Role::Hook(hook),
                alive_at,
            };
            table.insert(pid, process);
            Some(Ok(Note {
                service,
                text: format!("hook \"{}\" started (pid {pid})", event.kind),
                warning: false,
            }))
        }
        Err(error) => Some(Err(failed(format!("failed to start: {error}")))),
    }
}

/// The earliest deadline of a hook not yet killed.
pub fn next_deadline(table: &ProcessTable) -> Option<Instant> {
    table
        .hooks()
        .filter(|(_, _, h)| !h.killed)
        .map(|(_, _, h)| h.deadline)
        .min()
}

/// The deadline of the hook that may run longest (killed ones included).
pub fn last_deadline(table: &ProcessTable) -> Option<Instant> {
    table.hooks().map(|(_, _, h)| h.deadline).max()
}

/// SIGKILLs the process group of every hook past its deadline.
pub fn expire(table: &mut ProcessTable, now: Instant) -> Vec<Note> {
    let mut notes = Vec::new();
    table.each_hook_mut(|pid, service, hook| {
        if hook.killed || hook.deadline > now {
            return;
        }
        hook.killed = true;
        if let Err(errno) = group::signal_group(pid, Signal::SIGKILL) {
            notes.push(Note {
                service: service.clone(),
                text: format!(
                    "hook \"{}\" timed out, but SIGKILL to its process group {pid} failed: {errno}",
                    hook.event
                ),
                warning: true,
            });
        }
    });
    notes
}

/// The `hook_finished` event of a reaped hook.
pub fn finished(service: &ServiceName, hook: Hook, reaped: &reap::Reaped) -> Event {
    let timed_out = match reaped.status {
        ExitStatus::Signaled {
            signal: Signal::SIGKILL,
            ..
        } if hook.killed => Some(hook.timeout),
        _ => None,
    };
    Event {
        service: Some(service.clone()),
        kind: EventKind::HookFinished {
            hook: hook.event,
            pid: reaped.pid,
            status: reaped.status,
            timed_out,
        },
    }
}

/// Spawns `command` as a helper process of `spec` (a hook, a build's `verify` command):
/// the service's recipe, user and limits, its own process group, output into `capture`
/// (or nowhere when the service has none yet). Never waited for here: the caller puts
/// it in the process table, whose reap ends it.
pub fn spawn_helper(
    recipe: &Recipe,
    spec: &ServiceSpec,
    command: &[String],
    capture: Option<&Capture>,
) -> Result<Pid, String> {
    match capture {
        Some(capture) => launch(recipe, spec, command, capture.stdout(), capture.stderr()),
        None => File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("failed to open /dev/null: {e}"))
            .and_then(|null| launch(recipe, spec, command, null.as_fd(), null.as_fd())),
    }
}

fn launch(
    recipe: &Recipe,
    spec: &ServiceSpec,
    command: &[String],
    stdout: std::os::fd::BorrowedFd<'_>,
    stderr: std::os::fd::BorrowedFd<'_>,
) -> Result<Pid, String> {
    let output = Output { stdout, stderr };
    let request = recipe.request(spec, command, Setup::Helper, output);
    spawn::spawn(&request)
        .map(|spawned| spawned.pid)
        .map_err(|e| e.to_string())
}

/// The service's environment without any `HOLDFAST_*` of its own but the
/// [`KEPT`] ones, plus the event: `HOLDFAST_EVENT`, `HOLDFAST_SERVICE`,
/// `HOLDFAST_MESSAGE`, `HOLDFAST_SEQ`, `HOLDFAST_TIME` and one `HOLDFAST_<KEY>` per data
/// field (`HOLDFAST_PID`, `HOLDFAST_EXIT_CODE`, ...).
pub fn hook_env(base_env: &[(String, String)], event: &EventRecord) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base_env
        .iter()
        .filter(|(k, _)| !k.starts_with("HOLDFAST_") || KEPT.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut put = |k: &str, v: String| env.push((k.to_owned(), v));
    put("HOLDFAST_EVENT", event.kind.clone());
    if let Some(service) = &event.service {
        put("HOLDFAST_SERVICE", service.to_string());
    }
    put("HOLDFAST_MESSAGE", event.message.clone());
    put("HOLDFAST_SEQ", event.seq.to_string());
    put("HOLDFAST_TIME", event.time.clone());
    for (key, value) in &event.data {
        env.push((env_name(key), env_value(value)));
    }
    env
}

/// The recipe's `HOLDFAST_*` a hook keeps: which copy of the service it acts for (no
/// event sets it, so it can never be stale).
const KEPT: &[&str] = &["HOLDFAST_INSTANCE"];

/// `exit_code` → `HOLDFAST_EXIT_CODE`.
pub fn env_name(key: &str) -> String {
    format!("HOLDFAST_{}", key.to_ascii_uppercase())
}

/// A data value as an environment variable value: strings as they are, arrays joined
/// with commas, everything else in its JSON form.
pub fn env_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => {
            items.iter().map(env_value).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn hooks_see_the_event_in_holdfast_variables_and_nothing_stale() {
        let event = EventRecord {
            seq: 9,
            time: "2026-11-25T12:00:01.234Z".to_owned(),
            service: Some(ServiceName::new("api").expect("valid name")),
            kind: "exited".to_owned(),
            message: "pid 42 exited 3".to_owned(),
            data: BTreeMap::from([
                ("pid".to_owned(), json!(42)),
                ("exit_code".to_owned(), json!(3)),
            ]),
        };
        let base = vec![
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("HOLDFAST_EVENT".to_owned(), "stale".to_owned()),
        ];
        let env: BTreeMap<String, String> = hook_env(&base, &event).into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("PATH", "/usr/bin:/bin"),
            ("HOLDFAST_EVENT", "exited"),
            ("HOLDFAST_SERVICE", "api"),
            ("HOLDFAST_MESSAGE", "pid 42 exited 3"),
            ("HOLDFAST_SEQ", "9"),
            ("HOLDFAST_TIME", "2026-11-25T12:00:01.234Z"),
            ("HOLDFAST_PID", "42"),
            ("HOLDFAST_EXIT_CODE", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn a_hook_of_an_instance_knows_its_number() {
        let event = EventRecord {
            seq: 3,
            time: "2026-11-25T12:00:01.234Z".to_owned(),
            service: Some(ServiceName::new("web@1").expect("valid name")),
            kind: "started".to_owned(),
            message: "started".to_owned(),
            data: BTreeMap::new(),
        };
        let base = vec![
            ("HOLDFAST_SERVICE".to_owned(), "web@1".to_owned()),
            ("HOLDFAST_INSTANCE".to_owned(), "1".to_owned()),
        ];
        let env: BTreeMap<String, String> = hook_env(&base, &event).into_iter().collect();
        assert_eq!(env["HOLDFAST_INSTANCE"], "1");
        assert_eq!(env["HOLDFAST_SERVICE"], "web@1");
    }

    #[test]
    fn data_becomes_environment_variables() {
        assert_eq!(env_name("exit_code"), "HOLDFAST_EXIT_CODE");
        assert_eq!(env_value(&json!("SIGTERM")), "SIGTERM");
        assert_eq!(env_value(&json!(42)), "42");
        assert_eq!(env_value(&json!(true)), "true");
        assert_eq!(env_value(&json!(["db", "cache"])), "db,cache");
    }
}
