//! Processes that are not holdfast's children: those a previous holdfast started and
//! that outlived it (it was killed), found again after a restart. The reaper cannot wait
//! for them (their parent is now init), so each is held by a pidfd, which names the
//! process itself rather than its reusable number and becomes readable when it exits.
//!
//! A process is recognised by its pid *and* its start time (`/proc/<pid>/stat`): a pid
//! alone may have been reused since it was written down.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use holdfast_core::unix::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::proc_stat;
use crate::model::ExitStatus;

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
/// its parent has reaped it. Its exit status is known only to that parent (init, since
/// the previous holdfast died), so it is [`ExitStatus::Unknown`].
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
    Ok(ExitStatus::Unknown)
}

/// How long [`exited`] waits for the parent to reap an exited process.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// How long ago a process that started at `start_time` (clock ticks since boot)
/// started.
pub fn running_for(start_time: u64) -> Option<Duration> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = Duration::from_millis(start_time * 1000 / ticks);
    Duration::try_from_secs_f64(uptime)
        .ok()?
        .checked_sub(started)
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
        assert_eq!(status, ExitStatus::Unknown);
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
