//! `holdfast crashes [NAME]`, `crashes show ID`, `core-pattern install|uninstall|status`
//! and the kernel's `core-handler`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::service::report;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{CoreRecord, CrashSummary, Reply, Request};
use crate::crash::{self, core_dump, pattern, store};
use crate::model::{ServiceName, defaults};

#[derive(Debug, Subcommand)]
pub enum CrashesAction {
    /// Print one report: the panic and stack, the last log lines, the core dump and
    /// its gdb backtrace.
    Show {
        /// The report's id, or a unique start of it.
        id: String,
        #[command(flatten)]
        from: Source,
    },
}

/// Where the reports are read: from the daemon, or straight from a state directory.
#[derive(Debug, Clone, Args)]
pub struct Source {
    /// Print the report's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read the reports in this state directory instead of asking the daemon (when it
    /// is not running).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PatternAction {
    /// Point the kernel's core_pattern at `holdfast core-handler` (remembering the
    /// value it replaces).
    Install {
        #[command(flatten)]
        dir: StateDir,
        /// Bytes of one core kept at most (before compression), e.g. `512MiB`; a larger
        /// core is truncated and its report says so [default: 1GiB].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
    },
    /// Restore the core_pattern that install replaced.
    Uninstall {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Show the core_pattern and whether it is holdfast's.
    Status {
        #[command(flatten)]
        dir: StateDir,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StateDir {
    /// The daemon's state_dir: cores go to `<DIR>/crashes/cores/`.
    #[arg(long, value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
}

/// What the kernel passes to `core-handler` (`%P %i %s %t %e`).
#[derive(Debug, Clone, Args)]
pub struct HandlerArgs {
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long, default_value_t = core_dump::DEFAULT_MAX_SIZE)]
    pub max_size: u64,
    pub pid: i32,
    pub tid: i32,
    pub signal: i32,
    pub time: u64,
    /// The executable's name (`%e`; the kernel splits one with spaces).
    #[arg(num_args = 0..)]
    pub comm: Vec<String>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::config::value::parse_size(text).map_err(|e| format!("{}: {}", e.label, e.help))
}

pub fn run(
    socket: &Path,
    action: Option<CrashesAction>,
    name: Option<ServiceName>,
    from: &Source,
) -> miette::Result<ExitCode> {
    match action {
        Some(CrashesAction::Show { id, from }) => show(socket, id, &from),
        None => list(socket, name, from),
    }
}

pub fn list(socket: &Path, name: Option<ServiceName>, from: &Source) -> miette::Result<ExitCode> {
    let crashes = match &from.state_dir {
        Some(dir) => match store::list(dir, name.as_ref()) {
            Ok(crashes) => crashes,
            Err(e) => return Ok(failed(&format!("cannot read {}: {e}", dir.display()))),
        },
        None => match client::call(socket, Request::Crashes { service: name }) {
            Ok(Reply::Crashes { crashes }) => crashes,
            Ok(other) => return Ok(report(unexpected(&other))),
            Err(e) => return Ok(report(e)),
        },
    };
    if from.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crashes).expect("serializes")
        );
    } else {
        print!("{}", render_list(&crashes));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(socket: &Path, id: String, from: &Source) -> miette::Result<ExitCode> {
    let found = match &from.state_dir {
        Some(dir) => store::show(dir, &id),
        None => match client::call(socket, Request::CrashShow { id }) {
            Ok(Reply::Crash { report }) => Ok(*report),
            Ok(other) => return Ok(report(unexpected(&other))),
            Err(e) => return Ok(report(e)),
        },
    };
    match found {
        Ok(found) if from.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&found).expect("serializes")
            );
        }
        Ok(found) => print!("{}", crash::render(&found)),
        Err(message) => return Ok(failed(&message)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per report, newest first.
pub fn render_list(crashes: &[CrashSummary]) -> String {
    if crashes.is_empty() {
        return "no crash reports\n".to_owned();
    }
    let mut out = String::new();
    for c in crashes {
        let core = if c.core { "  [core]" } else { "" };
        let _ = writeln!(out, "{}  {}  {}{core}", c.id, c.time, c.summary);
    }
    out
}

pub fn core_pattern(action: PatternAction) -> miette::Result<ExitCode> {
    let proc = Path::new(pattern::PROC_PATH);
    let result = match action {
        PatternAction::Install { dir, max_size } => {
            let exe = std::env::current_exe()
                .map_err(|e| miette::miette!("cannot tell holdfast's own path: {e}"))?;
            // The kernel runs the handler from `/`: a relative path would mean `/...`.
            let state_dir = std::path::absolute(&dir.state_dir).map_err(|e| {
                miette::miette!("cannot tell where {} is: {e}", dir.state_dir.display())
            })?;
            match pattern::pattern_for(&exe, &state_dir, max_size) {
                Ok(p) => {
                    pattern::install(proc, &state_dir, &p).map(|()| format!("core_pattern: {p}\n"))
                }
                Err(e) => return Ok(failed(&e)),
            }
        }
        PatternAction::Uninstall { dir } => pattern::uninstall(proc, &dir.state_dir)
            .map(|previous| format!("core_pattern restored: {previous}\n")),
        PatternAction::Status { dir } => pattern::status(proc, &dir.state_dir),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(failed(&format!(
            "{e}: the kernel's {} (and the state directory) need root",
            pattern::PROC_PATH
        ))),
        Err(e) => Ok(failed(&e.to_string())),
    }
}

/// Run by the kernel with the core on stdin: nobody reads its output, so what goes
/// wrong is said on stderr (kept by some kernels' logs) and in the exit status.
pub fn core_handler(args: HandlerArgs) -> miette::Result<ExitCode> {
    let dump = core_dump::Dump {
        state_dir: args.state_dir,
        max_size: args.max_size,
        pid: args.pid,
        tid: args.tid,
        signal: args.signal,
        time: args.time,
        comm: args.comm.join(" "),
    };
    let record = match core_dump::handle(&dump, &mut std::io::stdin().lock()) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(ExitCode::SUCCESS),
        Err(e) => return Ok(failed(&format!("core of pid {}: {e}", dump.pid))),
    };
    tell_daemon(&dump.state_dir, &record);
    Ok(ExitCode::SUCCESS)
}

/// Tells the daemon that owns `state_dir` about `record`; false when none answers.
fn tell_daemon(state_dir: &Path, record: &CoreRecord) -> bool {
    let Some(socket) = crate::supervisor::runtime::control_of(state_dir) else {
        return false;
    };
    let request = Request::CoreDumped {
        pid: record.pid,
        record: record.record.clone(),
    };
    client::call(&socket, request).is_ok()
}

fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(super::exit::FAILURE)
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!(
        "holdfast answered with an unexpected reply: {reply:?}"
    ))
}
