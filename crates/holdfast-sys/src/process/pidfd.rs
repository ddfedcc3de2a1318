//! Processes that are not holdfast's children: those a previous holdfast started and
//! that outlived it (it was killed), found again after a restart. The reaper cannot wait
//! for them (their parent is now init), so each is held by a pidfd, which names the
//! process itself rather than its reusable number and becomes readable when it exits.
//!
//! A process is recognised by its pid *and* its start time (`/proc/<pid>/stat`): a pid
//! alone may have been reused since it was written down.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use holdfast_core::unix::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::proc_stat;
use crate::model::ExitStatus;
use crate::os::nix_pid;

/// A pidfd on the process `pid` if it is still the one that started at `start_time`
/// (clock ticks since boot). `None` when it is gone, a zombie, or another process has
/// the pid now.
pub fn open_if_same(pid: Pid, start_time: u64) -> io::Result<Option<OwnedFd>> {
    let same = |pid| proc_stat(pid).is_ok_and(|s| s.start_time == start_time && !s.is_zombie());
    if !same(pid) {
        return Ok(None);
    }
    let fd = match open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Checked again with the pidfd held: the pid cannot be reused from now on while the
    // fd names it, so a process found now is the one the fd holds.
    Ok(same(pid).then_some(fd))
}

fn open(pid: Pid) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // Close-on-exec, like every pidfd.
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Waits until the process held by `pidfd` (`pid`, started at `start_time`) exits and
/// its parent has reaped it. Its exit status is reported to that parent (init, since the
/// previous holdfast died); Linux 6.15 and later keep it for pidfds too
/// (`PIDFD_INFO_EXIT`), older kernels do not: then it is [`ExitStatus::Unknown`].
///
/// The pidfd turns readable when the process exits, while it is still a zombie that
/// keeps its process group (and cgroup) alive; holdfast decides at once whether the run
/// left processes behind, so this waits, briefly and with a bound, for the reap too.
///
/// # Panics
/// If called outside a tokio runtime with IO enabled.
#[expect(
    unsafe_code,
    reason = "tokio's registration of an fd is unsafe since it cannot check I/O safety"
)]
pub async fn exited(pidfd: OwnedFd, pid: Pid, start_time: u64) -> io::Result<ExitStatus> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which owns it until it is
    // dropped: the fd stays open and names the same pidfd for the whole registration.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let _ready = fd.readable().await?;
    let mut pause = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    while waited < REAP_WAIT && proc_stat(pid).is_ok_and(|s| s.start_time == start_time) {
        tokio::time::sleep(pause).await;
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Ok(kept_exit_status(fd.get_ref().as_fd(), pid).unwrap_or(ExitStatus::Unknown))
}

/// The exit status the kernel kept for the reaped process of `pidfd`, if it keeps one
/// (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15+).
#[expect(
    unsafe_code,
    reason = "PIDFD_GET_INFO is an ioctl with no wrapper in nix or rustix"
)]
fn kept_exit_status(pidfd: BorrowedFd<'_>, pid: Pid) -> Option<ExitStatus> {
    /// `struct pidfd_info` as of its first version (`PIDFD_INFO_SIZE_VER0`, 64 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        /// pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid.
        ids: [u32; 11],
        exit_code: i32,
    }
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    /// `_IOWR(0xFF, 11, struct pidfd_info)` for the 64-byte version.
    const PIDFD_GET_INFO: u64 = 0xC040_FF0B;
    const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: the kernel reads `mask` from and writes at most 64 bytes (the size the
    // request number encodes) into `info`, a live, aligned `repr(C)` struct of exactly
    // that size; `pidfd` is an open pidfd for the duration of the call.
    let done = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as libc::Ioctl,
            &raw mut info,
        )
    };
    if done != 0 || info.mask & PIDFD_INFO_EXIT == 0 {
        return None;
    }
    let status = nix::sys::wait::WaitStatus::from_raw(nix_pid(pid), info.exit_code).ok()?;
    super::reap::exit_status(status)
}

/// How long [`exited`] waits for the parent to reap an exited process.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// How long ago a process that started at `start_time` (clock ticks since boot)
/// started.
pub fn running_for(start_time: u64) -> Option<Duration> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    since_boot()?.checked_sub(Duration::from_millis(start_time * 1000 / ticks))
}

/// The time since boot (`CLOCK_BOOTTIME`): monotonic like the clock of holdfast's
/// timers, counting suspend too, and the same for every process of one boot, so what
/// one holdfast writes down the next can compare (a wall-clock jump changes nothing).
pub fn since_boot() -> Option<Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::from(now))
}

/// Waits, blocking, until every process of `pidfds` has exited, at most `limit`: at
/// start, processes a killed holdfast left are killed and must be gone (their ports
/// free) before anything is started in their place.
pub fn wait_exited(pidfds: &[OwnedFd], limit: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + limit;
    let mut left: Vec<&OwnedFd> = pidfds.iter().collect();
    while !left.is_empty() {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            return;
        }
        let mut polls: Vec<PollFd> = (left.iter())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(remaining.as_millis()).unwrap_or(u16::MAX);
        if nix::poll::poll(&mut polls, PollTimeout::from(ms)).is_err() {
            return;
        }
        let exited: Vec<bool> = (polls.iter())
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        left = left
            .into_iter()
            .zip(exited)
            .filter_map(|(fd, exited)| (!exited).then_some(fd))
            .collect();
    }
}

/// The kernel's id of this boot: start times count from the boot, so records of another
/// boot name no process of this one.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_is_found_by_pid_and_start_time_and_its_exit_is_seen() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        let start = proc_stat(pid).expect("its stat").start_time;
        assert!(
            open_if_same(pid, start + 1).expect("no error").is_none(),
            "another start time is another process"
        );
        let fd = open_if_same(pid, start)
            .expect("no error")
            .expect("the same process");
        child.kill().expect("kill");
        // The test is the parent: it reaps, as init would for an orphan.
        let _ = child.wait();
        let status = tokio::time::timeout(Duration::from_secs(30), exited(fd, pid, start))
            .await
            .expect("the exit is seen")
            .expect("no error");
        // What the kernel kept (Linux 6.15+), or unknown.
        assert!(
            matches!(
                status,
                ExitStatus::Unknown
                    | ExitStatus::Signaled {
                        signal: holdfast_core::unix::Signal::SIGKILL,
                        ..
                    }
            ),
            "{status:?}"
        );
        assert!(running_for(start).is_some_and(|d| d < Duration::from_secs(60)));
        assert!(
            proc_stat(pid).is_err(),
            "reaped by the time the exit is reported"
        );
    }

    #[test]
    fn the_boot_id_is_a_uuid() {
        assert_eq!(boot_id().expect("readable").len(), 36);
    }
}
