//! Reading the counters of many cgroups at once (`status` of every service): each file
//! is opened relative to its parent cgroup's directory, opened once, instead of by its
//! full path. The lookup of a path's components is most of the cost of reading a
//! cgroupfs file, and a service's counter is six to ten components deep (v1 memory
//! hierarchies nest under the manager's own cgroups).

use std::fs::File;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

/// The parent directories opened so far; they are closed when this is dropped, so no
/// descriptor outlives one batch of reads.
#[derive(Debug, Default)]
pub struct CounterFiles {
    parents: Vec<(PathBuf, Option<OwnedFd>)>,
}

impl CounterFiles {
    /// The number in `file`, `<parent>/<service>/<counter>`; `None` when it cannot be
    /// read.
    pub(super) fn read(&mut self, file: &Path) -> Option<u64> {
        let parent = file.parent()?.parent()?;
        let relative = file.strip_prefix(parent).ok()?;
        let opened = match self.parents.iter().position(|(p, _)| p == parent) {
            Some(i) => &self.parents[i].1,
            None => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                let dir = open(parent, flags, Mode::empty()).ok();
                self.parents.push((parent.to_owned(), dir));
                &self.parents[self.parents.len() - 1].1
            }
        };
        let fd = match opened {
            Some(dir) => openat(
                dir,
                relative,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
            None => open(file, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()),
        };
        parse_number(File::from(fd.ok()?))
    }
}

/// A counter file's number, read with one `read` into a small buffer (these files hold a
/// line of digits): `fs::read_to_string` would also stat the file and read twice.
pub(super) fn parse_number(mut file: File) -> Option<u64> {
    let mut buf = [0_u8; 32];
    let n = file.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}
