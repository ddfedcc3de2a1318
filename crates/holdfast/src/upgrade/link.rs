//! The watched symlink (`current -> builds/A`): what it says, and pointing it back.
//!
//! Blocking file-system calls: callers run these off the supervisor task.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the link says (its text, not the file it leads to): what `rollback_link` writes
/// back, so a relative link stays relative.
pub fn read(link: &Path) -> io::Result<PathBuf> {
    std::fs::read_link(link)
}

/// Makes `link` say `text`, atomically: a new link under a temporary name in the same
/// directory, renamed over the old one (what `ln -sfn` does), so that no reader ever
/// finds the link missing.
pub fn point(link: &Path, text: &Path) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = link
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the link has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".holdfast-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = link.with_file_name(temp_name);
    std::os::unix::fs::symlink(text, &temp)?;
    std::fs::rename(&temp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointing_a_link_back_replaces_it_in_place_and_keeps_it_relative() {
        let dir = std::env::temp_dir().join(format!("holdfast-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).expect("mkdir");
        std::fs::create_dir_all(dir.join("b")).expect("mkdir");
        let current = dir.join("current");
        std::os::unix::fs::symlink("b", &current).expect("link");
        point(&current, Path::new("a")).expect("point back");
        assert_eq!(read(&current).expect("read"), PathBuf::from("a"));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 3, "no temporary link left behind: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
