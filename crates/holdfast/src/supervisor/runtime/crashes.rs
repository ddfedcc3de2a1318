//! Crash reports from the runtime: the exit of a main process that crashed (or was
//! killed for hanging) becomes a report in `<state_dir>/crashes/`, written off this task
//! from the capture's ring of last lines, then a `crash_reported` event; a core dump
//! stored by `holdfast core-handler` joins its report (`core_dumped`).
//!
//! Nothing waits for a report: the exit goes to the core at once, and the event follows
//! whenever the disk is done.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Finished, Shell};
use crate::control::protocol::{ControlError, CrashReport, CrashSummary, ErrorKind, Reply};
use crate::crash::{self, Death, store};
use crate::model::{ExitStatus, ServiceName};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::service::{AfterStop, Cause, Escalation, RunId, State};
use crate::unix::Pid;

type Answer = Result<Reply, ControlError>;

/// Lines of output a report keeps: enough for a panic with its stack and what led up
/// to it (the capture's ring holds 256).
const REPORT_LOG_LINES: usize = 200;

/// Reports of one service within [`BURST_WINDOW`], at most: a crash loop repeats
/// itself, and hundreds of looping services must not turn into a disk-bound storm of
/// reports (the events and the log still count every exit).
const BURST: u32 = 5;
/// Reports of all services within [`BURST_WINDOW`], at most.
const ALL_BURST: u32 = 60;
const BURST_WINDOW: Duration = Duration::from_secs(60);

/// The latest report of each service, for `status`, and how many were asked for lately.
pub(super) struct Crashes {
    last: HashMap<ServiceName, CrashSummary>,
    /// Per service: when its window began, and the reports asked for in it.
    bursts: HashMap<ServiceName, (Instant, u32)>,
    /// The same for all services together.
    all: Option<(Instant, u32)>,
    /// Reports are written one at a time (a burst of crashes queues, cheaply, rather
    /// than taking a blocking thread each).
    writer: Arc<Semaphore>,
    /// Reports asked for and not written yet: `upgrade --self` waits for none to be
    /// left, a shutdown finishes them.
    pub(super) pending: usize,
}

impl Default for Crashes {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            bursts: HashMap::new(),
            all: None,
            writer: Arc::new(Semaphore::new(1)),
            pending: 0,
        }
    }
}

impl Crashes {
    pub(super) fn last(&self, service: &ServiceName) -> Option<&CrashSummary> {
        self.last.get(service)
    }

    pub(super) fn forget(&mut self, service: &ServiceName) {
        self.last.remove(service);
        self.bursts.remove(service);
    }

    /// Whether another report of `service` may be written at `now`.
    fn admit(&mut self, service: &ServiceName, now: Instant) -> bool {
        let own = self.bursts.entry(service.clone()).or_insert((now, 0));
        let all = self.all.get_or_insert((now, 0));
        count(own, now) <= BURST && count(all, now) <= ALL_BURST
    }
}

/// Counts one more in the window `(start, count)`, begun afresh once it is over.
fn count((start, count): &mut (Instant, u32), now: Instant) -> u32 {
    if now.saturating_duration_since(*start) >= BURST_WINDOW {
        (*start, *count) = (now, 0);
    }
    *count += 1;
    *count
}

/// Work on reports done off the loop.
pub(super) enum CrashMsg {
    Written(std::io::Result<Box<CrashReport>>),
    CoreJoined {
        pid: i32,
        report: Box<CrashReport>,
    },
    /// A core handler's notice is handled (joined or not): a shutdown waits for it.
    JoinDone,
}

/// How long a shutdown or `upgrade --self` waits for the crash reports still being
/// written.
const REPORTS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Shell {
    /// Waits (within a bound) for the reports still being written, handling whatever
    /// else reports back meanwhile as the loop would: before `upgrade --self` (the new
    /// image could not finish them) and at shutdown, so that a crash just before either
    /// is not lost. Returns true once the shutdown is complete.
    pub(super) async fn finish_crash_reports(
        &mut self,
        done: &mut tokio::sync::mpsc::UnboundedReceiver<Finished>,
    ) -> bool {
        let bound = tokio::time::sleep(REPORTS_WAIT);
        tokio::pin!(bound);
        let mut complete = false;
        while self.crashes.pending > 0 {
            tokio::select! {
                msg = done.recv() => match msg {
                    Some(msg) => complete |= self.on_finished(msg),
                    None => break,
                },
                () = &mut bound => break,
            }
        }
        complete
    }
}

/// Why the exit of `run` in `state` deserves a report, if it does: a crash of a
/// starting or running run (an exit that is not clean), or the end of a run holdfast
/// stopped because it hung. A stop asked for (stop, restart, reload) is no crash,
/// unless its stop timeout ran out.
pub(super) fn death_cause(state: &State, run: RunId, status: ExitStatus) -> Option<&'static str> {
    match state {
        State::Starting { run: r, .. } | State::Running { run: r, .. } if *r == run => {
            (!status.is_clean()).then_some("crash")
        }
        State::Stopping {
            run: r,
            then,
            escalation,
            ..
        } if *r == run => match then {
            AfterStop::Exit {
                cause: Cause::WatchdogTimeout { .. },
                ..
            } => Some("watchdog timeout"),
            AfterStop::Exit {
                cause: Cause::Unhealthy { .. },
                ..
            } => Some("unhealthy"),
            _ if matches!(
                escalation,
                Escalation::Killed | Escalation::Dumping { next: None }
            ) =>
            {
                Some("stop timeout")
            }
            _ => None,
        },
        _ => None,
    }
}

impl Shell {
    /// Before the core learns of the exit of `run`'s main process: writes a report if
    /// it was a crash or a hang (see [`death_cause`]).
    pub(super) fn report_crash(&mut self, service: &ServiceName, run: RunId, status: ExitStatus) {
        let Some(svc) = self.sup.service(service) else {
            return;
        };
        let Some(cause) = death_cause(svc.state(), run, status) else {
            return;
        };
        let Some(pid) = svc
            .pid()
            .or_else(|| svc.state().live().map(|(_, pid, _)| pid))
        else {
            return;
        };
        if !self.crashes.admit(service, Instant::now()) {
            tracing::debug!("{service}: over {BURST} crashes within {BURST_WINDOW:?}: no report");
            return;
        }
        let spec = svc.spec();
        // Where the spawn found it: the service's own PATH and working directory.
        let path_var = (spec.env.get("PATH").cloned()).or_else(|| {
            spec.inherit_env
                .then(|| std::env::var("PATH").ok())
                .flatten()
        });
        let lookup = Lookup {
            path_var,
            working_dir: spec.working_dir.clone(),
        };
        let program = svc
            .build()
            .map(PathBuf::from)
            .or_else(|| spec.command.first().map(PathBuf::from));
        let death = Death {
            service: service.clone(),
            pid,
            status,
            cause: cause.to_owned(),
            restarts: svc.restarts(),
            binary: None,
        };
        let time = SystemTime::now();
        // Asked now: the capture answers once the run's last words are in the ring.
        let log = self.capture(service).map(|c| c.recent(REPORT_LOG_LINES));
        let state_dir = self.sup.plan().daemon.state_dir.clone();
        let done = self.done_tx.clone();
        let writer = Arc::clone(&self.crashes.writer);
        self.crashes.pending += 1;
        tokio::spawn(async move {
            let log = match log {
                Some(log) => log.await,
                None => Vec::new(),
            };
            // Never closed: a permit always comes.
            let _turn = writer.acquire_owned().await;
            let written = tokio::task::spawn_blocking(move || {
                let death = Death {
                    binary: program.map(|program| lookup.resolve(program)),
                    ..death
                };
                let mut report = crash::report(death, time, log);
                store::join_stored_core(&state_dir, &mut report);
                store::write(&state_dir, &report).map(|()| Box::new(report))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let _ = done.send(Finished::Crash(CrashMsg::Written(written)));
        });
    }

    pub(super) fn on_crash_msg(&mut self, msg: CrashMsg) {
        if let CrashMsg::Written(_) | CrashMsg::JoinDone = msg {
            self.crashes.pending = self.crashes.pending.saturating_sub(1);
        }
        match msg {
            CrashMsg::JoinDone => {}
            CrashMsg::Written(Err(e)) => tracing::error!("failed to write a crash report: {e}"),
            CrashMsg::Written(Ok(report)) => {
                let report = *report;
                let core = report.core.is_some().then(|| report.clone());
                let summary = store::summary(&report, report.core.is_some());
                self.crashes.last.insert(report.service.clone(), summary);
                self.publish(&Event {
                    service: Some(report.service),
                    kind: EventKind::CrashReported {
                        id: report.id,
                        pid: Pid::from_raw(report.pid),
                        summary: report.summary,
                    },
                });
                // The core handler was first: its notice found no report to join.
                if let Some(report) = core {
                    self.on_crash_msg(CrashMsg::CoreJoined {
                        pid: report.pid,
                        report: Box::new(report),
                    });
                }
            }
            CrashMsg::CoreJoined { pid, report } => {
                let core = report.core.as_ref();
                if let Some(last) = self.crashes.last.get_mut(&report.service)
                    && last.id == report.id
                {
                    last.core = true;
                    last.summary.clone_from(&report.summary);
                }
                self.publish(&Event {
                    service: Some(report.service.clone()),
                    kind: EventKind::CoreDumped {
                        pid: Pid::from_raw(pid),
                        id: report.id.clone(),
                        truncated: core.is_some_and(|c| c.truncated),
                        backtrace: core.is_some_and(|c| !c.backtrace.is_empty()),
                    },
                });
            }
        }
    }

    /// `crashes [NAME]` and `crashes show ID`: read off this task.
    pub(super) fn read_crashes(
        &self,
        show: Option<String>,
        service: Option<ServiceName>,
        reply: oneshot::Sender<Answer>,
    ) {
        let state_dir = self.sup.plan().daemon.state_dir.clone();
        tokio::task::spawn_blocking(move || {
            let answer = match show {
                Some(id) => store::show(&state_dir, &id)
                    .map(|report| Reply::Crash {
                        report: Box::new(report),
                    })
                    .map_err(|message| ControlError {
                        kind: ErrorKind::BadRequest,
                        message,
                    }),
                None => store::list(&state_dir, service.as_ref())
                    .map(|crashes| Reply::Crashes { crashes })
                    .map_err(|e| ControlError {
                        kind: ErrorKind::Internal,
                        message: format!("cannot read the crash reports: {e}"),
                    }),
            };
            let _ = reply.send(answer);
        });
    }

    /// `core_dumped` from the core handler: joins the record to its report off this
    /// task; the event follows once the report is rewritten, and a shutdown or
    /// `upgrade --self` waits for it as for a report. It takes the writer's turn:
    /// the report being written at the same moment would otherwise be read before it
    /// is whole, or written over without its core.
    pub(super) fn core_dumped(&mut self, pid: i32, record: String, reply: oneshot::Sender<Answer>) {
        let state_dir = self.sup.plan().daemon.state_dir.clone();
        let done = self.done_tx.clone();
        let writer = Arc::clone(&self.crashes.writer);
        self.crashes.pending += 1;
        tokio::spawn(async move {
            // Never closed: a permit always comes.
            let _turn = writer.acquire_owned().await;
            let joined = done.clone();
            let answer =
                tokio::task::spawn_blocking(move || attach(&state_dir, pid, &record, &done))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ControlError {
                            kind: ErrorKind::Internal,
                            message: format!("joining the core record failed: {e}"),
                        })
                    });
            let _ = joined.send(Finished::Crash(CrashMsg::JoinDone));
            let _ = reply.send(answer);
        });
    }
}

/// Joins a core record to its crash report (see [`Shell::core_dumped`]).
fn attach(
    state_dir: &std::path::Path,
    pid: i32,
    record: &str,
    done: &mpsc::UnboundedSender<Finished>,
) -> Answer {
    match store::attach_core(state_dir, record) {
        Ok(Some(report)) => {
            let message = format!("core of pid {pid} joined crash report {}", report.id);
            let report = Box::new(report);
            let _ = done.send(Finished::Crash(CrashMsg::CoreJoined { pid, report }));
            Ok(Reply::Accepted { message })
        }
        Ok(None) => Ok(Reply::Accepted {
            message: format!("no crash report of pid {pid} yet: `crashes show` joins it"),
        }),
        Err(e) => Err(ControlError {
            kind: ErrorKind::BadRequest,
            message: format!("cannot join core record {record:?}: {e}"),
        }),
    }
}

/// How the spawn looked a service's program up.
struct Lookup {
    /// The service's `PATH`, when it sets one or inherits holdfast's.
    path_var: Option<String>,
    working_dir: Option<PathBuf>,
}

impl Lookup {
    /// `program` as the path the spawn executed: a bare name looked up in the
    /// service's `PATH`, a relative path taken from its working directory.
    fn resolve(&self, program: PathBuf) -> PathBuf {
        let env: Vec<(String, String)> = (self.path_var.iter())
            .map(|path| ("PATH".to_owned(), path.clone()))
            .collect();
        let cwd = self.working_dir.as_deref();
        let found = program
            .to_str()
            .and_then(|text| crate::process::program::resolve(text, &env, cwd).ok())
            .unwrap_or(program);
        match cwd {
            Some(cwd) if found.is_relative() => cwd.join(found),
            _ => found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_binary_is_found_as_the_spawn_found_it() {
        let lookup = Lookup {
            path_var: Some("/nowhere:/bin:/usr/bin".to_owned()),
            working_dir: Some(PathBuf::from("/srv/app")),
        };
        let sleep = lookup.resolve(PathBuf::from("sleep"));
        assert!(sleep.is_absolute() && sleep.ends_with("sleep"), "{sleep:?}");
        assert_eq!(
            lookup.resolve(PathBuf::from("bin/app")),
            PathBuf::from("/srv/app/bin/app")
        );
        assert_eq!(
            lookup.resolve(PathBuf::from("/opt/x")),
            PathBuf::from("/opt/x")
        );
    }
    use crate::supervisor::service::{MainProcess, Watchdog};
    use crate::unix::Signal;

    fn running(run: u64) -> State {
        State::Running {
            run: RunId(run),
            pid: Pid::from_raw(10),
            spawned: Instant::now(),
            main_pid: None,
            watchdog: Watchdog::default(),
        }
    }

    fn stopping(then: AfterStop, escalation: Escalation) -> State {
        State::Stopping {
            run: RunId(1),
            pid: Pid::from_raw(10),
            spawned: Instant::now(),
            main_pid: None,
            main: MainProcess::Alive,
            escalation,
            deadline: None,
            then,
        }
    }

    #[test]
    fn crashes_and_hang_kills_are_reported_asked_stops_and_clean_exits_are_not() {
        let segv = ExitStatus::Signaled {
            signal: Signal::SIGSEGV,
            core_dumped: false,
        };
        let term = ExitStatus::Signaled {
            signal: Signal::SIGTERM,
            core_dumped: false,
        };
        assert_eq!(death_cause(&running(1), RunId(1), segv), Some("crash"));
        assert_eq!(
            death_cause(&running(1), RunId(1), ExitStatus::Exited(0)),
            None
        );
        assert_eq!(
            death_cause(&running(2), RunId(1), segv),
            None,
            "an older run"
        );
        let watchdog = AfterStop::Exit {
            cause: Cause::WatchdogTimeout {
                interval: Duration::from_secs(1),
            },
            early: false,
        };
        let hung = stopping(watchdog, Escalation::Graceful);
        assert_eq!(death_cause(&hung, RunId(1), term), Some("watchdog timeout"));
        let asked = stopping(AfterStop::Stay, Escalation::Graceful);
        assert_eq!(death_cause(&asked, RunId(1), segv), None);
        let stuck = stopping(AfterStop::Start, Escalation::Killed);
        assert_eq!(death_cause(&stuck, RunId(1), term), Some("stop timeout"));
    }

    #[test]
    fn a_crash_loop_gets_a_few_reports_a_minute() {
        let mut crashes = Crashes::default();
        let api = ServiceName::new("api").expect("valid");
        let start = Instant::now();
        let admitted = (0..20)
            .filter(|i| crashes.admit(&api, start + Duration::from_millis(i * 100)))
            .count();
        assert_eq!(admitted, BURST as usize);
        assert!(crashes.admit(&api, start + BURST_WINDOW), "a new window");
        let many = (0..100)
            .map(|i| ServiceName::new(format!("s{i}")).expect("valid"))
            .filter(|s| crashes.admit(s, start + BURST_WINDOW))
            .count();
        assert_eq!(many as u32, ALL_BURST - 1, "all services together");
    }
}
