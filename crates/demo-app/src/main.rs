//! demo-app: a realistic HTTP service that holdfast's demo, integration tests and
//! benchmarks supervise. It speaks the systemd protocols (LISTEN_FDS, NOTIFY_SOCKET,
//! WATCHDOG_USEC) and fails on demand (see `demo-app --help` and `chaos`).
//!
//! Exit codes: 0 after a graceful drain; 1 when startup fails (and the default of
//! `--exit-code`); 2 for a bad command line; 101 after a panic; N from `--exit-code`
//! or `/crash?code=N`; death by SIGSEGV from `--segfault-after` and `/segfault`.

mod app;
mod chaos;
mod cli;
mod daemonize;
mod flood;
mod listen;
mod notify;
mod server;
mod state;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if args.version {
        println!(
            "demo-app {} (build {})",
            env!("CARGO_PKG_VERSION"),
            args.build_id
        );
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.timestamp_file
        && let Err(error) = app::write_timestamp(path)
    {
        eprintln!("demo-app: failed to append to {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(socket) = &args.flood_control {
        flood::run(socket, args.flood_connections);
    }
    if args.grandchild {
        chaos::grandchild_main(args.ignore_sigterm);
    }
    if let Some(path) = &args.flood_notify {
        chaos::flood_notify(path);
    }
    if args.exit_immediately {
        if let Some(path) = &args.timestamp_file
            && args.timestamp_exit
            && let Err(error) = app::write_timestamp_marked(path, " exit")
        {
            eprintln!("demo-app: failed to append to {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        return ExitCode::from(args.exit_code);
    }
    if args.daemonize.is_some() {
        match daemonize::hand_over(args.forks, args.daemon_stage) {
            Ok(daemonize::Handover::Exit) => return ExitCode::SUCCESS,
            Ok(daemonize::Handover::IAmTheDaemon) => {}
            Err(error) => {
                eprintln!("demo-app: failed to daemonize: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    chaos::install_panic_hook();
    if args.print_env {
        for (key, value) in std::env::vars_os() {
            println!("{}={}", key.to_string_lossy(), value.to_string_lossy());
        }
    }
    // Before the runtime starts any thread: this edits the environment.
    let inherited = match listen::take_inherited() {
        Ok(inherited) => inherited,
        Err(error) => {
            eprintln!("demo-app: failed to take the socket passed in LISTEN_FDS: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime builds at startup");
    runtime.block_on(app::run(args, inherited))
}
