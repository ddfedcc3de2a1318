//! `restart`, `restart_sec`, `backoff`, `start_limit`, `stop` and `dump_signal`: what happens when a
//! service exits and when it is stopped.

use std::time::Duration;

use crate::unix::Signal;
use serde_spanned::Spanned;

use super::Validator;
use super::scalars::Count;
use crate::config::diagnostic::{Problem, choice_help};
use crate::config::raw::{RawBackoff, RawService};
use crate::config::value;
use crate::model::{
    Backoff, DumpSpec, OnRestart, RestartPolicy, StartLimit, StopSpec, Timeout, defaults,
};

const RESTART_POLICIES: [(&str, RestartPolicy); 3] = [
    ("no", RestartPolicy::No),
    ("on-failure", RestartPolicy::OnFailure),
    ("always", RestartPolicy::Always),
];

impl Validator<'_> {
    /// `restart`, and `restart_sec` with `backoff`: the delay before each restart.
    pub(super) fn restart(&mut self, svc: &str, raw: &RawService) -> (RestartPolicy, Backoff) {
        let policy = match &raw.restart {
            None => RestartPolicy::OnFailure,
            Some(policy) => self.restart_policy(svc, policy),
        };
        let restart_sec = self.duration(
            raw.restart_sec.as_ref(),
            svc,
            "restart_sec",
            defaults::RESTART_SEC,
        );
        let backoff = match &raw.backoff {
            None => Backoff::Fixed(restart_sec),
            Some(backoff) => self.backoff(svc, backoff.get_ref(), raw, restart_sec),
        };
        (policy, backoff)
    }

    /// `on_restart`: what becomes of the processes that outlived a killed holdfast.
    pub(super) fn on_restart(&mut self, svc: &str, raw: &RawService) -> OnRestart {
        let Some(value) = &raw.on_restart else {
            return OnRestart::default();
        };
        match value.get_ref().as_str() {
            "adopt" => OnRestart::Adopt,
            "stop" => OnRestart::Stop,
            other => {
                self.push(
                    Problem::new(
                        format!("unknown on_restart {other:?} in `service.{svc}.on_restart`"),
                        value.span(),
                        "unknown choice",
                    )
                    .with_help(
                        "valid: adopt (the default: supervise the processes that outlived a \
                         killed holdfast as they are), stop (stop them, then start afresh)",
                    ),
                );
                OnRestart::default()
            }
        }
    }

    fn restart_policy(&mut self, svc: &str, raw: &Spanned<String>) -> RestartPolicy {
        let text = raw.get_ref().as_str();
        if let Some((_, policy)) = RESTART_POLICIES.iter().find(|(name, _)| *name == text) {
            return *policy;
        }
        self.push(
            Problem::new(
                format!("unknown restart policy {text:?} in `service.{svc}.restart`"),
                raw.span(),
                "unknown policy",
            )
            .with_help(choice_help(
                text,
                &RESTART_POLICIES.map(|(name, _)| name),
                "valid policies",
            )),
        );
        RestartPolicy::OnFailure
    }

    fn backoff(
        &mut self,
        svc: &str,
        raw: &RawBackoff,
        service: &RawService,
        initial: Duration,
    ) -> Backoff {
        let max = self.duration(raw.max.as_ref(), svc, "backoff.max", defaults::BACKOFF_MAX);
        let reset_after = self.duration(
            raw.reset_after.as_ref(),
            svc,
            "backoff.reset_after",
            defaults::BACKOFF_RESET_AFTER,
        );
        let factor = match &raw.factor {
            Some(f) if !(f.get_ref().is_finite() && *f.get_ref() >= 1.0) => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.backoff.factor` must be at least 1"),
                        f.span(),
                        "below 1",
                    )
                    .with_help(
                        "use 2.0 to double the delay after each failure, 1.0 for a constant delay",
                    ),
                );
                defaults::BACKOFF_FACTOR
            }
            Some(f) => *f.get_ref(),
            None => defaults::BACKOFF_FACTOR,
        };
        let jitter = match &raw.jitter {
            Some(j) if !(0.0..1.0).contains(j.get_ref()) => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.backoff.jitter` must be in [0, 1)"),
                        j.span(),
                        "out of range",
                    )
                    .with_help(
                        "use a fraction such as 0.1 to spread delays by +/-10%, or 0 for none",
                    ),
                );
                defaults::BACKOFF_JITTER
            }
            Some(j) => *j.get_ref(),
            None => defaults::BACKOFF_JITTER,
        };
        if max < initial {
            self.backoff_max_below_initial(svc, raw, service, initial);
        }
        Backoff::Exponential {
            initial,
            max,
            factor,
            jitter,
            reset_after,
        }
    }

    /// `backoff.max` below the first delay, reported at whichever of the two the user wrote.
    fn backoff_max_below_initial(
        &mut self,
        svc: &str,
        raw: &RawBackoff,
        service: &RawService,
        initial: Duration,
    ) {
        let help = format!(
            "raise `backoff.max` to at least {} or lower `restart_sec`",
            humantime::format_duration(initial)
        );
        let span = raw
            .max
            .as_ref()
            .map(Spanned::span)
            .or_else(|| service.restart_sec.as_ref().map(Spanned::span));
        if let Some(span) = span {
            self.push(
                Problem::new(
                    format!("`service.{svc}.backoff.max` is shorter than `restart_sec`"),
                    span,
                    "max < restart_sec",
                )
                .with_help(help),
            );
        }
    }

    pub(super) fn start_limit(&mut self, svc: &str, raw: &RawService) -> StartLimit {
        let Some(limit) = &raw.start_limit else {
            return StartLimit {
                interval: defaults::START_LIMIT_INTERVAL,
                burst: defaults::START_LIMIT_BURST,
            };
        };
        let limit = limit.get_ref();
        let interval = self.nonzero_duration(
            limit.interval.as_ref(),
            svc,
            "start_limit.interval",
            defaults::START_LIMIT_INTERVAL,
            &format!(
                "use e.g. \"{}\"",
                humantime::format_duration(defaults::START_LIMIT_INTERVAL)
            ),
        );
        let burst = self.at_least_one(
            limit.burst.as_ref(),
            svc,
            "start_limit.burst",
            defaults::START_LIMIT_BURST,
            Count {
                zero: "zero restarts allowed",
                help: "use restart = \"no\" to never restart",
            },
        );
        StartLimit { interval, burst }
    }

    pub(super) fn stop(&mut self, svc: &str, raw: &RawService) -> StopSpec {
        let dump = self.dump(svc, raw);
        let Some(stop) = &raw.stop else {
            return StopSpec {
                signal: Signal::SIGTERM,
                timeout: Timeout::After(defaults::STOP_TIMEOUT),
                dump,
            };
        };
        let stop = stop.get_ref();
        let signal = match &stop.signal {
            None => Signal::SIGTERM,
            Some(raw) => value::parse_signal(raw.get_ref()).unwrap_or_else(|err| {
                self.value_problem(
                    format!("invalid signal for `service.{svc}.stop.signal`"),
                    raw.span(),
                    err,
                );
                Signal::SIGTERM
            }),
        };
        let timeout = self.nonzero_timeout(
            stop.timeout.as_ref(),
            svc,
            "stop.timeout",
            Timeout::After(defaults::STOP_TIMEOUT),
            "give the service time to exit cleanly before SIGKILL, e.g. \"10s\" (or \"infinity\" for no SIGKILL)",
        );
        StopSpec {
            signal,
            timeout,
            dump,
        }
    }

    /// `dump_signal` (and `dump_wait`, which means nothing without it).
    fn dump(&mut self, svc: &str, raw: &RawService) -> Option<DumpSpec> {
        let wait = self.nonzero_duration(
            raw.dump_wait.as_ref(),
            svc,
            "dump_wait",
            defaults::DUMP_WAIT,
            "give the service time to print its stacks, e.g. \"2s\"",
        );
        let Some(signal) = &raw.dump_signal else {
            if let Some(wait) = &raw.dump_wait {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.dump_wait` without `dump_signal`"),
                        wait.span(),
                        "no dump signal to wait after",
                    )
                    .with_help("add dump_signal = \"QUIT\" (a Go service then prints every goroutine's stack), or remove dump_wait"),
                );
            }
            return None;
        };
        match value::parse_signal(signal.get_ref()) {
            Ok(signal) => Some(DumpSpec { signal, wait }),
            Err(err) => {
                self.value_problem(
                    format!("invalid signal for `service.{svc}.dump_signal`"),
                    signal.span(),
                    err,
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{plan, problems, snippet};
    use crate::model::{DumpSpec, ServiceName};
    use crate::unix::Signal;

    #[test]
    fn dump_signal_is_read_with_its_wait_and_bad_ones_point_at_the_key() {
        let src = "[service.a]\ncommand = [\"/bin/a\"]\ndump_signal = \"QUIT\"\n";
        let dump = plan(src).services[&ServiceName::new("a").expect("valid")]
            .stop
            .dump;
        assert_eq!(
            dump,
            Some(DumpSpec {
                signal: Signal::SIGQUIT,
                wait: crate::model::defaults::DUMP_WAIT,
            })
        );
        let bad = "[service.a]\ncommand = [\"/bin/a\"]\ndump_signal = \"QUIET\"\n";
        let found = problems(bad);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(snippet(bad, &found[0]), "\"QUIET\"");
        assert!(found[0].message().contains("service.a.dump_signal"));

        let alone = "[service.a]\ncommand = [\"/bin/a\"]\ndump_wait = \"3s\"\n";
        let found = problems(alone);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(snippet(alone, &found[0]), "\"3s\"");
        assert!(found[0].message().contains("without `dump_signal`"));
    }
}
