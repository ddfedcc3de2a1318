//! The dashboard's read-only API: the status snapshot (open, like `/health`), crash
//! reports and log tails (with the token: they hold what services print and their
//! stacks). Each is the answer to the control request of the same name, as JSON.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{WebState, error_response};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request};
use crate::model::ServiceName;

/// Lines of a log tail when the client does not say, and at most.
const TAIL: usize = 200;
const MAX_TAIL: usize = 2_000;
/// Bytes of log lines in one answer, at most: the newest lines that fit are sent, and the
/// answer says it was cut (a log of very long lines must not cost a huge answer).
const MAX_BYTES: usize = 1024 * 1024;

fn bad(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// `GET /api/status`: the status snapshot, as `holdfast status --json` prints it.
pub async fn status(State(state): State<WebState>) -> Response {
    match state.status().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => error_response(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct CrashesQuery {
    service: Option<String>,
}

/// `GET /api/crashes[?service=NAME]`: crash reports, newest first.
pub async fn crashes(State(state): State<WebState>, Query(q): Query<CrashesQuery>) -> Response {
    let service = match q.service.map(|s| service_name(&s)).transpose() {
        Ok(service) => service,
        Err(e) => return error_response(e),
    };
    match state.request(Request::Crashes { service }).await {
        Ok(Reply::Crashes { crashes }) => {
            Json(serde_json::json!({ "crashes": crashes })).into_response()
        }
        Ok(other) => error_response(unexpected(&other)),
        Err(e) => error_response(e),
    }
}

/// `GET /api/crashes/ID`: one report with its stacks (a unique prefix of the id will do).
pub async fn crash(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match state.request(Request::CrashShow { id }).await {
        Ok(Reply::Crash { report }) => Json(report).into_response(),
        Ok(other) => error_response(unexpected(&other)),
        Err(e) => error_response(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    n: Option<usize>,
}

#[derive(Debug, Serialize)]
struct LogLine {
    service: ServiceName,
    line: String,
}

/// `GET /api/logs/NAME?n=200`: the last lines of a service's log (of each instance of a
/// base name, merged by time).
pub async fn logs(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let n = q.n.unwrap_or(TAIL);
    if n > MAX_TAIL {
        return error_response(bad(format!("n={n}: at most {MAX_TAIL} lines")));
    }
    let name = match service_name(&name) {
        Ok(name) => name,
        Err(e) => return error_response(e),
    };
    match state.log_tail(&[name], n).await {
        Ok(lines) => {
            let (lines, cut) = newest_within(lines, MAX_BYTES);
            let lines: Vec<LogLine> = lines
                .into_iter()
                .map(|(service, line)| LogLine { service, line })
                .collect();
            let mut answer = serde_json::json!({ "lines": lines });
            if cut > 0 {
                answer["truncated"] = serde_json::json!(format!(
                    "{cut} older lines left out: the answer holds at most {MAX_BYTES} bytes of lines"
                ));
            }
            Json(answer).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// The newest `lines` (oldest first) whose text fits in `max` bytes, and how many older
/// ones were left out.
fn newest_within(
    mut lines: Vec<(ServiceName, String)>,
    max: usize,
) -> (Vec<(ServiceName, String)>, usize) {
    let mut total = 0;
    let kept = lines
        .iter()
        .rev()
        .take_while(|(_, line)| {
            total += line.len();
            total <= max
        })
        .count();
    let cut = lines.len() - kept;
    lines.drain(..cut);
    (lines, cut)
}

fn service_name(text: &str) -> Result<ServiceName, ControlError> {
    ServiceName::new(text).map_err(|e| ControlError {
        kind: ErrorKind::UnknownService,
        message: format!("no service named {text:?}: {e}"),
    })
}

fn unexpected(reply: &Reply) -> ControlError {
    ControlError {
        kind: ErrorKind::Internal,
        message: format!("unexpected answer: {reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_answer_keeps_the_newest_lines_that_fit() {
        let name = ServiceName::new("api").expect("valid");
        let lines: Vec<_> = ["aaaa", "bbbb", "cccc"]
            .iter()
            .map(|l| (name.clone(), (*l).to_owned()))
            .collect();
        let (kept, cut) = newest_within(lines.clone(), 9);
        assert_eq!(cut, 1);
        assert_eq!(kept, lines[1..]);
        assert_eq!(newest_within(lines.clone(), 12), (lines, 0));
    }
}
