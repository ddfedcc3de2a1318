//! Shell-side watchers of a run's start-up: readiness probes (TCP connect, HTTP GET,
//! the s6 notification fd) and the pidfile of a forking service.
//!
//! Each watcher is a small task bound to one run. A probe retries every [`RETRY`] until
//! it succeeds; the pidfile is awaited with inotify, as systemd does. Once satisfied, a
//! watcher sends one `Input` to the supervisor task and ends. The supervisor task aborts
//! it as soon as the run is no longer starting, so watchers only exist during start-up
//! (they are no idle wake-ups), and `start_timeout` in the core bounds them.
//!
//! The TCP and HTTP checks are the health probes' own ([`probe::connect`],
//! [`probe::http`]); only what counts as ready differs: any 2xx, body unread, each
//! attempt bounded by [`ATTEMPT_TIMEOUT`], failures retried until ready.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::unix::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::core::Input;
use super::service::RunId;
use crate::cgroup::ServiceCgroup;
use crate::health::ProbeFailure;
use crate::health::probe::{self, HttpCheck};
use crate::model::ServiceName;

/// Pause between two attempts of a readiness probe, or between two checks of a pidfile
/// naming a live process that is not (yet) recognisably the service's.
pub const RETRY: Duration = Duration::from_millis(100);
/// One probe attempt may take this long (a SYN into a black hole would hang longer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who a watcher works for.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: ServiceName,
    pub run: RunId,
    pub tx: UnboundedSender<Input>,
}

impl Target {
    fn ready(&self) {
        let _ = self.tx.send(Input::Ready {
            service: self.service.clone(),
            run: self.run,
        });
    }
}

/// Ready once a TCP connect to `addr` succeeds.
pub fn tcp(target: Target, addr: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let address = addr.to_string();
        until_ready(&target, || probe::connect(&address, ATTEMPT_TIMEOUT)).await;
    })
}

/// Ready once `GET url` answers with a 2xx status. `url` was validated as
/// `http://IP:port/path`.
pub fn http(target: Target, url: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(check) = ready_check(&url) else {
            // Cannot happen after validation; `start_timeout` ends the wait.
            tracing::warn!("{}: cannot probe readiness URL {url:?}", target.service);
            return;
        };
        until_ready(&target, || probe::http(&check, ATTEMPT_TIMEOUT)).await;
    })
}

/// Runs `attempt` every [`RETRY`] until it passes, then reports the run ready. A changed
/// reason for not being ready yet is logged at debug level.
async fn until_ready<F: Future<Output = Result<(), ProbeFailure>>>(
    target: &Target,
    mut attempt: impl FnMut() -> F,
) {
    let mut last = None;
    loop {
        match attempt().await {
            Ok(()) => {
                target.ready();
                return;
            }
            Err(failure) if last.as_ref() != Some(&failure) => {
                tracing::debug!("{}: not ready yet: {failure}", target.service);
                last = Some(failure);
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// What `GET url` must answer for readiness: any 2xx (a redirect is not followed, so
/// not ready), whatever the body, which is not read. `url` is `http://host:port/path`.
fn ready_check(url: &str) -> Option<HttpCheck<'_>> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some(HttpCheck {
        authority,
        path,
        status: 200..=299,
        body: None,
    })
}

/// Ready once the service writes a newline to the write end of `pipe` (s6's
/// notification-fd protocol). EOF without one leaves it to `start_timeout`.
pub fn fd(target: Target, pipe: OwnedFd) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(receiver) = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) else {
            return;
        };
        let mut reader = BufReader::new(receiver);
        let mut line = Vec::new();
        if let Ok(n) = reader.read_until(b'\n', &mut line).await {
            if n > 0 && line.ends_with(b"\n") {
                target.ready();
            }
        }
    })
}

/// Which processes are the starting run's own, for its pidfile to name.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The group (and session) the run's first process created.
    pub leader: Pid,
    /// holdfast itself, the subreaper that orphaned daemons are reparented to.
    pub me: Pid,
    /// The service's cgroup, when cgroups are available: it holds every process of the
    /// run wherever it moved (new session, double fork), and no other.
    pub cgroup: Option<ServiceCgroup>,
}

impl Lineage {
    /// A live process of the run other than its first. With a cgroup, membership
    /// decides. Without one, a process still in the first process's group or session,
    /// or one reparented to holdfast: a daemon that double-forked leads neither its
    /// session nor its group (both are the vanished intermediate process's).
    fn owns(&self, pid: Pid) -> bool {
        let Ok(stat) = crate::process::proc_stat(pid) else {
            return false;
        };
        if stat.is_zombie() || pid == self.leader {
            return false;
        }
        match &self.cgroup {
            Some(cgroup) => cgroup.pids().contains(&pid),
            None => stat.pgid == self.leader || stat.sid == self.leader || stat.ppid == self.me,
        }
    }
}

/// Awaits `path` naming a live process of the run, then reports it as adopted. The
/// pidfile's directory is watched with inotify, so a file that appears late (written by
/// the daemon after the first process exited) or is rewritten (created empty, then
/// filled) is read as soon as it changes, without polling.
pub fn pidfile(target: Target, path: PathBuf, lineage: Lineage) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        // Watch before the first read: a write in between shows up as a change. The
        // watcher stops when this task ends or is aborted.
        let watcher = watch_file(&path, tx)
            .inspect_err(|e| {
                tracing::warn!(
                    "{}: cannot watch for pidfile {} ({e}); reading it every {}ms instead",
                    target.service,
                    path.display(),
                    RETRY.as_millis()
                );
            })
            .ok();
        loop {
            // Before the liveness check in `owns` (see `reap::latest`).
            let alive_at = crate::process::reap::latest();
            match read_pidfile(&path) {
                Some(pid) if lineage.owns(pid) => {
                    let _ = target.tx.send(Input::Adopted {
                        service: target.service.clone(),
                        run: target.run,
                        pid,
                        alive_at,
                    });
                    return;
                }
                // A live process the run may not own yet (its parent, which stays in
                // another group, has not exited): no file change would announce that.
                Some(pid) if is_alive(pid) => tokio::time::sleep(RETRY).await,
                // No file yet, an empty or half-written one, or a dead pid: the next
                // write is what brings news.
                _ if watcher.is_some() => {
                    if changes.recv().await.is_none() {
                        return;
                    }
                    // Take every queued change at once: one read covers them all.
                    while changes.try_recv().is_ok() {}
                }
                _ => tokio::time::sleep(RETRY).await,
            }
        }
    })
}

/// Watches the directory of `path` (the file itself may not exist yet, or be replaced
/// by a rename) and sends a unit for every change that may concern the file.
fn watch_file(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let concerns_us = match event {
            Ok(event) => {
                event.need_rescan()
                    || event.paths.is_empty()
                    || event.paths.iter().any(|p| p.file_name() == name.as_deref())
            }
            // A watch error (queue overflow): better read once too often.
            Err(_) => true,
        };
        if concerns_us {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

fn read_pidfile(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 1).then(|| Pid::from_raw(pid))
}

fn is_alive(pid: Pid) -> bool {
    crate::process::proc_stat(pid).is_ok_and(|stat| !stat.is_zombie())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering one connection with `response` and then holding it open;
    /// returns the URL to check.
    async fn answer_once(response: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            conn.write_all(response).await.expect("answer");
            // Held open: a body announced but never sent must not matter.
            std::future::pending::<()>().await;
        });
        format!("http://{addr}/health")
    }

    async fn ready(url: &str) -> Result<(), ProbeFailure> {
        let check = ready_check(url).expect("a valid URL");
        probe::http(&check, ATTEMPT_TIMEOUT).await
    }

    #[tokio::test]
    async fn an_http_status_line_is_parsed_from_a_raw_answer() {
        let url = answer_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(ready(&url).await, Ok(()), "a 204 is ready");
    }

    #[tokio::test]
    async fn a_readiness_check_judges_the_status_without_reading_the_body() {
        let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nst").await;
        assert_eq!(ready(&url).await, Ok(()), "the body is never awaited");
    }

    #[tokio::test]
    async fn a_redirect_is_not_ready_and_is_not_followed() {
        let url = answer_once(b"HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n").await;
        let failure = ready(&url).await.expect_err("a 302 is no 2xx");
        assert_eq!(failure.to_string(), "HTTP 302 (expected 200-299)");
    }

    #[test]
    fn a_pidfile_with_garbage_names_nobody() {
        let path = std::env::temp_dir().join(format!("hf-pidfile-{}", std::process::id()));
        std::fs::write(&path, "not a pid\n").expect("write");
        assert_eq!(read_pidfile(&path), None);
        std::fs::write(&path, " 4242\n").expect("write");
        assert_eq!(read_pidfile(&path), Some(Pid::from_raw(4242)));
        let _ = std::fs::remove_file(&path);
    }
}
