//! Service output forwarded to the journal (`[service.X.log] journald = true`): each
//! captured line becomes a native journal entry, `SYSLOG_IDENTIFIER=<service>`, so
//! `journalctl -t api` reads it like a systemd unit's output.
//!
//! The native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): one datagram per entry on
//! `/run/systemd/journal/socket`, `KEY=value` lines, or `KEY\n<u64 le length><bytes>\n`
//! for a value that holds a newline or is not text; an entry too big for a datagram
//! goes as a sealed memfd. Sends never block the capture: the socket is non-blocking and
//! an entry journald cannot take now is counted and dropped (the log file has it).

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

use super::record::Stream;
use crate::model::ServiceName;
use crate::unix::Pid;

/// Where journald takes native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Entries journald did not take (no journal, its queue full, ...), since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether the last line was dropped: a warning tells when dropping starts, not each drop.
static DROPPING: AtomicBool = AtomicBool::new(false);

/// How many forwarded lines were dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// One non-blocking socket for every service's entries; `None` if none can be made.
fn socket() -> Option<&'static UnixDatagram> {
    static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some(socket)
        })
        .as_ref()
}

/// The fields one service's lines share, encoded once.
#[derive(Debug)]
pub struct Forward {
    /// `SYSLOG_IDENTIFIER=`, `HOLDFAST_SERVICE=`, `HOLDFAST_INSTANCE=` and `SYSLOG_PID=`.
    common: Vec<u8>,
    service: ServiceName,
    pid: Option<Pid>,
}

impl Forward {
    pub fn new(service: &ServiceName) -> Self {
        let mut forward = Forward {
            common: Vec::new(),
            service: service.clone(),
            pid: None,
        };
        forward.encode_common();
        forward
    }

    /// The main process of the service's run, for the lines that follow (`None` between
    /// runs: a line is never credited to a process that did not write it).
    pub fn set_pid(&mut self, pid: Option<Pid>) {
        self.pid = pid;
        self.encode_common();
    }

    fn encode_common(&mut self) {
        let mut buf = Vec::new();
        put(
            &mut buf,
            "SYSLOG_IDENTIFIER",
            self.service.as_str().as_bytes(),
        );
        put(
            &mut buf,
            "HOLDFAST_SERVICE",
            self.service.as_str().as_bytes(),
        );
        if let Some(index) = self.service.instance_index() {
            put(&mut buf, "HOLDFAST_INSTANCE", index.to_string().as_bytes());
        }
        if let Some(pid) = self.pid {
            put(&mut buf, "SYSLOG_PID", pid.as_raw().to_string().as_bytes());
        }
        self.common = buf;
    }

    /// Sends one line of `stream` (without its newline); a failure is counted, never
    /// waited out.
    pub fn line(&self, stream: Stream, text: &[u8]) {
        let (priority, text) = match stream {
            Stream::Stdout | Stream::Stderr => priority(text),
            Stream::Holdfast => (&b"6"[..], text),
        };
        let mut entry = Vec::with_capacity(self.common.len() + text.len() + 32);
        entry.extend_from_slice(&self.common);
        put(&mut entry, "PRIORITY", priority);
        put(&mut entry, "MESSAGE", text);
        if send(&entry).is_ok() {
            DROPPING.store(false, Ordering::Relaxed);
            return;
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
        // Once per episode: the first drop after a line got through.
        if !DROPPING.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = %self.service,
                "the journal did not take a line of output: lines it cannot take now are \
                 dropped and counted in holdfast_journal_dropped_lines_total (the log file \
                 keeps them all)"
            );
        }
    }
}

/// A line's priority and text: informational (6) for stdout and stderr alike, as systemd
/// takes a unit's output, unless the line starts with a `<N>` prefix (sd-daemon(3)),
/// which sets it and is left out of the message.
fn priority(text: &[u8]) -> (&[u8], &[u8]) {
    match text {
        [b'<', level @ b'0'..=b'7', b'>', rest @ ..] => (std::slice::from_ref(level), rest),
        _ => (b"6", text),
    }
}

/// Appends one field: `KEY=value\n`, or the length-prefixed form for a value with a
/// newline (binary-safe).
pub fn put(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if memchr::memchr(b'\n', value).is_some() {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Whether entries can be sent: a socket can be made and journald's is there.
pub fn reachable() -> io::Result<()> {
    socket().ok_or_else(|| io::Error::other("no socket for the journal"))?;
    std::fs::metadata(SOCKET).map(drop)
}

/// Sends one entry without waiting (the socket is non-blocking): a datagram, or a sealed memfd when it is too big for one.
pub fn send(entry: &[u8]) -> io::Result<()> {
    let socket = socket().ok_or_else(|| io::Error::other("no socket for the journal"))?;
    match socket.send_to(entry, SOCKET) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => send_memfd(socket, entry),
        Err(e) => Err(e),
    }
}

fn send_memfd(socket: &UnixDatagram, entry: &[u8]) -> io::Result<()> {
    let fd = memfd_create(
        c"holdfast-journal",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(entry)?;
    // Sealed, journald may map it: the data can no longer change under it.
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    let addr = UnixAddr::new(SOCKET)?;
    let fds = [file.as_raw_fd()];
    sendmsg(
        socket.as_raw_fd(),
        &[] as &[IoSlice],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        Some(&addr),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_informational_unless_an_sd_daemon_prefix_says_otherwise() {
        assert_eq!(priority(b"hello"), (&b"6"[..], &b"hello"[..]));
        assert_eq!(priority(b"<3>failed"), (&b"3"[..], &b"failed"[..]));
        assert_eq!(priority(b"<7>"), (&b"7"[..], &b""[..]));
        assert_eq!(priority(b"<8>no"), (&b"6"[..], &b"<8>no"[..]));
        assert_eq!(priority(b"<3"), (&b"6"[..], &b"<3"[..]));
    }

    #[test]
    fn a_value_with_a_newline_is_length_prefixed_and_others_are_key_equals_value() {
        let mut buf = Vec::new();
        put(&mut buf, "A", b"one");
        put(&mut buf, "B", b"two\nlines");
        let mut want = b"A=one\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(buf, want);
    }
}
