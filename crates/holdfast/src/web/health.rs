//! `GET /health`: holdfast and each service in one JSON document, for outer checks (a
//! load balancer, systemd's `ExecCondition`, a peer holdfast). 503 when a service failed
//! or is unhealthy, or holdfast shuts down; 200 otherwise, with `"status": "degraded"`
//! while a service is on its way (starting, in backoff, stopping: an operator's restart
//! must not make holdfast look dead). `?scope=holdfast`: 200 whenever holdfast's loop
//! answers (a liveness check of holdfast itself).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::WebState;
use crate::control::protocol::{ControlError, ErrorKind, ServiceState, ServiceStatus, Status};
use crate::model::ServiceName;
use holdfast_core::health::HealthState;

#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// No service failed or is unhealthy, and holdfast is not shutting down (the answer
    /// is 200 exactly then).
    pub ok: bool,
    pub status: Overall,
    pub holdfast: Daemon,
    pub services: Vec<ServiceHealth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    /// Every service that should run runs.
    Ok,
    /// Some service is on its way (waiting, starting, in backoff, stopping).
    Degraded,
    /// A service failed or is unhealthy, or holdfast shuts down.
    Failing,
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
        let ok = !daemon.shutting_down && services.iter().all(|s| s.ok);
        HealthReport {
            ok,
            status: match (ok, in_transit) {
                (false, _) => Overall::Failing,
                (true, true) => Overall::Degraded,
                (true, false) => Overall::Ok,
            },
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
        // Stopped is where a service was put (by hand, or autostart = false); the states
        // on the way somewhere are not failures (the report says "degraded").
        let ok = match s.state {
            ServiceState::Running => health != Some(HealthState::Unhealthy),
            ServiceState::Failed | ServiceState::Quarantined => false,
            ServiceState::Stopped
            | ServiceState::Waiting
            | ServiceState::Starting
            | ServiceState::Stopping
            | ServiceState::Backoff
            // An observed service whose manager does not answer: unknown, not failed.
            | ServiceState::Unknown => true,
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

#[derive(Debug, Default, Deserialize)]
pub struct HealthQuery {
    scope: Option<Scope>,
}

/// What `/health` judges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// holdfast and its services.
    #[default]
    All,
    /// holdfast only: 200 whenever its loop answers.
    Holdfast,
}

pub async fn health(
    State(state): State<WebState>,
    query: Result<Query<HealthQuery>, QueryRejection>,
) -> Response {
    let scope = match query {
        Ok(Query(q)) => q.scope.unwrap_or_default(),
        Err(e) => {
            return super::error_response(ControlError {
                kind: ErrorKind::BadRequest,
                message: format!("{e} (scope: all or holdfast)"),
            });
        }
    };
    match state.status_within_deadline().await {
        Ok(status) => {
            let report = HealthReport::of(&status, state.seq());
            let code = if report.ok || scope == Scope::Holdfast {
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

        assert_eq!(report.status, Overall::Ok);

        // On its way (an operator's restart): degraded, not failing.
        let backoff = ServiceStatus::sample("db", "backoff");
        let report = HealthReport::of(&Status::sample(vec![running.clone(), backoff]), 7);
        assert!(report.ok && !report.holdfast.ready);
        assert_eq!(report.status, Overall::Degraded);
        let failed = ServiceStatus::sample("db", "failed");
        let report = HealthReport::of(&Status::sample(vec![running.clone(), failed]), 7);
        assert!(!report.ok);
        assert_eq!(report.status, Overall::Failing);

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
