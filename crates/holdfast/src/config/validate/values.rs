//! Durations and timeouts: every duration key goes through here, so each gets the same
//! syntax, the same bound and the same messages.

use std::time::Duration;

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::Problem;
use crate::config::raw::RawDuration;
use crate::config::value::{self, Infinity, ValueError};
use crate::model::Timeout;

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

    pub(super) fn value_problem(
        &mut self,
        message: String,
        span: std::ops::Range<usize>,
        err: ValueError,
    ) {
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
