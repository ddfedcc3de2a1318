//! `holdfast reload [--dry-run]`: ask the daemon to re-read its config and print what
//! changes (or would change).
//!
//! An invalid config is not a client failure: the daemon sends the rendered diagnostic,
//! printed verbatim, and the exit code is 3 like `holdfast check`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, ReloadPlan, Reply, Request};

use super::exit;
use super::service::WaitArgs;

pub fn run(socket: &Path, dry_run: bool, wait: &WaitArgs) -> miette::Result<ExitCode> {
    let answer = if dry_run || wait.no_block {
        client::call(socket, Request::Reload { dry_run }).map(|reply| (reply, None))
    } else {
        let requests = vec![Request::Reload { dry_run: false }];
        super::service::waited(socket, requests, wait.timeout).and_then(
            |(mut replies, outcomes)| match replies.pop() {
                Some(reply) if replies.is_empty() => Ok((reply, Some(outcomes))),
                _ => Err(ClientError::Protocol(
                    "holdfast answered the waited `reload` without its plan".to_owned(),
                )),
            },
        )
    };
    match answer {
        Ok((Reply::Reload(plan), outcomes)) => {
            print!("{}", render_plan(&plan));
            match outcomes {
                Some(outcomes) => Ok(super::service::print_outcomes(&outcomes)),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Ok((other, _)) => Ok(super::service::report(ClientError::Protocol(format!(
            "holdfast answered `reload` with an unexpected reply: {other:?}"
        )))),
        Err(ClientError::Daemon(ControlError {
            kind: ErrorKind::InvalidConfig,
            message,
        })) => {
            eprintln!("{}", message.trim_end());
            Ok(ExitCode::from(exit::INVALID_CONFIG))
        }
        Err(e) => Ok(super::service::report(e)),
    }
}

/// One line per change: `+` added, `-` removed, `~` changed (restarted services, then
/// daemon settings applied in place), `=` a count of unchanged services, `!` daemon
/// settings that need a holdfast restart. A dry run puts
/// the same lines under a heading that says they are what a reload would do.
pub fn render_plan(plan: &ReloadPlan) -> String {
    let mut out = String::new();
    if plan.dry_run {
        out.push_str(dry_run_heading(plan));
    }
    for name in &plan.added {
        let _ = writeln!(out, "+ added: {name}");
    }
    for name in &plan.removed {
        let _ = writeln!(out, "- removed: {name}");
    }
    for name in &plan.changed {
        let _ = writeln!(out, "~ changed (restart): {name}");
    }
    let unchanged = plan.unchanged.len();
    let noun = if unchanged == 1 {
        "service"
    } else {
        "services"
    };
    let _ = writeln!(out, "= unchanged: {unchanged} {noun}");
    for setting in &plan.applied {
        let _ = writeln!(out, "~ changed: {setting}");
    }
    for setting in &plan.not_applied {
        let _ = writeln!(out, "! not applied: {setting}");
    }
    for setting in &plan.ignored {
        // The daemon may name the setting bare (`control`) or qualified.
        let qualified = if setting.starts_with('[') {
            setting.clone()
        } else {
            format!("[holdfast].{setting}")
        };
        let _ = writeln!(out, "! ignored until restart: {qualified}");
    }
    out
}

fn dry_run_heading(plan: &ReloadPlan) -> &'static str {
    let changes = !(plan.added.is_empty()
        && plan.removed.is_empty()
        && plan.changed.is_empty()
        && plan.ignored.is_empty()
        && plan.not_applied.is_empty()
        && plan.applied.is_empty());
    if changes {
        "dry run: reload would apply this plan (nothing applied yet):\n"
    } else {
        "dry run: reload would change nothing:\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceName;

    fn names(names: &[&str]) -> Vec<ServiceName> {
        names
            .iter()
            .map(|n| ServiceName::new(*n).expect("test names are valid"))
            .collect()
    }

    #[test]
    fn plan_lists_every_kind_of_change() {
        let plan = ReloadPlan {
            dry_run: false,
            added: names(&["cache"]),
            removed: names(&["legacy"]),
            changed: names(&["api", "web"]),
            unchanged: names(&["db", "worker", "cron"]),
            ignored: vec!["control".to_owned(), "[holdfast].log_dir".to_owned()],
            applied: Vec::new(),
            not_applied: Vec::new(),
        };
        insta::assert_snapshot!(render_plan(&plan), @r"
        + added: cache
        - removed: legacy
        ~ changed (restart): api
        ~ changed (restart): web
        = unchanged: 3 services
        ! ignored until restart: [holdfast].control
        ! ignored until restart: [holdfast].log_dir
        ");
    }

    #[test]
    fn a_dry_run_lists_the_plan_under_a_heading_that_says_it_would_apply() {
        let plan = ReloadPlan {
            dry_run: true,
            added: names(&["cache"]),
            changed: names(&["api"]),
            unchanged: names(&["db"]),
            ..ReloadPlan::default()
        };
        insta::assert_snapshot!(render_plan(&plan), @r"
        dry run: reload would apply this plan (nothing applied yet):
        + added: cache
        ~ changed (restart): api
        = unchanged: 1 service
        ");
    }

    #[test]
    fn a_daemon_setting_applied_in_place_is_a_change_even_in_a_dry_run() {
        let plan = ReloadPlan {
            dry_run: true,
            unchanged: names(&["api"]),
            applied: vec!["[holdfast].http: off -> 127.0.0.1:9700".to_owned()],
            ..ReloadPlan::default()
        };
        insta::assert_snapshot!(render_plan(&plan), @r"
        dry run: reload would apply this plan (nothing applied yet):
        = unchanged: 1 service
        ~ changed: [holdfast].http: off -> 127.0.0.1:9700
        ");
    }

    #[test]
    fn a_dry_run_without_changes_says_reload_would_change_nothing() {
        let plan = ReloadPlan {
            dry_run: true,
            unchanged: names(&["api"]),
            ..ReloadPlan::default()
        };
        assert_eq!(
            render_plan(&plan),
            "dry run: reload would change nothing:\n= unchanged: 1 service\n"
        );
    }
}
