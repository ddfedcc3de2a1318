//! The `NOTIFY_SOCKET` holdfast runs for its services.
//!
//! Invariants:
//! - One datagram socket per daemon, bound at a path in the state directory, mode 0666
//!   (services may run as other users) and `SO_PASSCRED`: the kernel attaches the
//!   sender's real pid to every datagram whether or not the sender asks for it, so the
//!   pid cannot be forged.
//! - File descriptors sent along (`systemd-notify` sends `BARRIER=1` with a pipe and
//!   waits until the receiver closes it) are received close-on-exec and closed at once.
//! - The receive task resolves the sender's process group from `/proc` right away (the
//!   sender may exit soon after sending) and hands `(pid, pgid, text)` to the supervisor
//!   task, which alone knows which group belongs to which service.
//! - Any local user can write to the socket, so junk must cost little: a datagram whose
//!   sender is not one of the [`Senders`] the supervisor task published is dropped
//!   before its text is looked at, the task handles at most [`BATCH`] datagrams per
//!   wake-up, and the queue to the supervisor task is bounded (full: dropped). Drops
//!   are logged as a count, at most once per [`REPORT_EVERY`].

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::unix::Pid;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;

use crate::process::{ProcStat, proc_stat};

/// systemd's limit for one notification (`NOTIFY_BUFFER_MAX`).
const MAX_DATAGRAM: usize = 4096;
/// Datagrams handled per wake-up before the task yields to the others.
pub const BATCH: usize = 64;
/// Notifications queued for the supervisor task at most; more are dropped.
pub const QUEUE: usize = 1024;
/// Drops are logged as a sum at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The processes that may notify: the process groups and main pids the supervisor task
/// knows, published by it, read by the receive task for every datagram. A stale entry
/// only lets a datagram through to the supervisor task, which checks again.
#[derive(Debug, Clone, Default)]
pub struct Senders(Arc<Mutex<Known>>);

#[derive(Debug, Default)]
struct Known {
    /// Process groups and pids of supervised processes.
    ids: HashSet<Pid>,
    /// Spawns under way: their child may notify before its pid is published.
    spawning: usize,
}

impl Senders {
    /// Replaces the known groups and pids.
    pub fn set(&self, ids: impl IntoIterator<Item = Pid>) {
        let mut known = self.lock();
        known.ids.clear();
        known.ids.extend(ids);
    }

    /// Applies what changed: each group or pid is a sender now, or no longer one.
    pub fn update(&self, changes: impl IntoIterator<Item = (Pid, bool)>) {
        let mut known = self.lock();
        for (id, sender) in changes {
            if sender {
                known.ids.insert(id);
            } else {
                known.ids.remove(&id);
            }
        }
    }

    /// Adds one group or pid (a child just spawned).
    pub fn admit(&self, id: Pid) {
        self.lock().ids.insert(id);
    }

    /// Marks a spawn under way until the guard is dropped; publish the child's pid
    /// ([`Senders::admit`]) before dropping it.
    pub fn spawning(&self) -> Spawning {
        self.lock().spawning += 1;
        Spawning(self.clone())
    }

    /// Whether `sender` (holdfast is `me`) may be a supervised process: in a known group
    /// or a known pid, holdfast's own child, or, while a spawn is under way, in a session
    /// led by a child of holdfast (every spawned process leads its own session).
    fn admit_sender(&self, sender: &ProcStat, me: Pid) -> bool {
        let spawning = {
            let known = self.lock();
            if known.ids.contains(&sender.pgid) || known.ids.contains(&sender.pid) {
                return true;
            }
            known.spawning > 0
        };
        sender.ppid == me
            || (spawning && proc_stat(sender.sid).is_ok_and(|leader| leader.ppid == me))
    }

    fn knows(&self, id: Pid) -> bool {
        self.lock().ids.contains(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A spawn under way (see [`Senders::spawning`]).
#[derive(Debug)]
pub struct Spawning(Senders);

impl Drop for Spawning {
    fn drop(&mut self) {
        self.0.lock().spawning -= 1;
    }
}

/// A notification as received: who sent it (kernel-checked) and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub pid: Pid,
    /// The sender's process group at receive time; `None` if it had already gone.
    pub pgid: Option<Pid>,
    pub text: String,
}

/// The socket path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("notify.sock")
}

/// Binds the notify socket at `path` (replacing a stale one) with `SO_PASSCRED`.
/// Must be called within a tokio runtime.
pub fn bind(path: &Path) -> io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = UnixDatagram::bind(path)?;
    setsockopt(&socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(socket)
}

/// Receives notifications from `senders` until `tx`'s receiver is dropped.
pub fn serve(socket: UnixDatagram, senders: Senders, tx: mpsc::Sender<Datagram>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let me = holdfast_sys::os::getpid();
        let mut drops = Drops::default();
        loop {
            tokio::select! {
                readable = socket.readable() => {
                    if let Err(error) = readable {
                        tracing::warn!("notify socket: waiting for datagrams failed: {error}");
                        continue;
                    }
                    if drain(&socket, &senders, me, &tx, &mut drops).is_err() {
                        return;
                    }
                    // Bounded work per wake-up: a flood must not hog this worker thread.
                    tokio::task::yield_now().await;
                }
                () = drops.due() => drops.report(),
            }
        }
    })
}

/// The supervisor task is gone.
struct Closed;

/// Handles up to [`BATCH`] queued datagrams.
fn drain(
    socket: &UnixDatagram,
    senders: &Senders,
    me: Pid,
    tx: &mpsc::Sender<Datagram>,
    drops: &mut Drops,
) -> Result<(), Closed> {
    for _ in 0..BATCH {
        match socket.try_io(Interest::READABLE, || receive(socket, senders, me)) {
            Ok(Received::Note(datagram)) => match tx.try_send(datagram) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => drops.count(Dropped::Busy),
                Err(TrySendError::Closed(_)) => return Err(Closed),
            },
            Ok(Received::Dropped(why)) => drops.count(why),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => {
                tracing::warn!("notify socket: receive failed: {error}");
                break;
            }
        }
    }
    Ok(())
}

/// What became of one datagram.
enum Received {
    Note(Datagram),
    Dropped(Dropped),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Its sender is no supervised process (or is gone, or sent no credentials).
    Stranger,
    /// Oversized or not UTF-8.
    Malformed,
    /// The queue to the supervisor task was full.
    Busy,
}

/// Drops since the last report, logged as sums: the first after a quiet spell at once,
/// then at most once per [`REPORT_EVERY`].
#[derive(Debug, Default)]
struct Drops {
    strangers: u64,
    malformed: u64,
    busy: u64,
    /// When the next report may be logged; `None` while nothing was reported lately.
    next_report: Option<tokio::time::Instant>,
}

impl Drops {
    fn count(&mut self, why: Dropped) {
        match why {
            Dropped::Stranger => self.strangers += 1,
            Dropped::Malformed => self.malformed += 1,
            Dropped::Busy => self.busy += 1,
        }
        if self.next_report.is_none() {
            self.report();
        }
    }

    /// Resolves when pending drops may be reported; never while none are pending.
    async fn due(&self) {
        match self.next_report {
            Some(at) if self.pending() => tokio::time::sleep_until(at).await,
            _ => std::future::pending().await,
        }
    }

    fn pending(&self) -> bool {
        self.strangers + self.malformed + self.busy > 0
    }

    /// Logs and resets the sums; with nothing to report, the quiet spell begins.
    fn report(&mut self) {
        if !self.pending() {
            self.next_report = None;
            return;
        }
        let parts: Vec<String> = [
            (self.strangers, "from processes of no service"),
            (self.malformed, "oversized or not UTF-8"),
            (self.busy, "while the supervisor was busy"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        tracing::info!("notify socket: dropped datagrams: {}", parts.join(", "));
        *self = Drops {
            next_report: Some(tokio::time::Instant::now() + REPORT_EVERY),
            ..Drops::default()
        };
    }
}

/// One datagram. Errors with `WouldBlock` when nothing is queued.
fn receive(socket: &UnixDatagram, senders: &Senders, me: Pid) -> io::Result<Received> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(libc::ucred, [std::os::fd::RawFd; 32]);
    let (bytes, truncated, pid) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
        )
        .map_err(io::Error::from)?;
        let mut pid = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                match cmsg {
                    ControlMessageOwned::ScmCredentials(creds) => {
                        pid = Some(Pid::from_raw(creds.pid()));
                    }
                    ControlMessageOwned::ScmRights(fds) => {
                        // Not kept: closing is what releases a `BARRIER=1` sender.
                        for fd in fds {
                            let _ = nix::unistd::close(fd);
                        }
                    }
                    _ => {}
                }
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), pid)
    };
    // Who sent it decides first: junk from strangers costs no more than this.
    let Some(pid) = pid.filter(|p| p.as_raw() > 0) else {
        return Ok(Received::Dropped(Dropped::Stranger));
    };
    let (admitted, pgid) = match proc_stat(pid) {
        Ok(stat) => (senders.admit_sender(&stat, me), Some(stat.pgid)),
        // Gone already: only a known (main) pid can still be placed.
        Err(_) => (senders.knows(pid), None),
    };
    if !admitted {
        return Ok(Received::Dropped(Dropped::Stranger));
    }
    if truncated || bytes > MAX_DATAGRAM {
        return Ok(Received::Dropped(Dropped::Malformed));
    }
    let Ok(text) = std::str::from_utf8(&buf[..bytes]) else {
        return Ok(Received::Dropped(Dropped::Malformed));
    };
    Ok(Received::Note(Datagram {
        pid,
        pgid,
        text: text.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_arrives_with_the_senders_pid_and_group() {
        let dir = std::env::temp_dir().join(format!("hf-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = socket_path(&dir);
        let socket = bind(&path).expect("bind the notify socket");
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let senders = Senders::default();
        senders.set([holdfast_sys::os::core_pid(nix::unistd::getpgrp())]);
        let task = serve(socket, senders, tx);
        let sender = std::os::unix::net::UnixDatagram::unbound().expect("sender socket");
        sender
            .send_to(b"READY=1\nSTATUS=up", &path)
            .expect("send a notification");
        let got = rx.recv().await.expect("a datagram");
        assert_eq!(
            got.pid,
            holdfast_sys::os::getpid(),
            "the kernel names the sender"
        );
        assert_eq!(
            got.pgid,
            Some(holdfast_sys::os::core_pid(nix::unistd::getpgrp()))
        );
        assert_eq!(got.text, "READY=1\nSTATUS=up");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn stat(pid: i32, ppid: i32, pgid: i32, sid: i32) -> ProcStat {
        ProcStat {
            pid: Pid::from_raw(pid),
            comm: "x".to_owned(),
            state: 'S',
            ppid: Pid::from_raw(ppid),
            pgid: Pid::from_raw(pgid),
            sid: Pid::from_raw(sid),
            start_time: 0,
        }
    }

    #[test]
    fn only_processes_of_known_groups_pids_and_holdfasts_children_may_notify() {
        let me = Pid::from_raw(100);
        let senders = Senders::default();
        senders.set([Pid::from_raw(200), Pid::from_raw(300)]);
        assert!(
            senders.admit_sender(&stat(201, 200, 200, 200), me),
            "a group member"
        );
        assert!(
            senders.admit_sender(&stat(300, 1, 301, 301), me),
            "a main pid elsewhere"
        );
        assert!(
            senders.admit_sender(&stat(400, 100, 400, 400), me),
            "our child"
        );
        assert!(
            !senders.admit_sender(&stat(500, 1, 500, 500), me),
            "a stranger"
        );
        senders.set([]);
        assert!(
            !senders.admit_sender(&stat(201, 200, 200, 200), me),
            "a group no longer known"
        );
    }

    #[test]
    fn while_a_spawn_is_under_way_the_sessions_of_holdfasts_children_may_notify() {
        // This test process leads the session in question; its parent plays holdfast.
        let me = holdfast_sys::os::core_pid(nix::unistd::getppid());
        let session = holdfast_sys::os::getpid().as_raw();
        let senders = Senders::default();
        let grandchild = stat(i32::MAX - 1, session, session, session);
        assert!(!senders.admit_sender(&grandchild, me), "no spawn under way");
        let spawning = senders.spawning();
        assert!(senders.admit_sender(&grandchild, me), "a spawn under way");
        assert!(
            !senders.admit_sender(&stat(500, 1, 500, 1), me),
            "a stranger's session"
        );
        drop(spawning);
        assert!(!senders.admit_sender(&grandchild, me), "the spawn is over");
    }
}
