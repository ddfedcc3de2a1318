//! `/control`: what an outer supervisor, a peer holdfast or the dashboard may change,
//! with the token. `POST /control` takes `{"verb": "restart", "services": ["api"]}`
//! (verbs: start, stop, restart, reload, signal, upgrade) and sends the same requests
//! as the CLI's verbs, resolved the same way (`all`, `@group`, base names of instances);
//! `GET /control/heartbeat` says who answers.
//!
//! Without the right token the answer is 401 and the body is not even read (at most
//! 16 KiB is, with it). A body that
//! is not a valid command is a 400 that says why, and nothing is sent; a name that
//! names no service is a 400 before any service is touched (as in the CLI).

use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{WebState, error_response};
use crate::control::protocol::{ControlError, ErrorKind, Outcome, Reply, Request, Verdict};
use crate::control::targets::{Grain, resolve};
use crate::control::wait::DEFAULT_TIMEOUT;
use crate::model::ServiceName;

/// The body of `POST /control`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub verb: Verb,
    /// Targets as the CLI takes them: names, base names of instances, `all`, `@group`.
    #[serde(default)]
    pub services: Vec<String>,
    /// `signal`: the signal's name (`SIGHUP`, `HUP`) or number.
    #[serde(default)]
    pub signal: Option<String>,
    /// `signal`: every process of the run, not only the main one.
    #[serde(default)]
    pub all: bool,
    /// `upgrade`: the build to roll out (an absolute path); without it, the one the
    /// service's program names now.
    #[serde(default)]
    pub to: Option<PathBuf>,
    /// `reload`: only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Reload,
    Signal,
    Upgrade,
}

/// What `POST /control` answers: the verb and each request's reply, in order, and for
/// the waited verbs where each service ended up.
#[derive(Debug, Serialize)]
pub struct Done {
    pub verb: Verb,
    pub replies: Vec<Reply>,
    /// One per service of a waited verb (`start`, `stop`, `restart`); empty for the others.
    pub outcomes: Vec<Outcome>,
}

impl Done {
    /// The answer's status: the requests were all accepted, but a service that did not get
    /// where it was sent is not a success, as the CLI's exit status says too. A failure
    /// (502: the service, behind holdfast, failed) outweighs a timeout (504: it did not get
    /// there in time).
    fn status(&self) -> StatusCode {
        let verdicts = || self.outcomes.iter().map(|o| o.verdict);
        if verdicts().any(|v| v == Verdict::Failed) {
            StatusCode::BAD_GATEWAY
        } else if verdicts().any(|v| v == Verdict::TimedOut) {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::OK
        }
    }
}

fn bad(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

impl Command {
    /// Parses a body: a 400 that names the problem when it is not a command.
    pub fn parse(body: &[u8]) -> Result<Command, ControlError> {
        let command: Command = serde_json::from_slice(body)
            .map_err(|e| bad(format!("invalid control command: {e}")))?;
        let needs_services = !matches!(command.verb, Verb::Reload);
        match (needs_services, command.services.is_empty()) {
            (true, true) => Err(bad(format!(
                "`{}` needs `services`: the services to act on",
                command.verb.name()
            ))),
            (false, false) => Err(bad(
                "`reload` re-reads the whole config: it takes no `services`".to_owned(),
            )),
            _ => Ok(()),
        }?;
        let stray = [
            ("signal", command.signal.is_some(), Verb::Signal),
            ("all", command.all, Verb::Signal),
            ("to", command.to.is_some(), Verb::Upgrade),
            ("dry_run", command.dry_run, Verb::Reload),
        ]
        .into_iter()
        .find(|(_, given, verb)| *given && *verb != command.verb);
        if let Some((field, _, verb)) = stray {
            return Err(bad(format!(
                "`{field}` is for `{}`, not `{}`",
                verb.name(),
                command.verb.name()
            )));
        }
        if command.verb == Verb::Signal && command.signal.is_none() {
            return Err(bad("`signal` needs `signal`, e.g. \"SIGHUP\"".to_owned()));
        }
        if let Some(to) = command.to.as_ref().filter(|to| !to.is_absolute()) {
            return Err(bad(format!(
                "the build must be an absolute path, not {:?}",
                to.display().to_string()
            )));
        }
        Ok(command)
    }

    /// The requests, for services resolved against the daemon's.
    fn requests(&self, services: &[ServiceName]) -> Vec<Request> {
        let one = |name: ServiceName| match self.verb {
            Verb::Start => Request::Start { name },
            Verb::Stop => Request::Stop { name },
            Verb::Restart => Request::Restart { name },
            Verb::Signal => Request::Signal {
                name,
                signal: self.signal.clone().unwrap_or_default(),
                all: self.all,
            },
            Verb::Upgrade => Request::Upgrade {
                target: name,
                to: self.to.clone(),
            },
            Verb::Reload => unreachable!("a reload names no service"),
        };
        match self.verb {
            Verb::Reload => vec![Request::Reload {
                dry_run: self.dry_run,
            }],
            _ => services.iter().cloned().map(one).collect(),
        }
    }

    /// Whether the CLI's verb sends its requests as one waited request.
    fn waited(&self) -> bool {
        matches!(self.verb, Verb::Start | Verb::Stop | Verb::Restart)
    }

    /// How the CLI's verb resolves its targets: the verbs the daemon knows instances
    /// for take a base name whole, the others each instance.
    fn grain(&self) -> Grain {
        match self.verb {
            Verb::Signal => Grain::Instance,
            _ => Grain::Service,
        }
    }
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
            Verb::Signal => "signal",
            Verb::Upgrade => "upgrade",
        }
    }
}

/// `POST /control`.
/// The token was checked before (see `router`), the body not read before that.
pub async fn control(State(state): State<WebState>, body: Bytes) -> Response {
    let command = match Command::parse(&body) {
        Ok(command) => command,
        Err(e) => return error_response(e),
    };
    match run(&state, &command).await {
        Ok((replies, outcomes)) => {
            let done = Done {
                verb: command.verb,
                replies,
                outcomes,
            };
            (done.status(), Json(done)).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// Resolves the targets (all of them before anything is sent), then sends the requests
/// in order; the first refusal is the answer, and the requests after it are not sent.
/// `start`, `stop` and `restart` go as the CLI's verbs send them, in one waited request
/// ([`Request::Wait`]): the answer comes once every service reached its outcome (or the
/// CLI's default timeout passed), with each request's reply and each service's outcome.
async fn run(
    state: &WebState,
    command: &Command,
) -> Result<(Vec<Reply>, Vec<Outcome>), ControlError> {
    let services = if command.services.is_empty() {
        Vec::new()
    } else {
        let status = state.status().await?;
        resolve(&status.services, &command.services, command.grain())?
    };
    tracing::info!(
        verb = command.verb.name(),
        ?services,
        "HTTP control request"
    );
    let requests = command.requests(&services);
    if !command.waited() {
        let mut replies = Vec::new();
        for request in requests {
            replies.push(state.request(request).await?);
        }
        return Ok((replies, Vec::new()));
    }
    match state.wait(requests, DEFAULT_TIMEOUT).await? {
        Reply::Waited { replies, outcomes } => Ok((replies, outcomes)),
        other => Err(ControlError {
            kind: ErrorKind::Internal,
            message: format!("unexpected answer to a waited request: {other:?}"),
        }),
    }
}

/// The answer of `GET /control/heartbeat`.
#[derive(Debug, Serialize)]
pub struct Heartbeat {
    pub pid: u32,
    /// The kernel's boot id: another value means the machine rebooted.
    pub boot_id: String,
    /// Random per holdfast start: another value means holdfast restarted or re-executed
    /// itself (`upgrade --self`).
    pub instance: String,
    /// The newest event's number.
    pub seq: u64,
    pub uptime_ms: u64,
    pub shutting_down: bool,
}

/// `GET /control/heartbeat`: who answers, from the supervisor task itself (so a hung
/// supervisor gets no heartbeat through).
pub async fn heartbeat(State(state): State<WebState>) -> Response {
    match state.status_within_deadline().await {
        Ok(status) => Json(Heartbeat {
            pid: status.daemon.pid,
            boot_id: state.boot_id().to_owned(),
            instance: state.instance().to_owned(),
            seq: state.seq(),
            uptime_ms: status.daemon.uptime_ms,
            shutting_down: status.daemon.shutting_down,
        })
        .into_response(),
        Err(e) => error_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> String {
        Command::parse(body.as_bytes())
            .expect_err("refused")
            .message
    }

    #[test]
    fn a_command_that_does_not_fit_its_verb_is_refused_with_the_reason() {
        assert!(error(r#"{"verb":"explode","services":["api"]}"#).contains("unknown variant"));
        assert!(error(r#"{"verb":"restart"}"#).contains("needs `services`"));
        assert!(error(r#"{"verb":"reload","services":["api"]}"#).contains("takes no"));
        assert!(
            error(r#"{"verb":"restart","services":["api"],"signal":"HUP"}"#)
                .contains("`signal` is for `signal`")
        );
        assert!(error(r#"{"verb":"signal","services":["api"]}"#).contains("e.g. \"SIGHUP\""));
        assert!(
            error(r#"{"verb":"upgrade","services":["api"],"to":"b/x"}"#).contains("absolute path")
        );
        assert!(
            error(r#"{"verb":"stop","services":["api"],"force":true}"#).contains("unknown field")
        );
        assert!(error("not json").contains("invalid control command"));
    }

    #[test]
    fn each_service_gets_the_request_of_the_verb() {
        let command =
            Command::parse(br#"{"verb":"signal","services":["api"],"signal":"HUP","all":true}"#)
                .expect("valid");
        let api = ServiceName::new("api").expect("valid");
        assert_eq!(
            command.requests(std::slice::from_ref(&api)),
            [Request::Signal {
                name: api,
                signal: "HUP".to_owned(),
                all: true
            }]
        );
        let reload = Command::parse(br#"{"verb":"reload","dry_run":true}"#).expect("valid");
        assert_eq!(reload.requests(&[]), [Request::Reload { dry_run: true }]);
    }

    #[test]
    fn a_waited_answer_is_502_with_a_failed_service_504_with_a_late_one_and_200_otherwise() {
        let outcome = |verdict| Outcome {
            name: ServiceName::new("api").expect("valid"),
            verdict,
            state: "failed".to_owned(),
            message: String::new(),
        };
        let done = |verdicts: &[Verdict]| Done {
            verb: Verb::Restart,
            replies: Vec::new(),
            outcomes: verdicts.iter().copied().map(outcome).collect(),
        };
        assert_eq!(done(&[]).status(), StatusCode::OK);
        assert_eq!(done(&[Verdict::Done]).status(), StatusCode::OK);
        assert_eq!(
            done(&[Verdict::Done, Verdict::TimedOut]).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            done(&[Verdict::TimedOut, Verdict::Failed]).status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
