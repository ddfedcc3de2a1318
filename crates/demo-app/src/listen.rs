//! Where the listening socket comes from: inherited as fd 3 through the systemd
//! socket-activation protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), or bound
//! by us on `--listen`.
//!
//! Invariant: [`take_inherited`] runs before any other thread exists, because it edits
//! the process environment (`setenv` is not thread-safe).

use std::{
    env, fmt, io,
    net::{SocketAddr, TcpListener},
};

use socket2::{Domain, Protocol, Socket, Type};

/// The environment variables of the socket-activation protocol. Children we spawn get
/// them removed, so they never mistake our sockets for theirs.
pub const ACTIVATION_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// How the listener was obtained; printed in the startup line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Inherited from the service manager, with the fd's name when it had one.
    Inherited { name: Option<String> },
    /// Bound by us on `--listen`.
    Bound,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Inherited { .. } => f.write_str("LISTEN_FDS"),
            Origin::Bound => f.write_str("bound"),
        }
    }
}

/// Takes the first inherited socket when `LISTEN_FDS` is set and `LISTEN_PID` is our
/// own pid, like `sd_listen_fds(1)`: `LISTEN_FDS` and `LISTEN_PID` are removed from
/// the environment once taken. `LISTEN_FDNAMES` cannot be removed without unsafe code
/// (edition 2024), so [`ACTIVATION_VARS`] is stripped from every child instead.
///
/// Returns `Ok(None)` when nothing was passed to this process.
pub fn take_inherited() -> io::Result<Option<(TcpListener, Origin)>> {
    if env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    // listenfd also accepts a missing LISTEN_PID; the protocol (and holdfast's
    // tests of it) require that it names us.
    let for_us =
        env::var("LISTEN_PID").ok().and_then(|pid| pid.parse().ok()) == Some(std::process::id());
    if !for_us {
        return Ok(None);
    }
    let name = env::var("LISTEN_FDNAMES")
        .ok()
        .and_then(|names| names.split(':').next().map(str::to_owned))
        .filter(|name| !name.is_empty());
    let listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)?
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS passed no socket")
        })?;
    Ok(Some((listener, Origin::Inherited { name })))
}

/// Whether other sockets may listen on the address we bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// A plain bind: the address is ours alone.
    Exclusive,
    /// `SO_REUSEPORT`: an old and a new run listen side by side during an upgrade,
    /// the kernel spreading new connections over both.
    ReusePort,
}

/// The backlog of a socket we bind, std's default.
const BACKLOG: i32 = 128;

/// Binds `addr` ourselves.
pub fn bind(addr: SocketAddr, share: Share) -> io::Result<(TcpListener, Origin)> {
    let listener = match share {
        Share::Exclusive => TcpListener::bind(addr)?,
        Share::ReusePort => {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            // As std does for every listener: a restart may rebind at once.
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            socket.into()
        }
    };
    Ok((listener, Origin::Bound))
}
