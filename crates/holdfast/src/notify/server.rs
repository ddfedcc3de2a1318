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

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// systemd's limit for one notification (`NOTIFY_BUFFER_MAX`).
const MAX_DATAGRAM: usize = 4096;

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

/// Receives notifications until `tx`'s receiver is dropped.
pub fn serve(socket: UnixDatagram, tx: mpsc::UnboundedSender<Datagram>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let received = socket
                .async_io(Interest::READABLE, || receive(&socket))
                .await;
            match received {
                Ok(Some(datagram)) => {
                    if tx.send(datagram).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!("notify socket: receive failed: {error}");
                }
            }
        }
    })
}

/// One datagram; `Ok(None)` for one without credentials or text (dropped). Errors with
/// `WouldBlock` when nothing is queued (`async_io` then waits for readiness).
fn receive(socket: &UnixDatagram) -> io::Result<Option<Datagram>> {
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
    let Some(pid) = pid.filter(|p| p.as_raw() > 0) else {
        return Ok(None);
    };
    if truncated || bytes > MAX_DATAGRAM {
        tracing::debug!(%pid, "notify socket: dropped an oversized datagram");
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(&buf[..bytes]) else {
        tracing::debug!(%pid, "notify socket: dropped a datagram that is not UTF-8");
        return Ok(None);
    };
    let pgid = crate::process::proc_stat(pid).ok().map(|stat| stat.pgid);
    Ok(Some(Datagram {
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
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = serve(socket, tx);
        let sender = std::os::unix::net::UnixDatagram::unbound().expect("sender socket");
        sender
            .send_to(b"READY=1\nSTATUS=up", &path)
            .expect("send a notification");
        let got = rx.recv().await.expect("a datagram");
        assert_eq!(
            got.pid,
            nix::unistd::getpid(),
            "the kernel names the sender"
        );
        assert_eq!(got.pgid, Some(nix::unistd::getpgrp()));
        assert_eq!(got.text, "READY=1\nSTATUS=up");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
