//! Network probes: HTTP GET and TCP connect, each bounded by its timeout. These are
//! holdfast's only HTTP client and TCP check: health probes use them through [`run`],
//! `ready = { http | tcp }` (`supervisor::startup`) through [`http`] and [`connect`].
//!
//! The HTTP exchange itself is [`super::http`]'s; only `http://` is supported (validation
//! rejects other schemes). One connection per probe, with `Connection: close`, so a
//! probe never holds a socket of the service between runs.
//!
//! Exec probes are not run here: the runtime spawns them through `process::spawn` and
//! learns their result from holdfast's reaper (see `exec_outcome`), because the reaper
//! owns every child.

use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::net::TcpStream;

use super::decay::{ProbeFailure, ProbeOutcome};
use crate::model::{ExitStatus, Probe};

/// Runs a network probe (`http` or `tcp`). `Probe::Exec` is the runtime's job.
pub async fn run(probe: &Probe, timeout: Duration) -> ProbeOutcome {
    let result = match probe {
        Probe::Http {
            authority,
            path,
            status,
            body,
            ..
        } => {
            let check = HttpCheck {
                authority,
                path,
                status: status.clone(),
                body: body.as_deref(),
            };
            http(&check, timeout).await
        }
        Probe::Tcp { address } => connect(address, timeout).await,
        Probe::Exec { .. } => unreachable!("exec probes are spawned by the runtime"),
    };
    match result {
        Ok(()) => ProbeOutcome::Success,
        Err(failure) => ProbeOutcome::Failure(failure),
    }
}

/// A `GET` and what its answer must be to pass. Health probes and `ready = { http }`
/// both check through [`http`].
#[derive(Debug, Clone)]
pub struct HttpCheck<'a> {
    /// `host:port` to connect to.
    pub authority: &'a str,
    /// Path and query sent in the request line.
    pub path: &'a str,
    /// The statuses that pass (redirects are not followed: a 3xx is judged as is).
    pub status: RangeInclusive<u16>,
    /// Text the body must contain; without it, the body is not read at all.
    pub body: Option<&'a str>,
}

/// A TCP connect to `address` (`host:port`) within `timeout`. Health probes and
/// `ready = { tcp }` both check through here.
pub async fn connect(address: &str, timeout: Duration) -> Result<(), ProbeFailure> {
    bounded(timeout, async { open(address).await.map(drop) }).await
}

/// Sends `GET check.path` to `check.authority` and judges the answer, all within
/// `timeout`: the status first, then (only if asked for) the first [`super::http::MAX_BODY`] bytes of
/// the body, lossily decoded.
pub async fn http(check: &HttpCheck<'_>, timeout: Duration) -> Result<(), ProbeFailure> {
    bounded(timeout, get(check)).await
}

/// Whether holdfast killed an exec probe for running past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecDeadline {
    /// The timeout has not passed, or the probe was already reaped when it did.
    NotReached,
    /// At the timeout the probe was not reaped yet: its group got SIGKILL.
    KilledAfter(Duration),
    /// Killed at shutdown, with no service left to judge: its exit is no result, and is
    /// not timed either (it says nothing of how long the probe takes).
    Cancelled,
}

/// The result of an exec probe, decided once, when it is reaped with `status`: a
/// timeout if our SIGKILL at the timeout is what ended it, otherwise its own exit (a
/// probe that exited just as its timeout passed was not killed by us).
pub fn exec_verdict(deadline: ExecDeadline, status: ExitStatus) -> ProbeOutcome {
    match (deadline, status) {
        (
            ExecDeadline::KilledAfter(timeout),
            ExitStatus::Signaled {
                signal: crate::unix::Signal::SIGKILL,
                ..
            },
        ) => ProbeOutcome::Failure(ProbeFailure::TimedOut(timeout)),
        (_, status) => exec_outcome(status),
    }
}

/// The outcome of an exec probe whose process was reaped with `status`.
pub fn exec_outcome(status: ExitStatus) -> ProbeOutcome {
    match status {
        ExitStatus::Exited(0) => ProbeOutcome::Success,
        other => ProbeOutcome::Failure(ProbeFailure::Command(other)),
    }
}

async fn bounded(
    timeout: Duration,
    check: impl Future<Output = Result<(), ProbeFailure>>,
) -> Result<(), ProbeFailure> {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(Err(ProbeFailure::TimedOut(timeout)))
}

async fn open(address: &str) -> Result<TcpStream, ProbeFailure> {
    TcpStream::connect(address)
        .await
        .map_err(|e| ProbeFailure::Connect {
            address: address.to_owned(),
            error: e.to_string(),
        })
}

/// One HTTP/1.1 exchange on a fresh connection, judged by `check`.
async fn get(check: &HttpCheck<'_>) -> Result<(), ProbeFailure> {
    let stream = open(check.authority).await?;
    super::http::exchange(stream, check).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unix::Signal;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn an_exec_probe_is_timed_out_only_when_our_kill_ended_it() {
        let killed = ExitStatus::Signaled {
            signal: Signal::SIGKILL,
            core_dumped: false,
        };
        let late = ExecDeadline::KilledAfter(Duration::from_secs(1));
        assert_eq!(
            exec_verdict(late, killed),
            ProbeOutcome::Failure(ProbeFailure::TimedOut(Duration::from_secs(1)))
        );
        // It exited on its own as the timeout passed: our SIGKILL hit a zombie.
        assert_eq!(
            exec_verdict(late, ExitStatus::Exited(0)),
            ProbeOutcome::Success
        );
        assert_eq!(
            exec_verdict(late, ExitStatus::Exited(2)),
            exec_outcome(ExitStatus::Exited(2))
        );
        // Killed by someone else before its timeout: a failure, not a timeout.
        assert_eq!(
            exec_verdict(ExecDeadline::NotReached, killed),
            exec_outcome(killed)
        );
        assert_eq!(
            exec_verdict(ExecDeadline::NotReached, ExitStatus::Exited(0)),
            ProbeOutcome::Success
        );
    }

    /// A one-shot server answering each connection with `response`, after `delay`.
    async fn server(response: &'static str, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0_u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn http(addr: &str, body: Option<&str>) -> Probe {
        Probe::Http {
            url: format!("http://{addr}/health"),
            authority: addr.to_owned(),
            path: "/health".to_owned(),
            status: 200..=399,
            body: body.map(str::to_owned),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_probe_succeeds_on_a_status_in_range_and_a_matching_body() {
        let addr = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            Duration::ZERO,
        )
        .await;
        assert_eq!(run(&http(&addr, None), SECOND).await, ProbeOutcome::Success);
        assert_eq!(
            run(&http(&addr, Some("ok")), SECOND).await,
            ProbeOutcome::Success
        );
        let ProbeOutcome::Failure(e) = run(&http(&addr, Some("ready")), SECOND).await else {
            panic!("body without \"ready\" must fail");
        };
        assert!(e.to_string().contains("does not contain"), "{e}");
    }

    #[tokio::test]
    async fn http_probe_reads_chunked_bodies() {
        let addr = server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nre\r\n3\r\nady\r\n0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            run(&http(&addr, Some("ready")), SECOND).await,
            ProbeOutcome::Success
        );
    }

    #[tokio::test]
    async fn http_probe_reads_a_body_that_ends_when_the_server_closes() {
        let addr = server("HTTP/1.0 200 OK\r\n\r\nall ready\n", Duration::ZERO).await;
        assert_eq!(
            run(&http(&addr, Some("ready")), SECOND).await,
            ProbeOutcome::Success
        );
    }

    #[tokio::test]
    async fn http_probe_judges_the_final_answer_after_an_interim_one() {
        let addr = server(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let ProbeOutcome::Failure(e) = run(&http(&addr, None), SECOND).await else {
            panic!("the final 503 must fail");
        };
        assert_eq!(e.to_string(), "HTTP 503 (expected 200-399)");
    }

    #[tokio::test]
    async fn http_probe_fails_on_an_answer_that_is_not_http() {
        let addr = server("SSH-2.0-OpenSSH_9.6\r\n", Duration::ZERO).await;
        let ProbeOutcome::Failure(e) = run(&http(&addr, None), SECOND).await else {
            panic!("an answer that is not HTTP must fail");
        };
        assert!(e.to_string().contains("not an HTTP/1 status line"), "{e}");
    }

    #[tokio::test]
    async fn http_probe_fails_when_the_body_breaks_off() {
        let addr = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nready",
            Duration::ZERO,
        )
        .await;
        let ProbeOutcome::Failure(e) = run(&http(&addr, Some("ready")), SECOND).await else {
            panic!("a body shorter than its Content-Length must fail");
        };
        assert!(e.to_string().contains("reading the body"), "{e}");
    }

    #[tokio::test]
    async fn http_probe_fails_on_a_status_out_of_range() {
        let addr = server(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 8\r\n\r\nfailing\n",
            Duration::ZERO,
        )
        .await;
        let ProbeOutcome::Failure(e) = run(&http(&addr, None), SECOND).await else {
            panic!("503 must fail");
        };
        assert_eq!(e.to_string(), "HTTP 503 (expected 200-399)");
    }

    #[tokio::test]
    async fn http_probe_times_out_on_a_silent_server() {
        let addr = server("", Duration::from_secs(3600)).await;
        let outcome = run(&http(&addr, None), Duration::from_millis(100)).await;
        let ProbeOutcome::Failure(e) = outcome else {
            panic!("a silent server must fail");
        };
        assert_eq!(e.to_string(), "timed out after 100ms");
    }

    #[tokio::test]
    async fn tcp_probe_succeeds_on_a_listener_and_fails_on_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let probe = Probe::Tcp {
            address: address.clone(),
        };
        assert_eq!(run(&probe, SECOND).await, ProbeOutcome::Success);
        drop(listener);
        let ProbeOutcome::Failure(e) = run(&probe, SECOND).await else {
            panic!("a closed port must fail");
        };
        assert!(
            e.to_string().starts_with(&format!("connect {address}")),
            "{e}"
        );
    }

    #[test]
    fn exec_probes_succeed_only_on_exit_zero() {
        assert_eq!(exec_outcome(ExitStatus::Exited(0)), ProbeOutcome::Success);
        let ProbeOutcome::Failure(e) = exec_outcome(ExitStatus::Exited(1)) else {
            panic!("exit 1 must fail");
        };
        assert_eq!(e.to_string(), "probe command exited 1");
    }
}
