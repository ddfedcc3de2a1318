//! `GET /api/events`: the event feed as server-sent events, for the dashboard's
//! `EventSource`. The kept history first (after `Last-Event-ID`, so a reconnecting
//! browser resumes where it was; else the last `?last=N`, default 300), then each event
//! as it is published, until the daemon shuts down. A stream the live channel left
//! behind catches up from the history, as an `events -f` follower does; keep-alive
//! comments hold idle connections open through proxies.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{WebState, error_response};
use crate::control::feed::History;
use crate::control::protocol::{ControlError, ErrorKind, EventRecord};

/// Events of the history sent to a new stream when it does not say.
const LAST: usize = 300;
/// Between keep-alive comments of an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only the last N events of the history (0: only new ones).
    last: Option<usize>,
}

pub async fn events(
    State(state): State<WebState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(slot) = state.stream_slot() else {
        return error_response(ControlError {
            kind: ErrorKind::Busy,
            message: format!(
                "{} event streams are open already: close one (another tab?) and retry",
                super::MAX_STREAMS
            ),
        });
    };
    let Some(live) = state.events().subscribe() else {
        return error_response(ControlError {
            kind: ErrorKind::ShuttingDown,
            message: "holdfast is shutting down".to_owned(),
        });
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let history = state.events().history().clone();
    let backlog: VecDeque<EventRecord> = match resume {
        Some(seq) => history.recent(None, Some(seq)).into(),
        None => {
            let mut all = history.recent(None, None);
            let skip = all.len().saturating_sub(q.last.unwrap_or(LAST));
            all.drain(..skip);
            all.into()
        }
    };
    let last = backlog.back().map_or(resume.unwrap_or(0), |r| r.seq);
    let stream = records(Feed {
        backlog,
        live,
        history,
        last,
        _slot: slot,
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Where one stream is: records still to send, the live channel, the newest sent.
struct Feed {
    backlog: VecDeque<EventRecord>,
    live: broadcast::Receiver<EventRecord>,
    history: History,
    last: u64,
    /// Given back when the stream ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Feed {
    /// The next record to send; `None` once the feed is closed.
    async fn next(&mut self) -> Option<EventRecord> {
        loop {
            if let Some(record) = self.backlog.pop_front() {
                self.last = record.seq;
                return Some(record);
            }
            match self.live.recv().await {
                // Records the backlog already covered come again on the channel.
                Ok(record) if record.seq <= self.last => {}
                Ok(record) => {
                    self.last = record.seq;
                    return Some(record);
                }
                Err(RecvError::Lagged(_)) => {
                    self.backlog = self.history.recent(None, Some(self.last)).into();
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn records(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(feed, |mut feed| async move {
        let record = feed.next().await?;
        let event = Event::default()
            .id(record.seq.to_string())
            .json_data(&record)
            .unwrap_or_else(|_| Event::default().comment("unserializable event"));
        Some((Ok(event), feed))
    })
}
