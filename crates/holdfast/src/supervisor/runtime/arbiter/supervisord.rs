//! supervisord's XML-RPC interface (what supervisorctl uses): `POST /RPC2` over its
//! unix socket or TCP, with HTTP basic auth when it asks for a user.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1 as client;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::xmlrpc::{RpcError, Value, encode_call, parse_response};
use crate::model::{SUPERVISORD_SERVERURL, SupervisordAccess, SupervisordServer};
use crate::supervisor::service::{UpstreamReport, UpstreamState, UpstreamView};
use crate::unix::Pid;

/// supervisord's fault codes that a restart expects (`xmlrpc.Faults`).
const NOT_RUNNING: i64 = 70;
const ALREADY_STARTED: i64 = 60;

/// How long a restart waits for supervisord to finish stopping the program: past its
/// `stopwaitsecs` (10 s by default, often raised) supervisord kills it, so this only
/// bounds a supervisord that never finishes.
const STOP_BOUND: Duration = Duration::from_secs(15 * 60);
/// The largest answer read from supervisord.
const MAX_ANSWER: usize = 1 << 20;
/// How often a restart asks whether the stop has finished.
const STOP_POLL: Duration = Duration::from_millis(250);

/// A supervisord to ask.
#[derive(Clone)]
pub struct Supervisord {
    server: SupervisordServer,
    /// The `Authorization` header, with a username.
    auth: Option<String>,
}

/// Never prints the credentials in the `Authorization` header.
impl std::fmt::Debug for Supervisord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisord")
            .field("server", &self.server)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Supervisord {
    /// The configured one (`[holdfast.supervisord]`), else the one
    /// `SUPERVISOR_SERVER_URL` names, else supervisorctl's default socket.
    pub fn of(access: Option<&SupervisordAccess>) -> Result<Self, String> {
        let Some(access) = access else {
            let url = std::env::var("SUPERVISOR_SERVER_URL")
                .unwrap_or_else(|_| SUPERVISORD_SERVERURL.to_owned());
            let server = SupervisordServer::parse(&url)
                .map_err(|e| format!("SUPERVISOR_SERVER_URL {url:?}: {e}"))?;
            return Ok(Self { server, auth: None });
        };
        let auth = access.username.as_ref().map(|user| {
            let pair = format!("{user}:{}", access.password.as_deref().unwrap_or(""));
            format!("Basic {}", base64(pair.as_bytes()))
        });
        Ok(Self {
            server: access.server.clone(),
            auth,
        })
    }

    /// What supervisord says of `program`. An unknown program is seen, in an unknown
    /// state; supervisord restarting or shutting down is busy (it answers: it is not
    /// gone); not answering is an error.
    pub async fn view(&self, program: &str) -> Result<UpstreamReport, String> {
        let state = self.call("supervisor.getState", &[]).await?;
        let statename = state
            .get("statename")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if statename != "RUNNING" {
            return Ok(UpstreamReport::Busy(format!("supervisord is {statename}")));
        }
        let own = self.call("supervisor.getPID", &[]).await?;
        let own = own
            .as_int()
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .map(|pid| (Pid::from_raw(pid), 0));
        match self
            .call_rpc("supervisor.getProcessInfo", &[Value::Str(program.into())])
            .await
        {
            Ok(info) => Ok(UpstreamReport::Seen(UpstreamView {
                upstream_pid: own,
                ..view_of(&info, now_secs())
            })),
            Err(Call::Rpc(RpcError::Fault { string, .. })) => {
                Ok(UpstreamReport::Seen(UpstreamView {
                    state: UpstreamState::Unknown,
                    detail: string,
                    pid: None,
                    start: None,
                    uptime: None,
                    proc_start: None,
                    upstream_pid: None,
                }))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Restarts `program`: asks for a stop without waiting in the call, waits for the
    /// program to leave STOPPING (supervisord's `stopwaitsecs`, then its SIGKILL, may
    /// take longer than any one call may), then starts it (not waiting: the new start
    /// shows at the next syncs). Each call is bounded by `timeout`; the wait for the
    /// stop by `STOP_BOUND`, so a program that ignores SIGTERM is not left STOPPED.
    pub async fn restart(&self, program: &str, timeout: Duration) -> Result<(), String> {
        let name = Value::Str(program.into());
        let stop = [name.clone(), Value::Bool(false)];
        match self
            .call_within(timeout, "supervisor.stopProcess", &stop)
            .await
        {
            Ok(_)
            | Err(Call::Rpc(RpcError::Fault {
                code: NOT_RUNNING, ..
            })) => {}
            Err(e) => return Err(format!("stopProcess: {e}")),
        }
        if !self.wait_stopped(program, timeout).await? {
            // Someone started it again meanwhile: it is restarted.
            return Ok(());
        }
        let start = [name, Value::Bool(false)];
        match self
            .call_within(timeout, "supervisor.startProcess", &start)
            .await
        {
            Ok(_)
            | Err(Call::Rpc(RpcError::Fault {
                code: ALREADY_STARTED,
                ..
            })) => Ok(()),
            Err(e) => Err(format!("startProcess: {e}")),
        }
    }

    /// Waits while supervisord shows `program` STOPPING: `true` once it is down
    /// (stopped, exited, fatal), `false` when it runs again (started by someone else).
    /// A timer-driven wait on an external system, bounded by `STOP_BOUND`.
    async fn wait_stopped(&self, program: &str, timeout: Duration) -> Result<bool, String> {
        let give_up = tokio::time::Instant::now() + STOP_BOUND;
        loop {
            let name = [Value::Str(program.into())];
            let info = self
                .call_within(timeout, "supervisor.getProcessInfo", &name)
                .await
                .map_err(|e| format!("getProcessInfo: {e}"))?;
            match view_of(&info, now_secs()).state {
                UpstreamState::Stopping => {}
                UpstreamState::Running | UpstreamState::Starting => return Ok(false),
                _ => return Ok(true),
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(format!(
                    "still stopping after {}",
                    humantime::format_duration(STOP_BOUND)
                ));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    async fn call(&self, method: &str, params: &[Value]) -> Result<Value, String> {
        self.call_rpc(method, params)
            .await
            .map_err(|e| format!("{method}: {e}"))
    }

    /// `call_rpc` within `timeout`; past it, no answer.
    async fn call_within(
        &self,
        timeout: Duration,
        method: &str,
        params: &[Value],
    ) -> Result<Value, Call> {
        tokio::time::timeout(timeout, self.call_rpc(method, params))
            .await
            .unwrap_or_else(|_| Err(Call::Io(super::no_answer(timeout))))
    }

    async fn call_rpc(&self, method: &str, params: &[Value]) -> Result<Value, Call> {
        let body = encode_call(method, params);
        let answer = match &self.server {
            SupervisordServer::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Call::Io(format!("connect {}: {e}", path.display())))?;
                self.post(stream, "localhost", body).await?
            }
            SupervisordServer::Http { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| Call::Io(format!("connect {authority}: {e}")))?;
                self.post(stream, authority, body).await?
            }
        };
        parse_response(&answer).map_err(Call::Rpc)
    }

    /// One `POST /RPC2` on a fresh connection; the answer's body.
    async fn post<S>(&self, stream: S, host: &str, body: String) -> Result<Bytes, Call>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = |e: hyper::Error| Call::Io(e.to_string());
        let (mut sender, connection) = client::handshake(TokioIo::new(stream)).await.map_err(io)?;
        tokio::spawn(connection);
        let mut request = Request::post("/RPC2")
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "text/xml");
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Call::Io(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(io)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Call::Io(
                "401 Unauthorized: check username and password in [holdfast.supervisord]".into(),
            ));
        }
        if status != StatusCode::OK {
            return Err(Call::Io(format!("HTTP {status}")));
        }
        // supervisord's answers are small; a flood is refused, not held in memory.
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
        let body = body
            .collect()
            .await
            .map_err(|e| Call::Io(format!("answer: {e} (at most {MAX_ANSWER} bytes)")))?;
        Ok(body.to_bytes())
    }
}

/// Why a call failed: the exchange, or XML-RPC itself.
#[derive(Debug, thiserror::Error)]
enum Call {
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Rpc(RpcError),
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A `getProcessInfo` struct as holdfast's view (`now`: supervisord's clock, when it
/// says, else ours).
pub fn view_of(info: &Value, now: i64) -> UpstreamView {
    let statename = info
        .get("statename")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    let state = match statename {
        "RUNNING" => UpstreamState::Running,
        "STARTING" | "BACKOFF" => UpstreamState::Starting,
        "STOPPING" => UpstreamState::Stopping,
        "STOPPED" | "EXITED" => UpstreamState::Stopped,
        "FATAL" => UpstreamState::Failed,
        _ => UpstreamState::Unknown,
    };
    let int = |key| info.get(key).and_then(Value::as_int).unwrap_or(0);
    let pid = i32::try_from(int("pid"))
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw);
    let start = u64::try_from(int("start")).ok().filter(|s| *s > 0);
    let now = Some(int("now")).filter(|n| *n > 0).unwrap_or(now);
    let uptime = match (state, start) {
        (UpstreamState::Running, Some(start)) => Some(Duration::from_secs(
            u64::try_from(now).unwrap_or(0).saturating_sub(start),
        )),
        _ => None,
    };
    UpstreamView {
        state,
        detail: statename.to_owned(),
        pid: pid.filter(|_| {
            matches!(
                state,
                UpstreamState::Running | UpstreamState::Starting | UpstreamState::Stopping
            )
        }),
        start,
        uptime,
        proc_start: None,
        upstream_pid: None,
    }
}

/// Standard base64 (RFC 4648, with padding), for the basic auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(base64(b"user:123"), "dXNlcjoxMjM=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[tokio::test]
    async fn a_flood_of_an_answer_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("holdfast-flood-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0_u8; 4096];
            let _ = stream.read(&mut request).await;
            let size = 4 * MAX_ANSWER;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&vec![b' '; size]).await;
        });
        let client = Supervisord {
            server: SupervisordServer::Unix(path),
            auth: None,
        };
        let err = client.view("web").await.expect_err("refused");
        assert!(err.contains("at most"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn process_info_becomes_a_view() {
        let info = Value::Struct(BTreeMap::from([
            ("statename".to_owned(), Value::Str("RUNNING".into())),
            ("pid".to_owned(), Value::Int(123)),
            ("start".to_owned(), Value::Int(1000)),
            ("now".to_owned(), Value::Int(1300)),
        ]));
        let view = view_of(&info, 0);
        assert_eq!(view.state, UpstreamState::Running);
        assert_eq!(view.pid, Some(Pid::from_raw(123)));
        assert_eq!(view.start, Some(1000));
        assert_eq!(view.uptime, Some(Duration::from_secs(300)));
        let exited = Value::Struct(BTreeMap::from([
            ("statename".to_owned(), Value::Str("EXITED".into())),
            ("pid".to_owned(), Value::Int(0)),
        ]));
        let view = view_of(&exited, 0);
        assert_eq!((view.state, view.pid), (UpstreamState::Stopped, None));
    }
}
