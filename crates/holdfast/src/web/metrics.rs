//! `GET /metrics`: Prometheus/OpenMetrics text (see `observe::metrics`). Read-only, no
//! token, like the rest of what only reads.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{WebState, error_response};
use crate::observe::metrics::CONTENT_TYPE;

pub async fn metrics(State(state): State<WebState>) -> Response {
    match state.status().await {
        Ok(status) => (
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            state.metrics().render(&status),
        )
            .into_response(),
        Err(e) => error_response(e),
    }
}
