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
    ask().map(|status| names(&status)).unwrap_or_default()
}

/// Candidates for a target argument (see [`super::targets`]): the services, `all`, and
/// `@group` for each `service_group`.
pub fn targets() -> Vec<CompletionCandidate> {
    ask()
        .map(|status| target_candidates(&status))
        .unwrap_or_default()
}

/// The running daemon's status, if it answers in time.
fn ask() -> Option<Status> {
    let socket = socket_from_args(std::env::args_os())
        .or_else(|| std::env::var_os("HOLDFAST_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(defaults::CONTROL));
    match client::call_within(&socket, Request::Status, Some(ASK_TIMEOUT)) {
        Ok(Reply::Status(status)) => Some(status),
        _ => None,
    }
}

/// Service names, each with its state as the help text shells show beside it; before
/// the first instance of a service (`web@0`), its base name `web`, which names them all.
fn names(status: &Status) -> Vec<CompletionCandidate> {
    let mut candidates = Vec::new();
    let mut bases = std::collections::BTreeSet::new();
    for s in &status.services {
        let base = s.name.base();
        if s.name.instance_index().is_some() && bases.insert(base) {
            let count = status
                .services
                .iter()
                .filter(|other| other.name.instance_index().is_some() && other.name.base() == base)
                .count();
            candidates.push(
                CompletionCandidate::new(base).help(Some(format!("all {count} instances").into())),
            );
        }
        candidates
            .push(CompletionCandidate::new(s.name.as_str()).help(Some(s.state.as_str().into())));
    }
    candidates
}

/// The names, then `all`, then one `@group` per distinct group (help: its members).
fn target_candidates(status: &Status) -> Vec<CompletionCandidate> {
    let mut groups: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &status.services {
        if let Some(group) = &s.group {
            groups.entry(group).or_default().push(s.name.as_str());
        }
    }
    let mut candidates = names(status);
    candidates
        .push(CompletionCandidate::new(super::targets::ALL).help(Some("every service".into())));
    candidates.extend(groups.into_iter().map(|(group, members)| {
        CompletionCandidate::new(format!("@{group}")).help(Some(members.join(", ").into()))
    }));
    candidates
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

    #[test]
    fn targets_are_the_names_all_and_each_group_once() {
        let status = Status::sample(vec![
            crate::control::protocol::ServiceStatus {
                group: Some("backend".to_owned()),
                ..crate::control::protocol::ServiceStatus::sample("api", "running")
            },
            crate::control::protocol::ServiceStatus {
                group: Some("backend".to_owned()),
                ..crate::control::protocol::ServiceStatus::sample("worker", "failed")
            },
            crate::control::protocol::ServiceStatus::sample("web", "running"),
        ]);
        let values: Vec<String> = target_candidates(&status)
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(values, ["api", "worker", "web", "all", "@backend"]);
    }

    #[test]
    fn an_instanced_service_is_offered_by_its_base_name_too() {
        let mut status = Status::sample(Vec::new());
        for name in ["api", "web@0", "web@1", "web@2"] {
            let s = crate::control::protocol::ServiceStatus::sample(name, "running");
            status.services.push(s);
        }
        let values: Vec<String> = names(&status)
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(values, ["api", "web", "web@0", "web@1", "web@2"]);
    }

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
