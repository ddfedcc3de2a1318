//! Crash capture: when a service dies, why, in one place.
//!
//! - [`report`] builds a [`CrashReport`] from the exit and the last lines of the
//!   service's output (the capture's ring), with the panic or stack [`extract`]ed;
//! - [`store`] keeps reports and core records under `<state_dir>/crashes/`;
//! - [`core_dump`] is `holdfast core-handler`, the kernel's `core_pattern` pipe handler,
//!   and [`pattern`] installs it.

pub mod build_id;
pub mod core_dump;
pub mod extract;
pub mod pattern;
pub mod store;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::control::protocol::CrashReport;
use crate::logs::Stream;
use crate::model::{ExitStatus, ServiceName};
use crate::unix::Pid;

/// A main process that died (or was killed for hanging), as the daemon saw it.
#[derive(Debug, Clone)]
pub struct Death {
    pub service: ServiceName,
    pub pid: Pid,
    pub status: ExitStatus,
    /// `crash`, or what holdfast killed the run for.
    pub cause: String,
    pub restarts: u32,
    /// The program the run executed.
    pub binary: Option<PathBuf>,
}

/// The report of `death` at `time`, from `log` (formatted log lines, oldest first).
/// Reads the binary's build id: call it off the supervisor task.
pub fn report(death: Death, time: SystemTime, log: Vec<String>) -> CrashReport {
    let time = humantime::format_rfc3339_millis(time).to_string();
    let compact: String = time.chars().filter(|c| !"-:.".contains(*c)).collect();
    let pid = death.pid.as_raw();
    // The service's own words: holdfast's notes are not part of a panic. Panics and
    // runtime stacks go to stderr: read there first, so lines a busy service logs on
    // stdout meanwhile do not cut a stack in two.
    let words = |keep: fn(Stream) -> bool| -> Vec<&str> {
        log.iter()
            .filter_map(|line| crate::logs::text_of(line))
            .filter(|(stream, _)| keep(*stream))
            .map(|(_, text)| text)
            .collect()
    };
    let found = extract::extract(&words(|s| s == Stream::Stderr))
        .or_else(|| extract::extract(&words(|s| s != Stream::Holdfast)));
    let status = death.status.to_string();
    let (kind, summary, stack) = match found {
        Some(found) => (found.kind.as_str(), found.summary, found.stack),
        None => {
            let kind = match death.status {
                ExitStatus::Exited(_) => "exit",
                ExitStatus::Signaled { .. } | ExitStatus::OomKilled => "signal",
                // An adopted process: holdfast is not its parent, the kernel told it
                // nothing of how it ended.
                ExitStatus::Unknown => "unknown",
            };
            (kind, status.clone(), Vec::new())
        }
    };
    let summary = if death.cause == "crash" {
        summary
    } else {
        format!("{}: {summary}", death.cause)
    };
    CrashReport {
        id: format!("{}-{compact}-{pid}", death.service),
        service: death.service,
        pid,
        time,
        code: death.status.code(),
        signal: death.status.signal().map(|s| s.as_str().to_owned()),
        core_dumped: matches!(
            death.status,
            ExitStatus::Signaled {
                core_dumped: true,
                ..
            }
        ),
        status,
        cause: death.cause,
        restarts: death.restarts,
        kind: kind.to_owned(),
        summary,
        stack,
        log,
        build_id: death.binary.as_deref().and_then(build_id::of),
        binary: death.binary.map(|b| b.display().to_string()),
        core: None,
    }
}

/// The report for people: what `crashes show` prints and `<id>.txt` holds.
pub fn render(report: &CrashReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "crash {}", report.id);
    let _ = writeln!(out, "  service:  {}", report.service);
    let _ = writeln!(out, "  pid:      {}", report.pid);
    let _ = writeln!(out, "  time:     {}", report.time);
    let _ = writeln!(out, "  status:   {}", report.status);
    let _ = writeln!(out, "  cause:    {}", report.cause);
    let _ = writeln!(out, "  restarts: {}", report.restarts);
    if let Some(binary) = &report.binary {
        let id = report.build_id.as_deref().unwrap_or("none");
        let _ = writeln!(out, "  binary:   {binary} (build id {id})");
    }
    let _ = writeln!(out, "  summary:  {}", report.summary);
    section(&mut out, &format!("{} stack", report.kind), &report.stack);
    if let Some(core) = &report.core {
        let stored = match &core.path {
            Some(path) => format!("{path} ({} bytes compressed)", core.stored),
            None => "not stored".to_owned(),
        };
        let truncated = if core.truncated {
            " TRUNCATED at the size cap"
        } else {
            ""
        };
        let _ = writeln!(out, "\ncore dump: {} bytes{truncated}, {stored}", core.size);
        match &core.backtrace_error {
            Some(error) => {
                let _ = writeln!(out, "  no backtrace: {error}");
            }
            None => section(&mut out, "gdb backtrace", &core.backtrace),
        }
    } else if report.core_dumped {
        let _ = writeln!(
            out,
            "\ncore dump: dumped, but not stored by holdfast (`holdfast core-pattern install`)"
        );
    }
    section(&mut out, "last log lines", &report.log);
    out
}

fn section(out: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unix::Signal;

    fn death(status: ExitStatus, cause: &str) -> Death {
        Death {
            service: ServiceName::new("api").expect("valid"),
            pid: Pid::from_raw(4242),
            status,
            cause: cause.to_owned(),
            restarts: 2,
            binary: Some(PathBuf::from("/bin/sh")),
        }
    }

    #[test]
    fn a_report_extracts_the_panic_from_the_service_lines_only() {
        let log = vec![
            "2026-01-01T00:00:00.000Z holdfast started pid 4242".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   panic: boom".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   ".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   goroutine 1 [running]:".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   main.main()".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   \t/src/main.go:3 +0x1".to_owned(),
            "2026-01-01T00:00:01.000Z holdfast exited 2".to_owned(),
        ];
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let report = report(death(ExitStatus::Exited(2), "crash"), at, log);
        assert_eq!(report.id, "api-19700101T000001500Z-4242");
        assert_eq!(report.kind, "go_panic");
        assert_eq!(report.summary, "panic: boom at main.go:3");
        assert_eq!(report.stack.len(), 5);
        assert_eq!(report.build_id.as_ref().map(String::len), Some(40));
        assert!(render(&report).contains("  \t/src/main.go:3 +0x1"));
    }

    #[test]
    fn stdout_lines_logged_during_a_panic_do_not_cut_its_stack() {
        let log = vec![
            "2026-01-01T00:00:01.000Z stderr   panic: boom".to_owned(),
            "2026-01-01T00:00:01.000Z stdout   request handled ok".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   ".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   goroutine 1 [running]:".to_owned(),
            "2026-01-01T00:00:01.000Z stdout   request handled ok".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   main.main()".to_owned(),
            "2026-01-01T00:00:01.000Z stderr   \t/src/main.go:3 +0x1".to_owned(),
        ];
        let report = report(
            death(ExitStatus::Exited(2), "crash"),
            SystemTime::now(),
            log,
        );
        assert!(
            report.stack.iter().any(|l| l.contains("main.go:3")),
            "{:?}",
            report.stack
        );
        assert!(!report.stack.iter().any(|l| l.contains("request handled")));
    }

    #[test]
    fn a_signal_death_without_output_is_summed_up_by_its_status_and_cause() {
        let status = ExitStatus::Signaled {
            signal: Signal::SIGSEGV,
            core_dumped: true,
        };
        let report = report(death(status, "crash"), SystemTime::now(), Vec::new());
        assert_eq!(report.kind, "signal");
        assert!(report.core_dumped);
        assert_eq!(report.summary, status.to_string());
        assert!(render(&report).contains("not stored by holdfast"));
        let hung = super::report(
            death(ExitStatus::Exited(2), "unhealthy"),
            SystemTime::now(),
            Vec::new(),
        );
        assert_eq!(
            hung.summary,
            format!("unhealthy: {}", ExitStatus::Exited(2))
        );
    }
}
