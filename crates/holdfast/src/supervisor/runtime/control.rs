//! Control requests: each becomes a transition of the core (or a read of its state),
//! answered once applied. The config file of a reload and the quarantine queue of a
//! listing are read off this task.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::unix::Pid;
use crate::unix::Signal;
use tokio::sync::{mpsc, oneshot};

use super::{Finished, Shell};
use crate::config;
use crate::control::protocol::{ControlError, ErrorKind, ReloadPlan, Reply, Request};
use crate::control::server::ControlMsg;
use crate::model::{Plan, ServiceName};
use crate::process::reap;
use crate::quarantine;
use crate::supervisor::core::{self as core, Command, Effect, Input, SignalWhom, take_reply};
use crate::supervisor::service::{FailReason, Service, State};

type Answer = Result<Reply, ControlError>;

/// Who asked for a reload, and so who gets its outcome.
pub(super) enum ReloadBy {
    /// SIGHUP: the outcome goes to holdfast's log.
    Sighup,
    Request {
        dry_run: bool,
        reply: oneshot::Sender<Answer>,
    },
}

/// Why a quarantine is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// `quarantine release`: without a pending record, an error.
    Asked,
    /// A start by hand: without a pending record, just a start.
    ByStart,
}

/// What a start or `quarantine release` asks to release, and then to start.
pub(super) struct ReleaseAsked {
    /// As the request named it (a service, or the base name of instances).
    name: ServiceName,
    /// The services whose release is recorded.
    record: Vec<ServiceName>,
    /// The services that start once it is.
    start: Vec<ServiceName>,
    by: Release,
    /// The request named one service, not the base name of several instances.
    single: bool,
}

impl ReleaseAsked {
    /// Records each release; the services that had one to record. A base name's
    /// `quarantine release` without any pending instance is an error, as a service's is.
    fn recorded(&self, path: &Path) -> Result<Vec<ServiceName>, ControlError> {
        // A service named by itself is released as asked; the instances of a base name
        // each only if they have a record, and at least one must.
        let single = self.single;
        let by = if single { self.by } else { Release::ByStart };
        let mut released = Vec::new();
        for name in &self.record {
            if record_release(path, name, by)? {
                released.push(name.clone());
            }
        }
        if !single && self.by == Release::Asked && released.is_empty() {
            return Err(ControlError {
                kind: ErrorKind::BadRequest,
                message: format!(
                    "no instance of {} has a pending quarantine record",
                    self.name
                ),
            });
        }
        Ok(released)
    }
}

/// Releases, recorded in the queue: which of the services had one to record. The
/// services in `start` start then (a base name's instances: all of them).
pub(super) struct Released {
    start: Vec<ServiceName>,
    reply: oneshot::Sender<Answer>,
    recorded: Result<Vec<ServiceName>, ControlError>,
}

/// Appends the `released` mark if `name` has a pending record. A queue that cannot be
/// read is reported, not skipped, also for a start.
fn record_release(path: &Path, name: &ServiceName, by: Release) -> Result<bool, ControlError> {
    let internal = |e: std::io::Error| ControlError {
        kind: ErrorKind::Internal,
        message: format!(
            "failed to update the quarantine queue {}: {e}",
            path.display()
        ),
    };
    match (quarantine::is_pending(path, name).map_err(internal)?, by) {
        (true, _) => {}
        (false, Release::ByStart) => return Ok(false),
        (false, Release::Asked) => {
            return Err(ControlError {
                kind: ErrorKind::BadRequest,
                message: format!("{name} has no pending quarantine record"),
            });
        }
    }
    let entry = quarantine::Entry::Released {
        time: quarantine::now(),
        service: name.clone(),
    };
    quarantine::append(path, &entry).map_err(internal)?;
    Ok(true)
}

/// A reload's config file, read.
pub(super) struct Loaded {
    by: ReloadBy,
    plan: Result<Plan, ControlError>,
}

/// Starts the task that reads config files for reloads, one after the other, so that
/// they are applied in the order they were asked for.
pub(super) fn loader(
    path: PathBuf,
    done: mpsc::UnboundedSender<Finished>,
) -> mpsc::UnboundedSender<ReloadBy> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ReloadBy>();
    tokio::spawn(async move {
        while let Some(by) = rx.recv().await {
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || {
                config::load(&path).map_err(|e| ControlError {
                    kind: ErrorKind::InvalidConfig,
                    message: e.render_plain(),
                })
            });
            let plan = read.await.unwrap_or_else(|e| {
                Err(ControlError {
                    kind: ErrorKind::Internal,
                    message: format!("failed to read the config file: {e}"),
                })
            });
            if done.send(Finished::Loaded(Loaded { by, plan })).is_err() {
                return;
            }
        }
    });
    tx
}

/// The error for a request the control server answers itself, should one reach this task.
fn server_answers(kind: ErrorKind, what: &str) -> ControlError {
    ControlError {
        kind,
        message: format!("{what} is answered by the control server"),
    }
}

impl Shell {
    /// Answers a control request after applying its transition (some answer later, from
    /// work done off this task). Returns true once the shutdown is complete.
    pub(super) fn on_control(&mut self, msg: ControlMsg) -> bool {
        let now = Instant::now();
        let reply = msg.reply;
        // A quarantined service (or instance) is released before it starts.
        if let Some(asked) = self.release_asked(&msg.request) {
            self.release(asked, reply);
            return false;
        }
        if let Some((answer, done)) = self.for_instances(&msg.request, now) {
            let _ = reply.send(answer);
            return done;
        }
        let (answer, done) = match msg.request {
            Request::Status => {
                self.status(now, reply);
                return false;
            }
            Request::Reload { dry_run } => {
                self.start_reload(ReloadBy::Request { dry_run, reply });
                return false;
            }
            Request::QuarantineList => {
                self.list_quarantine(reply);
                return false;
            }
            Request::Crashes { service } => {
                self.read_crashes(None, service, reply);
                return false;
            }
            Request::CrashShow { id } => {
                self.read_crashes(Some(id), None, reply);
                return false;
            }
            Request::CoreDumped { pid, record } => {
                self.core_dumped(pid, record, reply);
                return false;
            }
            Request::UpgradeSelf => {
                self.ask_reexec(reply);
                return false;
            }
            Request::Upgrade { target, to } => {
                self.upgrade_requested(target, to, reply);
                return false;
            }
            Request::Start { name } => self.command(Command::Start, &name, now),
            Request::Stop { name } => self.command(Command::Stop, &name, now),
            Request::Restart { name } => self.restart(&name, now),
            Request::Events {
                service,
                since,
                last,
                ..
            } => (self.events(service, since, last), false),
            Request::Shutdown => {
                let done = self.apply(Input::Shutdown);
                let message = "shutting down: stopping all services".to_owned();
                (Ok(Reply::Accepted { message }), done)
            }
            Request::QuarantineRelease { name } => {
                (Err(crate::supervisor::core::unknown_service(&name)), false)
            }
            Request::Signal { name, signal, all } => (self.signal(&name, &signal, all), false),
            Request::ResetFailed { names } => {
                self.accept(Input::ResetFailed { services: names }, now)
            }
            // Read off this task by the control server, which only asks for `status`.
            Request::Logs { .. } => (Err(server_answers(ErrorKind::Internal, "logs")), false),
            // The control server answers it, from the requests inside and the event bus.
            Request::Wait { .. } => (Err(server_answers(ErrorKind::BadRequest, "wait")), false),
        };
        // The requester may have given up waiting; the transition stands regardless.
        let _ = reply.send(answer);
        done
    }

    pub(super) fn command(
        &mut self,
        command: Command,
        name: &ServiceName,
        now: Instant,
    ) -> (Answer, bool) {
        let service = name.clone();
        self.accept(Input::Command { command, service }, now)
    }

    /// Feeds a control input to the core and executes its effects: the answer, and
    /// whether the shutdown is complete.
    fn accept(&mut self, input: Input, now: Instant) -> (Answer, bool) {
        let (result, effects) = self.control(input, now);
        let done = self.execute(effects);
        (result.map(|message| Reply::Accepted { message }), done)
    }

    /// Feeds a control input to the core: its answer's message, and the effects to
    /// execute.
    fn control(
        &mut self,
        input: Input,
        now: Instant,
    ) -> (Result<String, ControlError>, Vec<Effect>) {
        let mut effects = self.sup.handle(input, now);
        let message = match take_reply(&mut effects).expect("a control input is answered") {
            Ok(core::Answer::Accepted(message)) => Ok(message),
            Ok(core::Answer::Reload(_)) => unreachable!("only a reload answers with a plan"),
            Err(error) => Err(error),
        };
        (message, effects)
    }

    /// `restart`: of a service that is not running, a start.
    pub(super) fn restart(&mut self, name: &ServiceName, now: Instant) -> (Answer, bool) {
        if self.sup.service(name).is_some_and(Service::is_active) {
            self.command(Command::Restart, name, now)
        } else {
            self.command(Command::Start, name, now)
        }
    }

    /// The service whose quarantine a request releases: `quarantine release` of a known
    /// service, and a start by hand (`start`, or `restart` of a service not running) of
    /// a quarantined one, so that its queue record does not stay pending.
    fn release_asked(&self, request: &Request) -> Option<ReleaseAsked> {
        let (name, by) = match request {
            Request::QuarantineRelease { name } => (name, Release::Asked),
            Request::Start { name } => (name, Release::ByStart),
            Request::Restart { name } if self.sup.plan().services.contains_key(name) => {
                (name, Release::ByStart)
            }
            _ => return None,
        };
        let quarantined = |name: &ServiceName| {
            self.sup.service(name).is_some_and(|s| {
                matches!(
                    s.state(),
                    State::Failed {
                        reason: FailReason::Quarantined(_)
                    }
                )
            })
        };
        // A base name stands for its instances: all of them start, the quarantined ones
        // are released first.
        let start = crate::supervisor::rolling::instances_named(self.sup.plan(), name);
        if start.is_empty() {
            return None; // No such service: the usual answer.
        }
        let single = start == std::slice::from_ref(name);
        let record: Vec<ServiceName> = match by {
            Release::Asked if single => start.clone(),
            _ => start.iter().filter(|n| quarantined(n)).cloned().collect(),
        };
        let asked = ReleaseAsked {
            name: name.clone(),
            record,
            start,
            by,
            single,
        };
        (by == Release::Asked || !asked.record.is_empty()).then_some(asked)
    }

    /// Records the releases in the queue off this task; [`Shell::on_released`] starts
    /// the services and answers.
    fn release(&self, asked: ReleaseAsked, reply: oneshot::Sender<Answer>) {
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let recorded = asked.recorded(&path);
            let start = match asked.by {
                // `quarantine release web`: the instances that were released start.
                Release::Asked => recorded.clone().unwrap_or_default(),
                Release::ByStart => asked.start,
            };
            let released = Released {
                start,
                reply,
                recorded,
            };
            let _ = done.send(Finished::Released(released));
        });
    }

    /// The releases are recorded (or there was nothing to release): the starts follow.
    /// Returns true once the shutdown is complete.
    pub(super) fn on_released(&mut self, released: Released) -> bool {
        let Released {
            start,
            reply,
            recorded,
        } = released;
        let released = match recorded {
            Ok(released) => released,
            Err(e) => {
                let _ = reply.send(Err(e));
                return false;
            }
        };
        let now = Instant::now();
        let (answer, done) = self.each(&start, |shell, name| {
            let (answer, finished) = shell.command(Command::Start, name, now);
            let answer = answer.map(|reply| match reply {
                Reply::Accepted { message } if released.contains(name) => Reply::Accepted {
                    message: format!("released {name} from quarantine; {message}"),
                },
                other => other,
            });
            (answer, finished)
        });
        let _ = reply.send(answer);
        done
    }

    /// Reads the quarantine queue off this task and answers from there.
    fn list_quarantine(&self, reply: oneshot::Sender<Answer>) {
        let path = quarantine::path(&self.sup.plan().daemon.state_dir);
        tokio::task::spawn_blocking(move || {
            let answer = quarantine::records(&path)
                .map(|records| Reply::Quarantine { records })
                .map_err(|e| ControlError {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "failed to read the quarantine queue {}: {e}",
                        path.display()
                    ),
                });
            let _ = reply.send(answer);
        });
    }

    /// `holdfast signal`: the core picks the target from the current run; the main
    /// process is only signalled while it is not reaped.
    fn signal(&mut self, name: &ServiceName, signal: &str, all: bool) -> Answer {
        let signal = config::value::parse_signal_arg(signal).map_err(|e| ControlError {
            kind: ErrorKind::BadRequest,
            message: format!("{}: {}", e.label, e.help),
        })?;
        let whom = if all {
            SignalWhom::All
        } else {
            SignalWhom::Main
        };
        let input = Input::Signal {
            service: name.clone(),
            signal,
            whom,
        };
        let (message, effects) = self.control(input, Instant::now());
        // The main pid is signalled here, so that its failure is the answer; the other
        // effects run as always.
        let (main, others): (Vec<Effect>, Vec<Effect>) = effects
            .into_iter()
            .partition(|e| matches!(e, Effect::SignalMain { .. }));
        self.execute(others);
        let message = message?;
        for effect in main {
            if let Effect::SignalMain { pid, .. } = effect {
                self.signal_main(name, pid, signal)
                    .map_err(|message| ControlError {
                        kind: ErrorKind::BadRequest,
                        message,
                    })?;
            }
        }
        tracing::info!("{message}");
        if let Some(capture) = self.capture(name) {
            capture.note(&message);
        }
        Ok(Reply::Accepted { message })
    }

    /// Sends `signal` to main pid `pid` of `service`. The spawned process is our child:
    /// it is signalled only while not reaped, so a recycled pid is never hit. A main pid
    /// named by `MAINPID=` or a pidfile may be no child of ours (then no wait can hold
    /// its pid): it is signalled as the pid the core holds, which leaves the narrow
    /// window between that process's exit and the core learning of it. A process
    /// adopted from a killed holdfast is no child either: it is signalled while its
    /// start time says it is still the adopted one.
    pub(super) fn signal_main(
        &self,
        service: &ServiceName,
        pid: Pid,
        signal: Signal,
    ) -> Result<(), String> {
        let send = || holdfast_sys::os::kill(pid, signal);
        let leader = self.sup.service(service).and_then(Service::group) == Some(pid);
        let gone = || {
            Err(format!(
                "cannot send {} to {service}: its main pid {pid} already exited",
                signal.as_str()
            ))
        };
        let adopted = self.adoptions.processes.get(&pid).map(|(start, _)| *start);
        let sent = match reap::while_unreaped(pid, send) {
            Some(sent) => sent,
            None if adopted.is_some() => {
                let stat = crate::process::proc_stat(pid);
                if !stat.is_ok_and(|s| Some(s.start_time) == adopted) {
                    return gone();
                }
                send()
            }
            None if leader => return gone(),
            None => send(),
        };
        sent.map_err(|e| {
            format!(
                "failed to send {} to {service} (main pid {pid}): {e}",
                signal.as_str()
            )
        })
    }

    /// Asks the loader to re-read the config file; [`Shell::on_loaded`] applies it.
    pub(super) fn start_reload(&mut self, by: ReloadBy) {
        if let Err(by) = self.loader.send(by) {
            self.answer_reload(by.0, Err(shutting_down()));
        }
    }

    /// A reload's config file was read: an invalid one changes nothing. Returns true
    /// once the shutdown is complete.
    pub(super) fn on_loaded(&mut self, loaded: Loaded) -> bool {
        let Loaded { by, plan } = loaded;
        let dry_run = matches!(by, ReloadBy::Request { dry_run: true, .. });
        let (result, done) = match plan {
            _ if self.sup.is_shutting_down() => (Err(shutting_down()), false),
            Err(e) => (Err(e), false),
            Ok(plan) if dry_run => {
                let mut diff = crate::supervisor::reload::diff(self.sup.plan(), &plan, true);
                self.reload_http(plan.daemon.http, &mut diff);
                note_held_back(super::held_back_by_no_new_privs(&plan), &mut diff);
                (Ok(diff), false)
            }
            Ok(plan) => {
                let http = plan.daemon.http;
                let held_back = super::held_back_by_no_new_privs(&plan);
                let mut effects = self.sup.handle(Input::Reload(plan), Instant::now());
                // Before the effects: a service added by this reload may take over an
                // address a removed one had.
                self.sockets.retain(self.sup.plan());
                let reply = take_reply(&mut effects).expect("a reload is answered");
                let done = self.execute(effects);
                self.follow_watches();
                self.apply_log_specs();
                match reply {
                    Ok(core::Answer::Reload(mut diff)) => {
                        self.reload_http(http, &mut diff);
                        note_held_back(held_back, &mut diff);
                        (Ok(diff), done)
                    }
                    Ok(core::Answer::Accepted(_)) => unreachable!("a reload answers with its plan"),
                    Err(e) => (Err(e), done),
                }
            }
        };
        self.answer_reload(by, result);
        done
    }

    /// A reload restarts no service for a change of its log settings (see `reload`'s
    /// `what_runs`): its live capture takes them now.
    fn apply_log_specs(&self) {
        for (name, slot) in &self.slots {
            if let (Some(capture), Some(spec)) = (&slot.capture, self.sup.plan().services.get(name))
            {
                capture.set_spec(spec.log);
            }
        }
    }

    /// `[holdfast] http` is the shell's: a reload turns the HTTP server on, moves it or
    /// turns it off, and lists that in the plan's `applied`, or says in its
    /// `not_applied` why it stays where it is. A dry run lists what the reload would try.
    fn reload_http(&mut self, wanted: Option<std::net::SocketAddr>, diff: &mut ReloadPlan) {
        let running = self.web.configured();
        if wanted == running {
            return;
        }
        let show =
            |addr: Option<std::net::SocketAddr>| addr.map_or("off".to_owned(), |a| a.to_string());
        let why_not = if diff.dry_run {
            None
        } else {
            self.web.rebind(wanted).err().map(|e| {
                let now = self
                    .web
                    .addr()
                    .map_or("off".to_owned(), |a| format!("still on {a}"));
                format!("{e}; {now}; the next reload tries again")
            })
        };
        match why_not {
            Some(why) => {
                tracing::error!("reload: [holdfast].http not applied: {why}");
                diff.not_applied.push(format!("[holdfast].http ({why})"));
            }
            None => diff.applied.push(format!(
                "[holdfast].http: {} -> {}",
                show(running),
                show(wanted)
            )),
        }
    }

    fn answer_reload(&self, by: ReloadBy, result: Result<ReloadPlan, ControlError>) {
        match (by, result) {
            (ReloadBy::Request { reply, .. }, result) => {
                let _ = reply.send(result.map(Reply::Reload));
            }
            (ReloadBy::Sighup, Ok(plan)) => {
                tracing::info!("reloaded on SIGHUP: {}", plan.summary());
            }
            (ReloadBy::Sighup, Err(e)) => tracing::error!(
                "reload on SIGHUP rejected, keeping the running config:\n{}",
                e.message
            ),
        }
    }
}

/// Lists in a reload's `ignored` the services it adds or changes whose
/// `no_new_privs = false` holdfast cannot honour (see `held_back_by_no_new_privs`).
fn note_held_back(held_back: Vec<(ServiceName, String)>, diff: &mut ReloadPlan) {
    let touched = |name: &ServiceName| diff.added.contains(name) || diff.changed.contains(name);
    let notes: Vec<String> = (held_back.into_iter())
        .filter(|(name, _)| touched(name))
        .map(|(_, what)| what)
        .collect();
    diff.ignored.extend(notes);
}

fn shutting_down() -> ControlError {
    ControlError {
        kind: ErrorKind::ShuttingDown,
        message: "holdfast is shutting down: nothing to reload".to_owned(),
    }
}
