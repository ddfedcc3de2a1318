//! Files only holdfast's own user may read: crash reports, core records, the restart
//! ledger, the HTTP token. They are made mode 0600 and never opened through a symlink
//! (holdfast runs as root; a link planted at one of these paths must not redirect it).
//!
//! A file is replaced whole: the bytes go to a new file beside it, which is then renamed
//! over it. A reader (`holdfast crashes show`, a restarted daemon) sees the old content
//! or the new, never an empty or half-written file, and a crash mid-write loses nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`, atomically and durably. A symlink at `path` is
/// replaced by the file, its target left untouched.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path);
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // rename() replaces the name itself: a symlink there is replaced, not followed.
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
        return written;
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Reads `path`, refusing a symlink.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens `path` for reading, refusing a symlink.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `.<name>.<pid>.tmp` beside `path`: hidden, and with an extension no reader of the
/// directory takes for one of its files; the pid keeps two writers (the daemon and a
/// core handler) apart.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("holdfast-pf-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_replaced_file_is_private_whole_and_leaves_no_temp_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("replace");
        let path = dir.join("r.json");
        replace(&path, b"first").expect("written");
        replace(&path, b"second, longer").expect("replaced");
        assert_eq!(read(&path).expect("read"), b"second, longer");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["r.json"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_during_replacements_sees_one_whole_content_or_the_other() {
        let dir = scratch("race");
        let path = dir.join("report.json");
        replace(&path, b"old").expect("written");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let bytes: &[u8] = if i % 2 == 0 { b"new, longer" } else { b"old" };
                    replace(&path, bytes).expect("replaced");
                }
            })
        };
        while !writer.is_finished() {
            let seen = read(&path).expect("always there");
            assert!(seen == b"old" || seen == b"new, longer", "saw {seen:?}");
        }
        writer.join().expect("writer");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlink_is_replaced_not_written_through_and_not_read_through() {
        let dir = scratch("link");
        let target = dir.join("target");
        fs::write(&target, b"untouched").expect("target");
        let link = dir.join("planted.json");
        std::os::unix::fs::symlink(&target, &link).expect("plant");
        assert!(read(&link).is_err());
        replace(&link, b"x").expect("replaced");
        assert_eq!(fs::read(&target).expect("target"), b"untouched");
        assert!(!fs::symlink_metadata(&link).expect("meta").is_symlink());
        assert_eq!(read(&link).expect("read"), b"x");
        let _ = fs::remove_dir_all(&dir);
    }
}
