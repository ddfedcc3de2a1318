//! Admission: how many connections each peer uid holds, against the caps.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UnixStream;

use super::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, ONE_SHOT_RESERVE, PRIVILEGED_RESERVE};
use crate::control::conn::{Peer, response_line};
use crate::control::protocol::{ControlError, ErrorKind, Request};

/// How many connections each peer uid holds, against the caps.
#[derive(Debug)]
pub(super) struct Admission {
    pub(super) total_cap: usize,
    pub(super) per_uid_cap: usize,
    /// Of `total_cap`, what uids other than root and `own_euid` may hold together.
    pub(super) others_cap: usize,
    /// Of `per_uid_cap`, what one uid's streaming requests may hold.
    pub(super) streaming_cap: usize,
    pub(super) own_euid: u32,
    pub(super) total: usize,
    pub(super) others: usize,
    pub(super) by_uid: HashMap<u32, usize>,
    pub(super) streaming_by_uid: HashMap<u32, usize>,
}

impl Admission {
    /// Caps for a process allowed `nofile` descriptors: at most half of them for
    /// connections (the rest stays for services' pipes, cgroups and spawning), at most
    /// [`MAX_CONNECTIONS`]; one uid may take at most half of that total.
    pub(super) fn for_nofile(nofile: u64, own_euid: u32) -> Self {
        let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
        let total_cap = half.clamp(2, MAX_CONNECTIONS);
        let per_uid_cap = (total_cap / 2).min(MAX_CONNECTIONS_PER_UID);
        Admission {
            total_cap,
            per_uid_cap,
            others_cap: total_cap - PRIVILEGED_RESERVE.min(total_cap / 4),
            streaming_cap: per_uid_cap - ONE_SHOT_RESERVE.min(per_uid_cap / 2),
            own_euid,
            total: 0,
            others: 0,
            by_uid: HashMap::new(),
            streaming_by_uid: HashMap::new(),
        }
    }

    pub(super) fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_euid
    }

    /// Counts a new connection from `uid`, or says why it may not stay.
    pub(super) fn admit(&mut self, uid: u32) -> Result<(), String> {
        if self.total >= self.total_cap {
            return Err(format!(
                "too many control connections (at most {} at a time): try again later",
                self.total_cap
            ));
        }
        let privileged = self.privileged(uid);
        if !privileged && self.others >= self.others_cap {
            return Err(format!(
                "too many control connections from users other than root and uid {} \
                 (at most {} of {} at a time, the rest stay for them): try again later",
                self.own_euid, self.others_cap, self.total_cap
            ));
        }
        let held = self.by_uid.entry(uid).or_default();
        if *held >= self.per_uid_cap {
            return Err(format!(
                "too many control connections from uid {uid} (at most {} at a time): try again later",
                self.per_uid_cap
            ));
        }
        *held += 1;
        self.total += 1;
        if !privileged {
            self.others += 1;
        }
        Ok(())
    }

    /// A connection from `uid` ended.
    pub(super) fn release(&mut self, uid: u32) {
        let privileged = self.privileged(uid);
        if let Some(held) = self.by_uid.get_mut(&uid) {
            *held -= 1;
            self.total -= 1;
            if !privileged {
                self.others -= 1;
            }
            if *held == 0 {
                self.by_uid.remove(&uid);
            }
        }
    }

    /// Counts an admitted connection of `uid` as streaming, or says why it may not.
    pub(super) fn begin_streaming(&mut self, uid: u32) -> Result<(), String> {
        let streaming = self.streaming_by_uid.entry(uid).or_default();
        if *streaming >= self.streaming_cap {
            return Err(format!(
                "too many following control connections from uid {uid} (at most {} of its {} \
                 at a time follow events or logs or wait, the rest stay for other requests): \
                 try again later",
                self.streaming_cap, self.per_uid_cap
            ));
        }
        *streaming += 1;
        Ok(())
    }

    /// A streaming connection of `uid` ended.
    pub(super) fn end_streaming(&mut self, uid: u32) {
        if let Some(streaming) = self.streaming_by_uid.get_mut(&uid) {
            *streaming -= 1;
            if *streaming == 0 {
                self.streaming_by_uid.remove(&uid);
            }
        }
    }
}

/// The admission, shared by the accept loop and the connection tasks (which learn only
/// from the request line whether they stream). Never held across an await.
pub(super) type SharedAdmission = Arc<Mutex<Admission>>;

pub(super) fn lock(admission: &SharedAdmission) -> MutexGuard<'_, Admission> {
    // The counts stay consistent even if a holder panicked: each update is one step.
    admission
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A streaming slot of one uid, given back when the stream ends.
pub(super) struct StreamingSlot {
    admission: SharedAdmission,
    uid: u32,
}

impl StreamingSlot {
    pub(super) fn take(admission: &SharedAdmission, uid: u32) -> Result<Self, ControlError> {
        lock(admission)
            .begin_streaming(uid)
            .map_err(|message| ControlError {
                kind: ErrorKind::Busy,
                message,
            })?;
        Ok(StreamingSlot {
            admission: Arc::clone(admission),
            uid,
        })
    }
}

impl Drop for StreamingSlot {
    fn drop(&mut self) {
        lock(&self.admission).end_streaming(self.uid);
    }
}

/// The request of `peer`, after taking a streaming slot into `slot` when it streams; a
/// busy refusal instead when its uid's streams already hold all theirs.
pub(super) fn with_streaming_slot(
    peer: Result<Peer, ControlError>,
    request: Result<Request, ControlError>,
    admission: &SharedAdmission,
    slot: &mut Option<StreamingSlot>,
) -> (Result<Peer, ControlError>, Result<Request, ControlError>) {
    let request = match (&peer, request) {
        (Ok(peer), Ok(request)) if streams(&request) => StreamingSlot::take(admission, peer.uid)
            .map(|taken| {
                *slot = Some(taken);
                request
            }),
        (_, request) => request,
    };
    (peer, request)
}

/// Whether `request` holds its connection beyond one answer.
pub(super) fn streams(request: &Request) -> bool {
    match request {
        Request::Events { follow, .. } | Request::Logs { follow, .. } => *follow,
        Request::Wait { .. } => true,
        _ => false,
    }
}

/// holdfast's soft `RLIMIT_NOFILE` (already raised at start).
pub(super) fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Answers a connection over a cap with one error line and closes it, without a task:
/// a refused flood must not pile up anything. Best effort: the short line fits in the
/// socket buffer of a fresh connection.
pub(super) fn refuse(stream: UnixStream, message: String) {
    tracing::debug!("refused control connection: {message}");
    let line = response_line(Err(ControlError {
        kind: ErrorKind::Busy,
        message,
    }));
    // A plain non-blocking write on the std socket: tokio has not polled this fresh
    // socket's readiness yet.
    if let Ok(mut stream) = stream.into_std() {
        let _ = stream.write_all(&line);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}
