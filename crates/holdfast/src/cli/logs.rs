//! `holdfast logs [NAME...] [-n N] [--since T] [--until T] [-f] [--raw]`: services'
//! captured output, merged by time like `journalctl`, each line with its service's name.
//!
//! The daemon reads the files (see `control::logs`), so whoever may use the control
//! socket may read logs. Control characters and ANSI escapes of the services' text are
//! shown escaped (`\x1b[31m`), tabs kept, unless `--raw`. A closed stdout (`| head`)
//! ends the command quietly, and so does the daemon shutting down under `-f`.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use miette::miette;

use crate::cli::exit;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request};
use crate::logs::read::{STAMP_LEN, stamp_of};
use crate::model::ServiceName;

/// Lines shown when neither `-n` nor a time bound is given.
pub const DEFAULT_LINES: usize = 20;
/// Minimum width of the service column (as in `events`).
const SERVICE_WIDTH: usize = 12;

/// What `logs` was asked on the command line.
pub struct Options {
    pub names: Vec<ServiceName>,
    pub lines: Option<usize>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub follow: bool,
    pub raw: bool,
}

pub fn run(socket: &Path, options: Options) -> miette::Result<ExitCode> {
    let now = SystemTime::now();
    let bound = |text: &Option<String>, flag: &str| -> miette::Result<Option<String>> {
        text.as_deref()
            .map(|text| {
                parse_time(text, now)
                    .map(|time| humantime::format_rfc3339_millis(time).to_string())
                    .map_err(|e| miette!("invalid {flag} \"{text}\": {e}"))
            })
            .transpose()
    };
    let since = bound(&options.since, "--since")?;
    let until = bound(&options.until, "--until")?;
    if options.follow && until.is_some() {
        return Err(miette!("--until cannot be combined with --follow"));
    }
    let windowed = since.is_some() || until.is_some();
    let lines = options
        .lines
        .or((!windowed && !options.follow).then_some(DEFAULT_LINES));
    let request = Request::Logs {
        services: options.names,
        lines,
        since,
        until,
        follow: options.follow,
    };
    let mut out = io::stdout().lock();
    let mut write_error = None;
    let mut ended = false;
    let result = client::stream(socket, request, |reply| match reply {
        Reply::LogLine { service, line } => {
            let text = render(&service, &line, options.raw);
            match writeln!(out, "{text}").and_then(|()| out.flush()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
        Reply::LogEnd => {
            ended = true;
            ControlFlow::Break(())
        }
        other => {
            eprintln!("holdfast sent an unexpected line in the log stream: {other:?}");
            ControlFlow::Break(())
        }
    });
    match result {
        Ok(()) => {}
        // A follower ends with the daemon, as `events -f` does.
        Err(ClientError::Daemon(ControlError {
            kind: ErrorKind::ShuttingDown,
            message,
        })) if options.follow => eprintln!("{message}"),
        Err(e) => return Ok(super::service::report(e)),
    }
    match write_error {
        // The reader went away (`| head`): that is how such a pipeline ends.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::from(exit::SUCCESS)),
        Some(e) => Err(miette!("failed to write to stdout: {e}")),
        None if !ended && !options.follow => Ok(super::service::report(ClientError::Protocol(
            "holdfast closed the log stream before its end".to_owned(),
        ))),
        None => Ok(ExitCode::from(exit::SUCCESS)),
    }
}

/// One line as shown: `<stamp> <service> <stream tag> <text>`, the text escaped unless
/// `raw`.
pub fn render(service: &ServiceName, line: &str, raw: bool) -> String {
    let (stamp, rest) = match stamp_of(line) {
        Some(stamp) => (stamp, line.get(STAMP_LEN + 1..).unwrap_or("")),
        None => ("", line),
    };
    let rest = if raw { rest.to_owned() } else { escape(rest) };
    format!(
        "{stamp:<STAMP_LEN$} {service:<SERVICE_WIDTH$} {rest}",
        service = service.as_str()
    )
}

/// Control characters (ANSI escapes included) as `\xNN` (`\u{NNNN}` beyond Latin-1),
/// so a service's output cannot move the cursor, recolour or retitle the terminal.
/// Tabs are kept.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\t' || !c.is_control() {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    out
}

/// A point in time as `--since`/`--until` take it (journalctl's forms, in UTC, as the
/// log stamps are): an RFC 3339 time (`2026-11-25T12:00:00Z`, `2026-11-25 12:00:00`, a
/// date alone for its midnight), `now`, `today`, `yesterday`, `tomorrow` (midnight UTC),
/// or a time ago: `10min ago`, `-10m`, `1h 30m ago`.
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let midnight = |days_back: i64| {
        let today = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400;
        let day = today.saturating_add_signed(-days_back);
        UNIX_EPOCH + Duration::from_secs(day * 86_400)
    };
    match text {
        "now" => return Ok(now),
        "today" => return Ok(midnight(0)),
        "yesterday" => return Ok(midnight(1)),
        "tomorrow" => return Ok(midnight(-1)),
        _ => {}
    }
    let ago = text
        .strip_suffix("ago")
        .map(str::trim_end)
        .or_else(|| text.strip_prefix('-'));
    if let Some(span) = ago {
        let span = humantime::parse_duration(span.trim()).map_err(|e| e.to_string())?;
        return now
            .checked_sub(span)
            .ok_or_else(|| "too far in the past".to_owned());
    }
    let full = if text.len() == 10 {
        format!("{text} 00:00:00")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| {
        "expected an RFC 3339 UTC time (2026-11-25T12:00:00Z), now, today, yesterday, or a time ago (10min ago, -10m)".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn times_are_rfc_3339_or_relative_to_now() {
        let now = at("2026-11-25T12:34:56Z");
        let parse = |text| parse_time(text, now).map(|t| humantime::format_rfc3339(t).to_string());
        assert_eq!(
            parse("2026-11-24T01:02:03Z").unwrap(),
            "2026-11-24T01:02:03Z"
        );
        assert_eq!(
            parse("2026-11-24 01:02:03").unwrap(),
            "2026-11-24T01:02:03Z"
        );
        assert_eq!(parse("2026-11-24").unwrap(), "2026-11-24T00:00:00Z");
        assert_eq!(parse("now").unwrap(), "2026-11-25T12:34:56Z");
        assert_eq!(parse("today").unwrap(), "2026-11-25T00:00:00Z");
        assert_eq!(parse("yesterday").unwrap(), "2026-11-24T00:00:00Z");
        assert_eq!(parse("10min ago").unwrap(), "2026-11-25T12:24:56Z");
        assert_eq!(parse("-10m").unwrap(), "2026-11-25T12:24:56Z");
        assert_eq!(parse("1h 30m ago").unwrap(), "2026-11-25T11:04:56Z");
        assert!(parse("soon").unwrap_err().contains("RFC 3339"));
        assert!(parse("-ten minutes").is_err());
    }

    #[test]
    fn lines_get_a_service_column_after_the_stamp() {
        let web = ServiceName::new("web").unwrap();
        assert_eq!(
            render(&web, "2026-11-25T12:00:00.123Z stdout   hello", false),
            "2026-11-25T12:00:00.123Z web          stdout   hello"
        );
    }

    #[test]
    fn control_characters_are_escaped_unless_raw_and_tabs_are_kept() {
        let web = ServiceName::new("web").unwrap();
        let line = "2026-11-25T12:00:00.123Z stdout   \x1b[31mred\x1b[0m\tx\r\u{9b}";
        assert!(
            render(&web, line, false).ends_with(r"stdout   \x1b[31mred\x1b[0m	x\x0d\x9b"),
            "{}",
            render(&web, line, false)
        );
        assert!(render(&web, line, true).ends_with("stdout   \x1b[31mred\x1b[0m\tx\r\u{9b}"));
        assert_eq!(escape("é ü ✓"), "é ü ✓", "printable text is untouched");
    }
}
