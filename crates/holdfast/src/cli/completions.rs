//! Shell completion that knows the running daemon's services.
//!
//! `holdfast completions SHELL` prints a small registration script; the shell then calls
//! `holdfast` itself (with `COMPLETE=<shell>`) at each TAB, and clap's completion engine
//! answers, asking the daemon for service names where a service is expected. So the
//! names are always those of the running daemon, and the script never goes stale.
//! The daemon is found as every command finds it: `--socket`/`-s` on the line being
//! completed, else `HOLDFAST_SOCKET`, else the default socket. An unreachable daemon
//! just means no name candidates (after at most [`ASK_TIMEOUT`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::CompletionCandidate;
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::control::client;
use crate::control::protocol::{Reply, Request, Status};
use crate::model::defaults;

/// The variable that switches `holdfast` into answering a completion request.
const VAR: &str = "COMPLETE";

/// How long a TAB may wait for the daemon's service list.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Answers a completion request and exits when `COMPLETE` is set; otherwise returns.
/// Must run before anything is written to stdout.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(super::Cli::command)
        .var(VAR)
        .complete();
}

/// `holdfast completions SHELL`: the registration script for `shell`.
pub fn run(shell: clap_complete::Shell) -> miette::Result<ExitCode> {
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        other => miette::bail!("completions for {other} are not supported"),
    };
    // The script calls this very binary back, so an absolute path keeps working
    // whatever PATH the shell has.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "holdfast".to_owned());
    let mut out = std::io::stdout().lock();
    completer
        .write_registration(VAR, "holdfast", "holdfast", &exe, &mut out)
        .map_err(|e| miette::miette!("failed to write the completion script: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Candidates for a service-name argument: the running daemon's services.
pub fn service_names() -> Vec<CompletionCandidate> {
    let socket = socket_from_args(std::env::args_os())
        .or_else(|| std::env::var_os("HOLDFAST_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(defaults::CONTROL));
    match client::call_within(&socket, Request::Status, Some(ASK_TIMEOUT)) {
        Ok(Reply::Status(status)) => candidates(&status),
        _ => Vec::new(),
    }
}

/// Service names, each with its state as the help text shells show beside it.
fn candidates(status: &Status) -> Vec<CompletionCandidate> {
    // Groups hook: once services carry a `group`, add one `@group` candidate per
    // distinct group here (help: its member names).
    status
        .services
        .iter()
        .map(|s| CompletionCandidate::new(s.name.as_str()).help(Some(s.state.clone().into())))
        .collect()
}

/// The `--socket`/`-s` value on the command line being completed (after the `--` that
/// separates it from the completer's own arguments).
fn socket_from_args(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let args: Vec<OsString> = args.into_iter().collect();
    let line = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => &args[..],
    };
    let mut found = None;
    let mut words = line.iter();
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == "--socket" || text == "-s" {
            found = words.next().map(PathBuf::from);
        } else if let Some(value) = text.strip_prefix("--socket=") {
            found = Some(PathBuf::from(value));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_socket_of_the_line_being_completed_is_used() {
        let line = [
            "holdfast",
            "--",
            "holdfast",
            "stop",
            "-s",
            "/run/a.sock",
            "",
        ];
        assert_eq!(socket_from_args(args(&line)), Some("/run/a.sock".into()));
        let line = [
            "holdfast",
            "--",
            "holdfast",
            "--socket=/run/b.sock",
            "stop",
            "",
        ];
        assert_eq!(socket_from_args(args(&line)), Some("/run/b.sock".into()));
        let line = ["holdfast", "--", "holdfast", "stop", ""];
        assert_eq!(socket_from_args(args(&line)), None);
    }
}
