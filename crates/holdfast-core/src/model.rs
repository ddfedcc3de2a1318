//! The validated, typed plan that the supervisor runs.
//!
//! A `Plan` is only ever built by `config::validate`, so every value in it has been
//! checked: names are well-formed, `after` targets exist and form no cycle, limits are in
//! range. Code downstream of the config layer never re-validates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::unix::Signal;
use serde::{Deserialize, Serialize};

mod daemon;
mod dump;
mod log;
mod managed;
mod privs;
mod upgrade;
pub use daemon::{DaemonSettings, GroupRef, PRIVATE_ENV};
pub use dump::DumpSpec;
pub use log::{LogForward, LogSpec};
pub use managed::{
    ARBITER_TIMEOUT, HEALTH_GRACE_PERIOD, ManagedBy, SUPERVISORD_SERVERURL, SYNC_INTERVAL,
    SupervisordAccess, SupervisordServer, Takeover, Upstream,
};
pub use privs::{
    CAPABILITY_NAMES, Capability, CgroupLimits, Credentials, Limits, Privileges, Rlimit, UserRef,
};
pub use upgrade::{
    Checksum, Listen, ListenAddr, ProxyProtocol, ProxySpec, UpgradeMode, UpgradeSpec, Verify,
    defaults as upgrade_defaults,
};

/// Everything holdfast runs: daemon settings plus services in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub daemon: DaemonSettings,
    pub services: BTreeMap<ServiceName, ServiceSpec>,
}

/// A service name: non-empty, `[A-Za-z0-9_.-]`, at most 64 bytes, not starting with `.`
/// or `-`. It is used in file names and in the control protocol, so the charset matters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub const MAX_LEN: usize = 64;
    /// The target that means every service on the command line, so no service may
    /// have this name.
    pub const ALL: &'static str = "all";

    /// A name as the config writes it, or one instance of it (`web@1`, see
    /// [`ServiceName::instance`]): names come back over the wire and from the command
    /// line in both forms. The config itself rejects `@` in its keys.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        let base = match split_instance(&name) {
            Some((base, _)) => base,
            None => &name,
        };
        if !Self::is_plain(base) || name.len() > Self::MAX_LEN + INSTANCE_SUFFIX_MAX {
            return Err(InvalidName(name));
        }
        Ok(Self(name))
    }

    /// Whether `name` is valid as a config key: 1-64 of `[A-Za-z0-9_.-]`, not starting
    /// with `.` or `-` (no `@`: that marks an instance).
    pub fn is_plain(name: &str) -> bool {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && !name.starts_with(['.', '-'])
            && name.chars().all(valid_char)
    }

    /// The name of instance `index` of the service `self` (`web` -> `web@1`).
    pub fn instance(&self, index: u32) -> ServiceName {
        Self(format!("{}@{index}", self.base()))
    }

    /// The service this name is an instance of (`web@1` -> `web`), or the name itself.
    pub fn base(&self) -> &str {
        split_instance(&self.0).map_or(&self.0, |(base, _)| base)
    }

    /// Whether the target `target` names this service: it is this name, or the base name
    /// of this instance (`web` names `web@1`).
    pub fn named_by(&self, target: &ServiceName) -> bool {
        self == target || (self.instance_index().is_some() && self.base() == target.as_str())
    }

    /// The instance number of `web@1`; `None` for a plain name.
    pub fn instance_index(&self) -> Option<u32> {
        split_instance(&self.0).map(|(_, index)| index)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest `@N` suffix: `@` and the digits of a `u32`.
const INSTANCE_SUFFIX_MAX: usize = 11;

/// `web@12` -> (`web`, 12). Only the canonical form counts (no sign, no leading zero),
/// so every instance has exactly one name.
fn split_instance(name: &str) -> Option<(&str, u32)> {
    let (base, digits) = name.rsplit_once('@')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((base, digits.parse().ok()?))
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ServiceName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, InvalidName> {
        Self::new(s)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        Self::new(s)
    }
}

impl From<ServiceName> for String {
    fn from(n: ServiceName) -> String {
        n.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid service name {0:?}: use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)"
)]
pub struct InvalidName(pub String);

/// Which copy of a service a spec runs (`instances = N` in the config): instance `index`
/// (0..N-1) of the config table `base`. N itself is not kept, so a reload that changes
/// it adds or removes instances without touching the others' specs (and runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub base: ServiceName,
    pub index: u32,
}

/// One service, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    /// Program and arguments; never empty. The program is looked up in `PATH` when it
    /// contains no `/`.
    pub command: Vec<String>,
    /// Laid over the service's clean environment (see `supervisor::recipe`), overriding
    /// any variable of it but `HOLDFAST_SERVICE` and `INVOCATION_ID`.
    pub env: BTreeMap<String, String>,
    /// Start from holdfast's own environment (minus [`PRIVATE_ENV`]) instead of a clean
    /// one (`PATH`, `LANG` and the `[holdfast] pass_env` variables).
    pub inherit_env: bool,
    pub working_dir: Option<PathBuf>,
    /// Start ordering: this service starts after these are running (systemd `After=`:
    /// ordering only, not a requirement). Stop order is the reverse.
    pub after: Vec<ServiceName>,
    /// `service_group = "backend"`: a label that lets the CLI act on several services at
    /// once (`holdfast restart @backend`). Changing it alone restarts nothing. (The
    /// config key `group` is the Unix group, in `privileges`.)
    pub group: Option<String>,
    /// Started when holdfast starts (and when added by a reload).
    pub autostart: bool,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub start_limit: StartLimit,
    /// supervisord's `startsecs`: a process must stay up this long to count as started;
    /// dying sooner is a failed start, whatever its exit code. When not configured it is
    /// [`Readiness::default_start_secs`]: 1 s without `ready`, 0 with it (the service is
    /// running as soon as it is ready).
    pub start_secs: Duration,
    pub stop: StopSpec,
    pub log: LogSpec,
    /// Commands run on this service's events (`[service.X.on]`).
    pub hooks: Hooks,
    /// User, groups, umask, capabilities, no_new_privs, CPU affinity, OOM score.
    pub privileges: Privileges,
    /// rlimits (`limits.nofile`, ...).
    pub limits: Limits,
    /// cgroup limits (`limits.memory`, `limits.pids`, ...).
    pub cgroup: CgroupLimits,
    /// How the service says it is up; until then it is `starting` and dependents wait
    /// (and also until `start_secs` passed, which defaults to 0 with a `ready` mode).
    pub ready: Readiness,
    /// A service not ready this long after its spawn is a failed start (systemd
    /// `TimeoutStartSec=`). Only matters when `ready` is not `None` or `kind` is forking.
    pub start_timeout: Timeout,
    /// Keep-alive interval (systemd `WatchdogSec=`): the service must send `WATCHDOG=1`
    /// at least this often once running, or it is aborted and restarted.
    pub watchdog: Option<Duration>,
    pub kind: ServiceKind,
    /// `[service.X.health]`: periodic probes and their decay thresholds.
    pub health: Option<HealthSpec>,
    /// `[service.X.exit_codes]`: what an exit with a given code or signal does instead of
    /// the restart policy. Unmapped exits follow the policy.
    pub exit_codes: BTreeMap<ExitKey, ExitAction>,
    /// `Some` for each copy of a service with `instances = N` (N > 1), whose `name` is
    /// then `base@index`; `None` for a service that runs once under its own name.
    pub instance: Option<Instance>,
    /// Sockets holdfast binds and passes to every run (`listen`, `backlog`); with
    /// `upgrade.mode = "proxy"`, the public addresses of the proxy instead.
    pub listen: Listen,
    /// `[service.X.upgrade]`: zero-downtime replacement of the running build.
    pub upgrade: Option<UpgradeSpec>,
    /// What a holdfast started after its predecessor died does with the processes of
    /// this service that outlived it.
    pub on_restart: OnRestart,
    /// `managed_by`: another supervisor runs this service and holdfast observes it
    /// (then `command` may be empty: it is only run after a takeover).
    pub managed_by: Option<ManagedBy>,
}

/// `on_restart`: what becomes of a service's processes that outlived a holdfast that was
/// killed, when the next holdfast starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRestart {
    /// Supervised again as they are: no restart, no second copy.
    #[default]
    Adopt,
    /// Stopped cleanly (stop signal, timeout, SIGKILL), then started afresh.
    Stop,
}

/// How a service signals that it is ready (systemd `Type=`, s6 `notification-fd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready once spawned (and running once up for `start_secs`).
    None,
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// s6 protocol: the service writes a newline to this fd.
    Fd(i32),
    /// A TCP connect to this address succeeds; port 0: the run's private port (`ProxySpec`).
    Tcp(std::net::SocketAddr),
    /// A GET of this `http://` URL answers 2xx; port 0: the run's private port.
    Http(String),
    /// The first successful health probe (wired by the health module).
    Health,
}

impl Readiness {
    /// `start_secs` when the config sets none. A service without a readiness signal must
    /// stay up for a while to count as started (supervisord's `startsecs`); one with a
    /// signal is running as soon as it is ready, like systemd's `Type=notify`, so an
    /// `after` link costs no more than the dependency's own start.
    pub fn default_start_secs(&self) -> Duration {
        match self {
            Readiness::None => defaults::START_SECS,
            _ => defaults::START_SECS_WITH_READY,
        }
    }

    /// Whether holdfast must pass `NOTIFY_SOCKET` for this readiness mode.
    pub fn needs_notify_socket(&self) -> bool {
        matches!(self, Readiness::Notify)
    }
}

/// How the service's processes are laid out (systemd `Type=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// The spawned process is the service.
    Simple,
    /// The spawned process forks the daemon and exits 0; the daemon writes its pid to
    /// `pidfile`, and holdfast (a subreaper, so the daemon is reparented to it) adopts
    /// that pid as the main process.
    Forking { pidfile: PathBuf },
}

/// When an exited service is started again (systemd `Restart=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    /// Restart unless the exit was clean: code 0, or one of SIGHUP, SIGINT, SIGTERM,
    /// SIGPIPE (systemd's definition of a clean exit).
    OnFailure,
    Always,
}

/// Delay before an automatic restart. `Fixed` is systemd's `RestartSec=`; `Exponential`
/// doubles (by `factor`) per consecutive failure up to `max`, with +/- `jitter` spread,
/// and forgets the failures once the service stayed up for `reset_after`.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    Fixed(Duration),
    Exponential {
        initial: Duration,
        max: Duration,
        factor: f64,
        /// Fraction in `[0, 1)`: the delay is spread uniformly over `d * (1 +/- jitter)`.
        jitter: f64,
        reset_after: Duration,
    },
}

/// At most `burst` automatic restarts within any `interval`; one more puts the service in
/// `failed` until it is started by hand (systemd `StartLimitIntervalSec=`/`Burst=`,
/// counting restarts like supervisord's `startretries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// How a service is stopped: `signal` to its whole process group, then SIGKILL to the
/// group after `timeout` (never with `Timeout::Never`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSpec {
    pub signal: Signal,
    pub timeout: Timeout,
    /// `dump_signal`: before holdfast kills a hung run (watchdog timeout, UNHEALTHY,
    /// stop timeout), this signal first (QUIT: a Go runtime prints every goroutine's
    /// stack), so the crash report holds the stacks of what was stuck.
    pub dump: Option<DumpSpec>,
}

/// A time limit that can be switched off, like systemd's `TimeoutStartSec=infinity`.
/// `Never` is not a huge duration: the core arms no timer for it at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    After(Duration),
    Never,
}

impl Timeout {
    /// The limit, if there is one.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Timeout::After(d) => Some(d),
            Timeout::Never => None,
        }
    }

    /// The deadline for a wait that begins at `from`, if there is one.
    pub fn deadline(self, from: std::time::Instant) -> Option<std::time::Instant> {
        self.duration().map(|d| crate::clock::later(from, d))
    }
}

impl std::fmt::Display for Timeout {
    /// As the config writes it: `"10s"` or `"infinity"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timeout::After(d) => write!(f, "{}", humantime::format_duration(*d)),
            Timeout::Never => f.write_str("infinity"),
        }
    }
}

/// `[service.X.on]`: a command per event kind, run when the service publishes an event
/// of that kind, with the event in `HOLDFAST_*` variables. A hook still running after
/// `timeout` is killed with its whole process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Event kind (`exited`, `gave_up`, ...; validated) → program and arguments.
    pub on: BTreeMap<String, Vec<String>>,
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            on: BTreeMap::new(),
            timeout: defaults::HOOK_TIMEOUT,
        }
    }
}

impl ServiceSpec {
    /// A spec with holdfast's defaults, for tests and for the embedded demo config.
    pub fn with_defaults(name: ServiceName, command: Vec<String>) -> Self {
        Self {
            name,
            command,
            env: BTreeMap::new(),
            inherit_env: false,
            working_dir: None,
            after: Vec::new(),
            group: None,
            autostart: true,
            restart: RestartPolicy::OnFailure,
            backoff: Backoff::Fixed(defaults::RESTART_SEC),
            start_limit: StartLimit {
                interval: defaults::START_LIMIT_INTERVAL,
                burst: defaults::START_LIMIT_BURST,
            },
            start_secs: defaults::START_SECS,
            stop: StopSpec {
                signal: Signal::SIGTERM,
                timeout: Timeout::After(defaults::STOP_TIMEOUT),
                dump: None,
            },
            log: LogSpec {
                max_size: defaults::LOG_MAX_SIZE,
                keep: defaults::LOG_KEEP,
                forward: LogForward::FileOnly,
            },
            hooks: Hooks::default(),
            privileges: Privileges::default(),
            limits: Limits::default(),
            cgroup: CgroupLimits::default(),
            ready: Readiness::None,
            start_timeout: Timeout::After(defaults::START_TIMEOUT),
            watchdog: None,
            kind: ServiceKind::Simple,
            health: None,
            exit_codes: BTreeMap::new(),
            instance: None,
            listen: Listen {
                addrs: Vec::new(),
                backlog: upgrade_defaults::BACKLOG,
            },
            upgrade: None,
            on_restart: OnRestart::Adopt,
            managed_by: None,
        }
    }
}

pub mod defaults;

/// How a process ended, as reported by `waitid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled {
        signal: Signal,
        core_dumped: bool,
    },
    /// Killed (SIGKILL) by the kernel's OOM killer, as the service's cgroup counted it.
    OomKilled,
    /// A process holdfast adopted after a restart (started by the holdfast before it,
    /// which was killed) ended: it is not holdfast's child, and a kernel older than 6.15
    /// tells its exit status to its parent only. Counts as a failure.
    Unknown,
}

impl ExitStatus {
    /// systemd's notion of a clean exit: code 0, or death by SIGHUP, SIGINT, SIGTERM or
    /// SIGPIPE (signals a service gets when it is asked to go away).
    pub fn is_clean(self) -> bool {
        match self {
            ExitStatus::Exited(code) => code == 0,
            ExitStatus::Signaled { signal, .. } => matches!(
                signal,
                Signal::SIGHUP | Signal::SIGINT | Signal::SIGTERM | Signal::SIGPIPE
            ),
            ExitStatus::OomKilled | ExitStatus::Unknown => false,
        }
    }

    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            ExitStatus::Signaled { .. } | ExitStatus::OomKilled | ExitStatus::Unknown => None,
        }
    }

    pub fn signal(self) -> Option<Signal> {
        match self {
            ExitStatus::Exited(_) | ExitStatus::Unknown => None,
            ExitStatus::Signaled { signal, .. } => Some(signal),
            ExitStatus::OomKilled => Some(Signal::SIGKILL),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped: false,
            } => write!(f, "killed by {}", signal.as_str()),
            ExitStatus::Signaled {
                signal,
                core_dumped: true,
            } => write!(f, "killed by {} (core dumped)", signal.as_str()),
            ExitStatus::OomKilled => f.write_str("oom-killed"),
            ExitStatus::Unknown => f.write_str("exited (status unknown: adopted process)"),
        }
    }
}

/// Why a process could not be started, in terms that need no system types: what kind
/// of step failed, and the system's own account of it. The shell classifies its spawn
/// errors into this once (`supervisor::spawn_failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnCause {
    pub kind: SpawnErrorKind,
    /// The failed step with its arguments and the OS error, e.g.
    /// `exec "/bin/nope": ENOENT: No such file or directory`.
    pub detail: String,
}

/// What went wrong starting a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnErrorKind {
    /// The program or the working directory does not exist.
    NotFound,
    /// The program or the working directory may not be used (not executable, no access).
    PermissionDenied,
    /// Taking on the user, groups or capabilities failed.
    Credentials,
    /// Creating, configuring or joining the cgroup failed.
    Cgroup,
    /// Applying resource limits, CPU affinity or the OOM score failed.
    Limits,
    /// Anything else: descriptors, output capture, creating the child.
    Other,
}

impl SpawnCause {
    pub fn new(kind: SpawnErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for SpawnCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Health checking of one service (`[service.X.health]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub probe: Probe,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// A probe that has not answered by then failed; never longer than `interval`.
    pub timeout: Duration,
    pub decay: DecaySpec,
    pub unhealthy_action: UnhealthyAction,
}

/// One health check.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `GET` over plain HTTP/1.1; success is a status in `status` and, if set, `body`
    /// occurring in the response body.
    Http {
        url: String,
        /// `host:port` to connect to; port 0 (also in `url`): the run's private port.
        authority: String,
        /// Path and query sent in the request line.
        path: String,
        status: std::ops::RangeInclusive<u16>,
        body: Option<String>,
    },
    /// A TCP connect to `host:port` that succeeds; port 0: the run's private port.
    Tcp { address: String },
    /// A command that exits 0 (run with the service's environment, output discarded).
    Exec { command: Vec<String> },
}

/// The thresholds of the OK → DEGRADED → UNHEALTHY decay (see `health::decay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecaySpec {
    /// Failures after the service's spawn and before `grace` has passed do not count.
    pub grace: Duration,
    pub degraded: Threshold,
    pub unhealthy: Threshold,
    /// Consecutive successes that bring a degraded or unhealthy service back to OK.
    pub recover_successes: u32,
}

/// `failures` within a sliding window of `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub failures: u32,
    pub within: Duration,
}

/// What reaching UNHEALTHY does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnhealthyAction {
    /// Stop the service (its normal stop) and let the restart policy act on the failure.
    Restart,
    /// Report only.
    None,
}

/// A key of `[service.X.exit_codes]`: an exit code or a terminating signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitKey {
    Code(i32),
    Signal(i32),
}

impl ExitKey {
    /// The key an exit status is looked up under; none for an unknown status.
    pub fn of(status: ExitStatus) -> Option<Self> {
        match status {
            ExitStatus::Exited(code) => Some(ExitKey::Code(code)),
            ExitStatus::Signaled { signal, .. } => Some(ExitKey::Signal(signal as i32)),
            // An OOM kill is a SIGKILL: `SIGKILL = { ... }` maps it.
            ExitStatus::OomKilled => Some(ExitKey::Signal(Signal::SIGKILL as i32)),
            ExitStatus::Unknown => None,
        }
    }
}

impl fmt::Display for ExitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKey::Code(code) => write!(f, "exit code {code}"),
            ExitKey::Signal(n) => match Signal::try_from(*n) {
                Ok(signal) => f.write_str(signal.as_str()),
                Err(_) => write!(f, "signal {n}"),
            },
        }
    }
}

/// What an exit mapped in `[service.X.exit_codes]` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Restart whatever the restart policy says (the start limit still applies), after
    /// `delay` (else the usual backoff delay), with `env` laid over the service's
    /// environment until the next clean start or a manual start/restart.
    Restart {
        delay: Option<Duration>,
        env: BTreeMap<String, String>,
    },
    /// Stop restarting; record the exit in `<state_dir>/quarantine.jsonl` for review.
    Quarantine,
    /// Treat the exit as a success.
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_is_its_base_an_at_sign_and_a_canonical_number() {
        let web = ServiceName::new("web").unwrap();
        let second = web.instance(1);
        assert_eq!(second.as_str(), "web@1");
        assert_eq!(second.base(), "web");
        assert_eq!(second.instance_index(), Some(1));
        assert_eq!(ServiceName::new("web@1").unwrap(), second);
        assert_eq!(web.base(), "web");
        assert_eq!(web.instance_index(), None);
        assert!(second.named_by(&web) && second.named_by(&second) && web.named_by(&web));
        assert!(!web.named_by(&second));
        assert!(!ServiceName::new("webx@1").unwrap().named_by(&web));
        for bad in ["web@", "web@01", "web@-1", "web@x", "@1", "web@1@2", "a@b"] {
            assert!(ServiceName::new(bad).is_err(), "{bad} is not a name");
        }
    }

    #[test]
    fn a_plain_name_has_no_at_sign() {
        assert!(ServiceName::is_plain("web-1.x_y"));
        assert!(!ServiceName::is_plain("web@1"));
        assert!(!ServiceName::is_plain(""));
        assert!(!ServiceName::is_plain("-web"));
    }
}
