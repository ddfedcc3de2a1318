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
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes`, atomically and durably. A symlink at `path` is
/// replaced by the file, its target left untouched.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path);
    let written = (|| {
        let mut file = match create(&temp) {
            // No live writer has this name (the pid is ours, the count unique in this
            // process): it is the leftover of a dead process that had our pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temp)?;
                create(&temp)
            }
            opened => opened,
        }?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // rename() replaces the name itself: a symlink there is replaced, not followed.
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
        return written;
    }
    // The new content is in place: a failed fsync of the directory only means the
    // rename might not survive a power cut, which is no reason to report the write lost.
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!("{}: the directory was not synced: {e}", dir.display());
        }
    }
    Ok(())
}

/// Makes the new file `path`, private, never through a symlink.
fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
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

/// `.<name>.<pid>.<n>.tmp` beside `path`: hidden, and with an extension no reader of
/// the directory takes for one of its files. The pid keeps two processes (the daemon
/// and a core handler) apart, the count two writes of one process, so that one never
/// renames a file another is still writing (with `create_new`, a leftover of a crash
/// is an error, not a file to write through).
fn temp_path(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Whether `name` is one of the temporary files [`replace`] writes (see
/// [`temp_path`]): a sweep removes those a crash left behind, and only those, since a
/// state directory may be shared with other programs.
fn is_temp(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let mut parts = inner.rsplitn(3, '.');
    let (Some(n), Some(pid), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    digits(n) && digits(pid) && !file.is_empty()
}

/// How old a temporary file is when [`sweep_temps`] takes its write for dead: no write
/// of a report or a record takes minutes.
pub const ABANDONED: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Removes the temporary files of writes that died mid-way (a crash, a power cut) from
/// `dir`, those older than `age`: a younger one may be another process's write under
/// way. With no age, all of them (a clock set back since makes a file from the future).
pub fn sweep_temps(dir: &Path, age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // The name first: only a temp's age is worth a stat.
        let Some(name) = entry
            .file_name()
            .to_str()
            .filter(|n| is_temp(n))
            .map(str::to_owned)
        else {
            continue;
        };
        if entry
            .metadata()
            .is_ok_and(|meta| is_dead_temp(&name, &meta, age))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether the directory entry `name` (`meta`) is a temp file of [`replace`] older than
/// `age` (see [`sweep_temps`]), for a caller that reads the directory anyway.
pub fn is_dead_temp(name: &str, meta: &fs::Metadata, age: std::time::Duration) -> bool {
    is_temp(name)
        && (age.is_zero()
            || (meta.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age))
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
    fn two_writers_of_one_process_replacing_one_file_never_trip_on_each_other() {
        let dir = scratch("writers");
        let path = dir.join("report.txt");
        let writers: Vec<_> = [b"from the report writer".as_slice(), b"core joined"]
            .into_iter()
            .map(|bytes| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        replace(&path, bytes).expect("each write succeeds");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
        let seen = read(&path).expect("there");
        assert!(seen == b"from the report writer" || seen == b"core joined");
        let names: Vec<_> = fs::read_dir(&dir).expect("list").collect();
        assert_eq!(names.len(), 1, "no temp left behind");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_temp_left_by_a_dead_process_with_the_same_pid_does_not_block_a_write() {
        let dir = scratch("leftover");
        let path = dir.join("http.token");
        // The next names this process will use (other tests write too), as a crash of
        // an earlier process with its pid left them.
        let next = temp_path(&path);
        let n: u64 = (next.to_string_lossy().rsplit('.').nth(1))
            .and_then(|n| n.parse().ok())
            .expect("a count");
        for n in n + 1..n + 100 {
            let name = format!(".http.token.{}.{n}.tmp", std::process::id());
            fs::write(dir.join(name), b"half").expect("leftover");
        }
        replace(&path, b"token").expect("written despite the leftover");
        assert_eq!(read(&path).expect("read"), b"token");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sweep_removes_only_temps_older_than_asked() {
        let dir = scratch("sweep");
        let others = [
            ".hidden",
            ".editor.swp.tmp",
            ".x.12.tmp",
            ".x.1.2a.tmp",
            "notes.tmp",
        ];
        for name in [".r.json.1.0.tmp", "r.json"].into_iter().chain(others) {
            fs::write(dir.join(name), b"x").expect("file");
        }
        sweep_temps(&dir, ABANDONED);
        assert!(dir.join(".r.json.1.0.tmp").exists(), "too young to be dead");
        sweep_temps(&dir, std::time::Duration::ZERO);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        let mut kept = others.to_vec();
        kept.push("r.json");
        kept.sort_unstable();
        assert_eq!(names, kept, "only what replace writes is swept");
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
