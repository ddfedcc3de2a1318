//! `/metrics`: what Prometheus scrapes, in the OpenMetrics text format.
//!
//! Counters are fed by the events as the supervisor publishes them (the one event
//! definition), in the supervisor task, so none is missed; gauges are read from the
//! status snapshot and `/proc` at scrape time, off the supervisor task. Names and labels
//! are stable (the README's "Metrics" table). The counters are handed to the next image
//! at `upgrade --self` ([`Counted`]): the pid stays, so they must not start over.

mod timings;

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::protocol::{RestartReason, ServiceState, Status};
use crate::health::{ProbeFailure, ProbeOutcome};
use crate::model::ExitStatus;
use holdfast_core::health::HealthState;
use holdfast_core::supervisor::event::variant_names;
use holdfast_core::supervisor::event::{Event, EventKind};
use timings::Timings;

/// The `reason` label of a restart.
pub fn reason_label(reason: &RestartReason) -> &'static str {
    match reason {
        RestartReason::Exit { .. } => "exit",
        RestartReason::SpawnError { .. } => "spawn_error",
        RestartReason::NotReady { .. } => "not_ready",
        RestartReason::Watchdog { .. } => "watchdog",
        RestartReason::Health { .. } => "health",
    }
}

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Serialize, Deserialize)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Serialize, Deserialize)]
struct RestartLabels {
    service: String,
    reason: String,
}

/// An exit has a code or a signal; the other label is empty.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Serialize, Deserialize)]
struct ExitLabels {
    service: String,
    code: String,
    signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Serialize, Deserialize)]
struct OutcomeLabels {
    service: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Serialize, Deserialize)]
struct ProbeLabels {
    service: String,
    probe: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The label sets that name a service.
trait OfService {
    fn service(&self) -> &str;
}

macro_rules! of_service {
    ($($labels:ty),*) => {
        $(impl OfService for $labels {
            fn service(&self) -> &str {
                &self.service
            }
        })*
    };
}
of_service!(
    ServiceLabel,
    RestartLabels,
    ExitLabels,
    OutcomeLabels,
    ProbeLabels
);

/// A family whose series of one service can all be dropped (prometheus-client has no
/// `retain`): it remembers the label sets it made.
#[derive(Debug)]
struct PerService<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    made: Arc<Mutex<HashSet<L>>>,
}

impl<L: Clone, M, C: Clone> Clone for PerService<L, M, C> {
    fn clone(&self) -> Self {
        PerService {
            family: self.family.clone(),
            made: Arc::clone(&self.made),
        }
    }
}

impl<L, M, C> PerService<L, M, C>
where
    L: Clone + Hash + Eq + OfService,
    M: Clone,
    C: MetricConstructor<M>,
{
    fn new(family: Family<L, M, C>) -> Self {
        PerService {
            family,
            made: Arc::default(),
        }
    }

    /// The series of `labels` (shared: counting on it counts in the family).
    fn series(&self, labels: L) -> M {
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        let metric = self.family.get_or_create_owned(&labels);
        made.insert(labels);
        metric
    }

    /// Every series made, with its metric.
    fn each(&self) -> Vec<(L, M)> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        (made.iter())
            .filter_map(|labels| Some((labels.clone(), self.family.get(labels)?.clone())))
            .collect()
    }

    fn forget(&self, service: &str) {
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.retain(|labels| {
            let keep = labels.service() != service;
            if !keep {
                self.family.remove(labels);
            }
            keep
        });
    }
}

/// The counters, shared by the supervisor task (which counts) and the HTTP server
/// (which reads). Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    restarts: PerService<RestartLabels, Counter>,
    exits: PerService<ExitLabels, Counter>,
    oom_kills: PerService<ServiceLabel, Counter>,
    upgrades: PerService<OutcomeLabels, Counter>,
    rollbacks: PerService<ServiceLabel, Counter>,
    crash_reports: PerService<ServiceLabel, Counter>,
    probes: PerService<ProbeLabels, Timings>,
    /// How late the supervisor's timer fired at worst since the last scrape, in
    /// nanoseconds: a spike between two scrapes is not hidden by a calm last wakeup.
    loop_lag_ns: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            restarts: PerService::new(Family::default()),
            exits: PerService::new(Family::default()),
            oom_kills: PerService::new(Family::default()),
            upgrades: PerService::new(Family::default()),
            rollbacks: PerService::new(Family::default()),
            crash_reports: PerService::new(Family::default()),
            probes: PerService::new(Family::default()),
            loop_lag_ns: Arc::default(),
        }
    }
}

/// The counters as the next image takes them over (`upgrade --self`): each series
/// with its count. A field an older image did not send is empty: from zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counted {
    restarts: Vec<(RestartLabels, u64)>,
    exits: Vec<(ExitLabels, u64)>,
    oom_kills: Vec<(ServiceLabel, u64)>,
    upgrades: Vec<(OutcomeLabels, u64)>,
    rollbacks: Vec<(ServiceLabel, u64)>,
    crash_reports: Vec<(ServiceLabel, u64)>,
    probes: Vec<(ProbeLabels, timings::Counts)>,
}

/// Each series of `counters` with its count.
fn counts<L>(counters: &PerService<L, Counter>) -> Vec<(L, u64)>
where
    L: Clone + Hash + Eq + OfService,
{
    let each = counters.each().into_iter();
    each.map(|(labels, counter)| (labels, counter.get()))
        .collect()
}

/// Adds `counted` to the series of `counters`.
fn add<L>(counters: &PerService<L, Counter>, counted: Vec<(L, u64)>)
where
    L: Clone + Hash + Eq + OfService,
{
    for (labels, n) in counted {
        counters.series(labels).inc_by(n);
    }
}

impl Metrics {
    /// Counts what `event` tells. `restart_reason` is why a `restart_scheduled`
    /// restarts (the service's last cause, known to the core).
    pub fn on_event(&self, event: &Event, restart_reason: Option<&str>) {
        let Some(service) = event.service.as_ref().map(|s| s.as_str().to_owned()) else {
            return;
        };
        let outcome = |outcome: &str| OutcomeLabels {
            service: service.clone(),
            outcome: outcome.to_owned(),
        };
        let label = || ServiceLabel {
            service: service.clone(),
        };
        match &event.kind {
            EventKind::RestartScheduled { .. } => {
                let reason = restart_reason.unwrap_or("unknown").to_owned();
                let labels = RestartLabels {
                    service: service.clone(),
                    reason,
                };
                self.restarts.series(labels).inc();
            }
            EventKind::Exited { status, .. } => self.on_exit(&service, *status),
            EventKind::Upgraded { .. } => {
                self.upgrades.series(outcome("upgraded")).inc();
            }
            EventKind::UpgradeRefused { .. } => {
                self.upgrades.series(outcome("refused")).inc();
            }
            EventKind::RolledBack { .. } => {
                self.upgrades.series(outcome("rolled_back")).inc();
                self.rollbacks.series(label()).inc();
            }
            // A removed service's series go: a counter that can no longer rise is noise.
            EventKind::Removed => self.forget(&service),
            EventKind::CrashReported { .. } => {
                self.crash_reports.series(label()).inc();
            }
            _ => {}
        }
    }

    fn forget(&self, service: &str) {
        self.restarts.forget(service);
        self.exits.forget(service);
        self.oom_kills.forget(service);
        self.upgrades.forget(service);
        self.rollbacks.forget(service);
        self.crash_reports.forget(service);
        self.probes.forget(service);
    }

    fn on_exit(&self, service: &str, status: ExitStatus) {
        let (code, signal) = match status {
            ExitStatus::Exited(code) => (code.to_string(), String::new()),
            ExitStatus::Signaled { signal, .. } => (String::new(), signal.as_str().to_owned()),
            ExitStatus::OomKilled => (String::new(), "SIGKILL".to_owned()),
            ExitStatus::Unknown => (String::new(), String::new()),
        };
        let labels = ExitLabels {
            service: service.to_owned(),
            code,
            signal,
        };
        self.exits.series(labels).inc();
        if status == ExitStatus::OomKilled {
            let label = ServiceLabel {
                service: service.to_owned(),
            };
            self.oom_kills.series(label).inc();
        }
    }

    /// A health probe (`http`, `tcp`, `exec`) of `service` ended with `outcome` after
    /// `took`.
    pub fn probe_took(&self, service: &str, probe: &str, outcome: &ProbeOutcome, took: Duration) {
        let outcome = match outcome {
            ProbeOutcome::Success => "ok",
            ProbeOutcome::Failure(ProbeFailure::TimedOut(_)) => "timeout",
            ProbeOutcome::Failure(_) => "fail",
        };
        let labels = ProbeLabels {
            service: service.to_owned(),
            probe: probe.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.probes.series(labels).observe(took.as_secs_f64());
    }

    /// What was counted, for the next image (`upgrade --self`).
    pub fn counted(&self) -> Counted {
        Counted {
            restarts: counts(&self.restarts),
            exits: counts(&self.exits),
            oom_kills: counts(&self.oom_kills),
            upgrades: counts(&self.upgrades),
            rollbacks: counts(&self.rollbacks),
            crash_reports: counts(&self.crash_reports),
            probes: (self.probes.each().into_iter())
                .map(|(labels, timings)| (labels, timings.get()))
                .collect(),
        }
    }

    /// Goes on from what the previous image counted. Added, not set: what this image
    /// counted already (none, in practice) is kept.
    pub fn resume(&self, counted: Counted) {
        add(&self.restarts, counted.restarts);
        add(&self.exits, counted.exits);
        add(&self.oom_kills, counted.oom_kills);
        add(&self.upgrades, counted.upgrades);
        add(&self.rollbacks, counted.rollbacks);
        add(&self.crash_reports, counted.crash_reports);
        for (labels, counts) in counted.probes {
            self.probes.series(labels).add(&counts);
        }
    }

    /// The supervisor's timer fired `late` after its deadline.
    pub fn loop_lag(&self, late: Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.loop_lag_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The worst lag since the last scrape; the next scrape starts from zero.
    fn take_loop_lag(&self) -> Duration {
        Duration::from_nanos(self.loop_lag_ns.swap(0, Ordering::Relaxed))
    }

    /// The whole answer: counters as counted, gauges from `status` and `/proc`.
    pub fn render(&self, status: &Status) -> String {
        let mut registry = Registry::default();
        self.register_counters(&mut registry);
        register_services(&mut registry, status);
        self.register_self(&mut registry);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }

    fn register_counters(&self, r: &mut Registry) {
        r.register(
            "holdfast_service_restarts",
            "Automatic restarts scheduled, by reason (exit, spawn_error, not_ready, watchdog, health)",
            self.restarts.family.clone(),
        );
        r.register(
            "holdfast_service_exits",
            "Exits of main processes, by exit code or signal",
            self.exits.family.clone(),
        );
        r.register(
            "holdfast_service_oom_kills",
            "Main processes killed by the kernel's OOM killer",
            self.oom_kills.family.clone(),
        );
        r.register(
            "holdfast_upgrades",
            "Finished rollouts of a new build, by outcome (upgraded, rolled_back, refused)",
            self.upgrades.family.clone(),
        );
        r.register(
            "holdfast_rollbacks",
            "Rollouts rolled back to the previous build",
            self.rollbacks.family.clone(),
        );
        r.register(
            "holdfast_crash_reports",
            "Crash reports written",
            self.crash_reports.family.clone(),
        );
        r.register(
            "holdfast_probe_duration_seconds",
            "How long health probes (http, tcp, exec) took",
            self.probes.family.clone(),
        );
    }

    fn register_self(&self, r: &mut Registry) {
        let lag = Gauge::<f64, AtomicU64>::default();
        lag.set(self.take_loop_lag().as_secs_f64());
        r.register(
            "holdfast_event_loop_lag_seconds",
            "How late the supervisor's timers fired at worst since the last scrape (a busy or starved loop is late)",
            lag,
        );
        for (name, help, value) in [
            (
                "holdfast_journal_dropped_lines",
                "Lines of service output forwarded to journald it did not take (the log file has them)",
                crate::logs::journal::dropped(),
            ),
            (
                "holdfast_log_dropped_entries",
                "Entries of holdfast's own log (its events included) journald did not take",
                super::journald::dropped(),
            ),
        ] {
            r.register(name, help, ConstCounter::new(value));
        }
        let proc = ProcSelf::read();
        for (name, help, value) in [
            (
                "holdfast_children",
                "Direct child processes of holdfast",
                proc.children,
            ),
            (
                "holdfast_open_fds",
                "File descriptors holdfast has open",
                proc.fds,
            ),
            (
                "holdfast_resident_memory_bytes",
                "holdfast's resident memory",
                proc.rss,
            ),
        ] {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            r.register(name, help, gauge);
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        r.register(
            "holdfast_build_info",
            "holdfast's version (always 1)",
            build,
        );
    }
}

/// The per-service gauges of the status snapshot.
fn register_services(r: &mut Registry, status: &Status) {
    let state = Family::<StateLabels, Gauge>::default();
    let health = Family::<ServiceLabel, Gauge>::default();
    let up = Family::<ServiceLabel, Gauge>::default();
    let uptime = Family::<ServiceLabel, Gauge<f64, AtomicU64>>::default();
    for s in &status.services {
        let service = || ServiceLabel {
            service: s.name.as_str().to_owned(),
        };
        let current = serde_json::to_value(s.state).ok();
        for name in variant_names::<ServiceState>() {
            let labels = StateLabels {
                service: s.name.as_str().to_owned(),
                state: (*name).to_owned(),
            };
            let on = current.as_ref().and_then(Value::as_str) == Some(name);
            state.get_or_create(&labels).set(i64::from(on));
        }
        if let Some(h) = &s.health {
            let level = match h.state {
                HealthState::Ok => 0,
                HealthState::Degraded => 1,
                HealthState::Unhealthy => 2,
            };
            health.get_or_create(&service()).set(level);
        }
        up.get_or_create(&service())
            .set(i64::from(s.state == ServiceState::Running));
        let secs = s
            .uptime_ms
            .map_or(0.0, |ms| Duration::from_millis(ms).as_secs_f64());
        uptime.get_or_create(&service()).set(secs);
    }
    r.register(
        "holdfast_service_state",
        "1 for the service's current state, 0 for the others",
        state,
    );
    r.register(
        "holdfast_service_health_level",
        "Health of the current run: 0 ok, 1 degraded, 2 unhealthy (services with probes)",
        health,
    );
    r.register("holdfast_service_up", "1 while the service is running", up);
    r.register(
        "holdfast_service_uptime_seconds",
        "Time since the current run was spawned (0 without one)",
        uptime,
    );
}

/// holdfast's own process, from `/proc/self`.
struct ProcSelf {
    children: u64,
    fds: u64,
    rss: u64,
}

impl ProcSelf {
    fn read() -> Self {
        let count = |dir: &str| std::fs::read_dir(dir).map_or(0, |d| d.count() as u64);
        // Every thread's children: holdfast's threads clone children too (the spawner).
        let children = std::fs::read_dir("/proc/self/task").map_or(0, |tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .map(|c| c.split_whitespace().count() as u64)
                .sum()
        });
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(4096);
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page);
        ProcSelf {
            children,
            // The directory read itself holds one fd.
            fds: count("/proc/self/fd").saturating_sub(1),
            rss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_lag_is_the_worst_since_the_last_scrape_and_starts_over_after_it() {
        let metrics = Metrics::default();
        metrics.loop_lag(Duration::from_millis(300));
        metrics.loop_lag(Duration::from_millis(5));
        assert_eq!(metrics.take_loop_lag(), Duration::from_millis(300));
        assert_eq!(metrics.take_loop_lag(), Duration::ZERO);
    }

    #[test]
    fn what_one_image_counted_the_next_goes_on_from() {
        let old = Metrics::default();
        old.on_exit("api", ExitStatus::OomKilled);
        old.on_exit("api", ExitStatus::Exited(1));
        old.probe_took(
            "api",
            "exec",
            &ProbeOutcome::Success,
            Duration::from_millis(3),
        );
        let wire = serde_json::to_vec(&old.counted()).expect("serializes");
        let new = Metrics::default();
        new.resume(serde_json::from_slice(&wire).expect("reads"));
        let sorted = |m: &Metrics| {
            let mut counted = m.counted();
            counted.exits.sort_by(|a, b| a.0.code.cmp(&b.0.code));
            counted
        };
        assert_eq!(sorted(&new), sorted(&old));
        assert_eq!(old.counted().oom_kills.len(), 1);
    }

    #[test]
    fn upgrades_rollbacks_crash_reports_and_oom_kills_are_counted_from_their_events() {
        use crate::model::ServiceName;
        use crate::unix::Pid;
        let metrics = Metrics::default();
        let web = |kind: EventKind| Event {
            service: Some(ServiceName::new("web").expect("valid name")),
            kind,
        };
        let build = || std::path::PathBuf::from("/srv/web/b");
        let reason = || "exited".to_owned();
        metrics.on_event(&web(EventKind::Upgraded { build: build() }), None);
        let refused = EventKind::UpgradeRefused {
            build: build(),
            reason: reason(),
        };
        metrics.on_event(&web(refused), None);
        let rolled_back = EventKind::RolledBack {
            build: build(),
            from: build(),
            reason: reason(),
        };
        metrics.on_event(&web(rolled_back), None);
        let crash = EventKind::CrashReported {
            id: "1".to_owned(),
            pid: Pid::from_raw(7),
            summary: "panic".to_owned(),
        };
        metrics.on_event(&web(crash), None);
        metrics.on_exit("web", ExitStatus::OomKilled);
        let counted = metrics.counted();
        let mut outcomes: Vec<(String, u64)> = (counted.upgrades.iter())
            .map(|(labels, n)| (labels.outcome.clone(), *n))
            .collect();
        outcomes.sort();
        let one = |outcome: &str| (outcome.to_owned(), 1);
        assert_eq!(
            outcomes,
            [one("refused"), one("rolled_back"), one("upgraded")]
        );
        for (family, series) in [
            ("rollbacks", &counted.rollbacks),
            ("crash_reports", &counted.crash_reports),
            ("oom_kills", &counted.oom_kills),
        ] {
            let services: Vec<_> = series
                .iter()
                .map(|(l, n)| (l.service.as_str(), *n))
                .collect();
            assert_eq!(services, [("web", 1)], "{family}");
        }
    }

    #[test]
    fn a_removed_service_leaves_no_series_behind() {
        use crate::model::ServiceName;
        let metrics = Metrics::default();
        let event = |service: &str, kind: EventKind| Event {
            service: Some(ServiceName::new(service).expect("valid name")),
            kind,
        };
        metrics.on_exit("gone", ExitStatus::Exited(1));
        metrics.on_exit("kept", ExitStatus::Exited(1));
        metrics.on_event(&event("gone", EventKind::Removed), None);
        let families = format!("{:?}", metrics.exits.made);
        assert!(!families.contains("gone"), "{families}");
        assert!(families.contains("kept"), "{families}");
        assert!(
            metrics
                .exits
                .family
                .get(&ExitLabels {
                    service: "gone".to_owned(),
                    code: "1".to_owned(),
                    signal: String::new(),
                })
                .is_none()
        );
    }
}
