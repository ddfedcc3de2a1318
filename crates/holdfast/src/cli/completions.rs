//! `holdfast completions SHELL`: completion scripts generated from the clap definition.

use std::process::ExitCode;

use clap::CommandFactory;

pub fn run(shell: clap_complete::Shell) -> miette::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "holdfast", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
