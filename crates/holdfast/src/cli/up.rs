//! `holdfast up`: load the config, then run the supervisor in the foreground.

use std::path::Path;
use std::process::ExitCode;

use miette::IntoDiagnostic;

use super::exit;
use crate::observe::log::{LogFormat, LogTarget};
use crate::{config, observe, supervisor};

/// Where holdfast's own log goes and how it looks.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// `human` lines, or `json`: one object a line (for stderr; journal entries are
    /// structured anyway).
    #[arg(long, value_enum, env = "HOLDFAST_LOG_FORMAT", default_value_t)]
    pub log_format: LogFormat,
    /// `auto`: the journal when stderr is connected to it (`JOURNAL_STREAM`), else stderr.
    #[arg(long, value_enum, env = "HOLDFAST_LOG_TARGET", default_value_t)]
    pub log_target: LogTarget,
}

pub fn run(config_path: &Path, log: LogArgs) -> miette::Result<ExitCode> {
    observe::log::init(log.log_format, log.log_target);
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
