//! The event bus of the runtime: numbers and stamps each event, keeps the most recent
//! ones for `events` and broadcasts them to `events -f` followers.
//!
//! Invariants:
//! - sequence numbers start at 1 and increase by one per published event;
//! - publishing never blocks or fails: the broadcast channel is bounded and a follower
//!   that falls behind loses events (and learns it, see `control::follow`), never the
//!   supervisor its time; the history is bounded to [`HISTORY`] records.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::event::Event;
use super::record;
use crate::control::protocol::EventRecord;
use crate::model::ServiceName;

/// Records kept for `events` without `-f`.
pub const HISTORY: usize = 1000;
/// The sending side of the live event stream, owned by the control layer.
pub use crate::control::{EventSender as Sender, event_channel as channel};

pub struct EventBus {
    last_seq: u64,
    history: VecDeque<EventRecord>,
    capacity: usize,
    tx: Sender,
}

impl EventBus {
    /// A bus keeping the last `capacity` records and broadcasting on `tx`.
    pub fn new(capacity: usize, tx: Sender) -> Self {
        Self {
            last_seq: 0,
            history: VecDeque::with_capacity(capacity.min(HISTORY)),
            capacity,
            tx,
        }
    }

    /// Numbers, stamps, keeps and broadcasts `event`; returns its record.
    pub fn publish(&mut self, event: &Event, time: SystemTime) -> EventRecord {
        self.last_seq += 1;
        let rec = record::record(self.last_seq, time, event);
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        if self.capacity > 0 {
            self.history.push_back(rec.clone());
        }
        // No follower is not an error.
        let _ = self.tx.send(rec.clone());
        rec
    }

    /// The last sequence number and the kept records, oldest first: what a re-executed
    /// holdfast (`upgrade --self`) goes on from.
    pub fn history(&self) -> (u64, Vec<EventRecord>) {
        (self.last_seq, self.history.iter().cloned().collect())
    }

    /// Goes on from `history` (see [`EventBus::history`]): the next event is numbered
    /// after `last_seq`.
    pub fn resume(&mut self, last_seq: u64, history: Vec<EventRecord>) {
        self.last_seq = last_seq;
        let skip = history.len().saturating_sub(self.capacity);
        self.history = history.into_iter().skip(skip).collect();
    }

    /// The kept records that pass the filter, oldest first.
    pub fn recent(&self, service: Option<&ServiceName>, since: Option<u64>) -> Vec<EventRecord> {
        self.history
            .iter()
            .filter(|r| r.matches(service, since))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CHANNEL;
    use crate::supervisor::event::EventKind;
    use tokio::sync::broadcast;

    fn event(service: &str) -> Event {
        Event {
            service: Some(ServiceName::new(service).expect("valid name")),
            kind: EventKind::Stopped,
        }
    }

    #[test]
    fn history_keeps_the_most_recent_records_in_order() {
        let mut bus = EventBus::new(3, channel());
        for _ in 0..5 {
            bus.publish(&event("api"), SystemTime::now());
        }
        let seqs: Vec<u64> = bus.recent(None, None).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5], "the oldest two fell out");
    }

    #[test]
    fn recent_filters_by_service_and_sequence() {
        let mut bus = EventBus::new(HISTORY, channel());
        for name in ["api", "db", "api", "db"] {
            bus.publish(&event(name), SystemTime::now());
        }
        let api = ServiceName::new("api").expect("valid name");
        let seqs = |v: Vec<EventRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(bus.recent(Some(&api), None)), [1, 3]);
        assert_eq!(seqs(bus.recent(None, Some(2))), [3, 4]);
        assert_eq!(seqs(bus.recent(Some(&api), Some(1))), [3]);
    }

    #[test]
    fn a_resumed_bus_goes_on_numbering_after_the_history_it_was_given() {
        let mut old = EventBus::new(3, channel());
        for _ in 0..4 {
            old.publish(&event("api"), SystemTime::now());
        }
        let (last, history) = old.history();
        let mut new = EventBus::new(3, channel());
        new.resume(last, history);
        new.publish(&event("api"), SystemTime::now());
        let seqs: Vec<u64> = new.recent(None, None).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }

    #[test]
    fn publishing_never_waits_for_a_follower() {
        let tx = channel();
        let mut rx = tx.subscribe();
        let mut bus = EventBus::new(HISTORY, tx);
        for _ in 0..CHANNEL + 10 {
            bus.publish(&event("api"), SystemTime::now());
        }
        assert!(
            matches!(
                rx.try_recv(),
                Err(broadcast::error::TryRecvError::Lagged(10))
            ),
            "the follower that did not read is told it lagged"
        );
    }
}
