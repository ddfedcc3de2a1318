//! `events` with `follow`: the one control request answered with a stream of lines.
//!
//! The connection task subscribes to the feed's live channel *before* it asks the
//! supervisor for the recent history, so no event falls between the two; events seen in
//! both are written once (by sequence number).
//!
//! Invariants:
//! - the supervisor never waits for a follower (see `control::feed`). A follower the
//!   live channel leaves behind catches up from the feed's history, which is several
//!   times longer and read without the supervisor; only one that falls behind even that
//!   gets one `lagged` error line, saying what it missed, and is disconnected;
//! - a burst of events goes out in one write: lines are buffered while more are
//!   waiting and flushed when the channel is drained;
//! - every write has the control socket's write deadline, so a client that stops
//!   reading holds up only its own connection task, and only until the deadline;
//! - the stream ends when the client disconnects (noticed even while no events come)
//!   or the daemon goes away, after the events it published last.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::conn::{ControlMsg, Limits, Peer, dispatch, response_line};
use super::feed::History;
use super::protocol::{ControlError, ErrorKind, EventRecord, Reply, Request};
use crate::model::ServiceName;

/// Which events a follower asked for.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub service: Option<ServiceName>,
    pub since: Option<u64>,
    /// How many of the recent events to send before the new ones.
    pub last: Option<usize>,
}

/// What a follower reads: the live channel, taken before anything else happens on the
/// connection, and the history to catch up from. Neither keeps the channel open, so the
/// stream sees it close when the daemon goes away.
pub(super) struct Subscription {
    pub live: broadcast::Receiver<EventRecord>,
    pub history: History,
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
    subscription: Subscription,
    limits: Limits,
) {
    tracing::debug!(?filter, ?peer, "control request: follow events");
    let end = match stream_events(&mut stream, filter, peer, tx, subscription, limits).await {
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
    subscription: Subscription,
    limits: Limits,
) -> End {
    let Subscription { mut live, history } = subscription;
    // The supervisor refuses a name it does not know.
    if filter.service.is_some()
        && let Err(e) = recent(filter.service.clone(), Some(u64::MAX), peer, tx).await
    {
        return End::Error(e);
    }
    // The recent events and the newest of all, read at once: the live channel, taken
    // before, brings everything after it.
    let (recent, newest) = history.recent_and_newest(filter.service.as_ref(), filter.since);
    // The newest sequence number handled (written or filtered out).
    let mut seen = newest.max(filter.since.unwrap_or(0));
    let (mut reader, writer) = stream.split();
    let mut writer = BufWriter::new(writer);
    // Events up to the newest in the history are not new, even those not shown.
    let skip = match filter.last {
        Some(n) => recent.len().saturating_sub(n),
        None => 0,
    };
    for event in recent.into_iter().skip(skip) {
        if write_event(&mut writer, event, limits).await.is_err() {
            return End::Gone;
        }
    }
    if flush(&mut writer, limits).await.is_err() {
        return End::Gone;
    }
    let mut scratch = [0_u8; 64];
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            // The client sends nothing after its request: any read result means it is
            // gone (EOF or error), or misbehaving, which ends the stream all the same.
            _ = reader.read(&mut scratch) => return End::Gone,
        };
        let events = match received {
            Ok(event) => vec![event],
            Err(RecvError::Lagged(missed)) => match catch_up(&history, seen, missed) {
                Ok(events) => events,
                Err(e) => return End::Error(e),
            },
            // The daemon is shutting down.
            Err(RecvError::Closed) => {
                return End::Error(ControlError {
                    kind: ErrorKind::ShuttingDown,
                    message: "holdfast is shutting down: the event stream ends".to_owned(),
                });
            }
        };
        for event in events {
            if event.seq <= seen {
                continue;
            }
            seen = event.seq;
            if event.matches(filter.service.as_ref(), None)
                && write_event(&mut writer, event, limits).await.is_err()
            {
                return End::Gone;
            }
        }
        if live.is_empty() && flush(&mut writer, limits).await.is_err() {
            return End::Gone;
        }
    }
}

/// The supervisor's kept events of `service` after seq `since`.
async fn recent(
    service: Option<ServiceName>,
    since: Option<u64>,
    peer: Peer,
    tx: &mpsc::Sender<ControlMsg>,
) -> Result<Vec<EventRecord>, ControlError> {
    let request = Request::Events {
        follow: false,
        service,
        since,
        last: None,
    };
    match dispatch(request, peer, tx).await? {
        Reply::Events { events } => Ok(events),
        other => Err(ControlError {
            kind: ErrorKind::Internal,
            message: format!("unexpected answer to events: {other:?}"),
        }),
    }
}

/// Everything after seq `seen`, from the history, for a follower the live channel left
/// behind (`missed` records). The live channel goes on from its oldest record, which was
/// kept before it was sent, so nothing falls between the two. When the history no longer
/// holds `seen + 1`, events are lost to this follower and it is told so.
fn catch_up(history: &History, seen: u64, missed: u64) -> Result<Vec<EventRecord>, ControlError> {
    let events = history.recent(None, Some(seen));
    let lost = match events.first() {
        Some(first) if first.seq == seen + 1 => return Ok(events),
        Some(first) => first.seq - seen - 1,
        // The live channel had newer events, so the history has too, unless it keeps none.
        None => missed,
    };
    Err(ControlError {
        kind: ErrorKind::Lagged,
        message: format!(
            "too slow to follow the event stream: {lost} events missed after seq {seen}; reconnect with since = {seen} to catch up from the history"
        ),
    })
}

/// Buffers one event line (a full buffer is written out within the write deadline).
async fn write_event(
    writer: &mut (impl AsyncWriteExt + Unpin),
    event: EventRecord,
    limits: Limits,
) -> Result<(), ()> {
    let line = response_line(Ok(Reply::Event { event }));
    within_deadline(limits, writer.write_all(&line)).await
}

/// Sends what is buffered within the write deadline.
async fn flush(writer: &mut (impl AsyncWriteExt + Unpin), limits: Limits) -> Result<(), ()> {
    within_deadline(limits, writer.flush()).await
}

/// A write to the follower, which ends the stream when it fails or the follower stops
/// reading for longer than the control socket's write deadline.
async fn within_deadline(
    limits: Limits,
    write: impl Future<Output = std::io::Result<()>>,
) -> Result<(), ()> {
    match tokio::time::timeout(limits.write_timeout, write).await {
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
