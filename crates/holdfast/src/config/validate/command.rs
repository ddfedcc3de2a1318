//! `command` and `env`: what a service runs, in which environment.

use std::collections::BTreeMap;

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::Problem;
use crate::config::raw::{RawCommand, RawService};

impl Validator<'_> {
    pub(super) fn command(
        &mut self,
        raw_name: &Spanned<String>,
        raw: &RawService,
    ) -> Option<Vec<String>> {
        let svc = raw_name.get_ref();
        let Some(command) = &raw.command else {
            self.push(
                Problem::new(
                    format!("service `{svc}` has no `command`"),
                    raw_name.span(),
                    "missing `command`",
                )
                .with_help(
                    "add the program and its arguments: command = [\"/usr/bin/prog\", \"arg\"]",
                ),
            );
            return None;
        };
        match command.get_ref() {
            RawCommand::Line(line) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let suggestion = if words.is_empty() {
                    "command = [\"prog\", \"arg\"]".to_owned()
                } else {
                    format!("command = {words:?}")
                };
                self.push(
                    Problem::new(format!("`service.{svc}.command` must be an array"), command.span(), "a plain string")
                        .with_help(format!(
                            "write {suggestion}: holdfast runs no shell, so each argument is its own string"
                        )),
                );
                None
            }
            RawCommand::Args(args) if args.is_empty() => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.command` is empty"),
                        command.span(),
                        "no program",
                    )
                    .with_help(
                        "name the program to run first: command = [\"/usr/bin/prog\", \"arg\"]",
                    ),
                );
                None
            }
            RawCommand::Args(args) => {
                let mut ok = true;
                if args[0].get_ref().is_empty() {
                    ok = false;
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.command` has an empty program name"),
                            args[0].span(),
                            "empty",
                        )
                        .with_help(
                            "the first element is the program: a path or a name looked up in PATH",
                        ),
                    );
                }
                for arg in args.iter().filter(|a| a.get_ref().contains('\0')) {
                    ok = false;
                    self.push(Problem::new(
                        format!("`service.{svc}.command` has an argument containing NUL"),
                        arg.span(),
                        "contains \\u0000",
                    ));
                }
                ok.then(|| args.iter().map(|a| a.get_ref().clone()).collect())
            }
        }
    }

    pub(super) fn env(&mut self, svc: &str, raw: &RawService) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            let k = key.get_ref();
            if let Some(label) = bad_env_name(k) {
                self.push(
                    Problem::new(
                        format!("invalid environment variable name {k:?} in `service.{svc}.env`"),
                        key.span(),
                        label,
                    )
                    .with_help("use a non-empty name without '=' or NUL, e.g. DB_HOST"),
                );
            } else if value.get_ref().contains('\0') {
                self.push(Problem::new(
                    format!("environment variable `{k}` in `service.{svc}.env` contains NUL"),
                    value.span(),
                    "contains \\u0000",
                ));
            } else {
                env.insert(k.clone(), value.get_ref().clone());
            }
        }
        env
    }
}

/// What is wrong with an environment variable name, if anything.
pub(super) fn bad_env_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name.contains('=') {
        Some("contains '='")
    } else if name.contains('\0') {
        Some("contains \\u0000")
    } else {
        None
    }
}
