//! Parsing sd_notify datagrams: newline-separated `KEY=VALUE` assignments.
//!
//! Pure. Unknown keys (`BARRIER=1`, `FDSTORE=1`, ...) and malformed values are dropped,
//! like systemd does: a sloppy service must not be able to confuse holdfast.

use std::time::Duration;

use crate::unix::Pid;

/// One understood assignment of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMsg {
    /// `READY=1`: start-up finished.
    Ready,
    /// `STATUS=...`: free-form text shown in `status`.
    Status(String),
    /// `RELOADING=1`: the service is reloading its configuration.
    Reloading,
    /// `STOPPING=1`: the service is shutting down on its own.
    Stopping,
    /// `WATCHDOG=1`: keep-alive.
    Watchdog,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=`: a new keep-alive interval.
    WatchdogUsec(Duration),
    /// `EXTEND_TIMEOUT_USEC=`: the start may take this much longer from now.
    ExtendTimeout(Duration),
    /// `MAINPID=`: this process is now the main process.
    MainPid(Pid),
    /// `ERRNO=`: the service reports a failure as an errno value.
    Errno(i32),
}

/// The messages of one datagram, in order.
pub fn parse(text: &str) -> Vec<NotifyMsg> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<NotifyMsg> {
    let (key, value) = line.split_once('=')?;
    let usec = |v: &str| v.parse::<u64>().ok().map(Duration::from_micros);
    Some(match key {
        "READY" if value == "1" => NotifyMsg::Ready,
        "STATUS" => NotifyMsg::Status(value.to_owned()),
        "RELOADING" if value == "1" => NotifyMsg::Reloading,
        "STOPPING" if value == "1" => NotifyMsg::Stopping,
        "WATCHDOG" if value == "1" => NotifyMsg::Watchdog,
        "WATCHDOG" if value == "trigger" => NotifyMsg::WatchdogTrigger,
        "WATCHDOG_USEC" => NotifyMsg::WatchdogUsec(usec(value).filter(|d| !d.is_zero())?),
        "EXTEND_TIMEOUT_USEC" => NotifyMsg::ExtendTimeout(usec(value)?),
        "MAINPID" => {
            let pid = value.parse::<i32>().ok().filter(|p| *p > 1)?;
            NotifyMsg::MainPid(Pid::from_raw(pid))
        }
        "ERRNO" => NotifyMsg::Errno(value.parse().ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_understood_key_is_parsed_in_order() {
        let text = "READY=1\nSTATUS=serving on :8080\nRELOADING=1\nSTOPPING=1\nWATCHDOG=1\n\
                    WATCHDOG=trigger\nWATCHDOG_USEC=2000000\nEXTEND_TIMEOUT_USEC=500\n\
                    MAINPID=4242\nERRNO=2\n";
        assert_eq!(
            parse(text),
            [
                NotifyMsg::Ready,
                NotifyMsg::Status("serving on :8080".to_owned()),
                NotifyMsg::Reloading,
                NotifyMsg::Stopping,
                NotifyMsg::Watchdog,
                NotifyMsg::WatchdogTrigger,
                NotifyMsg::WatchdogUsec(Duration::from_secs(2)),
                NotifyMsg::ExtendTimeout(Duration::from_micros(500)),
                NotifyMsg::MainPid(Pid::from_raw(4242)),
                NotifyMsg::Errno(2),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_malformed_values_are_dropped() {
        let text =
            "BARRIER=1\nREADY=0\nMAINPID=abc\nMAINPID=1\nWATCHDOG_USEC=0\nnonsense\nFDSTORE=1";
        assert_eq!(parse(text), []);
    }

    #[test]
    fn a_status_keeps_equals_signs_and_may_be_empty() {
        assert_eq!(
            parse("STATUS=a=b\nSTATUS="),
            [
                NotifyMsg::Status("a=b".to_owned()),
                NotifyMsg::Status(String::new())
            ]
        );
    }
}
