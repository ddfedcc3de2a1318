//! `GET /health`: holdfast and each service in one JSON document, for outer checks (a
//! load balancer, systemd's `ExecCondition`, a peer holdfast). 200 when every service
//! that should run runs and is not unhealthy, 503 otherwise.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::WebState;
use crate::control::protocol::{ServiceState, ServiceStatus, Status};
use crate::model::ServiceName;
use holdfast_core::health::HealthState;

#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// Every service that should run runs, none unhealthy, and holdfast is not
    /// shutting down (the answer is 200 exactly then).
    pub ok: bool,
    pub holdfast: Daemon,
    pub services: Vec<ServiceHealth>,
}

#[derive(Debug, Serialize)]
pub struct Daemon {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    /// No service is on its way anywhere (waiting, starting, stopping, in backoff).
    pub ready: bool,
    pub shutting_down: bool,
    /// The newest event's number.
    pub seq: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceHealth {
    pub name: ServiceName,
    pub state: ServiceState,
    /// The health level of a service with probes, while it starts or runs.
    pub health: Option<HealthState>,
    pub pid: Option<u32>,
    pub ok: bool,
}

impl HealthReport {
    pub fn of(status: &Status, seq: u64) -> Self {
        let services: Vec<ServiceHealth> = status.services.iter().map(ServiceHealth::of).collect();
        let in_transit = status.services.iter().any(|s| {
            matches!(
                s.state,
                ServiceState::Waiting
                    | ServiceState::Starting
                    | ServiceState::Stopping
                    | ServiceState::Backoff
            )
        });
        let daemon = &status.daemon;
        HealthReport {
            ok: !daemon.shutting_down && services.iter().all(|s| s.ok),
            holdfast: Daemon {
                pid: daemon.pid,
                version: daemon.version.clone(),
                uptime_ms: daemon.uptime_ms,
                ready: !daemon.shutting_down && !in_transit,
                shutting_down: daemon.shutting_down,
                seq,
            },
            services,
        }
    }
}

impl ServiceHealth {
    fn of(s: &ServiceStatus) -> Self {
        let health = s.health.as_ref().map(|h| h.state);
        // Stopped is where a service was put (by hand, or autostart = false); every
        // other state but running means it should run and does not, yet or any more.
        let ok = match s.state {
            ServiceState::Running => health != Some(HealthState::Unhealthy),
            ServiceState::Stopped => true,
            _ => false,
        };
        ServiceHealth {
            name: s.name.clone(),
            state: s.state,
            health,
            pid: s.pid,
            ok,
        }
    }
}

pub async fn health(State(state): State<WebState>) -> Response {
    match state.status_within_deadline().await {
        Ok(status) => {
            let report = HealthReport::of(&status, state.seq());
            let code = if report.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(report)).into_response()
        }
        Err(e) => super::error_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_ok_only_when_every_service_that_should_run_runs_and_is_not_unhealthy() {
        let running = ServiceStatus::sample("api", "running");
        let stopped = ServiceStatus::sample("batch", "stopped");
        let report = HealthReport::of(&Status::sample(vec![running.clone(), stopped]), 7);
        assert!(report.ok && report.holdfast.ready);
        assert_eq!(report.holdfast.seq, 7);

        let backoff = ServiceStatus::sample("db", "backoff");
        let report = HealthReport::of(&Status::sample(vec![running.clone(), backoff]), 7);
        assert!(!report.ok && !report.holdfast.ready);

        let mut sick = running;
        sick.health = Some(crate::control::protocol::HealthStatus {
            state: HealthState::Unhealthy,
            failures_degraded_window: 3,
            failures_unhealthy_window: 3,
            successes: 0,
            probes: 3,
            in_grace: false,
            last_error: None,
        });
        let report = HealthReport::of(&Status::sample(vec![sick]), 7);
        assert!(!report.ok, "an unhealthy service fails the check");
    }
}
