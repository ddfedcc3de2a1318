//! `log`: rotation of a service's log file, and forwarding of its lines to journald.

use super::Validator;
use super::scalars::size;
use crate::config::diagnostic::Problem;
use crate::config::raw::RawService;
use crate::config::value;
use crate::model::{LogForward, LogSpec, defaults};

/// Smallest `log.max_size`: below this rotation would churn on every few lines.
const MIN_LOG_SIZE: u64 = 4 * 1024;

impl Validator<'_> {
    pub(super) fn log(&mut self, svc: &str, raw: &RawService) -> LogSpec {
        let Some(log) = &raw.log else {
            return LogSpec {
                max_size: defaults::LOG_MAX_SIZE,
                keep: defaults::LOG_KEEP,
                forward: self.log_forward,
            };
        };
        let log = log.get_ref();
        let max_size = match &log.max_size {
            None => defaults::LOG_MAX_SIZE,
            Some(raw) => match size(raw.get_ref()) {
                Ok(size) if size < MIN_LOG_SIZE => {
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.log.max_size` is too small"),
                            raw.span(),
                            format!("{} is below 4KiB", value::format_size(size)),
                        )
                        .with_help("use at least \"4KiB\"; the default is \"10MiB\""),
                    );
                    defaults::LOG_MAX_SIZE
                }
                Ok(size) => size,
                Err(err) => {
                    self.value_problem(
                        format!("invalid size for `service.{svc}.log.max_size`"),
                        raw.span(),
                        err,
                    );
                    defaults::LOG_MAX_SIZE
                }
            },
        };
        LogSpec {
            max_size,
            keep: log.keep.unwrap_or(defaults::LOG_KEEP),
            forward: match log.journald {
                Some(true) => LogForward::Journald,
                Some(false) => LogForward::FileOnly,
                None => self.log_forward,
            },
        }
    }
}
