//! `holdfast upgrade NAME [--to PATH] [--no-block]`: roll a service out to a new build
//! (the one its program names now, after a flip of its `current` link, or `--to`), print
//! the rollout's events as they happen and wait until every instance is `upgraded`
//! (exit 0), or `rolled_back` / refused (exit 1). `holdfast upgrade --status [NAME]`:
//! each upgradable service's mode, build and rollout under way.
//!
//! The daemon verifies the build before it answers: a refusal is its error answer, and
//! nothing changed. The events are read from the daemon's history after the last one
//! seen before the request, so none of the rollout's can be missed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use clap_complete::ArgValueCandidates;

use super::service::report;
use super::{completions, exit, status, targets};
use crate::control::client::{self, ClientError};
use crate::control::protocol::{
    ControlError, ErrorKind, EventRecord, Reply, Request, ServiceStatus, Status, UpgradeStatus,
};
use crate::model::{ServiceName, Timeout};

/// What `holdfast upgrade` acts on and how. `NAME` is optional in the grammar: `--status`
/// lists every upgradable service without one.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// The service to upgrade (a base name upgrades its instances one at a time).
    #[arg(
        value_name = "NAME",
        required_unless_present_any = ["status", "itself"],
        add = ArgValueCandidates::new(completions::service_names)
    )]
    pub name: Option<ServiceName>,
    /// Roll out this build (an absolute path) instead of the one the service's program
    /// names now.
    #[arg(long, value_name = "PATH", value_parser = parse_build, conflicts_with = "status")]
    pub to: Option<PathBuf>,
    /// Return once the daemon verified and accepted the build, without waiting for the
    /// rollout.
    #[arg(long, conflicts_with = "status")]
    pub no_block: bool,
    /// Give up waiting after this long (`10m`; exits 5, the rollout goes on). By default
    /// the wait lasts as long as the rollout, which its own timeouts bound.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "infinity",
        value_parser = super::service::parse_timeout,
        conflicts_with = "status"
    )]
    pub timeout: Timeout,
    /// Show each upgradable service's mode, build and rollout under way.
    #[arg(long)]
    pub status: bool,
    /// Upgrade holdfast itself: re-execute the binary now at its path, in place (same
    /// pid; every service keeps running as its child), and wait until it answers.
    #[arg(long = "self", conflicts_with_all = ["name", "to", "status"])]
    pub itself: bool,
}

/// `--to`: an absolute path to an existing file (the daemon checks the rest).
fn parse_build(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(format!(
            "the build must be an absolute path, not {text:?} (try {:?})",
            std::env::current_dir()
                .map(|d| d.join(&path).display().to_string())
                .unwrap_or_default()
        ));
    }
    match std::fs::metadata(&path) {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("no such file: {text}")),
        Err(e) => Err(format!("cannot read {text}: {e}")),
    }
}

pub fn run(socket: &Path, args: &UpgradeArgs) -> miette::Result<ExitCode> {
    if args.itself {
        return super::upgrade_self::run(socket, args.no_block, args.timeout);
    }
    let status = match fetch(socket) {
        Ok(status) => status,
        Err(e) => return Ok(report(e)),
    };
    let upgradable = match upgradable(&status, args.name.as_ref()) {
        Ok(services) => services,
        Err(e) => return Ok(report(ClientError::Daemon(e))),
    };
    if args.status {
        print!("{}", render_status(&upgradable));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = args.name.clone() else {
        // clap requires NAME without --status.
        let needed = bad("a service to upgrade is needed".to_owned());
        return Ok(report(ClientError::Daemon(needed)));
    };
    let names: BTreeSet<ServiceName> = upgradable.iter().map(|s| s.name.clone()).collect();
    Ok(upgrade(socket, name, args, names))
}

/// Sends the upgrade and, unless `no_block`, prints its events until the rollout of
/// each of `names` is over.
fn upgrade(
    socket: &Path,
    name: ServiceName,
    args: &UpgradeArgs,
    names: BTreeSet<ServiceName>,
) -> ExitCode {
    let deadline = args.timeout.duration().map(|t| Instant::now() + t);
    let since = match client::newest_event(socket) {
        Ok(seq) => seq,
        Err(e) => return report(e),
    };
    let request = Request::Upgrade {
        target: name.clone(),
        to: args.to.clone(),
    };
    // No deadline of the CLI's own: the daemon answers once the build's `verify`
    // command ended, which its timeout bounds.
    match client::call_within(socket, request, None) {
        Ok(Reply::Accepted { message }) => println!("{message}"),
        Ok(other) => return report(unexpected(&other)),
        Err(e) => return report(e),
    }
    if args.no_block {
        return ExitCode::SUCCESS;
    }
    // The core began the rollout before it answered: none under way now means none
    // began (the service does not run and starts on the new build next time).
    match fetch(socket) {
        Ok(status) if !Rollout::default().under_way(&status, &names) => ExitCode::SUCCESS,
        Ok(_) => match follow(socket, &name, &names, since, deadline) {
            Ok(Some(rollout)) if rollout.failed => ExitCode::from(exit::FAILURE),
            Ok(Some(_)) => ExitCode::SUCCESS,
            Ok(None) => {
                let after = humantime::format_duration(args.timeout.duration().unwrap_or_default());
                eprintln!(
                    "holdfast: timed out after {after}: {name} is still upgrading (the rollout goes on)"
                );
                ExitCode::from(exit::TIMED_OUT)
            }
            Err(e) => report(e),
        },
        Err(e) => report(e),
    }
}

/// Prints the events of `name` after `since` until the upgrade of `names` is over (what
/// they said), or `deadline` passes (`None`).
fn follow(
    socket: &Path,
    name: &ServiceName,
    names: &BTreeSet<ServiceName>,
    since: u64,
    deadline: Option<Instant>,
) -> Result<Option<Rollout>, ClientError> {
    let request = Request::Events {
        follow: true,
        service: Some(name.clone()),
        since: Some(since),
        last: None,
    };
    let mut rollout = Rollout::default();
    let mut over = false;
    let mut failure = None;
    let streamed = client::stream_until(socket, request, deadline, |reply| match reply {
        Reply::Event { event } => {
            println!("{}", super::events::render(&event));
            let _ = std::io::stdout().flush();
            rollout.on_event(&event);
            match fetch(socket) {
                Ok(status) if rollout.under_way(&status, names) => ControlFlow::Continue(()),
                Ok(_) => {
                    over = true;
                    ControlFlow::Break(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
        other => {
            failure = Some(unexpected(&other));
            ControlFlow::Break(())
        }
    });
    match (streamed?, failure) {
        (_, Some(e)) => Err(e),
        (client::Streamed::TimedOut, None) => Ok(None),
        (client::Streamed::Ended, None) if over => Ok(Some(rollout)),
        (client::Streamed::Ended, None) => Err(ClientError::Protocol(format!(
            "the daemon closed the event stream before the upgrade of {name} was over"
        ))),
    }
}

/// What the events of a waited upgrade said so far.
#[derive(Debug, Default)]
struct Rollout {
    /// The build rolled out: the `to` of its first `upgrade_started`.
    to: Option<String>,
    /// A service was rolled back or its build refused.
    failed: bool,
}

impl Rollout {
    fn on_event(&mut self, event: &EventRecord) {
        match event.kind.as_str() {
            "upgrade_started" if self.to.is_none() => {
                let to = event.data.get("to").and_then(|to| to.as_str());
                self.to = to.map(str::to_owned);
            }
            "rolled_back" | "upgrade_refused" => self.failed = true,
            _ => {}
        }
    }

    /// Whether the upgrade of `names` goes on: a rollout is under way, or (instances go
    /// one at a time) the roll paused at an instance that is not healthy yet, with
    /// others still on their old build. A roll that failed goes on only while its
    /// rollbacks do.
    fn under_way(&self, status: &Status, names: &BTreeSet<ServiceName>) -> bool {
        let upgrades = status
            .services
            .iter()
            .filter(|s| names.contains(&s.name))
            .filter_map(|s| s.upgrade.as_ref());
        let mut left_behind = false;
        for upgrade in upgrades {
            if upgrade.rollout.is_some() {
                return true;
            }
            left_behind |= self.to.as_ref().is_some_and(|to| upgrade.build != *to);
        }
        left_behind && !self.failed
    }
}

/// The services of `status` with `[upgrade]` (those `name` names, when given); naming
/// one without is an error that says so.
fn upgradable<'a>(
    status: &'a Status,
    name: Option<&ServiceName>,
) -> Result<Vec<&'a ServiceStatus>, ControlError> {
    let Some(name) = name else {
        return Ok(status
            .services
            .iter()
            .filter(|s| s.upgrade.is_some())
            .collect());
    };
    let named = targets::resolve(
        &status.services,
        &[name.to_string()],
        targets::Grain::Instance,
    )?;
    let services: Vec<&ServiceStatus> = status
        .services
        .iter()
        .filter(|s| named.contains(&s.name))
        .collect();
    if services.iter().any(|s| s.upgrade.is_none()) {
        return Err(bad(format!(
            "{name} has no [service.{}.upgrade] section: only a service with one can be upgraded",
            name.base()
        )));
    }
    Ok(services)
}

/// `upgrade --status`: one paragraph per service.
pub fn render_status(services: &[&ServiceStatus]) -> String {
    if services.is_empty() {
        return "no service has an [upgrade] section\n".to_owned();
    }
    let mut out = String::new();
    for service in services {
        if let Some(upgrade) = &service.upgrade {
            let _ = writeln!(out, "{}: {}", service.name, upgrade.mode);
            for line in lines(upgrade) {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

/// The build and the rollout under way, as `status NAME` and `upgrade --status` show
/// them.
pub fn lines(upgrade: &UpgradeStatus) -> Vec<String> {
    let mut lines = vec![match &upgrade.watch {
        Some(link) => format!("build: {} (watching {link})", upgrade.build),
        None => format!("build: {}", upgrade.build),
    }];
    if let Some(rollout) = &upgrade.rollout {
        lines.push(format!(
            "upgrading: {}, {} -> {}, for {}",
            rollout.phase,
            rollout.from,
            rollout.to,
            status::human_duration(rollout.since_ms)
        ));
        if let Some(why) = &rollout.rolling_back {
            lines.push(format!("rolling back: {why}"));
        }
    }
    lines
}

fn fetch(socket: &Path) -> Result<Status, ClientError> {
    match client::call(socket, Request::Status)? {
        Reply::Status(status) => Ok(status),
        other => Err(unexpected(&other)),
    }
}

fn bad(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!(
        "holdfast answered with an unexpected reply: {reply:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::RolloutStatus;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).expect("valid name")
    }

    fn instance(name: &str, build: &str, rolling: bool) -> ServiceStatus {
        let mut service = ServiceStatus::sample(name, "running");
        service.upgrade = Some(UpgradeStatus {
            mode: "handover".to_owned(),
            build: build.to_owned(),
            watch: None,
            rollout: rolling.then(|| RolloutStatus {
                phase: "starting".to_owned(),
                from: "/a".to_owned(),
                to: "/b".to_owned(),
                since_ms: 0,
                rolling_back: None,
            }),
        });
        service
    }

    fn event(kind: &str, data: serde_json::Value) -> EventRecord {
        EventRecord {
            seq: 1,
            time: "2026-11-25T12:00:01.234Z".to_owned(),
            service: Some(name("web@0")),
            kind: kind.to_owned(),
            message: String::new(),
            data: serde_json::from_value(data).expect("an object"),
        }
    }

    #[test]
    fn a_waited_upgrade_of_instances_goes_on_through_a_pause_and_ends_with_the_roll() {
        let names: BTreeSet<ServiceName> = [name("web@0"), name("web@1")].into();
        let status = |a: (&str, bool), b: (&str, bool)| {
            Status::sample(vec![
                instance("web@0", a.0, a.1),
                instance("web@1", b.0, b.1),
            ])
        };
        let mut rollout = Rollout::default();
        rollout.on_event(&event(
            "upgrade_started",
            serde_json::json!({"from": "/a", "to": "/b"}),
        ));
        assert!(rollout.under_way(&status(("/a", true), ("/a", false)), &names));
        // The canary is upgraded but not healthy yet: the roll waits, and so does the CLI.
        assert!(rollout.under_way(&status(("/b", false), ("/a", false)), &names));
        assert!(!rollout.under_way(&status(("/b", false), ("/b", false)), &names));
        assert!(!rollout.failed);
    }

    #[test]
    fn a_waited_upgrade_that_rolled_back_ends_once_the_rollbacks_did() {
        let names: BTreeSet<ServiceName> = [name("web@0"), name("web@1")].into();
        let mut rollout = Rollout::default();
        rollout.on_event(&event(
            "upgrade_started",
            serde_json::json!({"from": "/a", "to": "/b"}),
        ));
        rollout.on_event(&event("rolled_back", serde_json::json!({"build": "/a"})));
        assert!(rollout.failed);
        let rolling_back = Status::sample(vec![
            instance("web@0", "/b", true),
            instance("web@1", "/a", false),
        ]);
        assert!(rollout.under_way(&rolling_back, &names));
        let back = Status::sample(vec![
            instance("web@0", "/a", false),
            instance("web@1", "/a", false),
        ]);
        assert!(!rollout.under_way(&back, &names));
    }

    #[test]
    fn status_shows_the_build_and_the_rollout_under_way() {
        let mut service = ServiceStatus::sample("api", "running");
        service.upgrade = Some(UpgradeStatus {
            mode: "handover".to_owned(),
            build: "/opt/api/a/server".to_owned(),
            watch: Some("/opt/api/current".to_owned()),
            rollout: Some(RolloutStatus {
                phase: "starting".to_owned(),
                from: "/opt/api/a/server".to_owned(),
                to: "/opt/api/b/server".to_owned(),
                since_ms: 3_000,
                rolling_back: Some("exited 1 before it was ready".to_owned()),
            }),
        });
        assert_eq!(
            render_status(&[&service]),
            "api: handover\n  build: /opt/api/a/server (watching /opt/api/current)\n  \
             upgrading: starting, /opt/api/a/server -> /opt/api/b/server, for 3s\n  \
             rolling back: exited 1 before it was ready\n"
        );
        assert_eq!(render_status(&[]), "no service has an [upgrade] section\n");
    }

    #[test]
    fn a_service_without_an_upgrade_section_is_named_in_the_error() {
        let status = Status::sample(vec![ServiceStatus::sample("worker", "running")]);
        let error = upgradable(&status, Some(&name("worker"))).expect_err("no [upgrade]");
        assert_eq!(
            error.message,
            "worker has no [service.worker.upgrade] section: only a service with one can be upgraded"
        );
        let unknown = upgradable(&status, Some(&name("wroker"))).expect_err("unknown");
        assert!(
            unknown.message.contains("did you mean \"worker\""),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn the_build_must_be_an_absolute_path_to_a_file() {
        assert!(
            parse_build("server")
                .expect_err("relative")
                .contains("absolute path")
        );
        assert_eq!(
            parse_build("/nonexistent/holdfast/server"),
            Err("no such file: /nonexistent/holdfast/server".to_owned())
        );
        assert_eq!(parse_build("/bin/sh"), Ok(PathBuf::from("/bin/sh")));
    }
}
