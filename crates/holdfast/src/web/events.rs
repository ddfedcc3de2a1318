//! `GET /api/events`: the event feed as server-sent events, for the dashboard's
//! `EventSource`. The kept history first (after `Last-Event-ID`, so a reconnecting
//! browser resumes where it was; else the last `?last=N`, default 300), then each event
//! as it is published, until the daemon shuts down. A stream the live channel left
//! behind catches up from the history, as an `events -f` follower does; keep-alive
//! comments hold idle connections open through proxies.
//!
//! Besides the events (each with its `id`), two markers without id: `event: caught_up`
//! once the backlog is sent (what follows is news), and `event: gap` when the stream
//! cannot give every event since the browser's `Last-Event-ID`: the id is past the
//! newest (holdfast restarted and numbers events from 1 again: the stream starts afresh)
//! or older than the kept history (what is kept follows). After a gap the page must
//! fetch the status again instead of trusting the events it applied.

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
    let (backlog, last) = backlog(history.recent(None, None), resume, q.last.unwrap_or(LAST));
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

/// What a stream sends: an event, or a marker (see the module's doc).
#[derive(Debug, PartialEq)]
enum Item {
    Record(EventRecord),
    Gap(Gap),
    CaughtUp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Gap {
    /// The id is past the newest event: another holdfast numbers them.
    Restarted,
    /// Events after the id are no longer kept (or the stream fell behind them).
    Lost,
}

impl Gap {
    fn reason(self) -> &'static str {
        match self {
            Gap::Restarted => "restarted",
            Gap::Lost => "lost",
        }
    }
}

/// What a new stream sends before the live events, from the kept `history` (oldest
/// first), the browser's `Last-Event-ID` and how many of the history a fresh stream
/// gets; and the number of the newest event it covers.
fn backlog(history: Vec<EventRecord>, resume: Option<u64>, last: usize) -> (VecDeque<Item>, u64) {
    let newest = history.last().map_or(0, |r| r.seq);
    let oldest = history.first().map_or(0, |r| r.seq);
    let fresh = |history: Vec<EventRecord>| {
        let skip = history.len().saturating_sub(last);
        history.into_iter().skip(skip).map(Item::Record)
    };
    let mut items = VecDeque::new();
    match resume {
        None => items.extend(fresh(history)),
        Some(seq) if seq > newest => {
            items.push_back(Item::Gap(Gap::Restarted));
            items.extend(fresh(history));
        }
        Some(seq) if !history.is_empty() && seq.saturating_add(1) < oldest => {
            items.push_back(Item::Gap(Gap::Lost));
            items.extend(history.into_iter().map(Item::Record));
        }
        Some(seq) => items.extend(
            history
                .into_iter()
                .filter(|r| r.seq > seq)
                .map(Item::Record),
        ),
    }
    items.push_back(Item::CaughtUp);
    (items, newest)
}

/// Where one stream is: items still to send, the live channel, the newest sent.
struct Feed {
    backlog: VecDeque<Item>,
    live: broadcast::Receiver<EventRecord>,
    history: History,
    last: u64,
    /// Given back when the stream ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Feed {
    /// The next item to send; `None` once the feed is closed.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.backlog.pop_front() {
                if let Item::Record(record) = &item {
                    self.last = record.seq;
                }
                return Some(item);
            }
            match self.live.recv().await {
                // Records the backlog already covered come again on the channel.
                Ok(record) if record.seq <= self.last => {}
                Ok(record) => {
                    self.last = record.seq;
                    return Some(Item::Record(record));
                }
                Err(RecvError::Lagged(_)) => {
                    let kept = self.history.recent(None, None);
                    (self.backlog, _) = backlog(kept, Some(self.last), usize::MAX);
                    // Not news to announce again: the page is live already.
                    self.backlog.pop_back();
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn records(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(feed, |mut feed| async move {
        let event = match feed.next().await? {
            Item::Record(record) => Event::default()
                .id(record.seq.to_string())
                .json_data(&record)
                .unwrap_or_else(|_| Event::default().comment("unserializable event")),
            Item::Gap(gap) => Event::default()
                .event("gap")
                .data(format!("{{\"reason\":\"{}\"}}", gap.reason())),
            Item::CaughtUp => Event::default().event("caught_up").data("{}"),
        };
        Some((Ok(event), feed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(seqs: std::ops::RangeInclusive<u64>) -> Vec<EventRecord> {
        seqs.map(|seq| EventRecord {
            seq,
            time: "2026-12-01T00:00:00.000Z".to_owned(),
            service: None,
            kind: "started".to_owned(),
            message: String::new(),
            data: Default::default(),
        })
        .collect()
    }

    fn shape(items: &VecDeque<Item>) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Record(r) => r.seq.to_string(),
                Item::Gap(g) => format!("gap:{}", g.reason()),
                Item::CaughtUp => "caught_up".to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_resume_id_past_the_newest_or_older_than_the_history_is_a_gap() {
        let (items, newest) = backlog(history(5..=9), None, 2);
        assert_eq!(shape(&items), ["8", "9", "caught_up"]);
        assert_eq!(newest, 9);
        let (items, _) = backlog(history(5..=9), Some(7), 2);
        assert_eq!(shape(&items), ["8", "9", "caught_up"]);
        let (items, _) = backlog(history(5..=9), Some(4), 2);
        assert_eq!(shape(&items), ["5", "6", "7", "8", "9", "caught_up"]);
        // After a restart of holdfast: numbers start again.
        let (items, _) = backlog(history(1..=3), Some(40), 300);
        assert_eq!(shape(&items), ["gap:restarted", "1", "2", "3", "caught_up"]);
        let (items, _) = backlog(history(5..=9), Some(2), 300);
        assert_eq!(
            shape(&items),
            ["gap:lost", "5", "6", "7", "8", "9", "caught_up"]
        );
        let (items, _) = backlog(history(5..=9), Some(9), 300);
        assert_eq!(shape(&items), ["caught_up"]);
    }
}
