//! Status: the answer to `status`, and holdfast's own status for a service manager that
//! started it. The core's state is read on the supervisor task; what only the kernel
//! knows (cgroup counters, the processes holding up a stop) is read by a blocking task,
//! which answers the client.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::unix::Pid;
use tokio::sync::oneshot;

use super::Shell;
use crate::cgroup::{CounterFiles, ServiceCgroup};
use crate::control::protocol::{
    ControlError, DaemonStatus, ExitInfo, HealthStatus, ManagedStatus, ProcessInfo, Reply,
    RolloutStatus, ServiceStatus, Status, UpgradeStatus,
};
use crate::model::ServiceName;
use crate::process::group;
use crate::supervisor::core::state_name;
use crate::supervisor::service::{Cause, Escalation, Reach, Service, State};

/// What is left to read of one service's status, off the supervisor task.
struct Reads {
    cgroup: Option<ServiceCgroup>,
    /// The process group of a stopping run, when there is no cgroup to list its
    /// processes.
    stopping_group: Option<Pid>,
    stopping: bool,
}

impl Reads {
    fn fill(&self, status: &mut ServiceStatus, files: &mut CounterFiles) {
        let Reads {
            cgroup,
            stopping_group,
            stopping,
        } = self;
        let (stopping_group, stopping) = (*stopping_group, *stopping);
        // The cgroup lists the run's processes (also those that left its group) without
        // a scan of all of /proc.
        status.holding_up = match (&cgroup, stopping_group) {
            (Some(cgroup), _) if stopping => group::members(cgroup.pids()),
            (None, Some(pgid)) => group::group_members(pgid),
            _ => Vec::new(),
        }
        .into_iter()
        .map(|member| ProcessInfo {
            pid: member.pid.as_raw().unsigned_abs(),
            command: member.command,
        })
        .collect();
        status.memory_bytes = cgroup.as_ref().and_then(|c| c.memory_bytes(files));
        status.tasks = cgroup.as_ref().and_then(|c| c.tasks(files));
    }
}

/// Services whose kernel counters one thread reads, at least: fewer are not worth a
/// thread.
const READS_PER_THREAD: usize = 128;

/// Fills in what the kernel knows of each service, spread over the CPUs: these are
/// cgroupfs opens and reads, a few per service and independent of each other, and they
/// are most of the time a `status` of many services takes.
fn fill_all(services: &mut [ServiceStatus], reads: &[Reads]) {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cpus.min(services.len().div_ceil(READS_PER_THREAD)).max(1);
    let chunk = services.len().div_ceil(threads).max(1);
    let fill = |services: &mut [ServiceStatus], reads: &[Reads]| {
        let mut files = CounterFiles::default();
        for (service, reads) in services.iter_mut().zip(reads) {
            reads.fill(service, &mut files);
        }
    };
    std::thread::scope(|scope| {
        let mut parts = services.chunks_mut(chunk).zip(reads.chunks(chunk));
        let here = parts.next();
        for (services, reads) in parts {
            scope.spawn(move || fill(services, reads));
        }
        if let Some((services, reads)) = here {
            fill(services, reads);
        }
    });
}

pub fn log_path(log_dir: &Path, name: &ServiceName) -> String {
    log_dir.join(format!("{name}.log")).display().to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The build of a service with `[upgrade]`, and its rollout under way.
fn upgrade_status(s: &Service, now: Instant) -> Option<UpgradeStatus> {
    let spec = s.spec().upgrade.as_ref()?;
    let path = |p: &Path| p.display().to_string();
    Some(UpgradeStatus {
        mode: spec.mode.as_str().to_owned(),
        build: path(s.build().unwrap_or(&spec.build)),
        watch: spec.watch.as_deref().map(path),
        rollout: s.rollout().map(|r| RolloutStatus {
            phase: r.phase.as_str().to_owned(),
            from: path(&r.from),
            to: path(&r.to),
            since_ms: millis(now.saturating_duration_since(r.since)),
            rolling_back: r.back.clone(),
        }),
    })
}

impl Shell {
    /// Answers `status`: the core's part now, the kernel's part from a blocking task.
    pub(super) fn status(&self, now: Instant, reply: oneshot::Sender<Result<Reply, ControlError>>) {
        // By name, and the instances of one service by number (web@2 before web@10).
        let mut listed: Vec<&Service> = self.sup.services().collect();
        listed.sort_by_key(|s| (s.name().base(), s.name().instance_index()));
        let (services, reads): (Vec<ServiceStatus>, Vec<Reads>) = listed
            .into_iter()
            .map(|s| (self.service_status(s, now), self.reads(s)))
            .unzip();
        let mut status = Status {
            daemon: DaemonStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                config: self.config_path.display().to_string(),
                uptime_ms: millis(now.duration_since(self.started)),
                shutting_down: self.sup.is_shutting_down(),
                execs: self.selfup.execs,
                reexec_error: self.selfup.error.clone(),
                managed_by: self.upstream.manager().map(ToString::to_string),
            },
            services,
        };
        tokio::task::spawn_blocking(move || {
            fill_all(&mut status.services, &reads);
            let _ = reply.send(Ok(Reply::Status(status)));
        });
    }

    fn reads(&self, s: &Service) -> Reads {
        let stopping = matches!(s.state(), State::Stopping { .. });
        let cgroup = self.cgroup(s.name()).cloned();
        let stopping_group = match s.state() {
            State::Stopping { pid, .. } if cgroup.is_none() => Some(*pid),
            _ => None,
        };
        Reads {
            cgroup,
            stopping_group,
            stopping,
        }
    }

    fn service_status(&self, s: &Service, now: Instant) -> ServiceStatus {
        ServiceStatus {
            name: s.name().clone(),
            group: s.spec().group.clone(),
            state: state_name(s.state()).to_owned(),
            // An observed service's pid is the upstream's.
            pid: s
                .pid()
                .or_else(|| s.observation()?.view.as_ref()?.pid)
                .map(|p| p.as_raw() as u32),
            since_ms: millis(now.duration_since(s.since())),
            uptime_ms: s
                .spawned_at()
                .map(|at| millis(now.duration_since(at)))
                .or_else(|| s.observation()?.view.as_ref()?.uptime.map(millis)),
            restarts: s.restarts(),
            last_exit: s.last_exit().map(|(status, at)| ExitInfo {
                description: status.to_string(),
                code: status.code(),
                signal: status.signal().map(|sig| sig.as_str().to_owned()),
                ago_ms: millis(now.duration_since(at)),
            }),
            reason: self.reason(s, now),
            status_text: s.status_text().map(str::to_owned),
            holding_up: Vec::new(),
            log: log_path(&self.sup.plan().daemon.log_dir, s.name()),
            health: s.health().map(|monitor| {
                let decay = monitor.decay();
                let (degraded, unhealthy) = decay.window_counts(now);
                HealthStatus {
                    state: decay.state(),
                    failures_degraded_window: degraded,
                    failures_unhealthy_window: unhealthy,
                    successes: decay.successes(),
                    probes: decay.probes(),
                    in_grace: decay.in_grace(now),
                    last_error: decay.last_error().map(ToString::to_string),
                }
            }),
            env_overrides: s.env_overrides().clone(),
            memory_bytes: None,
            tasks: None,
            last_restart_reason: s.last_restart().map(Cause::restart_reason),
            upgrade: upgrade_status(s, now),
            last_crash: self.crashes.last(s.name()).cloned(),
            managed_by: managed_status(s),
        }
    }

    fn reason(&self, s: &Service, now: Instant) -> Option<String> {
        let secs = |d: Duration| humantime::format_duration(Duration::from_millis(millis(d)));
        match s.state() {
            State::Failed { reason } => Some(reason.to_string()),
            State::Backoff { until } => {
                let next = format!(
                    "restarting in {}",
                    secs(until.saturating_duration_since(now))
                );
                Some(match s.last_cause() {
                    Some(cause @ (Cause::NotReady { .. } | Cause::WatchdogTimeout { .. })) => {
                        format!("{next} after {cause}")
                    }
                    _ => next,
                })
            }
            State::Starting { .. } => s.start_wait(now),
            State::Observed(observation) => {
                let upstream = &s.spec().managed_by.as_ref()?.upstream;
                observation.reason(upstream)
            }
            State::Waiting => Some(self.waiting_reason(s, now)),
            State::Stopping {
                escalation,
                deadline,
                ..
            } => Some(match (escalation, deadline) {
                (Escalation::Graceful, Some(deadline)) => format!(
                    "{} sent {} ago, SIGKILL in {}",
                    s.spec().stop.signal.as_str(),
                    secs(now.duration_since(s.since())),
                    secs(deadline.saturating_duration_since(now))
                ),
                (Escalation::Graceful, None) => format!(
                    "{} sent {} ago, no SIGKILL (stop.timeout is infinity)",
                    s.spec().stop.signal.as_str(),
                    secs(now.duration_since(s.since())),
                ),
                (Escalation::Dumping { .. }, _) => format!(
                    "hung: {} sent {} ago for a stack dump",
                    s.spec()
                        .stop
                        .dump
                        .map_or("dump signal", |d| d.signal.as_str()),
                    secs(now.duration_since(s.since()))
                ),
                (Escalation::Killed, _) => format!(
                    "SIGKILL sent {} ago, waiting for its processes to exit",
                    secs(now.duration_since(s.since()))
                ),
            }),
            _ => None,
        }
    }

    /// Each dependency with its own state and reason, so the chain is visible:
    /// `waiting for db (starting: waiting for READY=1 ...)`.
    fn waiting_reason(&self, s: &Service, now: Instant) -> String {
        let on: Vec<String> = self
            .sup
            .waiting_on(s.name())
            .iter()
            .map(|dep| match self.sup.service(dep) {
                Some(d) => match self.reason(d, now) {
                    Some(why) => format!("{dep} ({}: {why})", state_name(d.state())),
                    None => format!("{dep} ({})", state_name(d.state())),
                },
                None => dep.to_string(),
            })
            .collect();
        format!("waiting for {}", on.join(", "))
    }

    /// holdfast's own `READY=1` (once every autostart service is up or has given up),
    /// `STATUS=` summary and `STOPPING=1`, for a service manager that started holdfast.
    pub(super) fn report_upstream(&mut self) {
        if self.sup.is_shutting_down() {
            self.upstream.stopping();
            return;
        }
        // From the core's counts, kept as services change: no walk over all of them
        // after every input.
        let mut counts: Vec<(&str, usize)> = (self.sup.census())
            .map(|(state, n)| (state.as_str(), n))
            .collect();
        counts.sort_unstable();
        let total: usize = counts.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let summary = format!("{total} services: {}", parts.join(", "));
        self.upstream.status(summary);
        if self.sup.settled() {
            self.upstream.ready();
        }
    }
}

/// The upstream's view of a `managed_by` service, and holdfast's last arbitration.
fn managed_status(s: &Service) -> Option<ManagedStatus> {
    let managed = s.spec().managed_by.as_ref()?;
    let observation = s.observation();
    let view = observation.and_then(|o| o.view.as_ref());
    let unreachable = match observation.map(|o| &o.reach) {
        Some(Reach::Unreachable { error, .. } | Reach::Alive { error }) => Some(error.clone()),
        _ => None,
    };
    Some(ManagedStatus {
        upstream: managed.upstream.to_string(),
        taken_over: observation.is_none()
            && s.arbitrated()
                .is_some_and(|a| matches!(a, crate::supervisor::service::Arbitrated::TakenOver(_))),
        state: view.map(|v| v.detail.clone()),
        pid: view.and_then(|v| v.pid).map(|p| p.as_raw() as u32),
        uptime_ms: view.and_then(|v| v.uptime).map(millis),
        unreachable,
        last_arbitration: s.arbitrated().map(ToString::to_string),
        duplicate_pid: s.duplicate().map(|d| d.pid.as_raw() as u32),
    })
}
