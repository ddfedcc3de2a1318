//! The event feed: what the runtime's event bus publishes and what followers read. Two
//! views of one stream of records:
//! - the **live channel**, a bounded broadcast each follower, waiter and log streamer
//!   subscribes to, and
//! - the **kept history**, the last [`HISTORY`] records, several times longer than the
//!   channel, shared with the connection tasks so that a follower the channel left behind
//!   catches up from it on its own, even while the supervisor is busy or already gone
//!   (the burst of a shutdown).
//!
//! Invariants:
//! - a record is kept before it is broadcast, so whoever sees it live finds it in the
//!   history too;
//! - publishing never blocks on a reader: the history's lock is held only to push or
//!   copy records, and the channel drops what a slow subscriber did not read;
//! - the channel closes when the last [`EventFeed`] is dropped; a [`History`] does not
//!   keep it open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::protocol::EventRecord;
use crate::model::ServiceName;

/// Records a subscriber may be behind on the live channel before it lags.
pub const CHANNEL: usize = 512;
/// Records kept for `events` and for followers to catch up from.
pub const HISTORY: usize = 4 * CHANNEL;

/// The publishing side, held by the event bus and the control server.
#[derive(Clone)]
pub struct EventFeed {
    live: broadcast::Sender<EventRecord>,
    kept: History,
}

impl EventFeed {
    /// A feed with the standard channel and history lengths.
    pub fn new() -> Self {
        Self::with_lengths(CHANNEL, HISTORY)
    }

    /// A feed whose channel holds `channel` records and whose history keeps `history`.
    pub fn with_lengths(channel: usize, history: usize) -> Self {
        Self {
            live: broadcast::channel(channel.max(1)).0,
            kept: History(Arc::new(Mutex::new(Kept {
                records: VecDeque::new(),
                capacity: history,
            }))),
        }
    }

    /// Keeps `record`, then broadcasts it.
    pub fn publish(&self, record: EventRecord) {
        self.kept.lock().push(record.clone());
        // No subscriber is not an error.
        let _ = self.live.send(record);
    }

    /// Replaces the history with `records` (oldest first; the newest are kept).
    pub fn replace(&self, records: Vec<EventRecord>) {
        let mut kept = self.kept.lock();
        kept.records.clear();
        records.into_iter().for_each(|r| kept.push(r));
    }

    /// The live channel from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.live.subscribe()
    }

    /// The kept history, without holding the channel open.
    pub fn history(&self) -> History {
        self.kept.clone()
    }

    /// How many subscribers the live channel has.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }

    /// A handle that reads the feed without keeping its channel open: servers whose
    /// connections outlive their accept loop (the HTTP server's) hold this one, so that
    /// their streams still end when the runtime drops its feed.
    pub fn downgrade(&self) -> WeakFeed {
        WeakFeed {
            live: self.live.downgrade(),
            kept: self.kept.clone(),
        }
    }
}

/// The reading side of an [`EventFeed`] that does not keep it open.
#[derive(Clone)]
pub struct WeakFeed {
    live: broadcast::WeakSender<EventRecord>,
    kept: History,
}

impl WeakFeed {
    /// The live channel from now on; `None` once the feed is closed.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<EventRecord>> {
        self.live.upgrade().map(|live| live.subscribe())
    }

    /// The kept history.
    pub fn history(&self) -> &History {
        &self.kept
    }
}

impl Default for EventFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// The kept records, readable by anyone holding this handle.
#[derive(Clone)]
pub struct History(Arc<Mutex<Kept>>);

struct Kept {
    records: VecDeque<EventRecord>,
    capacity: usize,
}

impl Kept {
    fn push(&mut self, record: EventRecord) {
        if self.capacity == 0 {
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic elsewhere while pushing leaves a valid deque: go on with it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest kept record's number (0 when none).
    pub fn newest(&self) -> u64 {
        self.lock().records.back().map_or(0, |r| r.seq)
    }

    /// The kept records that pass the filter, oldest first.
    pub fn recent(&self, service: Option<&ServiceName>, since: Option<u64>) -> Vec<EventRecord> {
        self.recent_and_newest(service, since).0
    }

    /// Like [`History::recent`], with the newest kept record's number (0 when none),
    /// whether it passes the filter or not.
    pub fn recent_and_newest(
        &self,
        service: Option<&ServiceName>,
        since: Option<u64>,
    ) -> (Vec<EventRecord>, u64) {
        let kept = self.lock();
        let newest = kept.records.back().map_or(0, |r| r.seq);
        // Records are in sequence order: skip the old ones without looking at each.
        let start = since.map_or(0, |since| kept.records.partition_point(|r| r.seq <= since));
        let recent = (kept.records.range(start..))
            .filter(|r| r.matches(service, None))
            .cloned()
            .collect();
        (recent, newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, service: &str) -> EventRecord {
        EventRecord {
            seq,
            time: "2026-12-01T00:00:00.000Z".to_owned(),
            service: Some(ServiceName::new(service).expect("valid name")),
            kind: "stopped".to_owned(),
            message: "stopped".to_owned(),
            data: Default::default(),
        }
    }

    fn seqs(records: Vec<EventRecord>) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn the_history_keeps_the_most_recent_records_in_order() {
        let feed = EventFeed::with_lengths(4, 3);
        (1..=5).for_each(|seq| feed.publish(record(seq, "api")));
        assert_eq!(seqs(feed.history().recent(None, None)), [3, 4, 5]);
    }

    #[test]
    fn recent_filters_by_service_and_sequence() {
        let feed = EventFeed::new();
        for (seq, name) in [(1, "api"), (2, "db"), (3, "api"), (4, "db")] {
            feed.publish(record(seq, name));
        }
        let api = ServiceName::new("api").expect("valid name");
        let history = feed.history();
        assert_eq!(seqs(history.recent(Some(&api), None)), [1, 3]);
        assert_eq!(seqs(history.recent(None, Some(2))), [3, 4]);
        assert_eq!(seqs(history.recent(Some(&api), Some(1))), [3]);
    }

    #[test]
    fn publishing_never_waits_for_a_subscriber_and_the_history_covers_what_it_missed() {
        let feed = EventFeed::with_lengths(4, 16);
        let mut slow = feed.subscribe();
        (1..=10).for_each(|seq| feed.publish(record(seq, "api")));
        assert!(
            matches!(
                slow.try_recv(),
                Err(broadcast::error::TryRecvError::Lagged(6))
            ),
            "the subscriber that did not read is told it lagged"
        );
        assert_eq!(
            seqs(feed.history().recent(None, Some(0))),
            (1..=10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_history_does_not_keep_the_channel_open() {
        let feed = EventFeed::new();
        let mut live = feed.subscribe();
        let history = feed.history();
        feed.publish(record(1, "api"));
        drop(feed);
        assert_eq!(
            live.try_recv().map(|r| r.seq),
            Ok(1),
            "what was sent is still read"
        );
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert_eq!(seqs(history.recent(None, None)), [1], "and still kept");
    }
}
