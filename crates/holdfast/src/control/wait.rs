//! `wait`: apply start/stop/restart/reload requests and answer once their outcome is
//! known, so `holdfast stop web` returns after web's processes are gone and
//! `holdfast start web` says why web failed.
//!
//! The connection task subscribes to the event bus *before* it applies the requests, so
//! no transition they cause can be missed. The decision is pure ([`Watch`]): events of
//! the service record what happened since the request (a spawn, a start, a failure), and
//! a status taken after each batch of such events says where the service is now. When
//! nothing happens the task sleeps on the bus, the client socket and the deadline only.
//!
//! Goals, per request:
//! - start: `running` (which means ready for services with `ready`), or failed: a spawn
//!   failure, an exit before the start counted, giving up, `failed`/`quarantined`/`backoff`;
//! - restart: as start, and the run must be a new one (a `started` event after the request);
//! - stop: not running any more with every process gone (`stopped`, `failed`, `quarantined`);
//! - reload: every added or changed service settled: `running` or `stopped` (done), or
//!   failed as for start.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::mpsc;

use super::conn::{ControlMsg, Peer, dispatch};
use super::protocol::{
    ControlError, ErrorKind, EventRecord, Outcome, Reply, Request, ServiceState, ServiceStatus,
    Status, Verdict, named,
};
use crate::model::ServiceName;

/// How long a waited request waits when its caller names no deadline (the CLI's
/// `--timeout`, `POST /control`): systemd's default job timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// An outcome's state when the service is gone (a reload removed it).
const REMOVED: &str = "removed";

/// What a waited request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Start,
    Restart,
    Stop,
    /// After a reload: the service settles, running or stopped.
    Settle,
}

/// One service being waited for: what its events said since the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub name: ServiceName,
    pub goal: Goal,
    /// A process of a new run was spawned.
    spawned: bool,
    /// A run counted as started: its main pid.
    started: Option<u32>,
    /// Why the start failed, from its events.
    failure: Option<String>,
    /// A new run exited 0 before it counted as started: a one-shot job that is done
    /// (stopped), a failed start (restarted or given up), or, for a forking service, its
    /// launcher's planned exit (cleared by the `awaiting_pidfile` that follows).
    clean_early_exit: Option<String>,
}

impl Watch {
    pub fn new(name: ServiceName, goal: Goal) -> Self {
        Watch {
            name,
            goal,
            spawned: false,
            started: None,
            failure: None,
            clean_early_exit: None,
        }
    }

    /// Whether `event` concerns this service.
    pub fn concerns(&self, event: &EventRecord) -> bool {
        event.service.as_ref() == Some(&self.name)
    }

    /// Records what an event of this service says about the request's outcome.
    pub fn on_event(&mut self, event: &EventRecord) {
        if !self.concerns(event) {
            return;
        }
        match event.kind.as_str() {
            "spawned" => self.spawned = true,
            "started" => {
                let pid = event.data.get("pid").and_then(serde_json::Value::as_u64);
                self.started = Some(pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0));
            }
            "spawn_failed" => {
                let error = event
                    .data
                    .get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or(&event.message);
                self.fail(format!("failed: {error}"));
            }
            // The exit of the run being stopped is expected; only a new run's exit
            // before it counted as started is a failed start.
            "exited" if self.spawned && self.started.is_none() => {
                let code = event
                    .data
                    .get("exit_code")
                    .and_then(serde_json::Value::as_i64);
                let why = format!("failed: {}", event.message);
                if code == Some(0) {
                    self.clean_early_exit = Some(why);
                } else {
                    self.fail(why);
                }
            }
            // The forking service's launcher exited as planned; its daemon comes next.
            "awaiting_pidfile" => self.clean_early_exit = None,
            // The message already starts with `failed: `.
            "gave_up" => self.fail(event.message.clone()),
            "start_timed_out" => self.fail(format!("failed: {}", event.message)),
            _ => {}
        }
    }

    /// The first failure stands: it is the cause, later ones are consequences.
    fn fail(&mut self, why: String) {
        if self.goal != Goal::Stop && self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    /// The outcome, if `status` (taken after every event seen so far) settles it.
    pub fn verdict(&self, status: Option<&ServiceStatus>) -> Option<Outcome> {
        use ServiceState::*;
        let Some(status) = status else {
            // Gone from the daemon (a reload removed it): nothing left to wait for.
            return Some(self.outcome(Verdict::Done, REMOVED, "removed".to_owned()));
        };
        let state = status.state;
        let name = state.as_str();
        if let Some(why) = &self.failure {
            return Some(self.outcome(Verdict::Failed, name, why.clone()));
        }
        if let Some(why) = &self.clean_early_exit {
            return match state {
                // `restart = "no"`: the job ran and is done.
                Stopped => Some(self.outcome(Verdict::Done, name, "stopped (exited 0)".into())),
                Starting | Waiting => None,
                _ => Some(self.outcome(Verdict::Failed, name, why.clone())),
            };
        }
        let running = || match status.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "running".to_owned(),
        };
        let failed = || {
            let reason = status.reason.as_deref().unwrap_or("no reason recorded");
            format!("{state}: {reason}")
        };
        // The start was reached; whatever the run did since is another story (a
        // service that exits right after it counted as started is restarted, or not,
        // by its policy).
        if let (Goal::Start | Goal::Restart, Some(pid), false) =
            (self.goal, self.started, state == Running)
        {
            let message = format!("started (pid {pid}), now {state}");
            return Some(self.outcome(Verdict::Done, name, message));
        }
        match (self.goal, state) {
            (Goal::Stop, Stopped | Failed | Quarantined)
                if status.pid.is_none() && status.holding_up.is_empty() =>
            {
                Some(self.outcome(Verdict::Done, name, name.to_owned()))
            }
            (Goal::Stop, _) => None,
            (Goal::Restart, Running) if self.started.is_none() => None,
            (Goal::Start | Goal::Restart | Goal::Settle, Running) => {
                Some(self.outcome(Verdict::Done, name, running()))
            }
            (Goal::Settle, Stopped) => Some(self.outcome(Verdict::Done, name, "stopped".into())),
            // A changed service in backoff at the reload starts again with its new
            // definition: only a backoff after that is an outcome.
            (Goal::Settle, Backoff) if !self.spawned => None,
            (_, Failed | Quarantined | Backoff) => {
                Some(self.outcome(Verdict::Failed, name, failed()))
            }
            // Stopped by someone else while we waited for it to start.
            (Goal::Start | Goal::Restart, Stopped) => Some(self.outcome(
                Verdict::Failed,
                name,
                "stopped before it started".to_owned(),
            )),
            _ => None,
        }
    }

    /// The outcome when the deadline passes first.
    pub fn timed_out(&self, status: Option<&ServiceStatus>, after: Duration) -> Outcome {
        let state = status.map_or(REMOVED, |s| s.state.as_str());
        let after = humantime::format_duration(after);
        self.outcome(
            Verdict::TimedOut,
            state,
            format!("timed out after {after}: still {state}"),
        )
    }

    fn outcome(&self, verdict: Verdict, state: &str, message: String) -> Outcome {
        Outcome {
            name: self.name.clone(),
            verdict,
            state: state.to_owned(),
            message,
        }
    }
}

/// The services a request concerns and what to wait for, given its reply.
fn watches(request: &Request, reply: &Reply) -> Result<Vec<Watch>, ControlError> {
    let watch = |name: &ServiceName, goal| vec![Watch::new(name.clone(), goal)];
    match (request, reply) {
        (Request::Start { name }, _) => Ok(watch(name, Goal::Start)),
        (Request::Restart { name }, _) => Ok(watch(name, Goal::Restart)),
        (Request::Stop { name }, _) => Ok(watch(name, Goal::Stop)),
        (Request::Reload { dry_run: false }, Reply::Reload(plan)) => Ok(plan
            .added
            .iter()
            .chain(&plan.changed)
            .map(|name| Watch::new(name.clone(), Goal::Settle))
            .collect()),
        _ => Err(ControlError {
            kind: ErrorKind::BadRequest,
            message: format!(
                "cannot wait for {request:?}: only start, stop, restart and reload can be waited for"
            ),
        }),
    }
}

/// Whether a request may be waited for (checked before any of them is applied).
fn waitable(request: &Request) -> bool {
    matches!(
        request,
        Request::Start { .. }
            | Request::Restart { .. }
            | Request::Stop { .. }
            | Request::Reload { dry_run: false }
    )
}

/// [`run`] for a caller with no connection of its own to watch: the HTTP server, whose
/// handler is dropped (and this wait with it) when its client goes away.
pub async fn apply_and_wait(
    requests: Vec<Request>,
    timeout: Option<Duration>,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    live: broadcast::Receiver<EventRecord>,
) -> Result<Reply, ControlError> {
    run(None, requests, timeout, peer, tx, live)
        .await
        .unwrap_or_else(|| {
            Err(ControlError {
                kind: ErrorKind::Internal,
                message: "a wait without a client connection ended as if its client left"
                    .to_owned(),
            })
        })
}

/// Applies `requests` and waits for their outcome. `None` when the client (its
/// control connection, when there is one to watch) went away.
pub(super) async fn run(
    mut stream: Option<&mut UnixStream>,
    requests: Vec<Request>,
    timeout: Option<Duration>,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    mut live: broadcast::Receiver<EventRecord>,
) -> Option<Result<Reply, ControlError>> {
    let (replies, requested) = match apply(requests, peer, tx).await {
        Ok(applied) => applied,
        Err(e) => return Some(Err(e)),
    };
    let first = match status(peer, tx).await {
        Ok(status) => status,
        Err(e) => return Some(Err(e)),
    };
    let mut pending = per_instance(requested, &first);
    // The status that named the instances is the first one to decide on.
    let mut fresh = Some(first);
    // Outcomes are reported in the order the requests named the services.
    let order: Vec<ServiceName> = pending.iter().map(|w| w.name.clone()).collect();
    let done = |mut outcomes: Vec<Outcome>| {
        outcomes.sort_by_key(|o| order.iter().position(|n| *n == o.name));
        Some(Ok(Reply::Waited {
            replies: replies.clone(),
            outcomes,
        }))
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut expired = false;
    loop {
        let status = match fresh.take() {
            Some(status) => status,
            None => match status(peer, tx).await {
                Ok(status) => status,
                Err(e) => return Some(Err(e)),
            },
        };
        let newer = take_queued(&mut live, &mut pending);
        // An event newer than the status (a `started` the status does not show yet):
        // decide on a fresh status, not on this one (unless the time is up).
        let late = deadline.is_some_and(|at| tokio::time::Instant::now() >= at);
        if newer && !expired && !late {
            continue;
        }
        pending.retain(|watch| match watch.verdict(find(&status, &watch.name)) {
            Some(outcome) => {
                outcomes.push(outcome);
                false
            }
            None => true,
        });
        if pending.is_empty() {
            return done(outcomes);
        }
        if expired {
            let after = timeout.unwrap_or_default();
            outcomes.extend(
                pending
                    .iter()
                    .map(|w| w.timed_out(find(&status, &w.name), after)),
            );
            return done(outcomes);
        }
        match next_wake(stream.as_deref_mut(), &mut live, &mut pending, deadline).await {
            Wake::Look => {}
            Wake::Expired => expired = true,
            Wake::ClientGone => return None,
            Wake::ShuttingDown => {
                return Some(Err(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    message: "holdfast is shutting down: stopped waiting".to_owned(),
                }));
            }
        }
    }
}

/// Applies each request in turn: their replies, and what to wait for.
async fn apply(
    requests: Vec<Request>,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<(Vec<Reply>, Vec<Watch>), ControlError> {
    if let Some(bad) = requests.iter().find(|r| !waitable(r)) {
        return Err(ControlError {
            kind: ErrorKind::BadRequest,
            message: format!(
                "cannot wait for {bad:?}: only start, stop, restart and reload can be waited for"
            ),
        });
    }
    let mut replies = Vec::new();
    let mut requested: Vec<Watch> = Vec::new();
    for request in requests {
        let reply = dispatch(request.clone(), peer, tx).await?;
        requested.extend(watches(&request, &reply)?);
        replies.push(reply);
    }
    Ok((replies, requested))
}

/// Every event published before the status was read is queued by now: takes them all,
/// so the verdict knows why a service is where the status says (a spawn error behind a
/// `backoff`). Returns whether some may be newer than the status (then the status is
/// asked again rather than waiting for events already taken).
fn take_queued(live: &mut broadcast::Receiver<EventRecord>, pending: &mut [Watch]) -> bool {
    let mut newer = false;
    loop {
        match live.try_recv() {
            Ok(event) => {
                newer |= pending.iter().any(|w| w.concerns(&event));
                pending.iter_mut().for_each(|w| w.on_event(&event));
            }
            // Missed events: the status still says where every service is.
            Err(TryRecvError::Lagged(_)) => newer = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return newer,
        }
    }
}

/// Why a waiting request looks at the status again (or stops).
enum Wake {
    /// An event about a pending service, or missed events.
    Look,
    /// The deadline passed: one last look with a fresh status.
    Expired,
    ClientGone,
    ShuttingDown,
}

/// Sleeps until an event about a pending service, the client leaving or the deadline.
async fn next_wake(
    mut stream: Option<&mut UnixStream>,
    live: &mut broadcast::Receiver<EventRecord>,
    pending: &mut [Watch],
    deadline: Option<tokio::time::Instant>,
) -> Wake {
    let mut scratch = [0_u8; 64];
    loop {
        let gone = async {
            match stream.as_deref_mut() {
                Some(stream) => drop(stream.read(&mut scratch).await),
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            received = live.recv() => received,
            () = gone => return Wake::ClientGone,
            () = sleep_until(deadline) => return Wake::Expired,
        };
        match event {
            Ok(event) if pending.iter().any(|w| w.concerns(&event)) => {
                pending.iter_mut().for_each(|w| w.on_event(&event));
                return Wake::Look;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return Wake::Look,
            Err(RecvError::Closed) => return Wake::ShuttingDown,
        }
    }
}

async fn status(peer: Peer, tx: &mpsc::Sender<ControlMsg>) -> Result<Status, ControlError> {
    match dispatch(Request::Status, peer, tx).await? {
        Reply::Status(status) => Ok(status),
        other => Err(ControlError {
            kind: ErrorKind::Internal,
            message: format!("unexpected answer to status: {other:?}"),
        }),
    }
}

/// A request naming a service that runs as instances (`restart web`) is waited for on
/// each instance (`web@0`, ...), each with the request's goal.
fn per_instance(pending: Vec<Watch>, status: &Status) -> Vec<Watch> {
    let mut watches = Vec::new();
    for watch in pending {
        match named(&status.services, &watch.name).as_slice() {
            // Itself, or a name the status does not know (the verdict says so).
            [] => watches.push(watch),
            [one] if one.name == watch.name => watches.push(watch),
            instances => watches.extend(
                instances
                    .iter()
                    .map(|s| Watch::new(s.name.clone(), watch.goal)),
            ),
        }
    }
    watches
}

fn find<'a>(status: &'a Status, name: &ServiceName) -> Option<&'a ServiceStatus> {
    status.services.iter().find(|s| &s.name == name)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).expect("valid name")
    }

    fn status(state: &str, pid: Option<u32>) -> ServiceStatus {
        ServiceStatus {
            pid,
            ..ServiceStatus::sample("web", state)
        }
    }

    fn event(kind: &str, message: &str, data: &[(&str, serde_json::Value)]) -> EventRecord {
        EventRecord {
            seq: 1,
            time: "2026-11-25T12:00:01.234Z".to_owned(),
            service: Some(name("web")),
            kind: kind.to_owned(),
            message: message.to_owned(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn verdict(watch: &Watch, state: &str, pid: Option<u32>) -> Option<(Verdict, String)> {
        watch
            .verdict(Some(&status(state, pid)))
            .map(|o| (o.verdict, o.message))
    }

    #[test]
    fn start_is_done_once_running_and_waits_while_starting() {
        let watch = Watch::new(name("web"), Goal::Start);
        assert_eq!(verdict(&watch, "starting", Some(7)), None);
        assert_eq!(verdict(&watch, "waiting", None), None);
        assert_eq!(
            verdict(&watch, "running", Some(7)),
            Some((Verdict::Done, "running (pid 7)".to_owned()))
        );
    }

    #[test]
    fn start_fails_with_the_spawn_error() {
        let mut watch = Watch::new(name("web"), Goal::Start);
        watch.on_event(&event(
            "spawn_failed",
            "failed to spawn: exec \"/opt/x\": ENOENT",
            &[("error", "exec \"/opt/x\": ENOENT".into())],
        ));
        assert_eq!(
            verdict(&watch, "backoff", None),
            Some((
                Verdict::Failed,
                "failed: exec \"/opt/x\": ENOENT".to_owned()
            ))
        );
    }

    #[test]
    fn an_exit_before_the_start_counted_fails_the_start_but_not_a_stop() {
        let exited = event("exited", "pid 7 exited 1", &[]);
        let mut start = Watch::new(name("web"), Goal::Start);
        start.on_event(&event("spawned", "spawned pid 7", &[]));
        start.on_event(&exited);
        assert_eq!(
            verdict(&start, "starting", Some(8)),
            Some((Verdict::Failed, "failed: pid 7 exited 1".to_owned()))
        );
        let mut stop = Watch::new(name("web"), Goal::Stop);
        stop.on_event(&exited);
        assert_eq!(verdict(&stop, "stopping", None), None);
    }

    #[test]
    fn a_forking_services_launcher_exiting_0_is_no_failed_start() {
        let mut watch = Watch::new(name("web"), Goal::Start);
        watch.on_event(&event("spawned", "spawned pid 7", &[]));
        watch.on_event(&event(
            "exited",
            "pid 7 exited 0",
            &[("exit_code", 0.into())],
        ));
        assert_eq!(
            verdict(&watch, "starting", None),
            None,
            "the pidfile may follow"
        );
        watch.on_event(&event("awaiting_pidfile", "waiting for pidfile", &[]));
        watch.on_event(&event("started", "started (pid 9)", &[("pid", 9.into())]));
        assert_eq!(
            verdict(&watch, "running", Some(9)),
            Some((Verdict::Done, "running (pid 9)".to_owned()))
        );
    }

    #[test]
    fn a_job_that_exits_0_without_restart_is_done_and_a_restarted_one_failed() {
        let exited = event("exited", "pid 7 exited 0", &[("exit_code", 0.into())]);
        let mut job = Watch::new(name("web"), Goal::Start);
        job.on_event(&event("spawned", "spawned pid 7", &[]));
        job.on_event(&exited);
        assert_eq!(
            verdict(&job, "stopped", None),
            Some((Verdict::Done, "stopped (exited 0)".to_owned()))
        );
        assert_eq!(
            verdict(&job, "backoff", None),
            Some((Verdict::Failed, "failed: pid 7 exited 0".to_owned())),
            "on-failure restarts an exit before start_secs: a failed start"
        );
    }

    #[test]
    fn the_old_runs_exit_during_a_restart_is_not_a_failure() {
        let mut watch = Watch::new(name("web"), Goal::Restart);
        watch.on_event(&event("exited", "pid 7 killed by SIGTERM", &[]));
        assert_eq!(verdict(&watch, "starting", Some(8)), None);
        assert_eq!(
            verdict(&watch, "running", Some(7)),
            None,
            "not a new run yet"
        );
        watch.on_event(&event("spawned", "spawned pid 8", &[]));
        watch.on_event(&event("started", "started (pid 8)", &[]));
        assert_eq!(
            verdict(&watch, "running", Some(8)),
            Some((Verdict::Done, "running (pid 8)".to_owned()))
        );
    }

    #[test]
    fn a_start_that_was_reached_stands_even_if_the_run_ended_since() {
        let mut watch = Watch::new(name("web"), Goal::Start);
        watch.on_event(&event("spawned", "spawned pid 7", &[]));
        watch.on_event(&event("started", "started (pid 7)", &[("pid", 7.into())]));
        watch.on_event(&event("exited", "pid 7 exited 1", &[]));
        assert_eq!(
            verdict(&watch, "backoff", None),
            Some((Verdict::Done, "started (pid 7), now backoff".to_owned()))
        );
    }

    #[test]
    fn stop_is_done_only_when_no_process_is_left() {
        let watch = Watch::new(name("web"), Goal::Stop);
        assert_eq!(verdict(&watch, "stopping", Some(7)), None);
        assert_eq!(verdict(&watch, "running", Some(7)), None);
        assert_eq!(
            verdict(&watch, "stopped", None),
            Some((Verdict::Done, "stopped".to_owned()))
        );
        assert_eq!(
            verdict(&watch, "failed", None),
            Some((Verdict::Done, "failed".to_owned()))
        );
    }

    #[test]
    fn failed_states_end_a_start_with_their_reason() {
        let watch = Watch::new(name("web"), Goal::Start);
        let mut failed = status("failed", None);
        failed.reason = Some("start limit hit".to_owned());
        let outcome = watch.verdict(Some(&failed)).expect("settled");
        assert_eq!(outcome.verdict, Verdict::Failed);
        assert_eq!(outcome.message, "failed: start limit hit");
    }

    #[test]
    fn a_reloaded_service_settles_running_or_stopped() {
        let watch = Watch::new(name("web"), Goal::Settle);
        assert_eq!(verdict(&watch, "stopping", Some(7)), None);
        assert_eq!(
            verdict(&watch, "stopped", None),
            Some((Verdict::Done, "stopped".to_owned()))
        );
        assert!(
            watch.verdict(None).is_some(),
            "a removed service is settled"
        );
    }

    #[test]
    fn a_timeout_says_where_the_service_is() {
        let watch = Watch::new(name("web"), Goal::Stop);
        let outcome = watch.timed_out(Some(&status("stopping", Some(7))), Duration::from_secs(2));
        assert_eq!(outcome.verdict, Verdict::TimedOut);
        assert_eq!(outcome.message, "timed out after 2s: still stopping");
    }

    #[test]
    fn only_state_changing_requests_can_be_waited_for() {
        assert!(waitable(&Request::Stop { name: name("web") }));
        assert!(!waitable(&Request::Reload { dry_run: true }));
        assert!(!waitable(&Request::Status));
        assert!(!waitable(&Request::Shutdown));
    }

    #[test]
    fn a_request_naming_a_service_with_instances_waits_for_each_instance() {
        let services = ["api", "web@0", "web@1"]
            .iter()
            .map(|n| ServiceStatus::sample(n, "running"))
            .collect();
        let status = Status::sample(services);
        let requested = vec![
            Watch::new(name("web"), Goal::Restart),
            Watch::new(name("api"), Goal::Start),
            Watch::new(name("gone"), Goal::Stop),
        ];
        let watched: Vec<(String, Goal)> = per_instance(requested, &status)
            .into_iter()
            .map(|w| (w.name.as_str().to_owned(), w.goal))
            .collect();
        assert_eq!(
            watched,
            [
                ("web@0".to_owned(), Goal::Restart),
                ("web@1".to_owned(), Goal::Restart),
                ("api".to_owned(), Goal::Start),
                ("gone".to_owned(), Goal::Stop),
            ]
        );
    }
}
