//! What every control connection shares, whatever it asks: who sent it, the message
//! that carries a request to the supervisor, a connection's limits, and the one
//! response line. The server and the streaming answers (`follow`, `logs`, `wait`) build
//! on it, so none of them needs another.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::protocol::{ControlError, Envelope, ErrorKind, Reply, Request, ResponseBody, VERSION};

/// One control request on its way to the supervisor. The supervisor answers on `reply`
/// once the request's transition is applied; dropping `reply` is answered to the client
/// as [`ErrorKind::ShuttingDown`].
#[derive(Debug)]
pub struct ControlMsg {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Result<Reply, ControlError>>,
}

/// Who sent a request, from the kernel (`SO_PEERCRED`), not from the client's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// `None` when the kernel reports no pid (peer in another pid namespace).
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// Deadlines and limits of one connection; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) read_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) max_line: usize,
}

/// Hands a request to the supervisor and waits for its answer.
pub(crate) async fn dispatch(
    request: Request,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<Reply, ControlError> {
    let shutting_down = || ControlError {
        kind: ErrorKind::ShuttingDown,
        message: "holdfast is shutting down".to_owned(),
    };
    let (reply, answer) = oneshot::channel();
    let msg = ControlMsg {
        request,
        peer,
        reply,
    };
    tx.send(msg).await.map_err(|_| shutting_down())?;
    answer.await.map_err(|_| shutting_down())?
}

/// One response as a line: `{"v":1,"ok":...}` or `{"v":1,"error":...}` and a newline.
pub(super) fn response_line(response: Result<Reply, ControlError>) -> Vec<u8> {
    let body = match response {
        Ok(reply) => ResponseBody::Ok(reply),
        Err(e) => ResponseBody::Error(e),
    };
    let mut line = serde_json::to_vec(&Envelope { v: VERSION, body })
        .expect("protocol types always serialize to JSON");
    line.push(b'\n');
    line
}
