//! `command` and `env`: what a service runs, in which environment. The rules of a
//! command array serve hooks and exec probes too.

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
        self.command_array(
            &format!("service.{svc}.command"),
            "command",
            command,
            "[\"/usr/bin/prog\", \"arg\"]",
        )
    }

    /// A command written as an array, program first: `command`, a hook, an exec probe.
    /// `key` is the whole key path, `name` the key as written, `example` an array to
    /// suggest when it is empty.
    pub(super) fn command_array(
        &mut self,
        key: &str,
        name: &str,
        raw: &Spanned<RawCommand>,
        example: &str,
    ) -> Option<Vec<String>> {
        let args = match raw.get_ref() {
            RawCommand::Line(line) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let suggestion = if words.is_empty() {
                    format!("{name} = [\"prog\", \"arg\"]")
                } else {
                    format!("{name} = {words:?}")
                };
                self.push(
                    Problem::new(format!("`{key}` must be an array"), raw.span(), "a plain string")
                        .with_help(format!(
                            "write {suggestion}: holdfast runs no shell, so each argument is its own string"
                        )),
                );
                return None;
            }
            RawCommand::Args(args) => args,
        };
        let Some(program) = args.first() else {
            self.push(
                Problem::new(format!("`{key}` is empty"), raw.span(), "no program")
                    .with_help(format!("name the program to run first: {name} = {example}")),
            );
            return None;
        };
        let mut ok = true;
        if program.get_ref().is_empty() {
            ok = false;
            self.push(
                Problem::new(
                    format!("`{key}` has an empty program name"),
                    program.span(),
                    "empty",
                )
                .with_help("the first element is the program: a path or a name looked up in PATH"),
            );
        }
        for arg in args.iter().filter(|a| a.get_ref().contains('\0')) {
            ok = false;
            self.push(Problem::new(
                format!("`{key}` has an argument containing NUL"),
                arg.span(),
                "contains \\u0000",
            ));
        }
        ok.then(|| args.iter().map(|a| a.get_ref().clone()).collect())
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
