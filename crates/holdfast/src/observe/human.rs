//! The human log format: tracing's own, except for supervisor events, which are one
//! sentence each (`web: pid 4242 exited 3`). Their fields (`service`, `event`, `pid`,
//! ...) are for machines: JSON lines and journal entries carry them; on a terminal
//! they would only say the sentence again.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::event_log;

/// See the module.
pub struct Human {
    others: Format<Full, SystemTime>,
}

impl Human {
    pub fn new() -> Self {
        Human {
            others: tracing_subscriber::fmt::format().with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != event_log::TARGET {
            return self.others.format_event(ctx, writer, event);
        }
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str("\x1b[2m")?;
        }
        SystemTime.format_time(&mut writer)?;
        if ansi {
            writer.write_str("\x1b[0m")?;
        }
        let level = *event.metadata().level();
        if ansi {
            write!(writer, " \x1b[{}m{level:>5}\x1b[0m ", color(level))?;
        } else {
            write!(writer, " {level:>5} ")?;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if writer.sanitizes_ansi_escapes() {
            write_escaped(&mut writer, &message.0)?;
        } else {
            writer.write_str(&message.0)?;
        }
        writer.write_char('\n')
    }
}

/// Writes `text` with the characters a terminal takes as control sequences escaped,
/// as tracing's own format does: a sentence may quote a service's output (a crash
/// summary), which must not drive the operator's terminal.
fn write_escaped(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\t' => writer.write_char(c)?,
            c if c.is_control() => write!(writer, "\\u{{{:x}}}", u32::from(c))?,
            c => writer.write_char(c)?,
        }
    }
    Ok(())
}

/// The colors tracing's own format gives each level.
fn color(level: Level) -> &'static str {
    match level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::model::{ExitStatus, ServiceName};
    use crate::supervisor::event::{Event as SupervisorEvent, EventKind};
    use crate::supervisor::record::record;
    use crate::supervisor::service::RunId;
    use crate::unix::Pid;

    /// What `log` writes in the human format, without colors.
    fn human_line(log: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Human::new())
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.lock().expect("the log").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("the log").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_supervisor_event_is_its_sentence_alone_and_other_lines_keep_their_fields() {
        let event = SupervisorEvent {
            service: Some(ServiceName::new("web").expect("a name")),
            kind: EventKind::Exited {
                run: RunId(1),
                pid: Pid::from_raw(4242),
                status: ExitStatus::Exited(3),
            },
        };
        let record = record(1, UNIX_EPOCH, &event);
        let line = human_line(|| event_log::log(&record, "web: pid 4242 exited 3", Level::INFO));
        assert!(line.ends_with(" INFO web: pid 4242 exited 3\n"), "{line:?}");
        let line = human_line(|| {
            event_log::log(&record, "web: crash \x1b[2Jsummary", Level::WARN);
        });
        assert!(
            line.ends_with(" WARN web: crash \\u{1b}[2Jsummary\n"),
            "{line:?}"
        );
        let line = human_line(|| tracing::info!(services = 3, "holdfast up"));
        assert!(line.ends_with(" INFO holdfast up services=3\n"), "{line:?}");
    }
}
