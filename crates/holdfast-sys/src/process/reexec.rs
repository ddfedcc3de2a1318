//! Re-executing holdfast in place (`holdfast upgrade --self`): the same pid, so every
//! service stays its child. What the new image needs crosses `execve` as inherited file
//! descriptors: the sockets and pipes it keeps serving, and a memfd with the state.
//!
//! Every fd of holdfast is `O_CLOEXEC`; only the ones handed over lose the flag, right
//! before `execve`, and get it back at once in the new image ([`adopt`]) or if the exec
//! failed ([`set_inheritable`] with `false`).

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

/// The binary now at the path holdfast was started from. `/proc/self/exe` names the
/// running image's file; after a deploy replaced it by a rename, the kernel marks that
/// name ` (deleted)`, and the path (where the new build now is) is what counts.
pub fn own_path() -> io::Result<PathBuf> {
    Ok(undeleted(std::fs::read_link("/proc/self/exe")?))
}

/// The path an `exe` link names, without the mark of a file replaced since.
fn undeleted(link: PathBuf) -> PathBuf {
    match link.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(path) => PathBuf::from(OsStr::from_bytes(path)),
        None => link,
    }
}

/// Sets (`inherit`: clears) `FD_CLOEXEC` on each of `fds`: with `inherit`, they cross the
/// next `execve`.
#[expect(
    unsafe_code,
    reason = "the fds are numbers handed over by the caller, not owned values"
)]
pub fn set_inheritable(fds: &[RawFd], inherit: bool) -> io::Result<()> {
    let flags = if inherit {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    for &fd in fds {
        // SAFETY: the borrow lasts for one fcntl; the caller keeps `fd` open across this
        // call (its owner, a socket or a pipe of the runtime, outlives it). A closed fd
        // only makes fcntl fail with EBADF.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(flags)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// What to execute: the file at a path, or an open file (the running binary, even once
/// a deploy replaced its path).
#[derive(Debug, Clone, Copy)]
pub enum Program<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

/// Replaces this process's image with `program`, keeping the pid, the children and the
/// fds without `FD_CLOEXEC`. Returns only on failure, with holdfast unchanged.
pub fn exec(program: Program<'_>, args: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(io::Error::other);
    let prepared = (|| -> io::Result<_> {
        let args = args
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let env = env
            .iter()
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((args, env))
    })();
    let (args, env) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return e,
    };
    let failed = match program {
        Program::Path(path) => match cstring(path.as_os_str().as_bytes()) {
            Ok(path) => nix::unistd::execve(&path, &args, &env),
            Err(e) => return e,
        },
        Program::Fd(fd) => nix::unistd::fexecve(fd, &args, &env),
    };
    match failed {
        Err(errno) => io::Error::from(errno),
    }
}

/// The running binary, open: what `/proc/self/exe` is, whatever has become of its path.
pub fn own_binary() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/exe")?.into())
}

/// A memfd holding `bytes`, read from its start: the state handed to the next image.
/// `O_CLOEXEC` like every fd of holdfast until it is handed over.
pub fn memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(io::Error::other)?;
    let fd = memfd_create(name.as_c_str(), MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file.into())
}

/// Takes an fd handed over by the previous image: checks it is open, sets `FD_CLOEXEC`
/// again and owns it from now on.
#[expect(
    unsafe_code,
    reason = "an inherited fd exists only as a number until it is owned"
)]
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    set_inheritable(&[fd], false)?;
    // SAFETY: the previous image handed `fd` over for this process alone (its number came
    // with the state), fcntl just showed it open, and nothing else in this process knows
    // the number: it is owned exactly once, here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the whole memfd `fd` handed over by the previous image, and closes it.
pub fn read_memfd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::from(adopt(fd)?);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_memfd_handed_over_gives_back_what_was_written() {
        let fd = memfd("hf-test", b"state").expect("memfd");
        let raw = fd.as_raw_fd();
        set_inheritable(&[raw], true).expect("clear");
        let flags = fcntl(&fd, FcntlArg::F_GETFD).expect("flags");
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "inheritable");
        // Handed over: from here on it is known by its number only.
        std::mem::forget(fd);
        assert_eq!(read_memfd(raw).expect("read"), b"state");
    }

    #[test]
    fn a_binary_replaced_by_a_rename_is_named_by_its_path() {
        let replaced = PathBuf::from("/usr/bin/holdfast (deleted)");
        assert_eq!(undeleted(replaced), Path::new("/usr/bin/holdfast"));
        let same = PathBuf::from("/usr/bin/holdfast");
        assert_eq!(undeleted(same.clone()), same);
    }

    #[test]
    fn the_own_path_is_a_file_that_exists() {
        assert!(own_path().expect("readlink").is_file());
    }
}
