//! Who may call: the peer's credentials from the kernel, checked against root,
//! holdfast's own user and the allowed group.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::net::UnixStream;

use crate::control::conn::Peer;
use crate::control::protocol::{ControlError, ErrorKind, Request};
use crate::model::DaemonSettings;

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

/// The groups that open the control socket beyond root and holdfast's own user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    /// `control_group`: may read and start/stop/restart.
    pub control: Option<u32>,
    /// `admin_group`: may also change the daemon itself, like root.
    pub admin: Option<u32>,
}

impl Groups {
    /// The groups `[holdfast]` names.
    pub fn of(daemon: &DaemonSettings) -> Self {
        Groups {
            control: daemon.control_group.as_ref().map(|g| g.gid),
            admin: daemon.admin_group.as_ref().map(|g| g.gid),
        }
    }
}

/// Who may call, and for what: holdfast's own euid and its groups.
#[derive(Debug, Clone, Copy)]
pub(super) struct Access {
    pub(super) own_euid: u32,
    pub(super) groups: Groups,
}

/// What an admitted peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Root, holdfast's own user, members of `admin_group`: every verb.
    Admin,
    /// Members of `control_group` only: read, and start/stop/restart services.
    Operator,
}

/// The role of an allowed peer whose supplementary groups are `supplementary`.
pub(super) fn role(peer: &Peer, access: Access, supplementary: &[u32]) -> Option<Role> {
    let member =
        |gid: Option<u32>| gid.is_some_and(|gid| peer.gid == gid || supplementary.contains(&gid));
    if peer.uid == 0 || peer.uid == access.own_euid || member(access.groups.admin) {
        Some(Role::Admin)
    } else if allowed(peer, access.own_euid, access.groups.control, supplementary) {
        Some(Role::Operator)
    } else {
        None
    }
}

/// The verb of `request` when it changes the daemon itself (or signals a service's
/// processes), which only [`Role::Admin`] may; `None` for reading and for start, stop,
/// restart and what only puts a service back where those can act (`reset-failed`,
/// `quarantine release`: `start` of a quarantined service releases it anyway).
fn admin_verb(request: &Request) -> Option<&'static str> {
    match request {
        Request::Shutdown => Some("shutdown"),
        Request::Reload { .. } => Some("reload"),
        Request::Signal { .. } => Some("signal"),
        Request::Upgrade { .. } => Some("upgrade"),
        Request::UpgradeSelf => Some("upgrade --self"),
        // Only the core handler (run by the kernel as root) tells of core dumps.
        Request::CoreDumped { .. } => Some("core-dumped"),
        Request::Wait { requests, .. } => requests.iter().find_map(admin_verb),
        Request::Status
        | Request::Start { .. }
        | Request::Stop { .. }
        | Request::Restart { .. }
        | Request::Events { .. }
        | Request::Logs { .. }
        | Request::QuarantineList
        | Request::Crashes { .. }
        | Request::CrashShow { .. }
        | Request::QuarantineRelease { .. }
        | Request::ResetFailed { .. } => None,
    }
}

/// `request` when `role` may make it, else a [`ErrorKind::PermissionDenied`] that says
/// who may.
fn authorize(
    peer: &Peer,
    role: Role,
    access: Access,
    request: Request,
) -> Result<Request, ControlError> {
    let Some(verb) = admin_verb(&request).filter(|_| role == Role::Operator) else {
        return Ok(request);
    };
    let admins = match access.groups.admin {
        Some(gid) => format!(
            "root, uid {} and members of admin_group (gid {gid})",
            access.own_euid
        ),
        None => format!(
            "root and uid {} (set `admin_group` in [holdfast] to allow a group)",
            access.own_euid
        ),
    };
    Err(ControlError {
        kind: ErrorKind::PermissionDenied,
        message: format!(
            "permission denied: uid {} may not `{verb}`: members of control_group may only \
             read and start, stop or restart services; `{verb}` is for {admins}",
            peer.uid
        ),
    })
}

/// The checked peer (without its role) and its request, refused when the role may not
/// make it.
pub(super) type Authorized = (Result<Peer, ControlError>, Result<Request, ControlError>);

pub(super) fn authorized(
    checked: Result<(Peer, Role), ControlError>,
    request: Result<Request, ControlError>,
    access: Access,
) -> Authorized {
    match checked {
        Ok((peer, role)) => {
            let request = request.and_then(|r| authorize(&peer, role, access, r));
            (Ok(peer), request)
        }
        Err(denied) => (Err(denied), request),
    }
}

/// The peer of `stream` and its role, or why it may not use the socket at all.
pub(super) async fn check_peer(
    stream: &UnixStream,
    access: Access,
) -> Result<(Peer, Role), ControlError> {
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| ControlError {
        kind: ErrorKind::Internal,
        message: format!("failed to read peer credentials of control connection: {e}"),
    })?;
    let peer = Peer {
        pid: Some(cred.pid()).filter(|&pid| pid > 0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    // Reading /proc is only needed when the cheap checks do not settle it.
    let groups = access.groups;
    let settled = role(&peer, access, &[]) == Some(Role::Admin)
        || (groups.admin.is_none() && groups.control.is_none_or(|gid| gid == peer.gid));
    let supplementary = if settled {
        Vec::new()
    } else {
        supplementary_groups(peer.pid).await
    };
    if let Some(role) = role(&peer, access, &supplementary) {
        Ok((peer, role))
    } else {
        let own_euid = access.own_euid;
        let who = match groups.control {
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
