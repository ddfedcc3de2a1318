//! What one image of holdfast hands to the next (`holdfast upgrade --self`), as it
//! crosses `execve` in a memfd: the core's [`Snapshot`], the processes and process
//! groups of the live runs, and the numbers of the fds kept open across the exec.
//!
//! The wire form mirrors the core's types with plain data (durations as spans, signals
//! by number), so the core itself stays free of serialization. A run's probes and hooks
//! are not handed over: a probe's result is not awaited (health starts over with the
//! resumed run), and a hook that is still running is reaped as nobody's. Neither is a
//! build's `verify` command: a self-upgrade waits until no build is being verified.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::table::{Owner, Process, ProcessTable, Role};
use crate::control::protocol::EventRecord;
use crate::model::{ExitStatus, ServiceName, SpawnCause, SpawnErrorKind};
use crate::observe::metrics::Counted;
use crate::process::reap::ReapSeq;
use crate::supervisor::core::Snapshot;
use crate::supervisor::service::{
    Cause, FailReason, LivePhase, LiveRun, Resumed, ResumedState, RunId,
};
use crate::unix::{Pid, Signal};

/// The environment variable that tells the new image the number of the memfd. Never
/// passed on to services (`PRIVATE_ENV`).
pub const RESUME_ENV: &str = "HOLDFAST_RESUME";

/// Changes whenever the wire form changes incompatibly: an image refuses a handover of
/// another format instead of misreading it.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub format: u32,
    /// Re-executions so far, this one included.
    pub execs: u32,
    /// How long the daemon had been up, so `status` goes on counting.
    pub uptime: Duration,
    pub next_run: u64,
    pub services: Vec<ServiceForm>,
    pub processes: Vec<ProcessForm>,
    pub fds: Fds,
    /// Per service, the partial lines its capture held (stdout, stderr): the start of
    /// each stream's next line, whose rest is still in the pipe.
    #[serde(default)]
    pub partial: BTreeMap<ServiceName, [Vec<u8>; 2]>,
    /// Each service's `INVOCATION_ID`: the probes and hooks of a live run keep sharing it.
    #[serde(default)]
    pub invocations: std::collections::HashMap<ServiceName, String>,
    /// The event history and the last event's number: `events` goes on from them.
    #[serde(default)]
    pub last_event: u64,
    #[serde(default)]
    pub events: Vec<EventRecord>,
    /// The command line of the image that handed over, for a way back to it.
    #[serde(default)]
    pub args: Vec<OsString>,
    /// The binary of the image that handed over, open: a new image that cannot take
    /// over (its reading of the config fails) executes it again with this handover.
    #[serde(default)]
    pub previous: Option<RawFd>,
    /// Set by a new image that could not take over, for the old one it went back to:
    /// why (shown as the failed upgrade's error).
    #[serde(default)]
    pub refused: Option<String>,
    /// Processes adopted from a holdfast that was killed, by pid: start time and
    /// process group. No children of this one: the new image watches them again.
    #[serde(default)]
    pub adopted: BTreeMap<i32, (u64, i32)>,
    /// The `/metrics` counters: the pid stays, so they go on instead of starting over
    /// (from an image that did not send them, they start at zero).
    #[serde(default)]
    pub metrics: Counted,
    /// The private ports of the runs of proxy-mode services, whether each is routed,
    /// and which proxies accept: the new image's proxies serve as the old one's did.
    #[serde(default)]
    pub proxies: crate::upgrade::proxy::ProxyForm,
}

/// The fds the new image serves on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fds {
    pub control: RawFd,
    pub notify: RawFd,
    /// Per service: stdout read, stderr read, stdout write, stderr write.
    pub captures: BTreeMap<ServiceName, [RawFd; 4]>,
    /// Further fds by name (listen sockets of services).
    #[serde(default)]
    pub extra: BTreeMap<String, RawFd>,
}

impl Fds {
    /// Every fd number, for `FD_CLOEXEC` to be cleared on exactly these.
    pub fn all(&self) -> Vec<RawFd> {
        let mut fds = vec![self.control, self.notify];
        fds.extend(self.captures.values().flatten());
        fds.extend(self.extra.values());
        fds
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceForm {
    pub name: ServiceName,
    pub state: StateForm,
    pub restarts: u32,
    pub attempt: u32,
    pub last_exit: Option<(ExitForm, Duration)>,
    pub build: Option<PathBuf>,
    pub env_overrides: BTreeMap<String, String>,
    pub status_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateForm {
    Stopped,
    Waiting,
    Backoff {
        remaining: Duration,
    },
    Failed(FailForm),
    Live {
        run: u64,
        group: i32,
        main_pid: Option<i32>,
        up_for: Duration,
        /// `Some(ready)` while starting.
        starting: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailForm {
    StartLimitHit {
        restarts: u32,
        interval: Duration,
        last: CauseForm,
    },
    NoRestart(CauseForm),
    Quarantined(CauseForm),
}

/// A cause as far as people see it again: a spawn failure keeps its text (not its
/// kind), an unhealthy run its count (not its last probe's error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseForm {
    Exited(ExitForm),
    ExitedEarly { status: ExitForm, after: Duration },
    SpawnFailed(String),
    NotReady(Duration),
    WatchdogTimeout(Duration),
    Unhealthy(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitForm {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
    OomKilled,
    Unknown,
}

/// One pid of the process table: a process of a run, a process group of a run, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessForm {
    pub pid: i32,
    pub process: Option<(ServiceName, RoleForm)>,
    pub group: Option<(ServiceName, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleForm {
    Main(u64),
    Forker(u64),
    Member(u64),
}

impl Handover {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let handover: Handover =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable handover: {e}"))?;
        if handover.format != FORMAT {
            return Err(format!(
                "handover of format {} (this holdfast reads {FORMAT})",
                handover.format
            ));
        }
        Ok(handover)
    }

    /// The core's part, for `Input::Resume`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_run: self.next_run,
            services: resumed(&self.services),
        }
    }

    /// The process table of the live runs (see [`table_of`]).
    pub fn table(&self) -> ProcessTable {
        table_of(&self.processes, |_, _| true)
    }
}

/// The core's form of `services`.
pub fn resumed(services: &[ServiceForm]) -> Vec<Resumed> {
    services.iter().map(ServiceForm::resumed).collect()
}

/// The process table of the runs of `processes` that `keep` keeps. Each process counts
/// as seen alive at the first reap of this holdfast: any exit of theirs is reaped (or,
/// for a process that is not its child, seen through a pidfd) after that.
pub fn table_of(
    processes: &[ProcessForm],
    keep: impl Fn(&ServiceName, RunId) -> bool,
) -> ProcessTable {
    let mut table = ProcessTable::new();
    for form in processes {
        let pid = Pid::from_raw(form.pid);
        if let Some((service, run)) = &form.group
            && keep(service, RunId(*run))
        {
            let owner = Owner {
                service: service.clone(),
                run: RunId(*run),
            };
            table.add_group(pid, owner);
        }
        if let Some((service, role)) = &form.process {
            let role = match *role {
                RoleForm::Main(run) => Role::Main(RunId(run)),
                RoleForm::Forker(run) => Role::Forker(RunId(run)),
                RoleForm::Member(run) => Role::Member(RunId(run)),
            };
            if role.run().is_some_and(|run| keep(service, run)) {
                let process = Process {
                    service: service.clone(),
                    role,
                    alive_at: ReapSeq::default(),
                };
                table.insert(pid, process);
            }
        }
    }
    table
}

/// The processes and groups of runs in `table` (probes and hooks left out).
pub fn processes(table: &ProcessTable) -> Vec<ProcessForm> {
    let mut forms: BTreeMap<i32, ProcessForm> = BTreeMap::new();
    fn entry(forms: &mut BTreeMap<i32, ProcessForm>, pid: Pid) -> &mut ProcessForm {
        forms.entry(pid.as_raw()).or_insert_with(|| ProcessForm {
            pid: pid.as_raw(),
            process: None,
            group: None,
        })
    }
    for (pid, process) in table.processes() {
        let role = match process.role {
            Role::Main(run) => RoleForm::Main(run.0),
            Role::Forker(run) => RoleForm::Forker(run.0),
            Role::Member(run) => RoleForm::Member(run.0),
            Role::Probe(..) | Role::Hook(_) | Role::Verify(_) | Role::Systemctl => continue,
        };
        entry(&mut forms, pid).process = Some((process.service.clone(), role));
    }
    for (pgid, owner) in table.groups() {
        entry(&mut forms, pgid).group = Some((owner.service.clone(), owner.run.0));
    }
    forms.into_values().collect()
}

/// The core's snapshot in wire form.
pub fn services(snapshot: &Snapshot) -> Vec<ServiceForm> {
    snapshot.services.iter().map(ServiceForm::of).collect()
}

impl ServiceForm {
    fn of(r: &Resumed) -> Self {
        let state = match &r.state {
            ResumedState::Stopped => StateForm::Stopped,
            ResumedState::Waiting => StateForm::Waiting,
            ResumedState::Backoff { remaining } => StateForm::Backoff {
                remaining: *remaining,
            },
            ResumedState::Failed(reason) => StateForm::Failed(FailForm::of(reason)),
            ResumedState::Live(live) => StateForm::Live {
                run: live.run.0,
                group: live.group.as_raw(),
                main_pid: live.main_pid.map(Pid::as_raw),
                up_for: live.up_for,
                starting: match live.phase {
                    LivePhase::Starting { ready } => Some(ready),
                    LivePhase::Running => None,
                },
            },
        };
        Self {
            name: r.service.clone(),
            state,
            restarts: r.restarts,
            attempt: r.attempt,
            last_exit: r.last_exit.map(|(s, ago)| (ExitForm::of(s), ago)),
            build: r.build.clone(),
            env_overrides: r.env_overrides.clone(),
            status_text: r.status_text.clone(),
        }
    }

    fn resumed(&self) -> Resumed {
        let state = match &self.state {
            StateForm::Stopped => ResumedState::Stopped,
            StateForm::Waiting => ResumedState::Waiting,
            StateForm::Backoff { remaining } => ResumedState::Backoff {
                remaining: *remaining,
            },
            StateForm::Failed(form) => ResumedState::Failed(form.reason()),
            StateForm::Live {
                run,
                group,
                main_pid,
                up_for,
                starting,
            } => ResumedState::Live(LiveRun {
                run: RunId(*run),
                group: Pid::from_raw(*group),
                main_pid: main_pid.map(Pid::from_raw),
                up_for: *up_for,
                phase: match starting {
                    Some(ready) => LivePhase::Starting { ready: *ready },
                    None => LivePhase::Running,
                },
            }),
        };
        Resumed {
            service: self.name.clone(),
            state,
            restarts: self.restarts,
            attempt: self.attempt,
            last_exit: self.last_exit.map(|(s, ago)| (s.status(), ago)),
            build: self.build.clone(),
            env_overrides: self.env_overrides.clone(),
            status_text: self.status_text.clone(),
        }
    }
}

impl FailForm {
    fn of(reason: &FailReason) -> Self {
        match reason {
            FailReason::StartLimitHit {
                restarts,
                interval,
                last,
            } => FailForm::StartLimitHit {
                restarts: *restarts,
                interval: *interval,
                last: CauseForm::of(last),
            },
            FailReason::NoRestart(cause) => FailForm::NoRestart(CauseForm::of(cause)),
            FailReason::Quarantined(cause) => FailForm::Quarantined(CauseForm::of(cause)),
        }
    }

    fn reason(&self) -> FailReason {
        match self {
            FailForm::StartLimitHit {
                restarts,
                interval,
                last,
            } => FailReason::StartLimitHit {
                restarts: *restarts,
                interval: *interval,
                last: last.cause(),
            },
            FailForm::NoRestart(cause) => FailReason::NoRestart(cause.cause()),
            FailForm::Quarantined(cause) => FailReason::Quarantined(cause.cause()),
        }
    }
}

impl CauseForm {
    fn of(cause: &Cause) -> Self {
        match cause {
            Cause::Exited(status) => CauseForm::Exited(ExitForm::of(*status)),
            Cause::ExitedEarly { status, after } => CauseForm::ExitedEarly {
                status: ExitForm::of(*status),
                after: *after,
            },
            Cause::SpawnFailed(error) => CauseForm::SpawnFailed(error.detail.clone()),
            Cause::NotReady { timeout } => CauseForm::NotReady(*timeout),
            Cause::WatchdogTimeout { interval } => CauseForm::WatchdogTimeout(*interval),
            Cause::Unhealthy { failures, .. } => CauseForm::Unhealthy(*failures),
        }
    }

    fn cause(&self) -> Cause {
        match self {
            CauseForm::Exited(status) => Cause::Exited(status.status()),
            CauseForm::ExitedEarly { status, after } => Cause::ExitedEarly {
                status: status.status(),
                after: *after,
            },
            CauseForm::SpawnFailed(detail) => {
                Cause::SpawnFailed(SpawnCause::new(SpawnErrorKind::Other, detail.clone()))
            }
            CauseForm::NotReady(timeout) => Cause::NotReady { timeout: *timeout },
            CauseForm::WatchdogTimeout(interval) => Cause::WatchdogTimeout {
                interval: *interval,
            },
            CauseForm::Unhealthy(failures) => Cause::Unhealthy {
                failures: *failures,
                last_error: None,
            },
        }
    }
}

impl ExitForm {
    fn of(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Exited(code) => ExitForm::Exited(code),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => ExitForm::Signaled {
                signal: signal as i32,
                core_dumped,
            },
            ExitStatus::OomKilled => ExitForm::OomKilled,
            ExitStatus::Unknown => ExitForm::Unknown,
        }
    }

    /// A signal this build does not know is shown the way a shell does (128 + n).
    fn status(self) -> ExitStatus {
        match self {
            ExitForm::Exited(code) => ExitStatus::Exited(code),
            ExitForm::Signaled {
                signal,
                core_dumped,
            } => match Signal::try_from(signal) {
                Ok(signal) => ExitStatus::Signaled {
                    signal,
                    core_dumped,
                },
                Err(_) => ExitStatus::Exited(128 + signal),
            },
            ExitForm::OomKilled => ExitStatus::OomKilled,
            ExitForm::Unknown => ExitStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use holdfast_core::supervisor::testkit::*;

    use super::*;

    fn handover_of(h: &Harness, table: &ProcessTable) -> Handover {
        let snapshot = h.sup.snapshot(h.now).expect("resumable");
        Handover {
            format: FORMAT,
            execs: 1,
            uptime: secs(60),
            next_run: snapshot.next_run,
            services: services(&snapshot),
            processes: processes(table),
            fds: Fds {
                control: 3,
                notify: 4,
                captures: [(name("a"), [5, 6, 7, 8])].into(),
                extra: BTreeMap::new(),
            },
            partial: [(name("a"), [b"half a li".to_vec(), Vec::new()])].into(),
            invocations: [(name("a"), "0123".to_owned())].into(),
            last_event: 0,
            events: Vec::new(),
            args: vec!["holdfast".into(), "up".into()],
            previous: Some(9),
            refused: None,
            adopted: BTreeMap::from([(42, (1000, 42))]),
            metrics: Counted::default(),
            proxies: crate::upgrade::proxy::ProxyForm::default(),
        }
    }

    #[test]
    fn a_handover_from_an_image_without_metrics_resumes_them_from_zero() {
        let h = Harness::running([svc("a")]);
        let handover = handover_of(&h, &ProcessTable::new());
        let mut older: serde_json::Value =
            serde_json::from_slice(&handover.to_bytes()).expect("json");
        let fields = older.as_object_mut().expect("an object");
        assert!(fields.remove("metrics").is_some(), "{fields:?}");
        let bytes = serde_json::to_vec(&older).expect("serializes");
        let read = Handover::from_bytes(&bytes).expect("an older handover reads");
        assert_eq!(read.metrics, Counted::default());
        assert_eq!(read, handover);
    }

    #[test]
    fn a_snapshot_survives_the_wire_unchanged() {
        let mut h = Harness::running([
            svc("a"),
            with_restart(RestartPolicy::No, svc("b")),
            with_fixed_delay(secs(9), svc("c")),
        ]);
        h.exit("b", killed(Signal::SIGSEGV));
        h.exit("c", code(2));
        let snapshot = h.sup.snapshot(h.now).expect("resumable");
        let handover = handover_of(&h, &ProcessTable::new());
        let back = Handover::from_bytes(&handover.to_bytes()).expect("reads back");
        assert_eq!(back, handover);
        assert_eq!(back.snapshot(), snapshot);
        assert_eq!(back.fds.all(), [3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn the_processes_of_runs_are_handed_over_and_seen_alive_at_the_first_reap() {
        let h = Harness::running([svc("a")]);
        let run = h.run("a");
        let mut table = ProcessTable::new();
        let owner = Owner {
            service: name("a"),
            run,
        };
        table.add_group(Pid::from_raw(101), owner.clone());
        let main = |role| Process {
            service: name("a"),
            role,
            alive_at: ReapSeq(57),
        };
        table.insert(Pid::from_raw(101), main(Role::Member(run)));
        table.insert(Pid::from_raw(102), main(Role::Main(run)));
        let handover = handover_of(&h, &table);
        let back = Handover::from_bytes(&handover.to_bytes()).expect("reads back");
        let table = back.table();
        assert_eq!(table.group_owner(Pid::from_raw(101)), Some(&owner));
        assert_eq!(table.main_owner(Pid::from_raw(102)), Some(owner));
        assert_eq!(
            table.process(Pid::from_raw(102)).map(|p| p.alive_at),
            Some(ReapSeq::default())
        );
    }

    #[test]
    fn a_handover_of_another_format_is_refused() {
        let h = Harness::running([svc("a")]);
        let mut handover = handover_of(&h, &ProcessTable::new());
        handover.format = FORMAT + 1;
        let error = Handover::from_bytes(&handover.to_bytes()).expect_err("refused");
        assert!(error.contains("format 2"), "{error}");
    }
}
