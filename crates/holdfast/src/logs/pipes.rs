//! The pipes between a service and its capture, made to outlive holdfast.
//!
//! A service's fds 1 and 2 are opened read-write on their pipe (through
//! `/proc/self/fd`, the way to open an existing pipe afresh), not write-only. The kernel
//! then counts every process of the service as a reader of its own output: if holdfast
//! is killed, the pipe still has a reader, so a write blocks once the pipe is full
//! instead of killing the service with SIGPIPE, and nothing written is lost. The next
//! holdfast opens the same pipes through the adopted process's `/proc/<pid>/fd/1` and
//! `2` (checked by inode: the process may have pointed them elsewhere) and drains what
//! waited there. A service never reads its stdout, so being a reader costs nothing.
//!
//! End of file is unchanged: a pipe reads EOF once no process holds it open for writing,
//! and a read-write fd counts as a writer until it is closed like any other.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::unix::Pid;

/// A pipe as (read end, the end for the service: read-write, blocking), both
/// `O_CLOEXEC`.
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    // The bare errno, so that the caller can tell holdfast's own EMFILE from a bad
    // log directory.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let both = reopen(format!("/proc/self/fd/{}", write.as_raw_fd()))?;
    Ok((read, both))
}

/// The pipe's identity: its inode number.
pub(super) fn id(end: impl AsFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(end.as_fd())?.st_ino)
}

/// The pipes `ids` (stdout, stderr) as fds 1 and 2 of `pid` hold them, opened again:
/// read ends and the service's ends, in the order `Capture::adopt` takes them. `None`
/// when either fd is no longer that pipe.
pub(super) fn reattach(pid: Pid, ids: [u64; 2]) -> io::Result<Option<[OwnedFd; 4]>> {
    let mut reads = Vec::with_capacity(2);
    let mut boths = Vec::with_capacity(2);
    for (fd, id) in [1, 2].into_iter().zip(ids) {
        let path = format!("/proc/{pid}/fd/{fd}");
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_fifo() || meta.ino() != id {
            return Ok(None);
        }
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)?;
        // Checked again on what was opened: the process may have changed the fd between.
        if self::id(&read)? != id {
            return Ok(None);
        }
        reads.push(OwnedFd::from(read));
        boths.push(reopen(&path)?);
    }
    let [out_read, err_read] = <[OwnedFd; 2]>::try_from(reads).expect("two pipes");
    let [out, err] = <[OwnedFd; 2]>::try_from(boths).expect("two pipes");
    Ok(Some([out_read, err_read, out, err]))
}

/// The pipe at `path` (a `/proc/.../fd/N` link), opened read-write and blocking.
fn reopen(path: impl AsRef<Path>) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_writer_whose_reader_is_gone_neither_fails_nor_loses_what_it_wrote() {
        let (read, both) = pipe().expect("pipe");
        let id = super::id(&both).expect("id");
        assert_eq!(id, super::id(&read).expect("id"), "both ends are one pipe");
        drop(read);
        let mut writer = std::fs::File::from(both.try_clone().expect("dup"));
        writer
            .write_all(b"still here\n")
            .expect("no EPIPE: the writer is a reader too");
        // A successor opens the pipe again, as through /proc/<pid>/fd/1.
        let path = format!("/proc/self/fd/{}", both.as_raw_fd());
        let mut again = std::fs::File::open(&path).expect("the same pipe");
        let mut buf = [0_u8; 11];
        again.read_exact(&mut buf).expect("what was written waited");
        assert_eq!(&buf, b"still here\n");
    }
}
