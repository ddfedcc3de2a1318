//! The control protocol: newline-delimited JSON over the Unix control socket.
//!
//! Each connection carries one request line `{"v":1,"request":{...}}` and gets one
//! response line `{"v":1,"ok":{...}}` or `{"v":1,"error":{...}}`. The version is checked
//! first so an old CLI talking to a new daemon gets a precise error, not a parse failure.
//! The streaming requests are `events` with `follow`: one `{"v":1,"ok":{"kind":"event",
//! "event":{...}}}` line per event until either side closes; and `logs`: one `log_line`
//! per line, then `log_end` (or, with `follow`, more lines until either side closes).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use holdfast_core::health::HealthState;
use holdfast_core::model::ServiceName;
pub use holdfast_core::supervisor::answer::{
    ControlError, ErrorKind, ReloadPlan, RestartReason, ServiceState,
};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestBody {
    Request(Request),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Start {
        name: ServiceName,
    },
    Stop {
        name: ServiceName,
    },
    Restart {
        name: ServiceName,
    },
    /// Re-read the config file the daemon was started with and apply the difference.
    Reload {
        dry_run: bool,
    },
    /// Stop all services (reverse dependency order) and exit.
    Shutdown,
    /// `holdfast upgrade --self`: re-execute the binary now at holdfast's path in place
    /// (same pid; services keep running and stay its children). Answered with
    /// [`Reply::Accepted`] before the exec; the new image shows a greater
    /// [`DaemonStatus::execs`], and a failed exec leaves [`DaemonStatus::reexec_error`].
    UpgradeSelf,
    /// Recent events (those after seq `since`, of `service` only when given). Without
    /// `follow`: one [`Reply::Events`]. With `follow`: one [`Reply::Event`] line per
    /// recent event and then per new one, until the client disconnects; a client too
    /// slow to keep up gets an [`ErrorKind::Lagged`] line and is disconnected.
    Events {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        service: Option<ServiceName>,
        #[serde(default)]
        since: Option<u64>,
        /// Only the last `last` of those recent events (with `follow`, `Some(0)` starts
        /// at now, like `journalctl -f` without history).
        #[serde(default)]
        last: Option<usize>,
    },
    /// Captured output of `services` (all when empty), merged by time: the lines
    /// stamped within `since..=until` (RFC 3339, UTC), only the last `lines` of them
    /// when given. Answered with one [`Reply::LogLine`] per line, then [`Reply::LogEnd`].
    /// With `follow` (and no `until`): the last `lines` (default 10) lines, then new
    /// lines until the client disconnects or the daemon shuts down (an
    /// [`ErrorKind::ShuttingDown`] line).
    Logs {
        #[serde(default)]
        services: Vec<ServiceName>,
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        until: Option<String>,
        #[serde(default)]
        follow: bool,
    },
    /// The quarantine queue, oldest record first.
    QuarantineList,
    /// Mark the service's pending quarantine records released and start it again.
    QuarantineRelease {
        name: ServiceName,
    },
    /// Send `signal` (a name like `SIGHUP`) to the service's main process, or with
    /// `all` to every process of its current run (cgroup or process groups).
    Signal {
        name: ServiceName,
        signal: String,
        #[serde(default)]
        all: bool,
    },
    /// Failed services go back to stopped with a fresh start limit; without names,
    /// every failed service.
    ResetFailed {
        #[serde(default)]
        names: Vec<ServiceName>,
    },
    /// Roll `target` (a service, or the base name of instances) out to the build `to`,
    /// or without `to` to the build its program names now (a flipped `current` link).
    /// The daemon verifies the build first: a refusal is an error answer with the
    /// reason, and nothing changed.
    Upgrade {
        target: ServiceName,
        #[serde(default)]
        to: Option<std::path::PathBuf>,
    },
    /// Crash reports, newest first (of `service` only when given).
    Crashes {
        #[serde(default)]
        service: Option<ServiceName>,
    },
    /// One crash report, by its id (a unique prefix will do), with the core dump of its
    /// pid joined when one was stored.
    CrashShow {
        id: String,
    },
    /// From `holdfast core-handler`: the core dump of `pid` is stored, its record is
    /// `<state_dir>/crashes/cores/<record>` (a file name, nothing else). The daemon joins
    /// it to the crash report of that pid and publishes `core_dumped`.
    CoreDumped {
        pid: i32,
        record: String,
    },
    /// Apply `requests` (start, stop, restart or a reload that is not a dry run), in
    /// order, then answer once every service they concern reached its outcome (see
    /// `control::wait` in the daemon), or `timeout_ms` passed (`None`: no deadline). Answered
    /// by [`Reply::Waited`]; the first request that fails is the answer, and the ones
    /// after it are not applied.
    Wait {
        requests: Vec<Request>,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseBody {
    Ok(Reply),
    Error(ControlError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    /// A start/stop/restart/shutdown was accepted; `message` says what happens next.
    Accepted {
        message: String,
    },
    Reload(ReloadPlan),
    /// Answer to a non-following `events`: recent events, oldest first.
    Events {
        events: Vec<EventRecord>,
    },
    /// One line of a following `events` stream.
    Event {
        event: EventRecord,
    },
    Quarantine {
        records: Vec<QuarantineRecord>,
    },
    /// Answer to [`Request::Crashes`].
    Crashes {
        crashes: Vec<CrashSummary>,
    },
    /// Answer to [`Request::CrashShow`].
    Crash {
        report: Box<CrashReport>,
    },
    /// One line of a `logs` answer: the line as stored (stamp, stream tag, text).
    LogLine {
        service: ServiceName,
        line: String,
    },
    /// The end of a non-following `logs` answer: every line was sent.
    LogEnd,
    /// Answer to [`Request::Wait`]: each request's own reply, then one outcome per
    /// service concerned, in the order the requests named them.
    Waited {
        replies: Vec<Reply>,
        outcomes: Vec<Outcome>,
    },
}

/// Where one service ended up for a waited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub name: ServiceName,
    pub verdict: Verdict,
    /// The service's state when the verdict was reached (a [`ServiceState`] name), or
    /// `removed`.
    pub state: String,
    /// What happened, for people: `running (pid 42)`, `stopped`,
    /// `failed: exec "/opt/x": ENOENT: No such file or directory`, `still stopping`.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The request reached its goal.
    Done,
    /// The service failed on the way (or ended up somewhere the request did not ask for).
    Failed,
    /// The deadline passed first.
    TimedOut,
}

/// Answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub daemon: DaemonStatus,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub config: String,
    pub uptime_ms: u64,
    pub shutting_down: bool,
    /// How many times this daemon re-executed itself (`upgrade --self`): 0 for a daemon
    /// started fresh.
    #[serde(default)]
    pub execs: u32,
    /// Why the last `upgrade --self` failed to execute the new binary (holdfast goes on
    /// as it was); cleared by the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reexec_error: Option<String>,
    /// The service manager running holdfast itself (`systemd:holdfast.service`,
    /// `supervisord:holdfast`): it, not holdfast, restarts holdfast when it dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: ServiceName,
    /// The service's `group`, if it has one (`@group` targets in the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// Time in the current state.
    pub since_ms: u64,
    /// Time since the current run was spawned, while a process of it may be alive
    /// (starting, running, stopping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Automatic restarts since holdfast started (or the service was added).
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// Why the service is in its state (failed: the cause; backoff: the next attempt;
    /// waiting: the dependencies; stopping: who holds the stop up).
    pub reason: Option<String>,
    /// The service's own `STATUS=` text (sd_notify), if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// While stopping: processes of the service still alive.
    pub holding_up: Vec<ProcessInfo>,
    pub log: String,
    /// Health of the current run, for services with `[service.X.health]` while starting
    /// or running.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// Environment overrides set by an exit-code `restart` action, in force until a
    /// clean start or a start by hand.
    #[serde(default)]
    pub env_overrides: BTreeMap<String, String>,
    /// Memory charged to the service's cgroup (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`); `None` without a cgroup or a memory controller.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Tasks in the service's cgroup (`pids.current`, else the `cgroup.procs` count);
    /// `None` without a cgroup.
    #[serde(default)]
    pub tasks: Option<u64>,
    /// Why the last automatic restart happened (or the pending one, in backoff).
    #[serde(default)]
    pub last_restart_reason: Option<RestartReason>,
    /// For a service with `[service.X.upgrade]`: its build and the rollout under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// The latest crash report's id and one-line summary, since holdfast started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash: Option<CrashSummary>,
    /// For a service with `managed_by`: what its upstream says, and what holdfast did
    /// about it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<ManagedStatus>,
}

/// The upstream's view of an observed service (`managed_by`), beside holdfast's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedStatus {
    /// `systemd:web.service`, `supervisord:web`.
    pub upstream: String,
    /// holdfast runs it since it took it over (the upstream went away).
    pub taken_over: bool,
    /// The upstream's own words for the state (`RUNNING`, `active/running`), at the
    /// last sync that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Up this long, by the upstream's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Why the upstream does not answer, while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// What holdfast last did about it (`restart requested`, `restarted by upstream
    /// (pid 42)`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_arbitration: Option<String>,
    /// Taken over, and the upstream (back again) runs its own copy too: that copy's
    /// pid. holdfast leaves it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_pid: Option<u32>,
}

/// A crash report as listed: enough to pick one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashSummary {
    pub id: String,
    pub service: ServiceName,
    /// RFC 3339, UTC.
    pub time: String,
    pub pid: i32,
    /// One line: `panic: index out of range at main.go:42`, `killed by SIGSEGV`.
    pub summary: String,
    /// A core dump of the pid is stored.
    #[serde(default)]
    pub core: bool,
}

/// Why a service died, in one place: written by the daemon to
/// `<state_dir>/crashes/<id>.json` (and `<id>.txt` for people).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// `<service>-<UTC time>-<pid>`: sortable by time within a service, unique.
    pub id: String,
    pub service: ServiceName,
    pub pid: i32,
    /// When the exit was seen, RFC 3339 UTC.
    pub time: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub core_dumped: bool,
    /// The exit as people read it (`killed by SIGSEGV (core dumped)`).
    pub status: String,
    /// `crash`, or what holdfast killed a hung run for (`watchdog timeout`,
    /// `unhealthy`): the stacks then come from the dump signal, if one is configured.
    pub cause: String,
    /// Automatic restarts of the service before this exit.
    pub restarts: u32,
    /// `go_panic`, `go_fatal`, `go_signal`, `go_dump`, `rust_panic`, `signal`, `exit`, or
    /// `unknown` (an adopted process, whose exit status only its own parent learnt).
    pub kind: String,
    pub summary: String,
    /// The extracted panic block and stack frames, as printed.
    pub stack: Vec<String>,
    /// The last lines of the service's output (and holdfast's notes), oldest first.
    pub log: Vec<String>,
    /// The program the run executed, and its GNU build id when it has one.
    pub binary: Option<String>,
    pub build_id: Option<String>,
    /// The core dump, when the core handler stored one for this pid.
    #[serde(default)]
    pub core: Option<CoreRecord>,
}

/// A core dump stored by `holdfast core-handler` under `<state_dir>/crashes/cores/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreRecord {
    /// The record's file name in the cores directory.
    pub record: String,
    pub pid: i32,
    /// The thread that took the signal (`%i`): its stack is the crash's.
    #[serde(default)]
    pub tid: i32,
    /// The kernel's `%t`: seconds since the epoch of the dump.
    pub time: u64,
    /// The signal (number) that caused the dump.
    pub signal: i32,
    /// The executable's name as the kernel gave it (`%e`) and its path when known.
    pub comm: String,
    pub exe: Option<String>,
    /// The gzip-compressed core (None when it could not be stored).
    pub path: Option<String>,
    /// Bytes of core read from the kernel, and written compressed.
    pub size: u64,
    pub stored: u64,
    /// The core was larger than the cap: only its first `size` bytes were kept.
    pub truncated: bool,
    /// `gdb -batch -ex 'thread apply all bt'` on the binary and the core.
    pub backtrace: Vec<String>,
    /// Why there is no backtrace (gdb missing, timed out, failed).
    pub backtrace_error: Option<String>,
}

/// A service's builds: the one it runs and the rollout under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// `handover`, `reuseport` or `proxy`.
    pub mode: String,
    /// The build the current (or next) run executes.
    pub build: String,
    /// The symlink whose flips start an upgrade, if any.
    #[serde(default)]
    pub watch: Option<String>,
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
}

/// A rollout under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// `starting`, `draining` or `baking`.
    pub phase: String,
    pub from: String,
    pub to: String,
    /// Time in the phase.
    pub since_ms: u64,
    /// Why the rollout failed, once the old build is being restored.
    #[serde(default)]
    pub rolling_back: Option<String>,
}

/// What `target` names among `services`: the service of that name if there is one, else
/// every instance whose base name it is (`web` names `web@0`, `web@1`, ...).
pub fn named<'a>(services: &'a [ServiceStatus], target: &ServiceName) -> Vec<&'a ServiceStatus> {
    match services.iter().find(|s| &s.name == target) {
        Some(service) => vec![service],
        None => services
            .iter()
            .filter(|s| s.name.named_by(target))
            .collect(),
    }
}

impl Status {
    /// A daemon (pid 1, up for no time) with these services, for tests.
    #[doc(hidden)]
    pub fn sample(services: Vec<ServiceStatus>) -> Self {
        Self {
            daemon: DaemonStatus {
                pid: 1,
                version: "0.1.0".to_owned(),
                config: "/etc/holdfast/holdfast.toml".to_owned(),
                uptime_ms: 0,
                shutting_down: false,
                execs: 0,
                reexec_error: None,
                managed_by: None,
            },
            services,
        }
    }
}

impl ServiceStatus {
    /// A service in `state` with nothing else known, for tests to fill in.
    #[doc(hidden)]
    pub fn sample(name: &str, state: &str) -> Self {
        Self {
            name: ServiceName::new(name).expect("test names are valid"),
            group: None,
            state: serde::Deserialize::deserialize(serde::de::IntoDeserializer::<
                serde::de::value::Error,
            >::into_deserializer(state))
            .expect("test states are valid"),
            pid: None,
            since_ms: 0,
            uptime_ms: None,
            restarts: 0,
            last_exit: None,
            reason: None,
            status_text: None,
            holding_up: Vec::new(),
            log: format!("/var/log/holdfast/{name}.log"),
            health: None,
            env_overrides: BTreeMap::new(),
            memory_bytes: None,
            tasks: None,
            last_restart_reason: None,
            upgrade: None,
            last_crash: None,
            managed_by: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub state: HealthState,
    /// Failures counted within `degraded.within` and within `unhealthy.within`.
    pub failures_degraded_window: u32,
    pub failures_unhealthy_window: u32,
    /// Consecutive successes (recovery needs `recover.successes`).
    pub successes: u32,
    /// Probe results received in this run.
    pub probes: u64,
    /// Failures do not count yet (start `grace`).
    pub in_grace: bool,
    pub last_error: Option<String>,
}

/// One entry of the quarantine queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub service: ServiceName,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub reason: String,
    /// The last lines of the service's log at the time.
    pub log: Vec<String>,
    /// When it was released; `None` while pending.
    pub released: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// `exited 3`, `killed by SIGKILL`, `killed by SIGSEGV (core dumped)`.
    pub description: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub ago_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub command: String,
}

/// One event on the wire (`events`, `events -f`), stamped by the daemon. `kind` and
/// `data` are the serde form of [`holdfast_core::supervisor::event::EventKind`] (its variant's
/// name and its fields), kept as plain JSON here: clients, scripts and hooks read them
/// by name, and some data is a rendering that cannot be read back into the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increases by one per event published since the daemon started.
    pub seq: u64,
    /// When the daemon published it: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `None` for events of the daemon itself.
    pub service: Option<ServiceName>,
    /// snake_case, past tense: `spawned`, `exited`, `restart_scheduled`, `gave_up`, ...
    /// (every name: [`crate::supervisor::event::kinds`]).
    pub kind: String,
    /// The human sentence, which says why (`pid 42 exited 3`).
    pub message: String,
    /// The event's facts (`pid`, `run`, `exit_code`, `signal`, `delay_ms`, `attempt`...).
    pub data: BTreeMap<String, serde_json::Value>,
}

impl EventRecord {
    /// Whether the record passes an `events` filter: of `service` (all when `None`; a
    /// service's base name takes in its instances) and after seq `since`.
    pub fn matches(&self, service: Option<&ServiceName>, since: Option<u64>) -> bool {
        service.is_none_or(|s| self.service.as_ref().is_some_and(|r| r.named_by(s)))
            && since.is_none_or(|since| self.seq > since)
    }
}
