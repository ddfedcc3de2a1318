//! holdfast's own log as native journal entries: a tracing layer that encodes with the
//! one journal encoder (`logs::journal`) and sends without ever blocking. Events are
//! logged from the supervisor loop (`event_log::log` runs inside `publish`), so a
//! journald that cannot keep up must cost holdfast a dropped entry, never a stalled loop.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::logs::journal;

/// Entries of holdfast's own log journald did not take, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many of holdfast's own log entries were dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The layer: `HOLDFAST_<FIELD>=` for an event's fields, `MESSAGE=` for its message.
pub struct JournaldLayer {
    prefix: &'static str,
    identifier: &'static str,
}

impl JournaldLayer {
    /// A layer, or why the journal cannot be reached.
    pub fn new(prefix: &'static str, identifier: &'static str) -> std::io::Result<Self> {
        journal::reachable()?;
        Ok(JournaldLayer { prefix, identifier })
    }

    fn encode(&self, event: &Event<'_>) -> Vec<u8> {
        let meta = event.metadata();
        let mut buf = Vec::with_capacity(256);
        journal::put(&mut buf, "PRIORITY", priority(*meta.level()));
        journal::put(&mut buf, "TARGET", meta.target().as_bytes());
        if let Some(file) = meta.file() {
            journal::put(&mut buf, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            journal::put(&mut buf, "CODE_LINE", line.to_string().as_bytes());
        }
        journal::put(&mut buf, "SYSLOG_IDENTIFIER", self.identifier.as_bytes());
        event.record(&mut Fields {
            buf: &mut buf,
            prefix: self.prefix,
        });
        buf
    }
}

impl<S: Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let entry = self.encode(event);
        // Not logged: a warning about the journal would go to the same journal.
        if journal::send(&entry).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// syslog priorities as systemd units use them: what holdfast tells in the normal
/// course of things (a spawn, an exit) is informational (6), its warnings 4, errors 3.
fn priority(level: Level) -> &'static [u8] {
    match level {
        Level::ERROR => b"3",
        Level::WARN => b"4",
        Level::INFO => b"6",
        Level::DEBUG | Level::TRACE => b"7",
    }
}

struct Fields<'b> {
    buf: &'b mut Vec<u8>,
    prefix: &'static str,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: &[u8]) {
        if field.name() == "message" {
            journal::put(self.buf, "MESSAGE", value);
        } else {
            journal::put(self.buf, &field_name(self.prefix, field.name()), value);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text.as_bytes());
    }
}

/// A journal field name: `PREFIX_` and the name upper-cased, `.` as `_`, anything else
/// journald refuses left out (it accepts `A-Z0-9_`, not starting with `_`).
fn field_name(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + name.len());
    out.push_str(prefix);
    out.push('_');
    out.extend(
        name.chars()
            .map(|c| if c == '.' { '_' } else { c })
            .filter(|c| *c == '_' || c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::field_name;

    #[test]
    fn field_names_are_prefixed_upper_cased_and_cleaned_of_what_journald_refuses() {
        assert_eq!(field_name("HOLDFAST", "service"), "HOLDFAST_SERVICE");
        assert_eq!(field_name("HOLDFAST", "exit.code"), "HOLDFAST_EXIT_CODE");
        assert_eq!(field_name("HOLDFAST", "a-b c"), "HOLDFAST_ABC");
    }
}
