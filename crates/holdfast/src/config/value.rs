//! Parsing of the scalar value syntaxes the config accepts: durations, byte sizes and
//! signal names.
//!
//! Each parser is pure and returns a [`ValueError`] whose `label` says what is wrong and
//! whose `help` says how to write it instead, so `validate` can attach both to a span.

use std::time::Duration;

use crate::unix::Signal;

/// Why a value could not be parsed: `label` goes under the offending snippet, `help`
/// tells the user what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub label: String,
    pub help: String,
}

impl ValueError {
    fn new(label: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            help: help.into(),
        }
    }
}

/// The longest duration any key accepts. No real timeout, delay or interval comes near
/// a year, and a year from now is far from the end of the clock, so no deadline built
/// from a valid config can overflow it (runtime input is saturated, see `clock`).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// [`MAX_DURATION`] as the config would write it, for hints.
pub const MAX_DURATION_TEXT: &str = "365d";
/// What a timeout key takes for "no limit" (systemd's spelling).
pub const INFINITY: &str = "infinity";

/// Whether a key takes [`INFINITY`]: systemd's rule, timeouts do (`TimeoutStartSec=`,
/// `TimeoutStopSec=`), delays and intervals do not (`RestartSec=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infinity {
    Accepted,
    Rejected,
}

/// The one bound on durations: at most [`MAX_DURATION`], with a hint that offers
/// `"infinity"` where the key takes it.
pub fn within_bounds(d: Duration, infinity: Infinity) -> Result<Duration, ValueError> {
    if d <= MAX_DURATION {
        return Ok(d);
    }
    let help = match infinity {
        Infinity::Accepted => {
            format!("write at most \"{MAX_DURATION_TEXT}\", or \"{INFINITY}\" for no limit")
        }
        Infinity::Rejected => format!("write at most \"{MAX_DURATION_TEXT}\""),
    };
    Err(ValueError::new(
        format!("longer than the maximum of {MAX_DURATION_TEXT}"),
        help,
    ))
}

/// The error for [`INFINITY`] written where the key needs a finite duration.
pub fn infinity_rejected_error() -> ValueError {
    ValueError::new(
        "no \"infinity\" here",
        format!(
            "only start_timeout, stop.timeout and watchdog take \"{INFINITY}\": write a duration of at most \"{MAX_DURATION_TEXT}\""
        ),
    )
}

/// A duration as written in the config: humantime syntax such as `"2s"`, `"100ms"` or
/// `"1m 30s"`. Syntax only: [`within_bounds`] checks the value.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        ValueError::new(
            format!("not a duration: {err}"),
            "write a number followed by a unit, e.g. \"500ms\", \"5s\", \"1m 30s\" (units: ms, s, m, h, d)",
        )
    })
}

/// The hint for a duration written as a bare TOML number, which has no unit.
pub fn bare_number_duration_error(number: &str) -> ValueError {
    ValueError::new(
        "a duration needs a unit",
        format!("write \"{number}s\" (or another unit: ms, s, m, h)"),
    )
}

/// A byte size: `"512MiB"`, `"10MB"`, `"4KiB"`, `"100B"` or a plain number of bytes.
/// Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB)
/// powers of 1000; units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let help = "write a number followed by a unit, e.g. \"512KiB\", \"10MiB\", \"1GB\" \
                (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(ValueError::new(
            "not a size: it must start with a number",
            help,
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000_u64.pow(2),
        "gb" | "g" => 1000_u64.pow(3),
        "tb" | "t" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(ValueError::new(
                format!("unknown size unit {other:?}"),
                help,
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| ValueError::new("size is too large", help))
}

/// A signal name: `"TERM"` or `"SIGTERM"`, case-insensitive.
pub fn parse_signal(text: &str) -> Result<Signal, ValueError> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().map_err(|_| {
        ValueError::new(
            format!("unknown signal {text:?}"),
            "write a signal name such as \"TERM\", \"INT\", \"QUIT\", \"HUP\" or \"USR1\"",
        )
    })
}

/// A signal as people type it on a command line: `HUP`, `SIGHUP`, `hup` or `1`.
pub fn parse_signal_arg(text: &str) -> Result<Signal, ValueError> {
    match text.trim().parse::<i32>() {
        Ok(n) => Signal::try_from(n).map_err(|_| {
            ValueError::new(
                format!("unknown signal number {n}"),
                "write a signal name such as \"HUP\" or a number such as 1",
            )
        }),
        Err(_) => parse_signal(text),
    }
}

/// Formats a byte count the way the config would accept it back, for messages.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes % unit == 0)
        .map_or_else(
            || format!("{bytes}B"),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_argument_is_a_name_with_or_without_sig_or_a_number() {
        for text in ["HUP", "SIGHUP", "hup", "1"] {
            assert_eq!(parse_signal_arg(text).ok(), Some(Signal::SIGHUP), "{text}");
        }
        assert!(parse_signal_arg("HANGUP").is_err());
        assert!(parse_signal_arg("99").is_err());
    }

    #[test]
    fn durations_accept_humantime_syntax() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_are_bounded_at_a_year_with_a_hint_that_fits_the_key() {
        assert_eq!(parse_duration(MAX_DURATION_TEXT), Ok(MAX_DURATION));
        assert_eq!(
            within_bounds(MAX_DURATION, Infinity::Rejected),
            Ok(MAX_DURATION)
        );
        let huge = parse_duration("18446744073709551615s").expect("valid syntax");
        let err = within_bounds(huge, Infinity::Accepted).expect_err("too long");
        assert!(err.help.contains("infinity"), "{err:?}");
        let err = within_bounds(MAX_DURATION + Duration::from_nanos(1), Infinity::Rejected)
            .expect_err("too long");
        assert!(!err.help.contains("infinity"), "{err:?}");
    }

    #[test]
    fn durations_without_a_unit_are_rejected_with_a_hint() {
        let err = parse_duration("5").expect_err("a unitless duration is ambiguous");
        assert!(
            err.help.contains("\"5s\""),
            "help shows the syntax: {err:?}"
        );
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            bare_number_duration_error("5").help,
            "write \"5s\" (or another unit: ms, s, m, h)"
        );
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units_and_plain_bytes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("10 MiB"), Ok(10 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("123B"), Ok(123));
    }

    #[test]
    fn sizes_reject_unknown_units_missing_numbers_and_overflow() {
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn signals_accept_short_and_full_names_in_any_case() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("int"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("TERMINATE").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1000), "1000B");
    }
}
