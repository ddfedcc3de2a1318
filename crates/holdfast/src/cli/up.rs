//! `holdfast up`: load the config, then run the supervisor in the foreground.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use miette::IntoDiagnostic;

use super::exit;
use crate::{config, supervisor};

pub fn run(config_path: &Path) -> miette::Result<ExitCode> {
    init_tracing();
    let config_path = std::path::absolute(config_path).into_diagnostic()?;
    // A re-execution (`upgrade --self`) takes over the fds before anything could open
    // another one at their numbers.
    let inherited = supervisor::runtime::inherited().map_err(|e| miette::miette!("{e}"))?;
    let plan = match config::load(&config_path) {
        Ok(plan) => plan,
        Err(e) => {
            if let Some(handed) = inherited {
                // The services live on under the previous image, which gets them back.
                let error = supervisor::runtime::fall_back(handed, &e.render_plain());
                tracing::error!("cannot go back to the previous holdfast: {error}");
            }
            eprintln!("{:?}", miette::Report::new(e));
            return Ok(ExitCode::from(exit::INVALID_CONFIG));
        }
    };
    // Two workers: the supervisor task never waits behind a log writer or a slow
    // control client. Idle workers park; they cause no wakeups.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .into_diagnostic()?;
    runtime
        .block_on(supervisor::runtime::run(config_path, plan, inherited))
        .into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}

/// holdfast's own log: stderr, level from `HOLDFAST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
