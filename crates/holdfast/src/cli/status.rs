//! `holdfast status`: the state of every service, as a table for people or as the
//! control API's JSON (`--json`, the stable contract scripts and tests rely on).
//!
//! Rendering is pure (`render_table`/`render`) so its layout is unit tested; colour is
//! only added when stdout is a terminal and `NO_COLOR` is unset.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::process::ExitCode;

use clap_complete::ArgValueCandidates;

use super::{SocketArgs, completions, exit};
use crate::control::client::{self, ClientError};
use crate::control::protocol::{
    ControlError, ErrorKind, HealthStatus, ManagedStatus, Reply, Request, ServiceState,
    ServiceStatus, Status,
};
use crate::model::ServiceName;

/// `holdfast status [--json | --watch] [TARGET...]`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these services: names, `all`, or `@group`.
    #[arg(value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
    pub names: Vec<String>,
    /// Print the control API's JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Keep the table current: redrawn at each event (and each second for uptimes)
    /// until Ctrl-C; one snapshot per change when stdout is not a terminal.
    #[arg(long, short = 'w')]
    pub watch: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

pub fn run(args: &StatusArgs) -> miette::Result<ExitCode> {
    let (socket, names) = (args.socket.socket.as_path(), args.names.as_slice());
    if args.watch {
        return super::watch::run(socket, names);
    }
    let json = args.json;
    let status = match fetch_named(socket, names) {
        Ok(status) => status,
        Err(e) => return Ok(super::service::report(e)),
    };
    if json {
        print_json(&status);
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", render(&status, colour));
    }
    Ok(ExitCode::from(exit_code(&status)))
}

/// The status as pretty JSON, written straight to stdout (a closed stdout, as in
/// `holdfast status --json | head`, is not an error of `status`).
fn print_json(status: &Status) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let _ = serde_json::to_writer_pretty(&mut out, status)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

/// 0 when every service shown is in its wanted state, 3 otherwise (see [`exit`]).
pub fn exit_code(status: &Status) -> u8 {
    if status.services.iter().all(|s| exit::is_wanted(s.state)) {
        exit::SUCCESS
    } else {
        exit::NOT_WANTED
    }
}

/// `is-active NAME`: prints the state; exits 0 when running, 3 otherwise.
pub fn is_active(socket: &Path, name: &str) -> miette::Result<ExitCode> {
    state_check(socket, name, |state| {
        if state == ServiceState::Running {
            exit::SUCCESS
        } else {
            exit::NOT_WANTED
        }
    })
}

/// `is-failed NAME`: prints the state; exits 0 when failed (or quarantined), 1 otherwise.
pub fn is_failed(socket: &Path, name: &str) -> miette::Result<ExitCode> {
    state_check(socket, name, |state| {
        if exit::is_failed(state) {
            exit::SUCCESS
        } else {
            exit::NOT_FAILED
        }
    })
}

fn state_check(
    socket: &Path,
    name: &str,
    code: fn(ServiceState) -> u8,
) -> miette::Result<ExitCode> {
    let status = match fetch(socket) {
        Ok(status) => status,
        Err(e) => return Ok(super::service::report(e)),
    };
    // A base name means each of its instances, like several units for systemctl: one
    // line each, and success if any of them is in the state asked about.
    let target = ServiceName::new(name).ok();
    let matching: Vec<&ServiceStatus> = (status.services.iter())
        .filter(|s| target.as_ref().is_some_and(|t| s.name.named_by(t)))
        .collect();
    if matching.is_empty() {
        return Ok(super::service::report(ClientError::Daemon(ControlError {
            kind: ErrorKind::UnknownService,
            message: format!("no service named {name:?}"),
        })));
    }
    for service in &matching {
        println!("{}", service.state);
    }
    let best = matching.iter().map(|s| code(s.state)).min();
    Ok(ExitCode::from(best.unwrap_or(0)))
}

/// The status of the services `names` (all when empty).
pub(super) fn fetch_named(socket: &Path, names: &[String]) -> Result<Status, ClientError> {
    let mut status = fetch(socket)?;
    if !names.is_empty() {
        // The status just fetched names the services: no second round trip.
        let grain = super::targets::Grain::Instance;
        let wanted =
            super::targets::resolve(&status.services, names, grain).map_err(ClientError::Daemon)?;
        status.services.retain(|s| wanted.contains(&s.name));
    }
    Ok(status)
}

fn fetch(socket: &Path) -> Result<Status, ClientError> {
    match client::call_for(socket, Request::Status)? {
        Ok(status) | Err(Reply::Status(status)) => Ok(status),
        Err(other) => Err(ClientError::Protocol(format!(
            "holdfast answered `status` with an unexpected reply: {other:?}"
        ))),
    }
}

/// The status as a plain-text table followed by the reasons behind non-obvious states.
pub fn render_table(status: &Status) -> String {
    render(status, false)
}

const HEADERS: [&str; 8] = [
    "NAME",
    "STATE",
    "PID",
    "UPTIME",
    "MEM",
    "TASKS",
    "RESTARTS",
    "LAST EXIT",
];

/// [`render_table`], with the state column coloured (ANSI) when `colour` is set.
pub fn render(status: &Status, colour: bool) -> String {
    let mut out = String::new();
    let daemon = &status.daemon;
    let _ = write!(
        out,
        "holdfast {} (pid {}) up {}, config {}",
        daemon.version,
        daemon.pid,
        human_duration(daemon.uptime_ms),
        daemon.config
    );
    if let Some(manager) = &daemon.managed_by {
        let _ = write!(out, ", under {manager}");
    }
    if daemon.shutting_down {
        out.push_str(", shutting down");
    }
    out.push('\n');
    if status.services.is_empty() {
        out.push_str("no services\n");
        return out;
    }
    push_table(&mut out, &status.services, colour);
    let notes: Vec<&ServiceStatus> = status.services.iter().filter(|s| has_notes(s)).collect();
    if !notes.is_empty() {
        out.push('\n');
    }
    for service in notes {
        push_notes(&mut out, service);
    }
    out
}

/// One row per service under the headers, columns as wide as their widest cell.
fn push_table(out: &mut String, services: &[ServiceStatus], colour: bool) {
    let rows: Vec<[String; 8]> = services.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    push_row(out, &HEADERS.map(str::to_owned), &widths, None);
    for (row, service) in rows.iter().zip(services) {
        let state_colour = colour.then(|| state_colour(service.state));
        push_row(out, row, &widths, state_colour);
    }
}

/// Whether a service has more to say than its row.
fn has_notes(s: &ServiceStatus) -> bool {
    s.reason.is_some()
        || s.status_text.is_some()
        || !s.holding_up.is_empty()
        || s.health.is_some()
        || !s.env_overrides.is_empty()
        || s.last_restart_reason.is_some()
        || s.upgrade.is_some()
        || s.last_crash.is_some()
        || s.managed_by.is_some()
}

/// The lines below the table about one service: why it is in its state, its own status
/// text, the last restart's reason, health, env overrides and what holds up its stop.
fn push_notes(out: &mut String, service: &ServiceStatus) {
    let _ = write!(out, "{}: {}", service.name, service.state);
    if let Some(reason) = &service.reason {
        let _ = write!(out, ": {reason}");
    }
    out.push('\n');
    if let Some(managed) = &service.managed_by {
        push_managed(out, managed);
    }
    if let Some(text) = &service.status_text {
        let _ = writeln!(out, "  status: {text}");
    }
    if let Some(why) = &service.last_restart_reason {
        let _ = writeln!(out, "  last restart: {why}");
    }
    if let Some(crash) = &service.last_crash {
        let _ = writeln!(
            out,
            "  last crash: {} (crashes show {})",
            crash.summary, crash.id
        );
    }
    if let Some(health) = &service.health {
        push_health(out, health);
    }
    for line in service.upgrade.iter().flat_map(super::upgrade::lines) {
        let _ = writeln!(out, "  {line}");
    }
    if !service.env_overrides.is_empty() {
        let vars: Vec<String> = service
            .env_overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "  env overrides: {}", vars.join(" "));
    }
    for process in &service.holding_up {
        let _ = writeln!(
            out,
            "  waiting for pid {} ({})",
            process.pid, process.command
        );
    }
}

/// `managed by supervisord:web (RUNNING, pid 123, up 5m)` and the last arbitration.
fn push_managed(out: &mut String, managed: &ManagedStatus) {
    let verb = if managed.taken_over {
        "taken over from"
    } else {
        "managed by"
    };
    let _ = write!(out, "  {verb} {}", managed.upstream);
    let mut facts: Vec<String> = Vec::new();
    if let Some(error) = &managed.unreachable {
        facts.push(format!("unreachable: {error}"));
    }
    facts.extend(managed.state.clone());
    facts.extend(managed.pid.map(|pid| format!("pid {pid}")));
    facts.extend(
        managed
            .uptime_ms
            .map(|ms| format!("up {}", human_duration(ms))),
    );
    if !facts.is_empty() {
        let _ = write!(out, " ({})", facts.join(", "));
    }
    out.push('\n');
    if let Some(last) = &managed.last_arbitration {
        let _ = writeln!(out, "  last arbitration: {last}");
    }
    if let Some(pid) = managed.duplicate_pid {
        let _ = writeln!(
            out,
            "  DUPLICATE: {} runs its own copy too (pid {pid}); holdfast leaves it alone: stop one of the two",
            managed.upstream
        );
    }
}

fn push_health(out: &mut String, health: &HealthStatus) {
    let _ = write!(
        out,
        "  health {}: {} failures in the degraded window, {} in the unhealthy window, {} consecutive successes",
        health.state.as_str().to_uppercase(),
        health.failures_degraded_window,
        health.failures_unhealthy_window,
        health.successes
    );
    if health.in_grace {
        out.push_str(" (in grace)");
    }
    if let Some(error) = &health.last_error {
        let _ = write!(out, "; last error: {error}");
    }
    out.push('\n');
}

fn row(service: &ServiceStatus) -> [String; 8] {
    // An uptime only while a process of the run may be alive; for stopped or failed
    // services the LAST EXIT column says when it ended.
    [
        service.name.to_string(),
        service.state.to_string(),
        service
            .pid
            .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
        service
            .uptime_ms
            .map_or_else(|| "-".to_owned(), human_duration),
        service
            .memory_bytes
            .map_or_else(|| "-".to_owned(), human_bytes),
        service
            .tasks
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        service.restarts.to_string(),
        service.last_exit.as_ref().map_or_else(
            || "-".to_owned(),
            |exit| format!("{} ({} ago)", exit.description, human_duration(exit.ago_ms)),
        ),
    ]
}

/// Appends one table row; the state cell (index 1) is wrapped in `colour` after padding,
/// so escape codes never disturb the alignment. The last column is not padded.
fn push_row(out: &mut String, cells: &[String; 8], widths: &[usize; 8], colour: Option<&str>) {
    let last = cells.len() - 1;
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            out.push_str(cell);
            break;
        }
        let padded = format!("{cell:<width$}  ");
        match colour {
            Some(code) if i == 1 => {
                let (text, pad) = padded.split_at(cell.len());
                let _ = write!(out, "\x1b[{code}m{text}\x1b[0m{pad}");
            }
            _ => out.push_str(&padded),
        }
    }
    out.push('\n');
}

/// ANSI SGR parameters for a state.
fn state_colour(state: ServiceState) -> &'static str {
    use ServiceState::*;
    match state {
        Running => "32",                                 // green
        Starting | Stopping | Waiting | Backoff => "33", // yellow
        Failed | Quarantined => "1;31",                  // bold red
        Stopped | Unknown => "2",                        // dim
    }
}

/// A compact size in binary units: `512B`, `3.2K`, `14.0M`, `1.5G`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// A compact duration: `3s`, `4m12s`, `2h03m`, `5d02h` (two units at most).
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, hours, mins, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{mins}m{s:02}s")
    } else if secs < 86_400 {
        format!("{hours}h{mins:02}m")
    } else {
        format!("{days}d{hours:02}h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{DaemonStatus, ExitInfo, ProcessInfo, RestartReason};

    fn service(name: &str, state: &str) -> ServiceStatus {
        ServiceStatus::sample(name, state)
    }

    fn sample() -> Status {
        Status {
            daemon: DaemonStatus {
                pid: 4242,
                version: "0.1.0".to_owned(),
                config: "/etc/holdfast/holdfast.toml".to_owned(),
                uptime_ms: 7_380_000,
                shutting_down: false,
                execs: 0,
                reexec_error: None,
                managed_by: None,
            },
            services: vec![
                ServiceStatus {
                    state: ServiceState::Failed,
                    restarts: 4,
                    last_exit: Some(ExitInfo {
                        description: "exited 3".to_owned(),
                        code: Some(3),
                        signal: None,
                        ago_ms: 252_000,
                    }),
                    reason: Some("start limit hit: 4 restarts within 10s".to_owned()),
                    last_restart_reason: Some(RestartReason::Exit {
                        description: "exited 3".to_owned(),
                        code: Some(3),
                        signal: None,
                        early: true,
                    }),
                    ..service("api", "failed")
                },
                ServiceStatus {
                    pid: Some(1234),
                    since_ms: 3_000,
                    uptime_ms: Some(86_400_000),
                    memory_bytes: Some(1_536),
                    tasks: Some(3),
                    holding_up: vec![ProcessInfo {
                        pid: 1234,
                        command: "demo-app --ignore-sigterm".to_owned(),
                    }],
                    ..service("demo-app", "stopping")
                },
                ServiceStatus {
                    pid: Some(981),
                    since_ms: 446_400_000,
                    uptime_ms: Some(446_400_000),
                    restarts: 12,
                    memory_bytes: Some(14_680_064),
                    tasks: Some(12),
                    last_restart_reason: Some(RestartReason::Watchdog { interval_ms: 5_000 }),
                    last_exit: Some(ExitInfo {
                        description: "killed by SIGKILL".to_owned(),
                        code: None,
                        signal: Some("SIGKILL".to_owned()),
                        ago_ms: 446_400_500,
                    }),
                    ..service("web", "running")
                },
                service("worker", "stopped"),
            ],
        }
    }

    #[test]
    fn table_aligns_columns_and_explains_reasons_and_holdups() {
        insta::assert_snapshot!(render_table(&sample()), @r"
        holdfast 0.1.0 (pid 4242) up 2h03m, config /etc/holdfast/holdfast.toml
        NAME      STATE     PID   UPTIME  MEM    TASKS  RESTARTS  LAST EXIT
        api       failed    -     -       -      -      4         exited 3 (4m12s ago)
        demo-app  stopping  1234  1d00h   1.5K   3      0         -
        web       running   981   5d04h   14.0M  12     12        killed by SIGKILL (5d04h ago)
        worker    stopped   -     -       -      -      0         -

        api: failed: start limit hit: 4 restarts within 10s
          last restart: exited 3 before start_secs
        demo-app: stopping
          waiting for pid 1234 (demo-app --ignore-sigterm)
        web: running
          last restart: watchdog: no keep-alive within 5s
        ");
    }

    #[test]
    fn colour_wraps_only_the_state_and_keeps_alignment() {
        let status = sample();
        let coloured = render(&status, true);
        assert!(coloured.contains("\x1b[1;31mfailed\x1b[0m    -"));
        let stripped = coloured
            .replace("\x1b[1;31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[0m", "");
        assert_eq!(
            stripped,
            render_table(&status),
            "colour adds only escape codes"
        );
    }

    #[test]
    fn status_exits_3_unless_every_service_is_running_or_stopped() {
        assert_eq!(
            exit_code(&sample()),
            exit::NOT_WANTED,
            "api failed, demo-app stopping"
        );
        let mut status = sample();
        status
            .services
            .retain(|s| matches!(s.state, ServiceState::Running | ServiceState::Stopped));
        assert_eq!(exit_code(&status), exit::SUCCESS);
    }

    #[test]
    fn a_daemon_without_services_says_so() {
        let status = Status {
            services: Vec::new(),
            ..sample()
        };
        assert!(render_table(&status).ends_with("no services\n"));
    }

    #[test]
    fn sizes_are_compact_in_binary_units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1_536), "1.5K");
        assert_eq!(human_bytes(14_680_064), "14.0M");
        assert_eq!(human_bytes(3 << 30), "3.0G");
    }

    #[test]
    fn durations_are_compact_with_two_units_at_most() {
        assert_eq!(human_duration(999), "0s");
        assert_eq!(human_duration(3_000), "3s");
        assert_eq!(human_duration(252_000), "4m12s");
        assert_eq!(human_duration(7_380_000), "2h03m");
        assert_eq!(human_duration(439_200_000), "5d02h");
    }
}
