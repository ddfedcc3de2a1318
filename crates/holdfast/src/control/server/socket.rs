//! The control socket file: bound safely, removed at shutdown.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::net::UnixListener;

/// Binds the control socket at `path`.
///
/// Creates the parent directory if missing (0755). Refuses to start if another live
/// daemon answers on the socket (a connect that succeeds means live), removes a stale
/// socket file (connect refused) and refuses to replace anything that is not a socket.
/// The socket gets mode 0600; with `allowed_gid`, mode 0660 and group `allowed_gid`
/// (the owner stays holdfast's euid, which is root when holdfast runs as root).
///
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path, allowed_gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| annotate(e, format!("failed to create directory {parent:?}")))?;
    }
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|e| annotate(e, format!("failed to bind control socket {path:?}")))?;
    let mode = if allowed_gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| annotate(e, format!("failed to set mode of control socket {path:?}")))?;
    if let Some(gid) = allowed_gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            annotate(
                e.into(),
                format!("failed to give control socket {path:?} to group {gid}"),
            )
        })?;
    }
    Ok(listener)
}

/// Makes room for a fresh socket at `path`, unless a live daemon owns it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, format!("failed to inspect {path:?}"))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("refusing to replace {path:?} with the control socket: it is not a socket"),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => {
            let pid = getsockopt(&stream, PeerCredentials)
                .map(|cred| cred.pid().to_string())
                .unwrap_or_else(|_| "unknown".to_owned());
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "holdfast is already running on {} (pid {pid})",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path)
                .map_err(|e| annotate(e, format!("failed to remove stale socket {path:?}")))
        }
        Err(e) => Err(annotate(
            e,
            format!("failed to check whether {path:?} is in use"),
        )),
    }
}

/// Removes the socket file (called at clean shutdown). A missing file is fine.
pub fn unlink(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to remove control socket")
        }
    }
}

fn annotate(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}
