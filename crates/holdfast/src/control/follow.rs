//! `events` with `follow`: the one control request answered with a stream of lines.
//!
//! The connection task subscribes to the runtime's broadcast channel *before* it asks
//! the supervisor for the recent history, so no event falls between the two; events
//! seen in both are written once (by sequence number).
//!
//! Invariants:
//! - the supervisor never waits for a follower: it only ever `send`s on a bounded
//!   broadcast channel. A follower that falls more than the channel's capacity behind
//!   gets one `lagged` error line and is disconnected;
//! - every write has the control socket's write deadline, so a client that stops
//!   reading holds up only its own connection task, and only until the deadline;
//! - the stream ends when the client disconnects (noticed even while no events come)
//!   or the daemon goes away.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::conn::{ControlMsg, Limits, Peer, dispatch, response_line};
use super::protocol::{ControlError, ErrorKind, EventRecord, Reply, Request};
use crate::model::ServiceName;

/// Records a follower may be behind before it is cut off as lagging.
pub const CHANNEL: usize = 1024;

/// The sending side of the live event stream: the runtime's event bus sends, each
/// follower subscribes.
pub type EventSender = broadcast::Sender<EventRecord>;

/// A fresh channel for the event bus and the control server.
pub fn event_channel() -> EventSender {
    broadcast::channel(CHANNEL).0
}

/// Which events a follower asked for.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub service: Option<ServiceName>,
    pub since: Option<u64>,
    /// How many of the recent events to send before the new ones.
    pub last: Option<usize>,
}

/// The subscription for a follower. Taken before anything else happens on the
/// connection, and without keeping a sender, so the stream sees the bus close when the
/// daemon goes away.
pub(super) fn subscribe(events: EventSender) -> broadcast::Receiver<EventRecord> {
    events.subscribe()
}

/// Why a stream ended.
enum End {
    /// The client went away or stopped reading: nothing more to say.
    Gone,
    /// Something to tell the client before closing.
    Error(ControlError),
}

pub(super) async fn follow(
    mut stream: UnixStream,
    filter: Filter,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    live: broadcast::Receiver<EventRecord>,
    limits: Limits,
) {
    tracing::debug!(?filter, ?peer, "control request: follow events");
    let end = match stream_events(&mut stream, filter, peer, tx, live, limits).await {
        End::Gone => return,
        End::Error(e) => e,
    };
    tracing::debug!(kind = ?end.kind, message = %end.message, "event stream ended");
    let line = response_line(Err(end));
    let write = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(limits.write_timeout, write).await;
}

async fn stream_events(
    stream: &mut UnixStream,
    filter: Filter,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
    mut live: broadcast::Receiver<EventRecord>,
    limits: Limits,
) -> End {
    let request = Request::Events {
        follow: false,
        service: filter.service.clone(),
        since: filter.since,
        last: None,
    };
    let history = match dispatch(request, peer, tx).await {
        Ok(Reply::Events { events }) => events,
        Ok(other) => {
            return End::Error(ControlError {
                kind: ErrorKind::Internal,
                message: format!("unexpected answer to events: {other:?}"),
            });
        }
        Err(e) => return End::Error(e),
    };
    let mut last = history
        .iter()
        .map(|event| event.seq)
        .fold(filter.since.unwrap_or(0), u64::max);
    let (mut reader, mut writer) = stream.split();
    // Events up to the newest in the history are not new, even those not shown.
    let skip = match filter.last {
        Some(n) => history.len().saturating_sub(n),
        None => 0,
    };
    for event in history.into_iter().skip(skip) {
        if write_event(&mut writer, event, limits).await.is_err() {
            return End::Gone;
        }
    }
    let mut scratch = [0_u8; 64];
    loop {
        let event = tokio::select! {
            received = live.recv() => received,
            // The client sends nothing after its request: any read result means it is
            // gone (EOF or error), or misbehaving, which ends the stream all the same.
            _ = reader.read(&mut scratch) => return End::Gone,
        };
        match event {
            Ok(event) => {
                if event.seq <= last || !event.matches(filter.service.as_ref(), None) {
                    continue;
                }
                last = event.seq;
                if write_event(&mut writer, event, limits).await.is_err() {
                    return End::Gone;
                }
            }
            Err(RecvError::Lagged(missed)) => {
                return End::Error(ControlError {
                    kind: ErrorKind::Lagged,
                    message: format!(
                        "too slow to follow the event stream: {missed} events missed after seq {last}; reconnect with since = {last} to catch up from the history"
                    ),
                });
            }
            // The daemon is shutting down.
            Err(RecvError::Closed) => {
                return End::Error(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    message: "holdfast is shutting down: the event stream ends".to_owned(),
                });
            }
        }
    }
}

/// Writes one event line within the write deadline.
async fn write_event(
    writer: &mut (impl AsyncWriteExt + Unpin),
    event: EventRecord,
    limits: Limits,
) -> Result<(), ()> {
    let line = response_line(Ok(Reply::Event { event }));
    match tokio::time::timeout(limits.write_timeout, writer.write_all(&line)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "event follower went away");
            Err(())
        }
        Err(_) => {
            tracing::debug!("event follower stopped reading; disconnecting it");
            Err(())
        }
    }
}
