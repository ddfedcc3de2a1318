//! Command-line interface: one module per subcommand, each with a `run` function.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;

use crate::model::ServiceName;

pub mod check;
pub mod completions;
pub mod crashes;
pub mod demo;
pub mod doctor;
pub mod events;
pub mod exit;
pub mod generate;
pub mod http_token;
pub mod import;
pub mod logs;
pub mod quarantine;
pub mod reload;
pub mod service;
pub mod signal;
pub mod status;
pub mod unit_hooks;
// Resolved by the control layer, so the HTTP server's `/control` resolves them too.
pub use crate::control::targets;
pub mod up;
pub mod upgrade;
pub mod upgrade_self;
pub mod watch;

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
        #[command(flatten)]
        log: up::LogArgs,
    },
    /// Validate a config file; exits non-zero with a diagnostic for each problem.
    Check {
        /// Config file to check.
        file: PathBuf,
    },
    /// Show the state of every service, or of the named ones; exits 3 unless each is
    /// in its wanted state (running, or stopped).
    Status(status::StatusArgs),
    /// `status --watch`: a live view of the services until Ctrl-C.
    Top {
        /// Only these services: names, `all`, or `@group`.
        #[arg(value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        names: Vec<String>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Print a service's state; exits 0 if it is running, 3 otherwise.
    IsActive {
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Print a service's state; exits 0 if it is failed (or quarantined), 1 otherwise.
    IsFailed {
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Start services (also revives `failed` ones and releases quarantined ones) and wait
    /// until they run.
    Start {
        /// Service names, `all`, or `@group` (a `service_group`).
        #[arg(required = true, value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        targets: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop services (stop signal to the whole process group, SIGKILL after the stop
    /// timeout) and wait until their processes are gone.
    Stop {
        /// Service names, `all`, or `@group` (a `service_group`).
        #[arg(required = true, value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        targets: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop services if they run, start them again and wait until the new runs are up.
    Restart {
        /// Service names, `all`, or `@group` (a `service_group`).
        #[arg(required = true, value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        targets: Vec<String>,
        #[command(flatten)]
        wait: service::WaitArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Send a signal to services' main processes (`signal nginx HUP`; HUP, SIGHUP or 1).
    Signal {
        /// Service names, `all`, or `@group`.
        #[arg(required = true, value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        targets: Vec<String>,
        /// The signal: a name with or without SIG (HUP, SIGHUP) or a number.
        #[arg(value_name = "SIGNAL")]
        signal: String,
        /// Signal every process of the service (its cgroup or process groups), not only
        /// the main one.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Turn failed services back into stopped ones with a fresh start limit; without
    /// targets, every failed service.
    ResetFailed {
        /// Service names, `all`, or `@group`.
        #[arg(value_name = "TARGET", add = ArgValueCandidates::new(completions::targets))]
        targets: Vec<String>,
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
    /// Roll a service out to a new build (what its program names now, or --to) without
    /// a gap, and wait until it is upgraded or rolled back; --status shows rollouts;
    /// --self re-executes holdfast itself in place (every service keeps running).
    Upgrade {
        #[command(flatten)]
        args: upgrade::UpgradeArgs,
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
    /// Show services' captured output (all services when none is named), merged by
    /// time like journalctl; -f follows new lines.
    Logs {
        /// Only these services.
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
        names: Vec<ServiceName>,
        /// Keep printing lines as they are written (follows rotation), until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Show the last N lines overall [default: 20, or all within --since/--until,
        /// 10 with -f].
        #[arg(long, short = 'n', value_name = "N")]
        lines: Option<usize>,
        /// Only lines from this time on: RFC 3339 UTC (`2026-11-25T12:00:00Z`), `today`,
        /// `yesterday`, `now`, or a time ago (`10min ago`, `-10m`).
        #[arg(long, short = 'S', value_name = "TIME", allow_hyphen_values = true)]
        since: Option<String>,
        /// Only lines up to this time (same forms as --since).
        #[arg(long, short = 'U', value_name = "TIME", allow_hyphen_values = true)]
        until: Option<String>,
        /// Print the services' text as it is, control characters and escapes included.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Show recent events (every state change, with its reason); -f follows new ones.
    Events {
        /// Only this service's events.
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
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
        /// Only the last N events [-f without -n starts at now, like journalctl -f].
        #[arg(long, short = 'n', value_name = "N")]
        lines: Option<usize>,
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
    /// Crash reports, newest first (of NAME only when given): why each service died,
    /// with its panic or stack; `crashes show ID` prints one.
    #[command(args_conflicts_with_subcommands = true)]
    Crashes {
        #[command(subcommand)]
        action: Option<crashes::CrashesAction>,
        /// Only this service's reports.
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
        name: Option<ServiceName>,
        #[command(flatten)]
        from: crashes::Source,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Point the kernel's core_pattern at holdfast's core handler, or back.
    CorePattern {
        #[command(subcommand)]
        action: crashes::PatternAction,
    },
    /// The kernel's core_pattern pipe handler (installed by `core-pattern install`).
    #[command(hide = true)]
    CoreHandler(crashes::HandlerArgs),
    /// `ExecStartPre=` of the `gen systemd --self` unit: frees the unit's cgroup for a
    /// restarted holdfast (see `cli::unit_hooks`).
    #[command(hide = true)]
    CgroupRelease,
    /// `ExecStopPost=` of the `gen systemd --self` unit: kills the services a stop
    /// timeout or a start limit left behind.
    #[command(hide = true)]
    CgroupReap,
    /// Run holdfast supervising the bundled demo service on an embedded config.
    Demo,
    /// Show what this host supports: cgroups and controllers, user namespaces,
    /// capabilities, core_pattern, whether running under systemd.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a service's config as a systemd unit or a supervisord program, or the
    /// systemd unit for holdfast itself (`gen systemd --self`).
    Gen {
        #[command(subcommand)]
        target: generate::GenTarget,
    },
    /// Convert another supervisor's config into a holdfast config, reporting every
    /// option that has no equivalent.
    Import {
        #[command(subcommand)]
        source: import::ImportSource,
    },
    /// Print the token of the HTTP server's `/control` (from `<state_dir>/http.token`;
    /// holdfast's own user and root only) and the dashboard URL that carries it.
    HttpToken {
        /// Config file of the daemon.
        #[arg(
            long,
            short = 'c',
            env = "HOLDFAST_CONFIG",
            default_value = "/etc/holdfast/holdfast.toml"
        )]
        config: PathBuf,
    },
    /// Print a shell completion script that completes the running daemon's service
    /// names (bash: `source <(holdfast completions bash)`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The commands that run holdfast's supervisor (which must see `EPIPE` rather than be
    /// killed by SIGPIPE when a control client goes away).
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Up { .. } | Command::Demo)
    }
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
    Release {
        #[arg(add = ArgValueCandidates::new(completions::service_names))]
        name: ServiceName,
    },
}

/// Runs a parsed command line; the result maps to the process exit code.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per verb: the whole command line reads best as one flat table"
)]
pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Up { config, log } => up::run(&config, log),
        Command::Check { file } => check::run(&file),
        Command::Status(args) => status::run(&args),
        Command::Top { names, socket } => watch::run(&socket.socket, &names),
        Command::IsActive { name, socket } => status::is_active(&socket.socket, &name),
        Command::IsFailed { name, socket } => status::is_failed(&socket.socket, &name),
        Command::Start {
            targets,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Start, &targets, &wait),
        Command::Stop {
            targets,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Stop, &targets, &wait),
        Command::Restart {
            targets,
            wait,
            socket,
        } => service::run(&socket.socket, service::Verb::Restart, &targets, &wait),
        Command::Signal {
            targets,
            signal,
            all,
            socket,
        } => signal::signal(&socket.socket, &targets, &signal, all),
        Command::ResetFailed { targets, socket } => signal::reset_failed(&socket.socket, &targets),
        Command::Upgrade { args, socket } => upgrade::run(&socket.socket, &args),
        Command::Shutdown { wait, socket } => service::shutdown(&socket.socket, &wait),
        Command::Reload {
            dry_run,
            wait,
            socket,
        } => reload::run(&socket.socket, dry_run, &wait),
        Command::Logs {
            names,
            follow,
            lines,
            since,
            until,
            raw,
            socket,
        } => logs::run(
            &socket.socket,
            logs::Options {
                names,
                lines,
                since,
                until,
                follow,
                raw,
            },
        ),
        Command::Events {
            name,
            follow,
            json,
            since,
            lines,
            socket,
        } => events::run(&socket.socket, name, follow, json, since, lines),
        Command::Quarantine { action, socket } => quarantine::run(&socket.socket, action),
        Command::Crashes {
            action,
            name,
            from,
            socket,
        } => crashes::run(&socket.socket, action, name, &from),
        Command::CorePattern { action } => crashes::core_pattern(action),
        Command::CoreHandler(args) => crashes::core_handler(args),
        Command::CgroupRelease => unit_hooks::release(),
        Command::CgroupReap => unit_hooks::reap(),
        Command::Demo => demo::run(),
        Command::Doctor { json } => doctor::run(json),
        Command::Completions { shell } => completions::run(shell),
        Command::HttpToken { config } => http_token::run(&config),
        Command::Gen { target } => generate::run(target),
        Command::Import { source } => import::run(source),
    }
}
