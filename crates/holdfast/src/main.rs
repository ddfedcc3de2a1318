//! holdfast: one binary that is both the supervisor daemon and its CLI.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A TAB in a shell with holdfast's completions calls us with `COMPLETE` set.
    holdfast::cli::completions::answer_if_asked();
    let cli = holdfast::cli::Cli::parse();
    if !cli.command.is_daemon() {
        holdfast::os::end_quietly_on_broken_pipe();
    }
    // An error read by a script (`2>&1 | grep`) keeps each sentence on one line: miette
    // wraps at the terminal's width only on a terminal.
    let wrap = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(wrap).build())
    }));
    match holdfast::cli::run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(holdfast::cli::exit::FAILURE)
        }
    }
}
