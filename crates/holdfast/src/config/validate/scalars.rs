//! The kinds of value many keys share: durations and timeouts (every duration key goes
//! through here, so each gets the same syntax, the same bound and the same messages),
//! counts that must be at least 1, sizes and absolute paths.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::Problem;
use crate::config::raw::{RawDuration, RawSize};
use crate::config::value::{self, Infinity, ValueError};
use crate::model::Timeout;

/// What a count that must be at least 1 says when it is zero.
pub(super) struct Count<'a> {
    /// The label under the zero.
    pub zero: &'a str,
    pub help: &'a str,
}

impl Validator<'_> {
    /// A duration key that needs a finite value (delays, intervals, windows).
    pub(super) fn duration(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        match self.duration_or_infinity(raw, svc, key, Infinity::Rejected) {
            Some(Timeout::After(d)) => d,
            Some(Timeout::Never) | None => default,
        }
    }

    /// A timeout key, which also takes `"infinity"` for no limit.
    pub(super) fn timeout(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Timeout,
    ) -> Timeout {
        self.duration_or_infinity(raw, svc, key, Infinity::Accepted)
            .unwrap_or(default)
    }

    /// Every duration key goes through here, so each one gets the same syntax and the
    /// same bound. `None` when the key is absent or invalid (the problem is recorded).
    fn duration_or_infinity(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        infinity: Infinity,
    ) -> Option<Timeout> {
        let raw = raw?;
        let parsed = match raw.get_ref() {
            RawDuration::Text(text) if text.trim() == value::INFINITY => match infinity {
                Infinity::Accepted => Ok(Timeout::Never),
                Infinity::Rejected => Err(value::infinity_rejected_error()),
            },
            RawDuration::Text(text) => value::parse_duration(text)
                .and_then(|d| value::within_bounds(d, infinity))
                .map(Timeout::After),
            RawDuration::Integer(n) => Err(value::bare_number_duration_error(&n.to_string())),
            RawDuration::Float(f) => Err(float_duration_error(*f)),
        };
        match parsed {
            Ok(timeout) => Some(timeout),
            Err(err) => {
                self.value_problem(
                    format!("invalid duration for `service.{svc}.{key}`"),
                    raw.span(),
                    err,
                );
                None
            }
        }
    }

    /// A duration key where zero makes no sense (a window, a probe timeout).
    pub(super) fn nonzero_duration(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Duration,
        help: &str,
    ) -> Duration {
        let duration = self.duration(raw, svc, key, default);
        if let (true, Some(raw)) = (duration.is_zero(), raw) {
            self.zero_duration(raw.span(), svc, key, help);
        }
        duration
    }

    /// A timeout key where zero makes no sense; `"infinity"` is fine.
    pub(super) fn nonzero_timeout(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        svc: &str,
        key: &str,
        default: Timeout,
        help: &str,
    ) -> Timeout {
        let timeout = self.timeout(raw, svc, key, default);
        if let (Timeout::After(Duration::ZERO), Some(raw)) = (timeout, raw) {
            self.zero_duration(raw.span(), svc, key, help);
        }
        timeout
    }

    /// The one "must be longer than zero".
    fn zero_duration(&mut self, span: Range<usize>, svc: &str, key: &str, help: &str) {
        self.push(
            Problem::new(
                format!("`service.{svc}.{key}` must be longer than zero"),
                span,
                "zero",
            )
            .with_help(help),
        );
    }

    /// A count where zero makes no sense (a burst, a number of failures).
    pub(super) fn at_least_one(
        &mut self,
        raw: Option<&Spanned<u32>>,
        svc: &str,
        key: &str,
        default: u32,
        count: Count<'_>,
    ) -> u32 {
        match raw {
            Some(n) if *n.get_ref() == 0 => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.{key}` must be at least 1"),
                        n.span(),
                        count.zero,
                    )
                    .with_help(count.help),
                );
                default
            }
            Some(n) => *n.get_ref(),
            None => default,
        }
    }

    /// A path key that must be absolute: nothing resolves it against holdfast's working
    /// directory.
    pub(super) fn absolute_path(
        &mut self,
        svc: &str,
        key: &str,
        raw: &Spanned<String>,
        example: &str,
    ) -> Option<PathBuf> {
        let path = Path::new(raw.get_ref());
        if path.is_absolute() {
            return Some(path.to_owned());
        }
        self.push(
            Problem::new(
                format!("`service.{svc}.{key}` is not absolute"),
                raw.span(),
                "relative path",
            )
            .with_help(format!("write an absolute path, e.g. \"{example}\"")),
        );
        None
    }

    /// A value that does not parse: the parser's label and help at `span`.
    pub(super) fn value_problem(&mut self, message: String, span: Range<usize>, err: ValueError) {
        self.push(Problem::new(message, span, err.label).with_help(err.help));
    }
}

fn float_duration_error(f: f64) -> ValueError {
    let millis = (f * 1000.0).round();
    let help = if f.is_finite() && f >= 0.0 {
        format!("write \"{millis}ms\" (durations are strings with a unit)")
    } else {
        "write a duration string such as \"5s\"".to_owned()
    };
    ValueError {
        label: "a duration needs a unit".to_owned(),
        help,
    }
}

/// A size key's value: a string with a unit, or a plain number of bytes.
pub(super) fn size(raw: &RawSize) -> Result<u64, ValueError> {
    match raw {
        RawSize::Text(text) => value::parse_size(text),
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| ValueError {
            label: "negative size".to_owned(),
            help: "write a size such as \"10MiB\"".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::problems;

    #[test]
    fn every_duration_that_must_not_be_zero_says_so_the_same_way() {
        let src = r#"
[service.a]
command = ["a"]
start_limit = { interval = "0s" }
stop = { timeout = "0s" }
start_timeout = "0s"
hook_timeout = "0s"
[service.a.health]
tcp = "127.0.0.1:1"
timeout = "0s"
degraded = { within = "0s" }
"#;
        let all = problems(src);
        let zeros: Vec<(&str, &str)> = all.iter().map(|p| (p.message(), p.label())).collect();
        let expected: Vec<String> = [
            "start_limit.interval",
            "stop.timeout",
            "start_timeout",
            "hook_timeout",
            "health.timeout",
            "health.degraded.within",
        ]
        .iter()
        .map(|key| format!("`service.a.{key}` must be longer than zero"))
        .collect();
        assert_eq!(
            zeros,
            expected
                .iter()
                .map(|m| (m.as_str(), "zero"))
                .collect::<Vec<_>>()
        );
        assert!(all.iter().all(|p| p.help().is_some()), "{all:#?}");
    }

    #[test]
    fn every_count_that_must_not_be_zero_says_so_the_same_way() {
        let src = r#"
[service.a]
command = ["a"]
start_limit = { burst = 0 }
[service.a.health]
tcp = "127.0.0.1:1"
unhealthy = { failures = 0 }
recover = { successes = 0 }
"#;
        let messages: Vec<String> = problems(src)
            .iter()
            .map(|p| p.message().to_owned())
            .collect();
        assert_eq!(
            messages,
            [
                "`service.a.start_limit.burst` must be at least 1",
                "`service.a.health.unhealthy.failures` must be at least 1",
                "`service.a.health.recover.successes` must be at least 1",
            ]
        );
    }

    #[test]
    fn a_relative_working_dir_and_pidfile_are_reported_alike() {
        let src = "[service.a]\ncommand = [\"a\"]\nworking_dir = \"srv\"\n\
                   type = \"forking\"\npidfile = \"a.pid\"\n";
        let all = problems(src);
        let found: Vec<(&str, &str)> = all.iter().map(|p| (p.message(), p.label())).collect();
        assert_eq!(
            found,
            [
                ("`service.a.working_dir` is not absolute", "relative path"),
                ("`service.a.pidfile` is not absolute", "relative path"),
            ]
        );
    }
}
