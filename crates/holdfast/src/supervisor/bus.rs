//! The event bus of the runtime: numbers and stamps each event, and publishes it on the
//! event feed, which keeps the most recent ones for `events` and broadcasts them to
//! `events -f` followers (see `control::feed`).
//!
//! Invariants:
//! - sequence numbers start at 1 and increase by one per published event;
//! - publishing never blocks or fails: a follower that falls behind catches up from the
//!   feed's history or learns what it lost (see `control::follow`), never costs the
//!   supervisor its time.

use std::time::SystemTime;

use super::event::Event;
use super::record;
use crate::control::feed::EventFeed;
use crate::control::protocol::EventRecord;
use crate::model::ServiceName;

pub struct EventBus {
    last_seq: u64,
    feed: EventFeed,
}

impl EventBus {
    /// A bus publishing on `feed`.
    pub fn new(feed: EventFeed) -> Self {
        Self { last_seq: 0, feed }
    }

    /// Numbers, stamps and publishes `event`; returns its record.
    pub fn publish(&mut self, event: &Event, time: SystemTime) -> EventRecord {
        self.last_seq += 1;
        let rec = record::record(self.last_seq, time, event);
        self.feed.publish(rec.clone());
        rec
    }

    /// The last sequence number and the kept records, oldest first: what a re-executed
    /// holdfast (`upgrade --self`) goes on from.
    pub fn history(&self) -> (u64, Vec<EventRecord>) {
        (self.last_seq, self.recent(None, None))
    }

    /// Goes on from `history` (see [`EventBus::history`]): the next event is numbered
    /// after `last_seq`.
    pub fn resume(&mut self, last_seq: u64, history: Vec<EventRecord>) {
        self.last_seq = last_seq;
        self.feed.replace(history);
    }

    /// The number of the last event published (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The kept records that pass the filter, oldest first.
    pub fn recent(&self, service: Option<&ServiceName>, since: Option<u64>) -> Vec<EventRecord> {
        self.feed.history().recent(service, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::event::EventKind;

    fn event(service: &str) -> Event {
        Event {
            service: Some(ServiceName::new(service).expect("valid name")),
            kind: EventKind::Stopped,
        }
    }

    #[test]
    fn a_resumed_bus_goes_on_numbering_after_the_history_it_was_given() {
        let mut old = EventBus::new(EventFeed::with_lengths(4, 3));
        for _ in 0..4 {
            old.publish(&event("api"), SystemTime::now());
        }
        let (last, history) = old.history();
        let mut new = EventBus::new(EventFeed::with_lengths(4, 3));
        new.resume(last, history);
        new.publish(&event("api"), SystemTime::now());
        let seqs: Vec<u64> = new.recent(None, None).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }
}
