//! Validation of `[service.X.exit_codes]`: what to do when the main process exits with a
//! given code or signal.
//!
//! Same rules as the rest of `validate`: every problem is recorded at its span with a
//! hint, and a default stands in so the other checks still run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_spanned::Spanned;

use super::Validator;
use super::command::bad_env_name;
use crate::config::diagnostic::{Problem, choice_help};
use crate::config::raw::{RawExitAction, RawService};
use crate::config::value;
use crate::model::{ExitAction, ExitKey};

const EXIT_ACTIONS: [&str; 3] = ["restart", "quarantine", "ignore"];

impl Validator<'_> {
    pub(super) fn exit_codes(
        &mut self,
        svc: &str,
        raw: &RawService,
    ) -> BTreeMap<ExitKey, ExitAction> {
        let mut map = BTreeMap::new();
        for (key, action) in raw.exit_codes.iter().flatten() {
            let key = self.exit_key(svc, key);
            let action = self.exit_action(svc, action);
            if let (Some(key), Some(action)) = (key, action) {
                map.insert(key, action);
            }
        }
        map
    }

    fn exit_key(&mut self, svc: &str, raw: &Spanned<String>) -> Option<ExitKey> {
        let text = raw.get_ref().trim();
        if let Ok(code) = text.parse::<i64>() {
            if (0..=255).contains(&code) {
                return Some(ExitKey::Code(code as i32));
            }
            self.push(
                Problem::new(
                    format!("exit code {code} in `service.{svc}.exit_codes` is out of range"),
                    raw.span(),
                    "not 0-255",
                )
                .with_help("exit codes are 0-255; to match a signal write its name, e.g. SIGSEGV"),
            );
            return None;
        }
        match value::parse_signal(text) {
            Ok(signal) => Some(ExitKey::Signal(signal as i32)),
            Err(err) => {
                self.push(
                    Problem::new(
                        format!("invalid key {text:?} in `service.{svc}.exit_codes`"),
                        raw.span(),
                        "neither an exit code nor a signal",
                    )
                    .with_help(format!(
                        "write an exit code (\"101\") or a signal name (\"SIGSEGV\"); {}",
                        err.help
                    )),
                );
                None
            }
        }
    }

    fn exit_action(&mut self, svc: &str, raw: &Spanned<RawExitAction>) -> Option<ExitAction> {
        let span = raw.span();
        let raw = raw.get_ref();
        let Some(action) = &raw.action else {
            self.push(
                Problem::new(
                    format!("an entry of `service.{svc}.exit_codes` has no `action`"),
                    span,
                    "missing `action`",
                )
                .with_help("add action = \"restart\", \"quarantine\" or \"ignore\""),
            );
            return None;
        };
        let name = action.get_ref().as_str();
        if name != "restart" {
            for (key, at) in [
                ("delay", raw.delay.as_ref().map(Spanned::span)),
                (
                    "env",
                    raw.env
                        .as_ref()
                        .and_then(|e| e.keys().next().map(Spanned::span)),
                ),
            ] {
                if let (Some(at), true) = (at, EXIT_ACTIONS.contains(&name)) {
                    self.push(
                        Problem::new(
                            format!("`{key}` only applies to action \"restart\" in `service.{svc}.exit_codes`"),
                            at,
                            format!("action is \"{name}\""),
                        )
                        .with_help(format!("remove `{key}` or use action = \"restart\"")),
                    );
                }
            }
        }
        match name {
            "restart" => Some(self.restart_action(svc, raw)),
            "quarantine" => Some(ExitAction::Quarantine),
            "ignore" => Some(ExitAction::Ignore),
            other => {
                self.push(
                    Problem::new(
                        format!("unknown action {other:?} in `service.{svc}.exit_codes`"),
                        action.span(),
                        "unknown action",
                    )
                    .with_help(choice_help(
                        other,
                        &EXIT_ACTIONS,
                        "valid actions",
                    )),
                );
                None
            }
        }
    }

    /// `action = "restart"` with its optional `delay` and `env` overrides.
    fn restart_action(&mut self, svc: &str, raw: &RawExitAction) -> ExitAction {
        let delay = raw
            .delay
            .as_ref()
            .map(|d| self.duration(Some(d), svc, "exit_codes.delay", Duration::ZERO));
        let mut env = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            let k = key.get_ref();
            if bad_env_name(k).is_some() || value.get_ref().contains('\0') {
                self.push(
                    Problem::new(
                        format!("invalid environment override {k:?} in `service.{svc}.exit_codes`"),
                        key.span(),
                        "invalid name or value",
                    )
                    .with_help("use a non-empty name without '=' or NUL, e.g. DB_HOST"),
                );
            } else {
                env.insert(k.clone(), value.get_ref().clone());
            }
        }
        ExitAction::Restart { delay, env }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::unix::Signal;

    use super::super::tests::{plan, problems, snippet};

    use crate::model::{ExitAction, ExitKey, ServiceName};

    const CMD: &str = "[service.api]\ncommand = [\"/bin/api\"]\n";

    #[test]
    fn exit_codes_map_codes_and_signals_to_actions() {
        let src = format!(
            "{CMD}[service.api.exit_codes]\n101 = {{ action = \"restart\", delay = \"2s\" }}\n102 = {{ action = \"restart\", env = {{ DB_HOST = \"db-standby\" }} }}\n201 = {{ action = \"quarantine\" }}\nSIGSEGV = {{ action = \"ignore\" }}\n"
        );
        let plan = plan(&src);
        let codes = &plan.services[&ServiceName::new("api").unwrap()].exit_codes;
        assert_eq!(
            codes[&ExitKey::Code(101)],
            ExitAction::Restart {
                delay: Some(Duration::from_secs(2)),
                env: Default::default()
            }
        );
        let ExitAction::Restart { env, .. } = &codes[&ExitKey::Code(102)] else {
            panic!("102 restarts");
        };
        assert_eq!(env["DB_HOST"], "db-standby");
        assert_eq!(codes[&ExitKey::Code(201)], ExitAction::Quarantine);
        assert_eq!(
            codes[&ExitKey::Signal(Signal::SIGSEGV as i32)],
            ExitAction::Ignore
        );
    }

    #[test]
    fn exit_code_problems_point_at_the_offending_key_or_value() {
        let src = format!(
            "{CMD}[service.api.exit_codes]\n300 = {{ action = \"restart\" }}\nSIGFOO = {{ action = \"ignore\" }}\n3 = {{ action = \"restrat\" }}\n4 = {{ action = \"ignore\", delay = \"1s\" }}\n"
        );
        let all = problems(&src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(&src, p)).collect();
        assert_eq!(
            snippets,
            vec!["300", "SIGFOO", "\"restrat\"", "\"1s\""],
            "{all:#?}"
        );
        assert!(
            all[2].help().is_some_and(|h| h.contains("\"restart\"")),
            "{:#?}",
            all[2]
        );
    }
}
