//! Processes: spawning (the only place with `unsafe`, fork and exec), reaping, signalling
//! process groups, and the subreaper setting.
//!
//! Invariants shared by the submodules:
//! - every child holdfast starts is a session and process-group leader (`pgid == pid`),
//!   so a service is addressed by its group and never by a bare, possibly reused pid;
//! - only [`reap`] waits for children. Nothing else in holdfast may call `wait*` or use
//!   `std::process::Child::wait`/`tokio::process`: the reaper takes every exit status;
//! - [`proc_stat`] is the one parser of `/proc/<pid>/stat`.

pub mod group;
pub mod limits;
pub mod pidfd;
pub mod program;
pub mod reap;
pub mod reexec;
pub mod spawn;

use std::io;

use holdfast_core::unix::Pid;

/// The fields of `/proc/<pid>/stat` that holdfast uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: Pid,
    /// The kernel's short command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie), `T`, `X`, ...
    pub state: char,
    pub ppid: Pid,
    pub pgid: Pid,
    pub sid: Pid,
    /// When the process started, in clock ticks since boot (field 22): with the pid, it
    /// names one process for the life of the system, whereas a pid alone is reused.
    pub start_time: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Reads `/proc/<pid>/stat`. Works for zombies too (until they are reaped), which is what
/// lets the reaper learn the group of a child that already exited.
pub fn proc_stat(pid: Pid) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(pid, &text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

/// `pid (comm) state ppid pgrp session ...`; `comm` may itself contain spaces and
/// parentheses, so it spans from the first `(` to the *last* `)`.
fn parse_stat(pid: Pid, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let mut next_pid = || rest.next()?.parse::<i32>().ok().map(Pid::from_raw);
    let ppid = next_pid()?;
    let pgid = next_pid()?;
    let sid = next_pid()?;
    // Fields 7 to 21 (tty_nr .. itrealvalue) are not used; field 22 is starttime.
    let start_time = rest.nth(15)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgid,
        sid,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_parentheses_and_spaces_in_comm() {
        let text = "42 (a) b (c)) Z 1 40 40 0 -1 4194560 0 0 0 0 3 4 0 0 20 0 1 0 123456 0 0";
        let stat = parse_stat(Pid::from_raw(42), text).expect("well-formed stat line");
        assert_eq!(stat.comm, "a) b (c)");
        assert_eq!(stat.state, 'Z');
        assert_eq!(stat.start_time, 123_456);
        assert!(stat.is_zombie());
        assert_eq!(stat.ppid, Pid::from_raw(1));
        assert_eq!(stat.pgid, Pid::from_raw(40));
        assert_eq!(stat.sid, Pid::from_raw(40));
    }

    #[test]
    fn own_stat_names_our_pid_and_group() {
        let me = crate::os::getpid();
        let stat = proc_stat(me).expect("our own /proc entry exists");
        assert_eq!(stat.pid, me);
        assert_eq!(stat.pgid, crate::os::core_pid(nix::unistd::getpgrp()));
        assert!(!stat.is_zombie());
    }
}
