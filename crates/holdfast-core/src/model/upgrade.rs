//! `listen` sockets and `[service.X.upgrade]`: how a service keeps its port open while a
//! new build replaces the running one, and how that rollout is checked and undone.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// One address of `listen = [...]`: a socket holdfast binds (and keeps open for the
/// whole life of the service) and passes to every run (`LISTEN_FDS`), or, with
/// `mode = "proxy"`, the public address holdfast itself accepts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// `tcp://IP:PORT` (`tcp://[::]:8080` for IPv6).
    Tcp(SocketAddr),
    /// `unix:/run/x.sock`: a stream socket at that path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    /// As the config writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The sockets holdfast binds for a service (`listen`, `backlog`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listen {
    /// In the order of `LISTEN_FDS` (fd 3, 4, ...); empty: holdfast binds nothing.
    pub addrs: Vec<ListenAddr>,
    /// `listen(2)` backlog of each socket.
    pub backlog: u32,
}

/// How the port stays open while an old and a new run overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeMode {
    /// holdfast binds `listen` and passes the sockets to every run: the socket never
    /// closes, connections wait in its backlog while no run accepts.
    Handover,
    /// The service binds the port itself with `SO_REUSEPORT`: old and new runs listen
    /// side by side until the old one stops.
    Reuseport,
    /// For services that can do neither: holdfast accepts on `listen` and forwards each
    /// connection (or, for HTTP, each request) to the current run, which listens on a
    /// private port (`{port}` in its command, env, readiness and health).
    Proxy(ProxySpec),
}

impl UpgradeMode {
    /// The config's name of the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpgradeMode::Handover => "handover",
            UpgradeMode::Reuseport => "reuseport",
            UpgradeMode::Proxy(_) => "proxy",
        }
    }
}

/// `mode = "proxy"`: what is forwarded, and where the runs listen.
///
/// Each run gets a private port: `{port}` in its `command` and `env` is kept as written
/// here and replaced when the run is spawned; in `ready = { tcp }`/`{ http }` and in the
/// health probe's `http`/`tcp` address the config stores port 0 instead (a port nothing
/// can listen on), which the proxy replaces by the run's port when it probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub protocol: ProxyProtocol,
    /// Private ports handed to runs as `{port}`; `None`: a free port the kernel picks.
    pub ports: Option<RangeInclusive<u16>>,
}

/// What a proxy knows of the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// HTTP/1.1: each request of a client connection goes to the run current when it
    /// arrives, so a keep-alive client moves to the new build without an error.
    Http,
    /// Plain TCP: a connection stays with the run it was forwarded to until it closes.
    Tcp,
}

/// Whether a `<build>.sha256` file beside the build must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Checked when present.
    #[default]
    IfPresent,
    /// A build without one is refused.
    Required,
}

/// `verify = ["{bin}", "--version"]`: a command that must exit 0 before a build is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// `{bin}` is replaced by the build's path.
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// `[service.X.upgrade]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeSpec {
    pub mode: UpgradeMode,
    /// The symlink whose flips start an upgrade (`current`); `None`: only `holdfast
    /// upgrade NAME` does.
    pub watch: Option<PathBuf>,
    /// The build runs use until an upgrade moves the service on: the program of
    /// `command` with every symlink resolved when the config was loaded. A later flip of
    /// the link changes nothing until it was verified and rolled out.
    pub build: PathBuf,
    /// The new run must be up (ready, and its first health probe passed) this soon.
    pub ready_timeout: Duration,
    /// How long the old run may finish its connections after its stop signal before
    /// SIGKILL.
    pub drain: Duration,
    /// How long the new run is watched once the old one is gone: an exit or UNHEALTHY
    /// within it rolls back.
    pub bake: Duration,
    /// On rollback, point `watch` back at the old build.
    pub rollback_link: bool,
    pub verify: Option<Verify>,
    pub checksum: Checksum,
}

impl UpgradeSpec {
    /// Defaults of everything but the mode and the build.
    pub fn new(mode: UpgradeMode, build: PathBuf) -> Self {
        Self {
            mode,
            watch: None,
            build,
            ready_timeout: defaults::READY_TIMEOUT,
            drain: defaults::DRAIN,
            bake: defaults::BAKE,
            rollback_link: true,
            verify: None,
            checksum: Checksum::IfPresent,
        }
    }
}

pub mod defaults {
    use std::time::Duration;

    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DRAIN: Duration = Duration::from_secs(30);
    pub const BAKE: Duration = Duration::from_secs(60);
    pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
    /// `listen(2)` backlog: Linux's `somaxconn` default since 5.4.
    pub const BACKLOG: u32 = 4096;
}
