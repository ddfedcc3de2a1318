//! Supervisor events in holdfast's own log: each one a single tracing event whose fields
//! are the event's wire data (the one definition, `event::wire`), so journald gets
//! `HOLDFAST_SERVICE=`, `HOLDFAST_EVENT=`, `HOLDFAST_PID=`, ... and JSON lines get
//! typed fields, not only a sentence.
//!
//! A tracing callsite names its fields statically; the data's keys depend on the kind,
//! so each (kind, level, keys, caller) gets a callsite of its own, made once and kept
//! for the life of the process (a bounded set: the kinds times their shapes).

use std::collections::HashMap;
use std::panic::Location;
use std::sync::{Mutex, OnceLock};

use serde_json::Value as Json;
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Value};
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};

use crate::control::protocol::EventRecord;

/// The target of event log lines (`HOLDFAST_LOG=holdfast::event=warn` quiets them).
pub const TARGET: &str = "holdfast::event";

/// Fields of every event, ahead of its data.
const FIXED: [&str; 3] = ["message", "service", "event"];

/// Every callsite has this many fields (unused ones stay empty and are never written):
/// a fixed length lets the values go through tracing's public `value_set`.
const WIDTH: usize = 16;

/// Logs `record`, published as `sentence`, at `level` (a warning for failures).
#[track_caller]
pub fn log(record: &EventRecord, sentence: &str, level: Level) {
    let meta = callsite(&record.kind, level, record.data.keys(), Location::caller());
    tracing::dispatcher::get_default(|dispatch| {
        if !dispatch.enabled(meta) {
            return;
        }
        let mut values: Vec<Option<Box<dyn Value + '_>>> = Vec::with_capacity(WIDTH);
        values.push(Some(Box::new(sentence)));
        values.push(record.service.as_ref().map(|s| boxed_str(s.as_str())));
        values.push(Some(boxed_str(&record.kind)));
        values.extend(
            record
                .data
                .values()
                .take(WIDTH - FIXED.len())
                .map(|v| Some(typed(v))),
        );
        values.resize_with(WIDTH, || None);
        let fields: Vec<Field> = meta.fields().iter().collect();
        let pairs: [(&Field, Option<&dyn Value>); WIDTH] =
            std::array::from_fn(|i| (&fields[i], values[i].as_deref()));
        let set = meta.fields().value_set(&pairs);
        dispatch.event(&tracing::Event::new(meta, &set));
    });
}

fn boxed_str<'a>(s: &'a str) -> Box<dyn Value + 'a> {
    Box::new(s)
}

/// A wire value as the tracing value of its type: numbers stay numbers in JSON lines.
fn typed(value: &Json) -> Box<dyn Value + '_> {
    match value {
        Json::Bool(b) => Box::new(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Box::new(u),
            (None, Some(i), _) => Box::new(i),
            (None, None, Some(f)) => Box::new(f),
            _ => Box::new(tracing::field::display(n.to_string())),
        },
        Json::String(s) => boxed_str(s),
        // A list (`waiting`'s `on`) reads best as its items.
        Json::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect();
            Box::new(tracing::field::display(items.join(",")))
        }
        Json::Null | Json::Object(_) => Box::new(tracing::field::display(value.to_string())),
    }
}

/// One callsite per shape of event; the metadata lives as long as the process.
struct Site {
    meta: OnceLock<Metadata<'static>>,
}

impl Callsite for Site {
    // The dispatcher is asked at each event instead (`enabled`): events are few.
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'static> {
        self.meta
            .get()
            .expect("a site's metadata is set before it is registered")
    }
}

type Shape = (String, Level, Vec<String>, &'static str, u32);

fn callsite<'k>(
    kind: &str,
    level: Level,
    keys: impl Iterator<Item = &'k String>,
    at: &'static Location<'static>,
) -> &'static Metadata<'static> {
    static SITES: OnceLock<Mutex<HashMap<Shape, &'static Site>>> = OnceLock::new();
    let keys: Vec<String> = keys.take(WIDTH - FIXED.len()).cloned().collect();
    let shape = (kind.to_owned(), level, keys, at.file(), at.line());
    let mut sites = SITES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(site) = sites.get(&shape) {
        return site.metadata();
    }
    let site: &'static Site = Box::leak(Box::new(Site {
        meta: OnceLock::new(),
    }));
    let names = FIXED
        .iter()
        .map(|n| (*n).to_owned())
        .chain(shape.2.iter().cloned())
        .chain((0..).map(|i| format!("unused_{i}")))
        .take(WIDTH)
        .map(|n| &*Box::leak(n.into_boxed_str()))
        .collect::<Vec<&'static str>>();
    let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
    let name: &'static str = Box::leak(format!("event {kind}").into_boxed_str());
    let meta = Metadata::new(
        name,
        TARGET,
        level,
        Some(at.file()),
        Some(at.line()),
        Some(module_path!()),
        FieldSet::new(names, Identifier(site)),
        Kind::EVENT,
    );
    let _ = site.meta.set(meta);
    tracing::callsite::register(site);
    sites.insert(shape, site);
    site.metadata()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::{FIXED, WIDTH};
    use crate::supervisor::event::Event;
    use crate::supervisor::record::{record, tests::one_of_each};

    /// A callsite keeps `WIDTH` fields: an event with more data would lose some in the log.
    #[test]
    fn every_event_kinds_data_fits_in_a_callsite() {
        for kind in one_of_each() {
            let event = Event {
                service: None,
                kind,
            };
            let record = record(1, UNIX_EPOCH, &event);
            assert!(
                record.data.len() <= WIDTH - FIXED.len(),
                "{}: {} data keys, room for {}",
                record.kind,
                record.data.len(),
                WIDTH - FIXED.len()
            );
        }
    }
}
