//! The `listen` sockets of services: bound by holdfast once, kept open for the service's
//! whole life, passed to every run of its main process (`LISTEN_FDS`).
//!
//! A socket that stays open while no run accepts keeps its backlog: a client that
//! connects between a crash and the restart, or while an upgrade swaps runs, waits
//! there instead of being refused. So the sockets belong to the service (its base name:
//! the copies of `instances = N` share one socket, N processes accepting on it), not to
//! a run: restarts, crashes and upgrades never close them. They are bound at the first
//! spawn that needs them rather than at boot, so that a bind failure is that spawn's
//! failure (the restart policy retries it, `status` and the events show the address and
//! the errno) instead of holdfast refusing to start for one service's port; and a
//! service that never starts (`autostart = false`) holds no port. A reload keeps the
//! sockets of the addresses it keeps and closes the ones it drops ([`Sockets::retain`]);
//! new addresses are bound at the next spawn.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::model::{Listen, ListenAddr, Plan, ServiceSpec, UpgradeMode};

/// Mode of a unix socket file: anyone may connect, like systemd's `SocketMode=` default.
const UNIX_MODE: u32 = 0o666;

/// The bound sockets of every service that has `listen`, by base name.
#[derive(Default)]
pub(super) struct Sockets {
    by_base: HashMap<String, Bound>,
    /// `tcp_migrate_req` was set (or tried) already.
    migrate_set: bool,
}

/// One service's sockets, in no particular order (a spawn passes them in `listen`'s).
struct Bound {
    backlog: u32,
    sockets: Vec<Socket>,
}

/// One bound, listening socket.
pub(super) struct Socket {
    addr: ListenAddr,
    fd: OwnedFd,
    /// A unix socket's file (device, inode), removed when the socket closes if it is
    /// still the same file.
    file: Option<(u64, u64)>,
}

/// A bind that failed: the address and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub(super) struct BindError {
    pub addr: ListenAddr,
    #[source]
    pub source: io::Error,
}

impl Sockets {
    /// Binds the sockets of `spec`'s service that are not bound yet; an address the
    /// service no longer lists is closed first (it may be bound again below with another
    /// backlog, or by another service).
    pub(super) fn bind(&mut self, spec: &ServiceSpec) -> Result<(), BindError> {
        let listen = &spec.listen;
        if listen.addrs.is_empty() {
            return Ok(());
        }
        let bound = self
            .by_base
            .entry(spec.name.base().to_owned())
            .or_insert(Bound {
                backlog: listen.backlog,
                sockets: Vec::new(),
            });
        bound.keep_only(listen);
        for addr in &listen.addrs {
            if !bound.sockets.iter().any(|s| &s.addr == addr) {
                bound.sockets.push(Socket::bind(addr, listen.backlog)?);
            }
        }
        Ok(())
    }

    /// The fds a main process of `spec` gets as `LISTEN_FDS` (in the order of `listen`,
    /// bound by [`Sockets::bind`]), and their names: none in proxy mode, where holdfast
    /// accepts on them ([`Sockets::get`]).
    pub(super) fn for_spawn(&self, spec: &ServiceSpec) -> (Vec<BorrowedFd<'_>>, Vec<String>) {
        let proxied = matches!(
            spec.upgrade.as_ref().map(|u| &u.mode),
            Some(UpgradeMode::Proxy(_))
        );
        let Some(bound) = self.by_base.get(spec.name.base()).filter(|_| !proxied) else {
            return (Vec::new(), Vec::new());
        };
        let fds: Vec<BorrowedFd<'_>> = spec
            .listen
            .addrs
            .iter()
            .filter_map(|addr| bound.sockets.iter().find(|s| &s.addr == addr))
            .map(|s| s.fd.as_fd())
            .collect();
        // systemd's default `FileDescriptorName=` is the unit's name: here the service's.
        let names = vec![spec.name.base().to_owned(); fds.len()];
        (fds, names)
    }

    /// The bound sockets of the service `base` (the base name of instances), with their
    /// addresses; `None` before its first spawn bound them. For the proxy of
    /// `mode = "proxy"`, which accepts on them (on a dup: `fd().try_clone_to_owned()`).
    pub(super) fn get(&self, base: &str) -> Option<&[Socket]> {
        self.by_base.get(base).map(|b| b.sockets.as_slice())
    }

    /// For the proxy of `base`: a dup of each of its TCP sockets, with its address.
    pub(super) fn public(&self, base: &str) -> io::Result<crate::upgrade::proxy::Public> {
        let mut public = Vec::new();
        for socket in self.get(base).unwrap_or_default() {
            if let ListenAddr::Tcp(addr) = socket.addr() {
                public.push((*addr, socket.fd().try_clone_to_owned()?));
            }
        }
        Ok(public)
    }

    /// After a reload: closes the sockets of services gone from `plan` and of addresses
    /// their service no longer lists.
    pub(super) fn retain(&mut self, plan: &Plan) {
        let listens: HashMap<&str, &Listen> = plan
            .services
            .values()
            .map(|spec| (spec.name.base(), &spec.listen))
            .collect();
        self.by_base
            .retain(|base, bound| match listens.get(base.as_str()) {
                Some(listen) => {
                    bound.keep_only(listen);
                    !bound.sockets.is_empty()
                }
                None => false,
            });
        self.migrate_requests(plan);
    }

    /// For `holdfast upgrade --self`: every bound socket's fd by a name saying whose and
    /// which it is (`<base> <address>`); the fds stay open here until the exec.
    pub(super) fn handover_fds(&self) -> BTreeMap<String, RawFd> {
        (self.by_base.iter())
            .flat_map(|(base, bound)| {
                (bound.sockets.iter())
                    .map(move |s| (handover_name(base, &s.addr), s.fd.as_raw_fd()))
            })
            .collect()
    }

    /// The new image of holdfast: takes the sockets of `plan`'s services that the
    /// previous image handed over (named as [`Sockets::handover_fds`] names them) out of
    /// `handed`, instead of binding them again.
    pub(super) fn adopt(&mut self, plan: &Plan, handed: &mut BTreeMap<String, OwnedFd>) {
        for spec in plan.services.values() {
            let base = spec.name.base();
            for addr in &spec.listen.addrs {
                let Some(fd) = handed.remove(&handover_name(base, addr)) else {
                    continue;
                };
                let file = match addr {
                    ListenAddr::Unix(path) => std::fs::symlink_metadata(path)
                        .ok()
                        .map(|m| (m.dev(), m.ino())),
                    ListenAddr::Tcp(_) => None,
                };
                let bound = self.by_base.entry(base.to_owned()).or_insert(Bound {
                    backlog: spec.listen.backlog,
                    sockets: Vec::new(),
                });
                if !bound.sockets.iter().any(|s| &s.addr == addr) {
                    let addr = addr.clone();
                    bound.sockets.push(Socket { addr, fd, file });
                }
            }
        }
    }

    /// With a `reuseport` service, as root: `net.ipv4.tcp_migrate_req = 1`. When the
    /// old run closes its `SO_REUSEPORT` listener, the connections queued on it (SYN
    /// received, or established but not yet accepted) move to the new run's listener
    /// instead of being reset: without it, every upgrade would drop the clients that
    /// connected in the last instant before the old run closed. The setting is per
    /// network namespace, so holdfast sets it in its own.
    pub(super) fn migrate_requests(&mut self, plan: &Plan) {
        let reuseport = plan.services.values().any(|spec| {
            matches!(
                spec.upgrade.as_ref().map(|u| &u.mode),
                Some(UpgradeMode::Reuseport)
            )
        });
        if !reuseport || self.migrate_set || !nix::unistd::geteuid().is_root() {
            return;
        }
        self.migrate_set = true;
        const KNOB: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
        if let Err(e) = std::fs::write(KNOB, "1") {
            tracing::warn!(
                "cannot set {KNOB} to 1 ({e}): connections queued on an old run's listener are reset when it closes"
            );
        }
    }
}

impl Bound {
    /// Closes the sockets `listen` no longer lists; with another backlog, applies it to
    /// the ones kept (Linux takes a second `listen(2)` as the new backlog).
    fn keep_only(&mut self, listen: &Listen) {
        self.sockets.retain(|s| listen.addrs.contains(&s.addr));
        if self.backlog != listen.backlog {
            self.backlog = listen.backlog;
            for socket in &self.sockets {
                if let Err(e) = rustix::net::listen(&socket.fd, backlog(listen.backlog)) {
                    tracing::warn!("cannot change the backlog of {}: {e}", socket.addr);
                }
            }
        }
    }
}

impl Socket {
    pub(super) fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn bind(addr: &ListenAddr, backlog_len: u32) -> Result<Self, BindError> {
        let error = |source: io::Error| BindError {
            addr: addr.clone(),
            source,
        };
        let (fd, file) = match addr {
            ListenAddr::Tcp(at) => {
                let family = if at.is_ipv4() {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                };
                let fd = stream_socket(family).map_err(error)?;
                // A restarted holdfast rebinds at once, though connections of its last
                // life are still in TIME_WAIT.
                rustix::net::sockopt::set_socket_reuseaddr(&fd, true)
                    .map_err(|e| error(e.into()))?;
                rustix::net::bind(&fd, at).map_err(|e| error(e.into()))?;
                (fd, None)
            }
            ListenAddr::Unix(path) => bind_unix(path).map_err(error)?,
        };
        rustix::net::listen(&fd, backlog(backlog_len)).map_err(|e| error(e.into()))?;
        Ok(Socket {
            addr: addr.clone(),
            fd,
            file,
        })
    }
}

impl Drop for Socket {
    /// A unix socket's file goes with the socket, unless something else was put there.
    fn drop(&mut self) {
        let (ListenAddr::Unix(path), Some(file)) = (&self.addr, self.file) else {
            return;
        };
        let same = std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == file);
        if same {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn stream_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Binds `path`, after removing a socket file left there (by a holdfast that was
/// killed, say): nothing listens on it any more, or we could not be binding it. Any
/// other kind of file is not ours to remove.
fn bind_unix(path: &Path) -> io::Result<(OwnedFd, Option<(u64, u64)>)> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = stream_socket(AddressFamily::UNIX)?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_MODE))?;
    Ok((fd, Some((meta.dev(), meta.ino()))))
}

/// What a socket is called in a handover to a re-executed holdfast.
fn handover_name(base: &str, addr: &ListenAddr) -> String {
    format!("{base} {addr}")
}

/// The `listen(2)` backlog; the config allows at most 65535.
fn backlog(len: u32) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::model::ServiceName;

    fn spec(name: &str, addrs: Vec<ListenAddr>) -> ServiceSpec {
        let mut spec = ServiceSpec::with_defaults(
            ServiceName::new(name).expect("valid name"),
            vec!["/bin/true".into()],
        );
        spec.listen.addrs = addrs;
        spec
    }

    fn plan(specs: Vec<ServiceSpec>) -> Plan {
        let mut plan = crate::config::parse("", "test.toml", Path::new("/")).expect("empty");
        plan.services = specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        plan
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("holdfast-sockets-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn instances_share_the_sockets_of_their_base_and_keep_them_across_binds() {
        let mut sockets = Sockets::default();
        let tcp = ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"));
        let first = spec("web@0", vec![tcp.clone()]);
        sockets.bind(&first).expect("binds");
        let (fds, names) = sockets.for_spawn(&first);
        assert_eq!((fds.len(), names), (1, vec!["web".to_owned()]));
        let raw = |fds: &[BorrowedFd<'_>]| {
            use std::os::fd::AsRawFd;
            fds.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>()
        };
        let before = raw(&fds);
        let second = spec("web@1", vec![tcp]);
        sockets.bind(&second).expect("already bound");
        assert_eq!(
            raw(&sockets.for_spawn(&second).0),
            before,
            "one socket for both"
        );
        let shared = sockets.get("web").expect("bound");
        assert_eq!(
            raw(&shared.iter().map(Socket::fd).collect::<Vec<_>>()),
            before
        );
    }

    #[test]
    fn a_unix_socket_replaces_a_stale_socket_file_and_is_removed_when_closed() {
        let dir = temp_dir("unix");
        let path = dir.join("api.sock");
        let stale = std::os::unix::net::UnixListener::bind(&path).expect("stale socket");
        drop(stale);
        let mut sockets = Sockets::default();
        let api = spec("api", vec![ListenAddr::Unix(path.clone())]);
        sockets.bind(&api).expect("binds over the stale file");
        let mode = std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, UNIX_MODE);
        UnixStream::connect(&path).expect("the backlog takes a connection");
        sockets.retain(&plan(Vec::new()));
        assert!(sockets.get("api").is_none());
        assert!(!path.exists(), "the file goes with the socket");
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_never_removed() {
        let dir = temp_dir("file");
        let path = dir.join("data");
        std::fs::write(&path, "keep me").expect("file");
        let mut sockets = Sockets::default();
        let err = sockets
            .bind(&spec("api", vec![ListenAddr::Unix(path.clone())]))
            .expect_err("not a socket");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("still there"),
            "keep me"
        );
    }

    #[test]
    fn a_reload_closes_only_the_addresses_it_drops() {
        let mut sockets = Sockets::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let taken = listener.local_addr().expect("addr");
        drop(listener);
        let kept = ListenAddr::Tcp(taken);
        let dropped = ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"));
        sockets
            .bind(&spec("api", vec![kept.clone(), dropped]))
            .expect("binds");
        sockets.retain(&plan(vec![spec("api", vec![kept.clone()])]));
        let left: Vec<&ListenAddr> = sockets
            .get("api")
            .expect("kept")
            .iter()
            .map(Socket::addr)
            .collect();
        assert_eq!(left, [&kept]);
        TcpStream::connect(taken).expect("the kept socket still listens");
        let err = Sockets::default()
            .bind(&spec("other", vec![kept]))
            .expect_err("the address is taken");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on tcp://{taken}: ")),
            "{err}"
        );
    }
}
