//! One owner per `state_dir`: the daemon holds an exclusive `flock` on
//! `<state_dir>/holdfast.lock` for its whole life, and writes its pid and control socket
//! there. A second
//! daemon on the same directory would rebind its notify socket and fight the first over
//! the same services (the first one's watchdog would then kill a healthy service), so it
//! is refused, naming the holder.
//!
//! The lock goes with the process (the kernel drops it when the last descriptor of the
//! open file closes, also on SIGKILL), so a crashed daemon never leaves a stale lock
//! behind. The descriptor is close-on-exec: `upgrade --self` releases it at the exec and
//! the new image takes it again first thing.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in `state_dir`.
const LOCK: &str = "holdfast.lock";

/// Held for the daemon's life: dropping it releases the lock.
pub(super) struct Ownership {
    _lock: Flock<File>,
}

/// Takes `state_dir` for this daemon (which answers on `control`), or says who holds it.
pub(super) fn claim(state_dir: &Path, control: &Path) -> io::Result<Ownership> {
    let path = state_dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| annotate(e, format!("cannot open the lock file {}", path.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => return Err(taken(&path, &mut file)),
        Err((_, errno)) => {
            let e = io::Error::from(errno);
            return Err(annotate(e, format!("cannot lock {}", path.display())));
        }
    };
    // Who holds it, for the refusal of a second daemon (and for people).
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}\n{}", std::process::id(), control.display())?;
    Ok(Ownership { _lock: lock })
}

/// The control socket of the daemon that holds (or held) `state_dir`, as it wrote it in
/// the lock file: how `holdfast core-handler`, which knows only the state directory,
/// finds the daemon. `None` without a lock file or a socket in it.
pub fn control_of(state_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(state_dir.join(LOCK)).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    lines.nth(1).map(PathBuf::from)
}

/// The refusal of a second daemon, with the holder's pid and socket as it wrote them.
fn taken(path: &Path, file: &mut File) -> io::Error {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let holder = match (lines.next(), lines.next()) {
        (Some(pid), Some(control)) => format!("pid {pid}, control socket {control}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "pid unknown".to_owned(),
    };
    let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "holdfast is already running ({holder}) on the state directory {} (it holds \
             {}): one daemon per state_dir, or two would fight over the same services",
            dir.display(),
            path.display()
        ),
    )
}

fn annotate(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_a_held_state_dir_is_refused_with_the_holders_pid() {
        let dir = std::env::temp_dir().join(format!("hf-owner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let control = Path::new("/run/hf-test.sock");
        let first = claim(&dir, control).expect("the first claim wins");
        let error = claim(&dir, control)
            .err()
            .expect("a second claim is refused");
        let message = error.to_string();
        let holder = format!(
            "pid {}, control socket {}",
            std::process::id(),
            control.display()
        );
        assert!(message.contains(&holder), "{message}");
        assert!(message.contains(&dir.display().to_string()), "{message}");
        drop(first);
        let again = claim(&dir, control).expect("released with its holder");
        drop(again);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
