//! `[service.X.on]` and `hook_timeout`: event hooks.
//!
//! Keys must be event kinds the supervisor publishes (a typo would silently never fire,
//! so it is an error with a did-you-mean hint); each value is a command array like
//! `command`, run without a shell.

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::{Problem, unknown_key_help};
use crate::config::raw::{RawCommand, RawService};
use crate::model::{Hooks, defaults};
use holdfast_core::supervisor::event::{NOT_HOOKABLE, kinds};

impl Validator<'_> {
    pub(super) fn hooks(&mut self, svc: &str, raw: &RawService) -> Hooks {
        let timeout = self.nonzero_duration(
            raw.hook_timeout.as_ref(),
            svc,
            "hook_timeout",
            defaults::HOOK_TIMEOUT,
            "give hooks time to finish before they are killed, e.g. \"10s\"",
        );
        let mut on = std::collections::BTreeMap::new();
        for (kind, command) in raw.on.iter().flatten() {
            let k = kind.get_ref().as_str();
            if NOT_HOOKABLE.contains(&k) {
                self.push(
                    Problem::new(
                        format!("no hook can run on `{k}` in [service.{svc}.on]"),
                        kind.span(),
                        "a hook's own event",
                    )
                    .with_help("a hook on a hook's outcome could trigger itself; hook the service's events, e.g. exited or gave_up"),
                );
                continue;
            }
            if !kinds().contains(&k) {
                let hookable: Vec<&str> = kinds()
                    .iter()
                    .copied()
                    .filter(|k| !NOT_HOOKABLE.contains(k))
                    .collect();
                self.push(
                    Problem::new(
                        format!("unknown event `{k}` in [service.{svc}.on]"),
                        kind.span(),
                        "no such event",
                    )
                    .with_help(unknown_key_help(k, &hookable)),
                );
                continue;
            }
            if let Some(command) = self.hook_command(svc, k, command) {
                on.insert(k.to_owned(), command);
            }
        }
        Hooks { on, timeout }
    }

    fn hook_command(
        &mut self,
        svc: &str,
        kind: &str,
        command: &Spanned<RawCommand>,
    ) -> Option<Vec<String>> {
        self.command_array(
            &format!("service.{svc}.on.{kind}"),
            kind,
            command,
            &format!("[\"/usr/local/bin/page\", \"--service\", \"{svc}\"]"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Problem, parse};
    use crate::model::{Plan, ServiceName, defaults};

    fn parsed(src: &str) -> Result<Plan, Vec<Problem>> {
        parse(src, "test.toml", Path::new("/etc/holdfast")).map_err(|e| e.problems().to_vec())
    }

    fn hooks_of(plan: &Plan) -> &crate::model::Hooks {
        &plan.services[&ServiceName::new("api").expect("valid name")].hooks
    }

    #[test]
    fn hooks_are_read_per_event_kind_with_their_timeout() {
        let plan = parsed(
            r#"
[service.api]
command = ["/bin/api"]
hook_timeout = "3s"
[service.api.on]
exited = ["/usr/local/bin/page", "--service", "api"]
gave_up = ["/bin/true"]
"#,
        )
        .expect("valid");
        let hooks = hooks_of(&plan);
        assert_eq!(hooks.timeout, Duration::from_secs(3));
        assert_eq!(
            hooks.on["exited"],
            ["/usr/local/bin/page", "--service", "api"]
        );
        assert_eq!(hooks.on["gave_up"], ["/bin/true"]);
    }

    #[test]
    fn without_hooks_the_timeout_is_the_default() {
        let plan = parsed("[service.api]\ncommand = [\"/bin/api\"]\n").expect("valid");
        assert!(hooks_of(&plan).on.is_empty());
        assert_eq!(hooks_of(&plan).timeout, defaults::HOOK_TIMEOUT);
    }

    #[test]
    fn a_misspelt_event_is_an_error_suggesting_the_right_one() {
        let problems = parsed(
            "[service.api]\ncommand = [\"/bin/api\"]\n[service.api.on]\nexitted = [\"/bin/true\"]\n",
        )
        .expect_err("rejected");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].message(),
            "unknown event `exitted` in [service.api.on]"
        );
        let help = problems[0].help().expect("has help");
        assert!(help.starts_with("did you mean `exited`?"), "{help}");
    }

    #[test]
    fn no_hook_runs_on_a_hooks_own_events() {
        let problems = parsed(
            "[service.api]\ncommand = [\"/bin/api\"]\n[service.api.on]\nhook_failed = [\"/bin/true\"]\n",
        )
        .expect_err("rejected");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].message(),
            "no hook can run on `hook_failed` in [service.api.on]"
        );
    }

    #[test]
    fn a_hook_must_be_a_non_empty_array_and_the_timeout_non_zero() {
        let problems = parsed(
            r#"
[service.api]
command = ["/bin/api"]
hook_timeout = "0s"
[service.api.on]
exited = "/bin/page api"
gave_up = []
"#,
        )
        .expect_err("rejected");
        let messages: Vec<&str> = problems.iter().map(Problem::message).collect();
        assert_eq!(
            messages,
            [
                "`service.api.hook_timeout` must be longer than zero",
                "`service.api.on.exited` must be an array",
                "`service.api.on.gave_up` is empty",
            ]
        );
        assert!(
            problems[1]
                .help()
                .is_some_and(|h| h.contains(r#"exited = ["/bin/page", "api"]"#)),
            "{:?}",
            problems[1].help()
        );
    }
}
