//! Command-line interface: one module per subcommand, each with a `run` function.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::model::ServiceName;

pub mod check;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod events;
pub mod exit;
pub mod logs;
pub mod quarantine;
pub mod reload;
pub mod service;
pub mod status;
pub mod targets;
pub mod up;

/// A service supervisor: restart policies, process-group control and a watcher that heals.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the CLI finds the daemon's control socket.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Control socket of the running daemon.
    #[arg(long, short = 's', env = "HOLDFAST_SOCKET", default_value = crate::model::defaults::CONTROL, global = true)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground with the given config.
    Up {
        /// Config file.
        #[arg(
            long,
            short = 'c',
            env = "HOLDFAST_CONFIG",
            default_value = "/etc/holdfast/holdfast.toml"
        )]
        config: PathBuf,
    },
    /// Validate a config file; exits non-zero with a diagnostic for each problem.
    Check {
        /// Config file to check.
        file: PathBuf,
    },
    /// Show the state of every service, or of the named ones; exits 3 unless each is
    /// in its wanted state (running, or stopped).
    Status {
        /// Only these services.
        names: Vec<String>,
        /// Print the control API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Print a service's state; exits 0 if it is running, 3 otherwise.
    IsActive {
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Print a service's state; exits 0 if it is failed (or quarantined), 1 otherwise.
    IsFailed {
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Start services (also revives `failed` ones) and wait until they run.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop services (stop signal to the whole process group, SIGKILL after the stop
    /// timeout) and wait until their processes are gone.
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop services if they run, start them again and wait until the new runs are up.
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Re-read the daemon's config and apply it (only changed services restart), then
    /// wait until every added or changed service settled.
    Reload {
        /// Print what would change without applying it.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop all services in reverse dependency order, and wait until the daemon exited.
    Shutdown {
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Show a service's captured stdout/stderr.
    Logs {
        name: ServiceName,
        /// Keep printing lines as they are written (follows rotation).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Number of lines to show from the end.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Show recent events (every state change, with its reason); -f follows new ones.
    Events {
        /// Only this service's events.
        name: Option<ServiceName>,
        /// Keep printing events as they happen, until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print one JSON event record per line instead of aligned text.
        #[arg(long)]
        json: bool,
        /// Only events after this sequence number (the `seq` of `--json`).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// The quarantine queue: exits mapped to `action = "quarantine"`, awaiting review.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Run holdfast supervising the bundled demo service on an embedded config.
    Demo,
    /// Show what this host supports: cgroups and controllers, user namespaces,
    /// capabilities, core_pattern, whether running under systemd.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// Print every record, oldest first, with its last log lines.
    List {
        /// Print the control API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mark the service's records released and start it again.
    Release { name: ServiceName },
}

/// Runs a parsed command line; the result maps to the process exit code.
pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Up { config } => up::run(&config),
        Command::Check { file } => check::run(&file),
        Command::Status {
            names,
            json,
            socket,
        } => status::run(&socket.socket, json, &names),
        Command::IsActive { name, socket } => status::is_active(&socket.socket, &name),
        Command::IsFailed { name, socket } => status::is_failed(&socket.socket, &name),
        Command::Start {
            names,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Start, &names, &wait),
        Command::Stop {
            names,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Stop, &names, &wait),
        Command::Restart {
            names,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Restart, &names, &wait),
        Command::Shutdown { wait, socket } => service::shutdown(&socket.socket, &wait),
        Command::Reload {
            dry_run,
            wait,
            socket,
        } => reload::run(&socket.socket, dry_run, &wait),
        Command::Logs {
            name,
            follow,
            lines,
            socket,
        } => logs::run(&socket.socket, &name, lines, follow),
        Command::Events {
            name,
            follow,
            json,
            since,
            socket,
        } => events::run(&socket.socket, name, follow, json, since),
        Command::Quarantine { action, socket } => quarantine::run(&socket.socket, action),
        Command::Demo => demo::run(),
        Command::Doctor { json } => doctor::run(json),
        Command::Completions { shell } => completions::run(shell),
    }
}
