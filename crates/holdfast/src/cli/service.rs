//! `holdfast start|stop|restart NAME...` and `holdfast shutdown`: apply the request and,
//! unless `--no-block`, wait for its outcome and print it.
//!
//! The waiting happens in the daemon ([`crate::control::wait`]): it watches its own
//! event stream, so the answer comes when the outcome is known, without polling. Only
//! `shutdown` waits here, on a pidfd of the daemon process (the daemon cannot report
//! its own exit).
//!
//! Errors are printed here (as a miette report) and turned into the documented exit code
//! (see [`super::exit`]), instead of being returned, so `main` cannot flatten them all to
//! a generic failure.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{exit, targets};
use crate::control::client::{self, ClientError};
use crate::control::protocol::{Outcome, Reply, Request, Verdict};
use crate::model::{ServiceName, Timeout};

/// How long a verb waits when no `--timeout` is given.
pub use crate::control::wait::DEFAULT_TIMEOUT;
/// How much longer than the daemon's deadline the CLI waits for the daemon's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// Whether and how long a verb waits for its outcome.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return as soon as the daemon accepted the request, without waiting for the outcome.
    #[arg(long)]
    pub no_block: bool,
    /// Give up waiting after this long (`30s`, `2m`, `infinity`); exits 5 when it passes.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_timeout)]
    pub timeout: Timeout,
}

/// `--timeout`: a humantime duration such as `30s` or `2m`, or `infinity`.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text == "infinity" {
        return Ok(Timeout::Never);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            Err("a timeout of 0 would give up at once; use --no-block to not wait".to_owned())
        }
        // Far beyond any real wait, and would overflow the daemon's clock: no deadline.
        Ok(d) if d > Duration::from_secs(100 * 365 * 86_400) => Ok(Timeout::Never),
        Ok(d) => Ok(Timeout::After(d)),
        Err(e) => Err(format!(
            "invalid duration {text:?}: {e} (try 30s, 2m or infinity)"
        )),
    }
}

/// The request a verb sends for one service.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    fn request(self, name: ServiceName) -> Request {
        match self {
            Verb::Start => Request::Start { name },
            Verb::Stop => Request::Stop { name },
            Verb::Restart => Request::Restart { name },
        }
    }
}

/// `start`, `stop` or `restart` of the services `args` name.
pub fn run(
    socket: &Path,
    verb: Verb,
    args: &[String],
    wait: &WaitArgs,
) -> miette::Result<ExitCode> {
    let names = match targets::expand(socket, args, targets::Grain::Service) {
        Ok(names) => names,
        Err(e) => return Ok(report(e)),
    };
    let requests: Vec<Request> = names.into_iter().map(|n| verb.request(n)).collect();
    if wait.no_block {
        return Ok(fire(socket, requests));
    }
    match waited(socket, requests, wait.timeout) {
        Ok((_, outcomes)) => Ok(print_outcomes(&outcomes)),
        Err(e) => Ok(report(e)),
    }
}

/// Sends each request without waiting; prints what the daemon says happens next.
fn fire(socket: &Path, requests: Vec<Request>) -> ExitCode {
    for request in requests {
        match client::call(socket, request) {
            Ok(Reply::Accepted { message }) => println!("{message}"),
            Ok(other) => return report(unexpected(&other)),
            Err(e) => return report(e),
        }
    }
    ExitCode::SUCCESS
}

/// Applies `requests` in the daemon and waits there for their outcomes.
pub(super) fn waited(
    socket: &Path,
    requests: Vec<Request>,
    timeout: Timeout,
) -> Result<(Vec<Reply>, Vec<Outcome>), ClientError> {
    let timeout = timeout.duration();
    let request = Request::Wait {
        requests,
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
    };
    match client::call_within(socket, request, timeout.map(|t| t + ANSWER_MARGIN))? {
        Reply::Waited { replies, outcomes } => Ok((replies, outcomes)),
        other => Err(unexpected(&other)),
    }
}

/// One line per service (`web: running (pid 42)`), successes on stdout and the rest on
/// stderr; the exit code of the worst outcome.
pub(super) fn print_outcomes(outcomes: &[Outcome]) -> ExitCode {
    for outcome in outcomes {
        let line = format!("{}: {}", outcome.name, outcome.message);
        match outcome.verdict {
            Verdict::Done => println!("{line}"),
            Verdict::Failed | Verdict::TimedOut => eprintln!("{line}"),
        }
    }
    ExitCode::from(worst(outcomes))
}

/// The exit code for a set of outcomes: a timeout over a failure over success.
fn worst(outcomes: &[Outcome]) -> u8 {
    let has = |v: Verdict| outcomes.iter().any(|o| o.verdict == v);
    if has(Verdict::TimedOut) {
        exit::TIMED_OUT
    } else if has(Verdict::Failed) {
        exit::FAILURE
    } else {
        exit::SUCCESS
    }
}

/// `shutdown`: ask the daemon to stop everything and exit, then (unless `--no-block`)
/// wait until its process is gone, which is after it removed its control socket, so a
/// new `holdfast up` can start right away.
pub fn shutdown(socket: &Path, wait: &WaitArgs) -> miette::Result<ExitCode> {
    // The pidfd is taken before the request, so the pid cannot be reused in between.
    let daemon = if wait.no_block {
        None
    } else {
        match client::daemon_pid(socket).map(open_pidfd) {
            Ok(pidfd) => Some(pidfd),
            Err(e) => return Ok(report(e)),
        }
    };
    let message = match client::call(socket, Request::Shutdown) {
        Ok(Reply::Accepted { message }) => message,
        Ok(other) => return Ok(report(unexpected(&other))),
        Err(e) => return Ok(report(e)),
    };
    let Some(daemon) = daemon else {
        println!("{message}");
        return Ok(ExitCode::SUCCESS);
    };
    match daemon {
        Ok(pidfd) => match wait_exit(&pidfd, wait.timeout.duration()) {
            Ok(true) => {
                println!("holdfast stopped");
                Ok(ExitCode::SUCCESS)
            }
            Ok(false) => {
                let after = wait.timeout.duration().unwrap_or_default();
                eprintln!(
                    "holdfast: timed out after {}: the daemon is still shutting down",
                    humantime::format_duration(after)
                );
                Ok(ExitCode::from(exit::TIMED_OUT))
            }
            Err(e) => Ok(report(ClientError::Protocol(format!(
                "failed to wait for the daemon to exit: {e}"
            )))),
        },
        // No pidfd (the daemon in another pid namespace): the answer is all we have.
        Err(e) => {
            println!("{message}");
            eprintln!(
                "holdfast: cannot watch the daemon process ({e}); not waiting for it to exit"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_pidfd(pid: i32) -> Result<std::os::fd::OwnedFd, rustix::io::Errno> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
}

/// Waits until the process behind `pidfd` exits (a pidfd becomes readable then), at
/// most `timeout`. Returns whether it exited.
fn wait_exit(pidfd: &impl AsFd, timeout: Option<Duration>) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = timeout.map(|t| Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    loop {
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!(
        "holdfast answered with an unexpected reply: {reply:?}"
    ))
}

/// Prints a client error as a miette report on stderr; returns its exit code.
pub(crate) fn report(error: ClientError) -> ExitCode {
    let code = super::exit::of_error(&error);
    eprintln!("{:?}", miette::Report::new(error));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome {
            name: ServiceName::new("web").expect("valid"),
            verdict,
            state: "running".to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn timeouts_parse_as_durations_or_infinity() {
        assert_eq!(
            parse_timeout("2m"),
            Ok(Timeout::After(Duration::from_secs(120)))
        );
        assert_eq!(parse_timeout("infinity"), Ok(Timeout::Never));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn the_worst_outcome_sets_the_exit_code() {
        assert_eq!(worst(&[outcome(Verdict::Done)]), exit::SUCCESS);
        assert_eq!(
            worst(&[outcome(Verdict::Done), outcome(Verdict::Failed)]),
            exit::FAILURE
        );
        assert_eq!(
            worst(&[outcome(Verdict::TimedOut), outcome(Verdict::Failed)]),
            exit::TIMED_OUT
        );
    }
}
