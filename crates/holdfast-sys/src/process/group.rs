//! Process groups: signalling a service's whole group, and asking who is still in it.
//!
//! A service is addressed by its process group (`pgid` = the pid of the child holdfast
//! spawned, which `spawn` makes a group leader), never by a bare pid: a group id stays
//! valid while any member lives, even after the leader was reaped, and the kernel does
//! not hand the number out as a new pid while the group exists.

use holdfast_core::unix::{Pid, Signal};
use nix::errno::Errno;
use nix::sys::signal::killpg;

use crate::os::{nix_pid, nix_signal};

/// Longest `command` reported by [`group_members`], in characters.
const MAX_COMMAND_CHARS: usize = 120;

/// A live process of a group, as `status` shows it to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pid: Pid,
    /// The command line, or the kernel's `comm` in brackets.
    pub command: String,
}

/// Sends `sig` to every process in group `pgid`. `Ok(false)` when the group no longer
/// exists (`ESRCH`); other errors (`EPERM`) are returned.
pub fn signal_group(pgid: Pid, sig: Signal) -> Result<bool, Errno> {
    match killpg(nix_pid(pgid), nix_signal(sig)) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(errno) => Err(errno),
    }
}

/// Whether group `pgid` has any member, including zombies.
///
/// A zombie stays in its process group until it is reaped, and the null signal
/// "succeeds" on it, so a group whose members have all exited but are not yet reaped
/// still counts as alive. For holdfast's own children and (as subreaper or PID 1) their
/// orphans, the reaper clears them promptly, so "the group is gone" follows the last
/// reap; a zombie whose parent is some other live process that never waits keeps the
/// group alive for as long as that parent lives. Use [`group_members`] to see who is
/// actually running.
pub fn group_alive(pgid: Pid) -> bool {
    killpg(nix_pid(pgid), None) != Err(Errno::ESRCH)
}

/// The live (non-zombie) processes of group `pgid`, by pid, from a scan of `/proc`.
/// `command` is the space-joined command line truncated to 120 characters, or the
/// kernel's `comm` in brackets for processes without one (kernel threads, or a process
/// that emptied its argv). Processes that vanish during the scan are skipped.
pub fn group_members(pgid: Pid) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw);
    describe(pids, |stat| stat.pgid == pgid)
}

/// Like [`group_members`], for known pids (a cgroup's `cgroup.procs`): no scan of
/// `/proc`, so its cost does not grow with the number of processes on the host.
pub fn members(pids: impl IntoIterator<Item = Pid>) -> Vec<Member> {
    describe(pids, |_| true)
}

/// The live (not zombie) processes among `pids` that `keep` accepts, sorted by pid.
fn describe(
    pids: impl IntoIterator<Item = Pid>,
    keep: impl Fn(&super::ProcStat) -> bool,
) -> Vec<Member> {
    let mut members: Vec<Member> = pids
        .into_iter()
        .filter_map(|pid| {
            let stat = super::proc_stat(pid).ok()?;
            if stat.is_zombie() || !keep(&stat) {
                return None;
            }
            Some(Member {
                pid,
                command: command_of(pid.as_raw()).unwrap_or_else(|| format!("[{}]", stat.comm)),
            })
        })
        .collect();
    members.sort_by_key(|member| member.pid.as_raw());
    members
}

/// `/proc/<pid>/cmdline`, NUL-separated arguments joined by spaces and truncated.
fn command_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let joined = text.trim_end_matches('\0').replace('\0', " ");
    if joined.is_empty() {
        return None;
    }
    Some(joined.chars().take(MAX_COMMAND_CHARS).collect())
}
