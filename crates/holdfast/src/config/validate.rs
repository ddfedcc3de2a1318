//! Raw config → [`Plan`]: every rule that serde cannot express.
//!
//! Validation never stops at the first problem: each check records a [`Problem`] at the
//! offending value and carries on with a default, so one run reports everything. The
//! returned plan is only meaningful when no problems were recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Group;
use serde_spanned::Spanned;

mod hooks;
pub mod host;
mod instances;
mod ports;

use super::diagnostic::{Problem, closest};
use super::raw::{Partial, RawCommand, RawConfig, RawDaemon, RawDuration, RawService, RawSize};
use super::value::{self, Infinity, ValueError};
use crate::model::{
    Backoff, DaemonSettings, GroupRef, LogSpec, PRIVATE_ENV, Plan, RestartPolicy, ServiceName,
    ServiceSpec, StartLimit, StopSpec, Timeout, defaults,
};

mod recovery;

/// Smallest `log.max_size`: below this rotation would churn on every few lines.
const MIN_LOG_SIZE: u64 = 4 * 1024;

const RESTART_POLICIES: [(&str, RestartPolicy); 3] = [
    ("no", RestartPolicy::No),
    ("on-failure", RestartPolicy::OnFailure),
    ("always", RestartPolicy::Always),
];

/// Checks `raw` and builds the plan, appending every problem found to `problems`. With
/// `host`, also checks what would fail at spawn on that machine ([`host`]).
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
    host: Option<&dyn host::HostFacts>,
    problems: &mut Vec<Problem>,
) -> Plan {
    let mut v = Validator { problems };
    let daemon = v.daemon(raw.daemon.map(|d| d.value).unwrap_or_default(), base_dir);

    // Every declared name counts as existing, even if its table had errors, so a typo in
    // one service does not also produce "unknown service" errors in the others.
    let declared: BTreeSet<&str> = raw
        .services
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    let mut services = BTreeMap::new();
    let mut edges = Vec::new();
    for entry in &raw.services {
        let name = v.service_name(&entry.name);
        let Some(body) = &entry.body else { continue };
        let spec = v.service(&entry.name, name.clone(), body, &declared, &mut edges);
        if let (Some(name), Some(spec)) = (name, spec) {
            services.insert(name, spec);
        }
    }
    v.cycles(&edges);
    v.ready_ports(&raw.services, &services);
    if let Some(host) = host {
        for entry in &raw.services {
            let (Some(body), Ok(name)) = (&entry.body, ServiceName::new(entry.name.get_ref()))
            else {
                continue;
            };
            if let Some(spec) = services.get(&name) {
                host::check_service(
                    name.as_str(),
                    &body.value,
                    spec,
                    &daemon.pass_env,
                    host,
                    v.problems,
                );
            }
        }
    }
    let counts = instances::counts(&raw.services, v.problems);
    let services = instances::expand(services, &counts);
    Plan { daemon, services }
}

/// An `after` edge: `from` starts after `to`; `span` is the entry in `from`'s list.
struct Edge {
    from: String,
    to: String,
    span: std::ops::Range<usize>,
}

pub(super) struct Validator<'p> {
    problems: &'p mut Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Two services may not wait for the same readiness port ([`ports`]).
    fn ready_ports(
        &mut self,
        raw: &[super::raw::RawServiceEntry],
        services: &BTreeMap<ServiceName, ServiceSpec>,
    ) {
        let claims = raw
            .iter()
            .filter_map(|entry| {
                let span = entry.body.as_ref()?.value.ready.as_ref()?.span();
                let name = ServiceName::new(entry.name.get_ref()).ok()?;
                let (svc, spec) = services.get_key_value(&name)?;
                let addr = ports::ready_addr(&spec.ready)?;
                Some(ports::Claim {
                    svc: svc.as_str(),
                    addr,
                    span,
                })
            })
            .collect();
        self.problems.extend(ports::duplicates(claims));
    }

    fn daemon(&mut self, raw: RawDaemon, base_dir: &Path) -> DaemonSettings {
        DaemonSettings {
            control: self.path(raw.control.as_ref(), "control", defaults::CONTROL, base_dir),
            control_group: raw.control_group.as_ref().and_then(|g| self.group(g)),
            state_dir: self.path(
                raw.state_dir.as_ref(),
                "state_dir",
                defaults::STATE_DIR,
                base_dir,
            ),
            log_dir: self.path(raw.log_dir.as_ref(), "log_dir", defaults::LOG_DIR, base_dir),
            pass_env: self.pass_env(raw.pass_env.as_deref().unwrap_or_default()),
        }
    }

    /// `holdfast.pass_env`: names of variables, none of them holdfast's private ones.
    fn pass_env(&mut self, raw: &[Spanned<String>]) -> Vec<String> {
        let mut names = Vec::new();
        for name in raw {
            let n = name.get_ref();
            if let Some(label) = bad_env_name(n) {
                self.push(
                    Problem::new(
                        format!("invalid environment variable name {n:?} in `holdfast.pass_env`"),
                        name.span(),
                        label,
                    )
                    .with_help("use a non-empty name without '=' or NUL, e.g. LC_ALL"),
                );
            } else if PRIVATE_ENV.contains(&n.as_str()) {
                self.push(
                    Problem::new(
                        format!("`{n}` in `holdfast.pass_env` is holdfast's own"),
                        name.span(),
                        "never passed on",
                    )
                    .with_help(
                        "it describes holdfast's situation, not a service's: remove it from the list",
                    ),
                );
            } else if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    fn path(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: &str,
        base_dir: &Path,
    ) -> PathBuf {
        let Some(raw) = raw else {
            return PathBuf::from(default);
        };
        if raw.get_ref().is_empty() {
            self.push(
                Problem::new(
                    format!("`holdfast.{key}` is empty"),
                    raw.span(),
                    "empty path",
                )
                .with_help(format!("remove the key to use the default \"{default}\"")),
            );
            return PathBuf::from(default);
        }
        base_dir.join(raw.get_ref())
    }

    fn group(&mut self, raw: &Spanned<String>) -> Option<GroupRef> {
        let name = raw.get_ref();
        match Group::from_name(name) {
            Ok(Some(group)) => Some(GroupRef {
                name: name.clone(),
                gid: group.gid.as_raw(),
            }),
            Ok(None) => {
                self.push(
                    Problem::new(
                        format!("unknown group `{name}` in `holdfast.control_group`"),
                        raw.span(),
                        "no such group",
                    )
                    .with_help(format!(
                        "create it (groupadd {name}) or name an existing group from /etc/group"
                    )),
                );
                None
            }
            Err(errno) => {
                self.push(Problem::new(
                    format!("failed to look up group `{name}`"),
                    raw.span(),
                    errno.desc(),
                ));
                None
            }
        }
    }

    fn service_name(&mut self, raw: &Spanned<String>) -> Option<ServiceName> {
        if raw.get_ref().contains('@') {
            self.push(instances::at_in_key(raw));
            return None;
        }
        match ServiceName::new(raw.get_ref().clone()) {
            // The CLI reads `all` as every service (`holdfast restart all`).
            Ok(name) if name.as_str() == ServiceName::ALL => {
                self.push(
                    Problem::new(
                        "the service name \"all\" is reserved".to_owned(),
                        raw.span(),
                        "reserved name",
                    )
                    .with_help(
                        "`all` names every service on the command line; choose another name",
                    ),
                );
                None
            }
            Ok(name) => Some(name),
            Err(_) => {
                self.push(
                    Problem::new(
                        format!("invalid service name {:?}", raw.get_ref()),
                        raw.span(),
                        "invalid name",
                    )
                    .with_help(
                        "use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)",
                    ),
                );
                None
            }
        }
    }

    /// A group name follows the rules of service names: the CLI reads it after `@`.
    fn service_group(&mut self, svc: &str, raw: &Spanned<String>) -> Option<String> {
        if ServiceName::is_plain(raw.get_ref()) {
            return Some(raw.get_ref().clone());
        }
        self.push(
            Problem::new(
                format!(
                    "invalid group name {:?} in `service.{svc}.service_group`",
                    raw.get_ref()
                ),
                raw.span(),
                "invalid group name",
            )
            .with_help("use 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . or -)"),
        );
        None
    }

    fn service(
        &mut self,
        raw_name: &Spanned<String>,
        name: Option<ServiceName>,
        partial: &Partial<RawService>,
        declared: &BTreeSet<&str>,
        edges: &mut Vec<Edge>,
    ) -> Option<ServiceSpec> {
        let svc = raw_name.get_ref().as_str();
        let raw = &partial.value;
        let command_is_bad = partial.bad_keys.iter().any(|k| k == "command");
        let command = if command_is_bad {
            None
        } else {
            self.command(raw_name, raw)
        };
        let env = self.env(svc, raw);
        let working_dir = raw.working_dir.as_ref().and_then(|dir| {
            if Path::new(dir.get_ref()).is_absolute() {
                Some(PathBuf::from(dir.get_ref()))
            } else {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.working_dir` is not absolute"),
                        dir.span(),
                        "relative path",
                    )
                    .with_help("write an absolute path, e.g. \"/srv/app\""),
                );
                None
            }
        });
        let after = self.after(raw_name, raw, declared, edges);
        let group = raw
            .service_group
            .as_ref()
            .and_then(|g| self.service_group(svc, g));
        let restart = match &raw.restart {
            None => RestartPolicy::OnFailure,
            Some(policy) => self.restart(svc, policy),
        };
        let restart_sec = self.duration(
            raw.restart_sec.as_ref(),
            svc,
            "restart_sec",
            defaults::RESTART_SEC,
        );
        let backoff = match &raw.backoff {
            None => Backoff::Fixed(restart_sec),
            Some(backoff) => self.backoff(svc, backoff.get_ref(), raw, restart_sec),
        };
        let start_limit = self.start_limit(svc, raw);
        let stop = self.stop(svc, raw);
        let log = self.log(svc, raw);
        let hooks = self.hooks(svc, raw);
        let privileges = super::privs::privileges(svc, raw, self.problems);
        let (limits, cgroup) = super::privs::limits(svc, raw, self.problems);
        let readiness = self.readiness(svc, raw);
        // A service that says when it is ready is running once it is: no start_secs
        // unless the file asks for one.
        let start_secs = self.duration(
            raw.start_secs.as_ref(),
            svc,
            "start_secs",
            readiness.ready.default_start_secs(),
        );
        let health = raw.health.as_ref().and_then(|h| self.health(svc, h));
        let exit_codes = self.exit_codes(svc, raw);
        if let (crate::model::Readiness::Health, None, Some(ready)) =
            (&readiness.ready, &health, &raw.ready)
        {
            self.push(
                Problem::new(
                    format!("`service.{svc}.ready = \"health\"` needs a health probe"),
                    ready.span(),
                    format!("no [service.{svc}.health]"),
                )
                .with_help(format!(
                    "add [service.{svc}.health] with http, tcp or exec, or choose another ready mode"
                )),
            );
        }

        Some(ServiceSpec {
            name: name?,
            command: command?,
            env,
            inherit_env: raw.inherit_env.unwrap_or(false),
            working_dir,
            after,
            group,
            autostart: raw.autostart.unwrap_or(true),
            restart,
            backoff,
            start_limit,
            start_secs,
            stop,
            log,
            hooks,
            privileges,
            limits,
            cgroup,
            ready: readiness.ready,
            start_timeout: readiness.start_timeout,
            watchdog: readiness.watchdog,
            kind: readiness.kind,
            health,
            exit_codes,
            // Filled in per copy by `instances::expand`.
            instance: None,
        })
    }

    fn command(&mut self, raw_name: &Spanned<String>, raw: &RawService) -> Option<Vec<String>> {
        let svc = raw_name.get_ref();
        let Some(command) = &raw.command else {
            self.push(
                Problem::new(
                    format!("service `{svc}` has no `command`"),
                    raw_name.span(),
                    "missing `command`",
                )
                .with_help(
                    "add the program and its arguments: command = [\"/usr/bin/prog\", \"arg\"]",
                ),
            );
            return None;
        };
        match command.get_ref() {
            RawCommand::Line(line) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let suggestion = if words.is_empty() {
                    "command = [\"prog\", \"arg\"]".to_owned()
                } else {
                    format!("command = {words:?}")
                };
                self.push(
                    Problem::new(format!("`service.{svc}.command` must be an array"), command.span(), "a plain string")
                        .with_help(format!(
                            "write {suggestion}: holdfast runs no shell, so each argument is its own string"
                        )),
                );
                None
            }
            RawCommand::Args(args) if args.is_empty() => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.command` is empty"),
                        command.span(),
                        "no program",
                    )
                    .with_help(
                        "name the program to run first: command = [\"/usr/bin/prog\", \"arg\"]",
                    ),
                );
                None
            }
            RawCommand::Args(args) => {
                let mut ok = true;
                if args[0].get_ref().is_empty() {
                    ok = false;
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.command` has an empty program name"),
                            args[0].span(),
                            "empty",
                        )
                        .with_help(
                            "the first element is the program: a path or a name looked up in PATH",
                        ),
                    );
                }
                for arg in args.iter().filter(|a| a.get_ref().contains('\0')) {
                    ok = false;
                    self.push(Problem::new(
                        format!("`service.{svc}.command` has an argument containing NUL"),
                        arg.span(),
                        "contains \\u0000",
                    ));
                }
                ok.then(|| args.iter().map(|a| a.get_ref().clone()).collect())
            }
        }
    }

    fn env(&mut self, svc: &str, raw: &RawService) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            let k = key.get_ref();
            if let Some(label) = bad_env_name(k) {
                self.push(
                    Problem::new(
                        format!("invalid environment variable name {k:?} in `service.{svc}.env`"),
                        key.span(),
                        label,
                    )
                    .with_help("use a non-empty name without '=' or NUL, e.g. DB_HOST"),
                );
            } else if value.get_ref().contains('\0') {
                self.push(Problem::new(
                    format!("environment variable `{k}` in `service.{svc}.env` contains NUL"),
                    value.span(),
                    "contains \\u0000",
                ));
            } else {
                env.insert(k.clone(), value.get_ref().clone());
            }
        }
        env
    }

    fn after(
        &mut self,
        raw_name: &Spanned<String>,
        raw: &RawService,
        declared: &BTreeSet<&str>,
        edges: &mut Vec<Edge>,
    ) -> Vec<ServiceName> {
        let svc = raw_name.get_ref().as_str();
        let mut after: Vec<ServiceName> = Vec::new();
        for target in raw.after.iter().flatten() {
            let t = target.get_ref().as_str();
            if t == svc {
                self.push(
                    Problem::new(
                        format!("service `{svc}` lists itself in `after`"),
                        target.span(),
                        "self-reference",
                    )
                    .with_help(format!("remove \"{svc}\" from `after`")),
                );
            } else if !declared.contains(t) {
                let help = match closest(t, declared.iter().copied().filter(|d| *d != svc)) {
                    Some(best) => {
                        format!("did you mean \"{best}\"? `after` names other [service.*] tables")
                    }
                    None => format!(
                        "`after` names other [service.*] tables; declared: {}",
                        declared.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.push(
                    Problem::new(
                        format!("unknown service `{t}` in `service.{svc}.after`"),
                        target.span(),
                        "no such service",
                    )
                    .with_help(help),
                );
            } else {
                edges.push(Edge {
                    from: svc.to_owned(),
                    to: t.to_owned(),
                    span: target.span(),
                });
                // The target exists, so its name is checked where it is declared.
                if let Ok(name) = ServiceName::new(t) {
                    if !after.contains(&name) {
                        after.push(name);
                    }
                }
            }
        }
        after
    }

    fn restart(&mut self, svc: &str, raw: &Spanned<String>) -> RestartPolicy {
        let text = raw.get_ref().as_str();
        if let Some((_, policy)) = RESTART_POLICIES.iter().find(|(name, _)| *name == text) {
            return *policy;
        }
        let names = RESTART_POLICIES.map(|(name, _)| name);
        let help = match closest(text, names) {
            Some(best) => {
                format!("did you mean \"{best}\"? valid policies: no, on-failure, always")
            }
            None => "valid policies: no, on-failure, always".to_owned(),
        };
        self.push(
            Problem::new(
                format!("unknown restart policy {text:?} in `service.{svc}.restart`"),
                raw.span(),
                "unknown policy",
            )
            .with_help(help),
        );
        RestartPolicy::OnFailure
    }

    /// A duration key that needs a finite value (delays, intervals, windows).
    pub(super) fn duration(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        match self.duration_or_infinity(raw, svc, key, Infinity::Rejected) {
            Some(Timeout::After(d)) => d,
            Some(Timeout::Never) | None => default,
        }
    }

    /// A timeout key, which also takes `"infinity"` for no limit.
    pub(super) fn timeout(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Timeout,
    ) -> Timeout {
        self.duration_or_infinity(raw, svc, key, Infinity::Accepted)
            .unwrap_or(default)
    }

    /// Every duration key goes through here, so each one gets the same syntax and the
    /// same bound. `None` when the key is absent or invalid (the problem is recorded).
    fn duration_or_infinity(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        infinity: Infinity,
    ) -> Option<Timeout> {
        let raw = raw?;
        let parsed = match raw.get_ref() {
            RawDuration::Text(text) if text.trim() == value::INFINITY => match infinity {
                Infinity::Accepted => Ok(Timeout::Never),
                Infinity::Rejected => Err(value::infinity_rejected_error()),
            },
            RawDuration::Text(text) => value::parse_duration(text)
                .and_then(|d| value::within_bounds(d, infinity))
                .map(Timeout::After),
            RawDuration::Integer(n) => Err(value::bare_number_duration_error(&n.to_string())),
            RawDuration::Float(f) => Err(float_duration_error(*f)),
        };
        match parsed {
            Ok(timeout) => Some(timeout),
            Err(err) => {
                self.value_problem(
                    format!("invalid duration for `service.{svc}.{key}`"),
                    raw.span(),
                    err,
                );
                None
            }
        }
    }

    fn value_problem(&mut self, message: String, span: std::ops::Range<usize>, err: ValueError) {
        self.push(Problem::new(message, span, err.label).with_help(err.help));
    }

    fn backoff(
        &mut self,
        svc: &str,
        raw: &super::raw::RawBackoff,
        service: &RawService,
        initial: Duration,
    ) -> Backoff {
        let max = self.duration(raw.max.as_ref(), svc, "backoff.max", defaults::BACKOFF_MAX);
        let reset_after = self.duration(
            raw.reset_after.as_ref(),
            svc,
            "backoff.reset_after",
            defaults::BACKOFF_RESET_AFTER,
        );
        let factor = match &raw.factor {
            Some(f) if !(f.get_ref().is_finite() && *f.get_ref() >= 1.0) => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.backoff.factor` must be at least 1"),
                        f.span(),
                        "below 1",
                    )
                    .with_help(
                        "use 2.0 to double the delay after each failure, 1.0 for a constant delay",
                    ),
                );
                defaults::BACKOFF_FACTOR
            }
            Some(f) => *f.get_ref(),
            None => defaults::BACKOFF_FACTOR,
        };
        let jitter = match &raw.jitter {
            Some(j) if !(0.0..1.0).contains(j.get_ref()) => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.backoff.jitter` must be in [0, 1)"),
                        j.span(),
                        "out of range",
                    )
                    .with_help(
                        "use a fraction such as 0.1 to spread delays by +/-10%, or 0 for none",
                    ),
                );
                defaults::BACKOFF_JITTER
            }
            Some(j) => *j.get_ref(),
            None => defaults::BACKOFF_JITTER,
        };
        if max < initial {
            let help = format!(
                "raise `backoff.max` to at least {} or lower `restart_sec`",
                humantime::format_duration(initial)
            );
            // Point at whichever of the two the user wrote.
            let span = raw
                .max
                .as_ref()
                .map(Spanned::span)
                .or_else(|| service.restart_sec.as_ref().map(Spanned::span));
            if let Some(span) = span {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.backoff.max` is shorter than `restart_sec`"),
                        span,
                        "max < restart_sec",
                    )
                    .with_help(help),
                );
            }
        }
        Backoff::Exponential {
            initial,
            max,
            factor,
            jitter,
            reset_after,
        }
    }

    fn start_limit(&mut self, svc: &str, raw: &RawService) -> StartLimit {
        let Some(limit) = &raw.start_limit else {
            return StartLimit {
                interval: defaults::START_LIMIT_INTERVAL,
                burst: defaults::START_LIMIT_BURST,
            };
        };
        let limit = limit.get_ref();
        let interval = self.duration(
            limit.interval.as_ref(),
            svc,
            "start_limit.interval",
            defaults::START_LIMIT_INTERVAL,
        );
        if interval.is_zero() {
            if let Some(raw) = &limit.interval {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.start_limit.interval` must be longer than zero"),
                        raw.span(),
                        "zero",
                    )
                    .with_help(format!(
                        "use e.g. \"{}\"",
                        humantime::format_duration(defaults::START_LIMIT_INTERVAL)
                    )),
                );
            }
        }
        let burst = match &limit.burst {
            Some(burst) if *burst.get_ref() == 0 => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.start_limit.burst` must be at least 1"),
                        burst.span(),
                        "zero restarts allowed",
                    )
                    .with_help("use restart = \"no\" to never restart"),
                );
                defaults::START_LIMIT_BURST
            }
            Some(burst) => *burst.get_ref(),
            None => defaults::START_LIMIT_BURST,
        };
        StartLimit { interval, burst }
    }

    fn stop(&mut self, svc: &str, raw: &RawService) -> StopSpec {
        let Some(stop) = &raw.stop else {
            return StopSpec {
                signal: Signal::SIGTERM,
                timeout: Timeout::After(defaults::STOP_TIMEOUT),
            };
        };
        let stop = stop.get_ref();
        let signal = match &stop.signal {
            None => Signal::SIGTERM,
            Some(raw) => value::parse_signal(raw.get_ref()).unwrap_or_else(|err| {
                self.value_problem(
                    format!("invalid signal for `service.{svc}.stop.signal`"),
                    raw.span(),
                    err,
                );
                Signal::SIGTERM
            }),
        };
        let timeout = self.timeout(
            stop.timeout.as_ref(),
            svc,
            "stop.timeout",
            Timeout::After(defaults::STOP_TIMEOUT),
        );
        if let (Timeout::After(Duration::ZERO), Some(raw)) = (timeout, &stop.timeout) {
            self.push(
                Problem::new(
                    format!("`service.{svc}.stop.timeout` must be longer than zero"),
                    raw.span(),
                    "zero",
                )
                .with_help(
                    "give the service time to exit cleanly before SIGKILL, e.g. \"10s\" (or \"infinity\" for no SIGKILL)",
                ),
            );
        }
        StopSpec { signal, timeout }
    }

    fn log(&mut self, svc: &str, raw: &RawService) -> LogSpec {
        let Some(log) = &raw.log else {
            return LogSpec {
                max_size: defaults::LOG_MAX_SIZE,
                keep: defaults::LOG_KEEP,
            };
        };
        let log = log.get_ref();
        let max_size = match &log.max_size {
            None => defaults::LOG_MAX_SIZE,
            Some(raw) => {
                let parsed = match raw.get_ref() {
                    RawSize::Text(text) => value::parse_size(text),
                    RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| ValueError {
                        label: "negative size".to_owned(),
                        help: "write a size such as \"10MiB\"".to_owned(),
                    }),
                };
                match parsed {
                    Ok(size) if size < MIN_LOG_SIZE => {
                        self.push(
                            Problem::new(
                                format!("`service.{svc}.log.max_size` is too small"),
                                raw.span(),
                                format!("{} is below 4KiB", value::format_size(size)),
                            )
                            .with_help("use at least \"4KiB\"; the default is \"10MiB\""),
                        );
                        defaults::LOG_MAX_SIZE
                    }
                    Ok(size) => size,
                    Err(err) => {
                        self.value_problem(
                            format!("invalid size for `service.{svc}.log.max_size`"),
                            raw.span(),
                            err,
                        );
                        defaults::LOG_MAX_SIZE
                    }
                }
            }
        };
        LogSpec {
            max_size,
            keep: log.keep.unwrap_or(defaults::LOG_KEEP),
        }
    }

    /// Reports each `after` cycle once, at the entry that closes it.
    fn cycles(&mut self, edges: &[Edge]) {
        let mut graph: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for edge in edges {
            graph.entry(edge.from.as_str()).or_default().push(edge);
        }
        let mut state: BTreeMap<&str, Visit> = BTreeMap::new();
        let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
        let starts: Vec<&str> = graph.keys().copied().collect();
        for start in starts {
            let mut stack = Vec::new();
            self.visit(start, &graph, &mut state, &mut stack, &mut reported);
        }
    }

    fn visit<'e>(
        &mut self,
        node: &'e str,
        graph: &BTreeMap<&'e str, Vec<&'e Edge>>,
        state: &mut BTreeMap<&'e str, Visit>,
        stack: &mut Vec<&'e str>,
        reported: &mut BTreeSet<Vec<&'e str>>,
    ) {
        if state.contains_key(node) {
            return;
        }
        state.insert(node, Visit::InProgress);
        stack.push(node);
        for edge in graph.get(node).into_iter().flatten() {
            match state.get(edge.to.as_str()) {
                None => self.visit(&edge.to, graph, state, stack, reported),
                Some(Visit::InProgress) => {
                    let at = stack
                        .iter()
                        .position(|n| *n == edge.to)
                        .expect("an in-progress node is on the stack");
                    let cycle = &stack[at..];
                    let mut key = cycle.to_vec();
                    key.sort_unstable();
                    if reported.insert(key) {
                        let path = cycle
                            .iter()
                            .chain([&edge.to.as_str()])
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" -> ");
                        self.push(
                            Problem::new(format!("dependency cycle: {path}"), edge.span.clone(), "this closes the cycle")
                                .with_help("`after` orders starts, so services in a cycle can never start: remove one of these entries"),
                        );
                    }
                }
                Some(Visit::Done) => {}
            }
        }
        stack.pop();
        state.insert(node, Visit::Done);
    }
}

#[derive(Debug, Clone, Copy)]
enum Visit {
    InProgress,
    Done,
}

/// What is wrong with an environment variable name, if anything.
fn bad_env_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name.contains('=') {
        Some("contains '='")
    } else if name.contains('\0') {
        Some("contains \\u0000")
    } else {
        None
    }
}

fn float_duration_error(f: f64) -> ValueError {
    let millis = (f * 1000.0).round();
    let help = if f.is_finite() && f >= 0.0 {
        format!("write \"{millis}ms\" (durations are strings with a unit)")
    } else {
        "write a duration string such as \"5s\"".to_owned()
    };
    ValueError {
        label: "a duration needs a unit".to_owned(),
        help,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use nix::sys::signal::Signal;

    use crate::config::{Problem, parse};
    use crate::model::{Backoff, Plan, RestartPolicy, ServiceName, ServiceSpec, defaults};

    /// Shared with the tests of the submodules (`recovery`).
    pub(super) fn plan(src: &str) -> Plan {
        parse(src, "test.toml", Path::new("/etc/holdfast"))
            .unwrap_or_else(|err| panic!("config should be valid:\n{}", err.render_plain()))
    }

    pub(super) fn problems(src: &str) -> Vec<Problem> {
        parse(src, "test.toml", Path::new("/etc/holdfast"))
            .expect_err("config should be rejected")
            .problems()
            .to_vec()
    }

    fn only_problem(src: &str) -> Problem {
        let mut all = problems(src);
        assert_eq!(all.len(), 1, "exactly one problem expected: {all:#?}");
        all.remove(0)
    }

    fn service<'p>(plan: &'p Plan, name: &str) -> &'p ServiceSpec {
        &plan.services[&ServiceName::new(name).expect("test names are valid")]
    }

    /// The text the problem's span points at.
    fn snippet<'s>(src: &'s str, problem: &Problem) -> &'s str {
        &src[problem.span().expect("problems carry a span")]
    }

    #[test]
    fn a_service_with_only_a_command_gets_the_documented_defaults() {
        let plan = plan("[service.web]\ncommand = [\"/bin/web\"]\n");
        let expected =
            ServiceSpec::with_defaults(ServiceName::new("web").unwrap(), vec!["/bin/web".into()]);
        assert_eq!(service(&plan, "web"), &expected);
        assert_eq!(plan.daemon.control, Path::new(defaults::CONTROL));
        assert_eq!(plan.daemon.state_dir, Path::new(defaults::STATE_DIR));
        assert_eq!(plan.daemon.log_dir, Path::new(defaults::LOG_DIR));
        assert_eq!(plan.daemon.control_group, None);
    }

    #[test]
    fn every_field_is_converted_to_the_model() {
        let plan = plan(
            r#"
            [service.db]
            command = ["/bin/db"]
            [service.api]
            command = ["/bin/api", "--port", "8080"]
            env = { DB_HOST = "db1" }
            working_dir = "/srv/api"
            after = ["db", "db"]
            autostart = false
            restart = "always"
            restart_sec = "250ms"
            backoff = { max = "30s", factor = 3, jitter = 0.2 }
            start_limit = { interval = "1m", burst = 2 }
            start_secs = "2s"
            stop = { signal = "sigint", timeout = "5s" }
            log = { max_size = "1MiB", keep = 2 }
            "#,
        );
        let api = service(&plan, "api");
        assert_eq!(api.command, ["/bin/api", "--port", "8080"]);
        assert_eq!(api.env.get("DB_HOST").map(String::as_str), Some("db1"));
        assert_eq!(api.working_dir.as_deref(), Some(Path::new("/srv/api")));
        assert_eq!(
            api.after,
            [ServiceName::new("db").unwrap()],
            "duplicates are dropped"
        );
        assert!(!api.autostart);
        assert_eq!(api.restart, RestartPolicy::Always);
        assert_eq!(
            api.backoff,
            Backoff::Exponential {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(30),
                factor: 3.0,
                jitter: 0.2,
                reset_after: defaults::BACKOFF_RESET_AFTER,
            }
        );
        assert_eq!(api.start_limit.interval, Duration::from_secs(60));
        assert_eq!(api.start_limit.burst, 2);
        assert_eq!(api.start_secs, Duration::from_secs(2));
        assert_eq!(api.stop.signal, Signal::SIGINT);
        assert_eq!(
            api.stop.timeout,
            crate::model::Timeout::After(Duration::from_secs(5))
        );
        assert_eq!(api.log.max_size, 1 << 20);
        assert_eq!(api.log.keep, 2);
    }

    #[test]
    fn start_secs_defaults_to_zero_with_a_ready_mode_and_an_explicit_one_applies() {
        let plan = plan(
            "[service.plain]\ncommand = [\"a\"]\n\
             [service.notify]\ncommand = [\"a\"]\nready = \"notify\"\n\
             [service.tcp]\ncommand = [\"a\"]\nready = { tcp = \"127.0.0.1:80\" }\n\
             [service.slow]\ncommand = [\"a\"]\nready = \"notify\"\nstart_secs = \"3s\"\n",
        );
        assert_eq!(service(&plan, "plain").start_secs, Duration::from_secs(1));
        assert_eq!(service(&plan, "notify").start_secs, Duration::ZERO);
        assert_eq!(service(&plan, "tcp").start_secs, Duration::ZERO);
        assert_eq!(service(&plan, "slow").start_secs, Duration::from_secs(3));
    }

    #[test]
    fn an_empty_backoff_table_selects_exponential_backoff_with_defaults() {
        let plan = plan("[service.a]\ncommand = [\"a\"]\nrestart_sec = \"1s\"\nbackoff = {}\n");
        assert_eq!(
            service(&plan, "a").backoff,
            Backoff::Exponential {
                initial: Duration::from_secs(1),
                max: defaults::BACKOFF_MAX,
                factor: defaults::BACKOFF_FACTOR,
                jitter: defaults::BACKOFF_JITTER,
                reset_after: defaults::BACKOFF_RESET_AFTER,
            }
        );
    }

    #[test]
    fn relative_daemon_paths_resolve_against_the_config_directory() {
        let plan = plan(
            "[holdfast]\ncontrol = \"run/ctl.sock\"\nstate_dir = \"/abs/state\"\nlog_dir = \"logs\"\n",
        );
        assert_eq!(plan.daemon.control, Path::new("/etc/holdfast/run/ctl.sock"));
        assert_eq!(plan.daemon.state_dir, Path::new("/abs/state"));
        assert_eq!(plan.daemon.log_dir, Path::new("/etc/holdfast/logs"));
    }

    #[test]
    fn control_group_is_resolved_to_its_gid() {
        let plan = plan("[holdfast]\ncontrol_group = \"root\"\n");
        let group = plan.daemon.control_group.expect("root group exists");
        assert_eq!((group.name.as_str(), group.gid), ("root", 0));
    }

    #[test]
    fn an_unknown_control_group_is_reported_at_its_value() {
        let src = "[holdfast]\ncontrol_group = \"no-such-group-here\"\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"no-such-group-here\"");
        assert!(problem.message().contains("unknown group"), "{problem:?}");
    }

    #[test]
    fn a_zero_burst_is_rejected_with_a_hint_to_disable_restarts() {
        let src = "[service.a]\ncommand = [\"a\"]\nstart_limit = { burst = 0 }\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "0");
        assert_eq!(
            problem.help(),
            Some("use restart = \"no\" to never restart")
        );
    }

    #[test]
    fn a_zero_start_limit_interval_and_stop_timeout_are_rejected() {
        let src = "[service.a]\ncommand = [\"a\"]\nstart_limit = { interval = \"0s\" }\nstop = { timeout = \"0s\" }\n";
        assert_eq!(problems(src).len(), 2);
    }

    #[test]
    fn a_bare_integer_duration_gets_a_hint_with_a_unit() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestart_sec = 5\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "5");
        assert_eq!(
            problem.help(),
            Some("write \"5s\" (or another unit: ms, s, m, h)")
        );
    }

    #[test]
    fn a_command_written_as_a_string_gets_the_array_form_as_a_hint() {
        let src = "[service.a]\ncommand = \"/bin/server --port 80\"\n";
        let problem = only_problem(src);
        let help = problem.help().expect("a hint");
        assert!(
            help.starts_with(r#"write command = ["/bin/server", "--port", "80"]"#),
            "{help}"
        );
    }

    #[test]
    fn missing_and_empty_commands_are_rejected() {
        let src = "[service.a]\nautostart = true\n[service.b]\ncommand = []\n[service.c]\ncommand = [\"\"]\n";
        let all = problems(src);
        assert_eq!(all.len(), 3, "{all:#?}");
        assert_eq!(
            snippet(src, &all[0]),
            "a",
            "a missing command points at the service name"
        );
        assert_eq!(snippet(src, &all[1]), "[]");
        assert_eq!(snippet(src, &all[2]), "\"\"");
    }

    #[test]
    fn after_targets_must_exist_and_not_be_the_service_itself() {
        let src = "[service.web]\ncommand = [\"w\"]\nafter = [\"web\", \"dbb\"]\n[service.db]\ncommand = [\"d\"]\n";
        let all = problems(src);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(all[0].message().contains("lists itself"), "{:?}", all[0]);
        assert_eq!(snippet(src, &all[1]), "\"dbb\"");
        assert!(
            all[1].help().unwrap().contains("did you mean \"db\""),
            "{:?}",
            all[1]
        );
    }

    #[test]
    fn a_dependency_cycle_is_reported_once_with_its_path() {
        let src = "[service.a]\ncommand = [\"a\"]\nafter = [\"b\"]\n\
                   [service.b]\ncommand = [\"b\"]\nafter = [\"c\"]\n\
                   [service.c]\ncommand = [\"c\"]\nafter = [\"a\"]\n";
        let problem = only_problem(src);
        assert_eq!(problem.message(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(
            problem.span().map(|s| src[..s.start].lines().count()),
            Some(9),
            "points at c's after entry"
        );
    }

    #[test]
    fn two_separate_cycles_are_both_reported() {
        let src = "[service.a]\ncommand = [\"a\"]\nafter = [\"b\"]\n[service.b]\ncommand = [\"b\"]\nafter = [\"a\"]\n\
                   [service.c]\ncommand = [\"c\"]\nafter = [\"d\"]\n[service.d]\ncommand = [\"d\"]\nafter = [\"c\"]\n";
        let all = problems(src);
        let messages: Vec<&str> = all.iter().map(Problem::message).collect();
        assert_eq!(
            messages,
            [
                "dependency cycle: a -> b -> a",
                "dependency cycle: c -> d -> c"
            ]
        );
    }

    #[test]
    fn backoff_limits_are_checked() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestart_sec = \"2m\"\nbackoff = { factor = 0.5, jitter = 1.0 }\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(
            snippets,
            ["\"2m\"", "0.5", "1.0"],
            "max (default 60s) < restart_sec points at restart_sec"
        );
    }

    #[test]
    fn restart_policy_typos_get_a_suggestion() {
        let problem = only_problem("[service.a]\ncommand = [\"a\"]\nrestart = \"on_failure\"\n");
        assert!(
            problem
                .help()
                .unwrap()
                .starts_with("did you mean \"on-failure\"?"),
            "{problem:?}"
        );
    }

    #[test]
    fn env_names_must_be_non_empty_and_free_of_equals_signs() {
        let src =
            "[service.a]\ncommand = [\"a\"]\nenv = { \"\" = \"x\", \"A=B\" = \"y\", OK = \"z\" }\n";
        assert_eq!(problems(src).len(), 2);
    }

    #[test]
    fn pass_env_keeps_valid_names_once_and_rejects_holdfasts_private_ones() {
        let plan = plan(
            "[holdfast]\npass_env = [\"HF_TEST\", \"LC_ALL\", \"HF_TEST\"]\n\
             [service.a]\ncommand = [\"a\"]\ninherit_env = true\n",
        );
        assert_eq!(plan.daemon.pass_env, ["HF_TEST", "LC_ALL"]);
        assert!(service(&plan, "a").inherit_env);

        let src = "[holdfast]\npass_env = [\"NOTIFY_SOCKET\"]\n";
        let problem = only_problem(src);
        assert_eq!(
            problem.message(),
            "`NOTIFY_SOCKET` in `holdfast.pass_env` is holdfast's own"
        );
        assert_eq!(snippet(src, &problem), "\"NOTIFY_SOCKET\"");
        assert_eq!(
            problems("[holdfast]\npass_env = [\"\", \"A=B\"]\n").len(),
            2
        );
    }

    #[test]
    fn working_dir_must_be_absolute() {
        let problem = only_problem("[service.a]\ncommand = [\"a\"]\nworking_dir = \"srv\"\n");
        assert!(problem.message().contains("not absolute"), "{problem:?}");
    }

    #[test]
    fn log_sizes_below_four_kib_are_rejected_and_integers_are_bytes() {
        let src = "[service.a]\ncommand = [\"a\"]\nlog = { max_size = 1024 }\n";
        assert_eq!(only_problem(src).label(), "1KiB is below 4KiB");
        let plan = plan("[service.a]\ncommand = [\"a\"]\nlog = { max_size = 4096 }\n");
        assert_eq!(service(&plan, "a").log.max_size, 4096);
    }

    #[test]
    fn a_service_named_all_is_reserved_for_every_service() {
        let problems = problems("[service.all]\ncommand = [\"sleep\", \"1\"]\n");
        assert_eq!(
            problems
                .iter()
                .map(|p| p.message().to_owned())
                .collect::<Vec<_>>(),
            ["the service name \"all\" is reserved"]
        );
    }

    #[test]
    fn a_group_is_read_and_an_invalid_group_name_is_reported_at_its_value() {
        let plan = plan("[service.a]\ncommand = [\"a\"]\nservice_group = \"backend\"\n");
        assert_eq!(service(&plan, "a").group.as_deref(), Some("backend"));
        let src = "[service.a]\ncommand = [\"a\"]\nservice_group = \"@back end\"\n";
        let problem = only_problem(src);
        assert!(
            problem.message().contains("invalid group name"),
            "{problem:?}"
        );
        assert_eq!(snippet(src, &problem), "\"@back end\"");
    }

    #[test]
    fn invalid_service_names_are_reported_at_the_table_key() {
        let src = "[service.\"-bad\"]\ncommand = [\"a\"]\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"-bad\"");
    }

    #[test]
    fn unknown_keys_at_every_level_are_reported_together() {
        let src = "servce = 1\n[holdfast]\nstat_dir = \"x\"\n[service.a]\ncommand = [\"a\"]\nrestat = \"no\"\nstop = { sginal = \"INT\" }\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(snippets, ["servce", "stat_dir", "restat", "sginal"]);
        assert!(
            all.iter()
                .all(|p| p.help().is_some_and(|h| h.starts_with("did you mean"))),
            "{all:#?}"
        );
    }

    #[test]
    fn good_keys_of_a_table_with_a_bad_key_are_still_validated() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestat = \"no\"\nstart_limit = { burst = 0 }\n";
        assert_eq!(problems(src).len(), 2, "the typo and the zero burst");
    }

    #[test]
    fn syntax_errors_are_reported_with_a_span() {
        let src = "[service.a]\ncommand = [\"a\"\n";
        let all = problems(src);
        assert!(!all.is_empty());
        assert!(
            all.iter()
                .all(|p| p.span().is_some() && p.message() == "invalid TOML syntax")
        );
    }

    #[test]
    fn a_service_that_is_not_a_table_is_reported() {
        let problem = only_problem("service = { a = 1 }\n");
        assert_eq!(problem.message(), "`service.a` must be a table");
    }
}
