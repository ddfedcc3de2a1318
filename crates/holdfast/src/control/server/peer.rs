//! Who may call: the peer's credentials from the kernel, checked against root,
//! holdfast's own user and the allowed group.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::net::UnixStream;

use crate::control::conn::Peer;
use crate::control::protocol::{ControlError, ErrorKind};

/// Whether a peer may use the control socket: root, holdfast's own user, or a member of
/// the allowed group (primary gid or one of `supplementary`).
pub(super) fn allowed(
    peer: &Peer,
    own_euid: u32,
    allowed_gid: Option<u32>,
    supplementary: &[u32],
) -> bool {
    if peer.uid == 0 || peer.uid == own_euid {
        return true;
    }
    match allowed_gid {
        Some(gid) => peer.gid == gid || supplementary.contains(&gid),
        None => false,
    }
}

/// Supplementary groups from the text of `/proc/<pid>/status` (`Groups:\t4 24 27`).
pub(super) fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else {
        return Vec::new();
    };
    match tokio::fs::read_to_string(format!("/proc/{pid}/status")).await {
        Ok(status) => parse_groups(&status),
        // The peer may already have exited; then it only has its primary group.
        Err(_) => Vec::new(),
    }
}

pub(super) async fn check_peer(
    stream: &UnixStream,
    own_euid: u32,
    allowed_gid: Option<u32>,
) -> Result<Peer, ControlError> {
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| ControlError {
        kind: ErrorKind::Internal,
        message: format!("failed to read peer credentials of control connection: {e}"),
    })?;
    let peer = Peer {
        pid: Some(cred.pid()).filter(|&pid| pid > 0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    // Reading /proc is only needed when the cheap checks fail.
    let supplementary = if allowed(&peer, own_euid, allowed_gid, &[]) || allowed_gid.is_none() {
        Vec::new()
    } else {
        supplementary_groups(peer.pid).await
    };
    if allowed(&peer, own_euid, allowed_gid, &supplementary) {
        Ok(peer)
    } else {
        let who = match allowed_gid {
            Some(gid) => format!("root, uid {own_euid} and members of group {gid}"),
            None => format!("root and uid {own_euid}"),
        };
        Err(ControlError {
            kind: ErrorKind::PermissionDenied,
            message: format!(
                "permission denied: uid {} may not use the control socket (allowed: {who})",
                peer.uid
            ),
        })
    }
}
