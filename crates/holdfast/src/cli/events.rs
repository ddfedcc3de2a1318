//! `holdfast events [-f] [-n N] [--json] [--since SEQ] [NAME]`: the daemon's recent events
//! (the last N with `-n`) and, with `-f`, new ones as they happen, until Ctrl-C (which
//! ends the process) or the daemon goes away. Like `journalctl -f`, `-f` starts at now:
//! it shows history only when `-n N` asks for the last N events.
//!
//! Human lines are `12:00:01.234 api          exited            pid 42 exited 3` (UTC
//! time of day, service or `holdfast` for the daemon itself, kind, message); `--json`
//! prints one `EventRecord` per line, the stable contract for scripts. A closed stdout
//! (`| head`) ends the command quietly, by SIGPIPE like any Unix tool; the daemon
//! shutting down under `-f` ends it with status 0 (after its last events, with a note on
//! stderr).

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, EventRecord, Reply, Request};
use crate::model::ServiceName;
use crate::supervisor::event::kinds;

/// Minimum width of the service column; longer names push the line out.
const SERVICE_WIDTH: usize = 12;
/// Width of the kind column: the longest kind name.
fn kind_width() -> usize {
    kinds().iter().map(|k| k.len()).max().unwrap_or(0)
}

pub fn run(
    socket: &Path,
    name: Option<ServiceName>,
    follow: bool,
    json: bool,
    since: Option<u64>,
    lines: Option<usize>,
) -> miette::Result<ExitCode> {
    // Like `journalctl -f`, following starts at now unless history is asked for.
    let last = if follow {
        Some(lines.unwrap_or(0))
    } else {
        lines
    };
    let request = Request::Events {
        follow,
        service: name,
        since,
        last,
    };
    let mut out = io::stdout().lock();
    let mut write_error = None;
    let mut print = |event: &EventRecord| match print_event(&mut out, event, json) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    };
    let result = if follow {
        client::stream(socket, request, |reply| match reply {
            Reply::Event { event } => print(&event),
            other => {
                print_unexpected(&other);
                ControlFlow::Break(())
            }
        })
    } else {
        match client::call(socket, request) {
            Ok(Reply::Events { events }) => {
                let skip = last.map_or(0, |n| events.len().saturating_sub(n));
                for event in &events[skip..] {
                    if print(event).is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Ok(other) => Err(ClientError::Protocol(format!(
                "holdfast answered `events` with an unexpected reply: {other:?}"
            ))),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => {}
        Err(ClientError::Daemon(ControlError {
            kind: ErrorKind::ShuttingDown,
            message,
        })) if follow => eprintln!("{message}"),
        Err(e) => return Ok(super::service::report(e)),
    }
    match write_error {
        None => Ok(ExitCode::SUCCESS),
        // The reader went away (`| head`): that is how such a pipeline ends.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(miette::miette!("failed to write to stdout: {e}")),
    }
}

fn print_unexpected(reply: &Reply) {
    eprintln!("holdfast sent an unexpected line in the event stream: {reply:?}");
}

fn print_event(out: &mut impl Write, event: &EventRecord, json: bool) -> io::Result<()> {
    if json {
        let line = serde_json::to_string(event).expect("protocol types always serialize");
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", render(event))?;
    }
    // Flushed per event so a follower sees each one as it happens.
    out.flush()
}

/// One event as a human line.
pub fn render(event: &EventRecord) -> String {
    // RFC 3339 `2026-11-25T12:00:01.234Z`: the time of day is bytes 11..23.
    let time = event.time.get(11..23).unwrap_or(&event.time);
    let service = event
        .service
        .as_ref()
        .map_or("holdfast", ServiceName::as_str);
    format!(
        "{time} {service:<SERVICE_WIDTH$} {kind:<kind_width$} {message}",
        kind = event.kind,
        kind_width = kind_width(),
        message = event.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(service: Option<&str>, kind: &str, message: &str) -> EventRecord {
        EventRecord {
            seq: 1,
            time: "2026-11-25T12:00:01.234Z".to_owned(),
            service: service.map(|s| ServiceName::new(s).expect("valid name")),
            kind: kind.to_owned(),
            message: message.to_owned(),
            data: Default::default(),
        }
    }

    #[test]
    fn human_lines_align_time_service_kind_and_message() {
        let lines = [
            render(&event(Some("api"), "exited", "pid 42 exited 3")),
            render(&event(
                Some("api"),
                "restart_scheduled",
                "restarting in 1s (attempt 1)",
            )),
            render(&event(None, "shutdown_started", "shutting down")),
        ];
        let pad = " ".repeat(kind_width() - "restart_scheduled".len());
        assert_eq!(
            lines,
            [
                format!("12:00:01.234 api          exited           {pad} pid 42 exited 3"),
                format!(
                    "12:00:01.234 api          restart_scheduled{pad} restarting in 1s (attempt 1)"
                ),
                format!("12:00:01.234 holdfast     shutdown_started {pad} shutting down"),
            ]
        );
        assert!(kinds().iter().all(|k| k.len() <= kind_width()));
    }

    #[test]
    fn json_lines_are_event_records() {
        let mut out = Vec::new();
        let e = event(Some("api"), "exited", "pid 42 exited 3");
        print_event(&mut out, &e, true).expect("writes to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let back: EventRecord = serde_json::from_str(&text).expect("a record");
        assert_eq!(back, e);
    }
}
