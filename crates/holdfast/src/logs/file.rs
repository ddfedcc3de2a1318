//! The rotating log file writer: appends formatted lines, rotates by size, and turns
//! write failures into a count of dropped bytes instead of blocking or growing memory.
//!
//! Invariants:
//! - the file is only ever opened with `O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC`,
//!   mode 0640: a symlink at the log path is refused;
//! - a write never waits for the disk to recover: what cannot be written is dropped and
//!   counted, and the next successful write starts with one `dropped N bytes` line;
//! - the file holds whole lines: a line cut by a failed write is truncated away (or, if
//!   even that fails, the next write starts on a fresh line);
//! - a file grows past `max_size` only by the one line that did not fit in an empty file;
//! - at most `keep` rotated files exist after a rotation (`keep = 0` truncates instead).

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::record::{Ending, Record, Stamp, Stream};
use super::spare;
use crate::model::LogSpec;

/// Formatted lines are batched up to this size before one `write(2)`: a whole read of the
/// pipes (256 KiB), formatted, is one write.
const FLUSH_AT: usize = 512 * 1024;
/// Held lines (see [`LogFile::hold`]) beyond this size open the file.
const HOLD_AT: usize = 4 * 1024;

/// `<path>.<k>`: the k-th rotated file (1 is the newest).
pub(crate) fn rotated_path(path: &Path, k: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// Opens (creating) a log file for appending, refusing a symlink with a clear error.
/// The log directory is made at start; one removed since is made again here, at the
/// first file that needs it, instead of being checked at every spawn.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            // std adds O_CLOEXEC itself.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    open()
        .or_else(|err| match path.parent() {
            Some(dir) if err.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
                open()
            }
            _ => Err(err),
        })
        .map_err(|err| {
            if err.raw_os_error() == Some(Errno::ELOOP as i32) {
                symlink_refused(path)
            } else {
                open_failed(path, &err)
            }
        })
}

fn symlink_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "refusing to open log file \"{}\": it is a symbolic link",
            path.display()
        ),
    )
}

fn open_failed(path: &Path, err: &io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!(
            "failed to open log file \"{}\": {}",
            path.display(),
            reason(err)
        ),
    )
}

/// A short lowercase reason for an I/O error (`no space left on device`).
pub(crate) fn reason(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let desc = Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => err.to_string(),
            }
        }
        None => err.to_string(),
    }
}

/// A line as the log file takes it: its length is known before it is written.
pub(crate) trait Line {
    /// Length without the newline.
    fn len(&self) -> usize;
    /// Appends the line, without its newline.
    fn write_to(&self, out: &mut Vec<u8>);
}

impl Line for Record<'_> {
    fn len(&self) -> usize {
        Record::len(self)
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        Record::write_to(self, out);
    }
}

/// Whether the file was opened, which happens at the first line that must be written:
/// most services of a large set never print, and creating their files would be most of
/// the cost of starting them.
#[derive(Debug)]
enum Handle {
    /// Not opened yet: the lines held so far wait in `held`.
    NotYet,
    Open(File),
    /// A (re)open failed; the next flush tries again.
    Failed,
}

#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: Handle,
    /// Bytes in the current file as far as we know (what we found plus what we wrote).
    size: u64,
    spec: LogSpec,
    /// Lines that may wait for the file to be opened by something else (see
    /// [`LogFile::hold`]); bounded by `HOLD_AT` plus one line.
    held: Vec<u8>,
    /// Formatted lines not yet written; bounded by `FLUSH_AT` plus one line. Empty
    /// between batches, when its buffer goes back to the thread's spare (see [`spare`]).
    pending: Vec<u8>,
    /// The last write stopped inside a line: start the next one on a fresh line.
    mid_line: bool,
    dropped: u64,
    drop_reason: String,
    warned_rotate: bool,
}

impl LogFile {
    /// A log file at `path`, opened (and created) only at the first line that must be
    /// written. A symbolic link at `path` is refused now, with a clear error; one placed
    /// there later is refused when the file is opened.
    pub(crate) fn new(path: PathBuf, spec: LogSpec) -> io::Result<Self> {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(symlink_refused(&path)),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(open_failed(&path, &err)),
        }
        Ok(Self {
            path,
            file: Handle::NotYet,
            size: 0,
            spec,
            held: Vec::new(),
            pending: Vec::new(),
            mid_line: false,
            dropped: 0,
            drop_reason: String::new(),
            warned_rotate: false,
        })
    }

    pub(crate) fn set_spec(&mut self, spec: LogSpec) {
        self.spec = spec;
    }

    /// Queues a line that may wait until the file is opened for another reason (a
    /// service's output, a line that must be written, [`LogFile::write_held`]): a
    /// service that never prints gets no file for holdfast's routine notes about it.
    /// Once the file is open this is [`LogFile::push`].
    pub(crate) fn hold(&mut self, line: &(impl Line + ?Sized)) {
        if !matches!(self.file, Handle::NotYet) {
            return self.push(line);
        }
        line.write_to(&mut self.held);
        self.held.push(b'\n');
        if self.held.len() >= HOLD_AT {
            self.open_now();
        }
    }

    /// Queues one line (without its newline), rotating first if it would not fit.
    /// Call [`LogFile::flush`] after a batch.
    pub(crate) fn push(&mut self, line: &(impl Line + ?Sized)) {
        if matches!(self.file, Handle::NotYet) {
            self.open_now();
        }
        let len = line.len() as u64 + 1;
        let used = self.size + self.pending.len() as u64;
        if used > 0 && used + len > self.spec.max_size {
            self.flush();
            self.rotate();
        }
        if self.pending.capacity() == 0 {
            self.pending = spare::take(&spare::WRITES);
        }
        line.write_to(&mut self.pending);
        self.pending.push(b'\n');
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Opens the file if only held lines wait for it, and writes them.
    pub(crate) fn write_held(&mut self) {
        if matches!(self.file, Handle::NotYet) && !self.held.is_empty() {
            self.open_now();
        }
        self.flush();
    }

    /// Opens the file for the first time and queues the held lines, rotating first if
    /// they do not fit in what the file already holds.
    fn open_now(&mut self) {
        // A failure is told (and what it drops counted) by the flush that retries.
        self.file = match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Handle::Open(file)
            }
            Err(_) => Handle::Failed,
        };
        let held = std::mem::take(&mut self.held);
        if self.size > 0 && self.size + held.len() as u64 > self.spec.max_size {
            self.rotate();
        }
        if self.pending.capacity() == 0 {
            self.pending = spare::take(&spare::WRITES);
        }
        self.pending.extend_from_slice(&held);
    }

    /// Writes the queued lines; on failure drops them and counts the bytes. Held lines
    /// keep waiting while the file is not opened.
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending_len = self.pending.len();
        let file = match &mut self.file {
            Handle::Open(file) => file,
            Handle::NotYet | Handle::Failed => match open_append(&self.path) {
                Ok(file) => {
                    self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Handle::Open(file);
                    let Handle::Open(file) = &mut self.file else {
                        unreachable!("just set")
                    };
                    file
                }
                Err(err) => {
                    self.drop_pending(&err, pending_len as u64);
                    return;
                }
            },
        };

        let mut prefix = Vec::new();
        if self.mid_line {
            prefix.push(b'\n');
        }
        if self.dropped > 0 {
            let note = format!(
                "dropped {} bytes of output ({})",
                self.dropped, self.drop_reason
            );
            let stamp = Stamp::now().prefix(Stream::Holdfast);
            Record::new(&stamp, note.as_bytes(), Ending::Newline).write_to(&mut prefix);
            prefix.push(b'\n');
        }
        let prefix_len = prefix.len();
        if prefix_len > 0 {
            self.pending.splice(0..0, prefix);
        }

        let (mut written, result) = write_counted(file, &self.pending);
        if result.is_err() && written > 0 && self.pending[written - 1] != b'\n' {
            // A line cut by the error: take it back so the file holds whole lines only
            // (we are the only writer, so the end of the file is ours).
            let whole = memchr::memrchr(b'\n', &self.pending[..written]).map_or(0, |nl| nl + 1);
            if file.set_len(self.size + whole as u64).is_ok() {
                written = whole;
            }
        }
        self.size += written as u64;
        if written > 0 {
            self.mid_line = self.pending[written - 1] != b'\n';
        }
        match result {
            Ok(()) => {
                if self.dropped > 0 {
                    tracing::info!(path = %self.path.display(), dropped = self.dropped, "log file writable again");
                }
                self.dropped = 0;
            }
            Err(err) => {
                if written >= prefix_len {
                    // The `dropped` line (if any) made it; count afresh.
                    self.dropped = 0;
                }
                let lost = pending_len - written.saturating_sub(prefix_len);
                self.drop_pending(&err, lost as u64);
            }
        }
        self.pending.clear();
        spare::give_back(&spare::WRITES, std::mem::take(&mut self.pending));
    }

    fn drop_pending(&mut self, err: &io::Error, bytes: u64) {
        if self.dropped == 0 {
            tracing::warn!(
                path = %self.path.display(),
                "failed to write log file: {}; dropping output until writing works again",
                reason(err)
            );
        }
        self.dropped += bytes;
        self.drop_reason = reason(err);
        self.pending.clear();
    }

    /// `.log.(k-1)` → `.log.k` … `.log` → `.log.1`, then reopen; `keep = 0` truncates.
    fn rotate(&mut self) {
        if self.spec.keep == 0 {
            self.truncate();
            return;
        }
        // Files beyond `keep` (a reload may have lowered it) go first.
        let mut k = self.spec.keep + 1;
        while std::fs::remove_file(rotated_path(&self.path, k)).is_ok() {
            k += 1;
        }
        for k in (1..self.spec.keep).rev() {
            let from = rotated_path(&self.path, k);
            if let Err(err) = std::fs::rename(&from, rotated_path(&self.path, k + 1)) {
                if err.kind() != io::ErrorKind::NotFound {
                    self.warn_rotate(&err);
                }
            }
        }
        match std::fs::rename(&self.path, rotated_path(&self.path, 1)) {
            Ok(()) => {}
            // Moved away by someone else: start a fresh file all the same.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                // Keep appending to the current file rather than lose output.
                self.warn_rotate(&err);
                return;
            }
        }
        self.file = Handle::Failed;
        self.size = 0;
        self.mid_line = false;
        match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Handle::Open(file);
            }
            // The next flush retries the open and counts what it has to drop.
            Err(err) => self.warn_rotate(&err),
        }
    }

    /// Writes what is queued to the file open now, then opens the path afresh
    /// (SIGUSR1): after `mv web.log web.log.1` new lines go to a new `web.log`, which is
    /// what logrotate's `create` mode expects. A file never opened stays unopened.
    pub(crate) fn reopen(&mut self) {
        if matches!(self.file, Handle::NotYet) {
            return;
        }
        self.flush();
        self.mid_line = false;
        self.size = 0;
        self.file = match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Handle::Open(file)
            }
            // The next flush retries the open and counts what it has to drop.
            Err(_) => Handle::Failed,
        };
    }

    fn truncate(&mut self) {
        if !matches!(self.file, Handle::Open(_)) {
            if let Ok(file) = open_append(&self.path) {
                self.file = Handle::Open(file);
            }
        }
        let Handle::Open(file) = &self.file else {
            return;
        };
        match file.set_len(0) {
            Ok(()) => {
                self.size = 0;
                self.mid_line = false;
            }
            Err(err) => self.warn_rotate(&err),
        }
    }

    fn warn_rotate(&mut self, err: &io::Error) {
        if !self.warned_rotate {
            self.warned_rotate = true;
            tracing::warn!(path = %self.path.display(), "failed to rotate log file: {}", reason(err));
        }
    }
}

/// `write_all` that reports how much was written before an error.
fn write_counted(file: &mut File, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match file.write(&buf[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (written, Err(err)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::logs::testutil::TempDir;

    impl Line for str {
        fn len(&self) -> usize {
            str::len(self)
        }

        fn write_to(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.as_bytes());
        }
    }

    impl Line for String {
        fn len(&self) -> usize {
            self.as_str().len()
        }

        fn write_to(&self, out: &mut Vec<u8>) {
            self.as_str().write_to(out);
        }
    }

    fn spec(max_size: u64, keep: u32) -> LogSpec {
        LogSpec {
            max_size,
            keep,
            forward: crate::model::LogForward::FileOnly,
        }
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = TempDir::new("rotation-keep");
        let path = dir.path().join("svc.log");
        let mut log = LogFile::new(path.clone(), spec(1000, 3)).unwrap();
        for i in 0..1000 {
            log.push(&format!("line {i:04} {}", "x".repeat(40)));
            log.flush();
        }
        for k in 1..=3 {
            let rotated = rotated_path(&path, k);
            let size = std::fs::metadata(&rotated).unwrap().len();
            assert!(
                size <= 1000,
                "{} is {size} bytes, over max_size",
                rotated.display()
            );
            assert!(
                size > 900,
                "{} is filled before rotating",
                rotated.display()
            );
        }
        assert!(
            !rotated_path(&path, 4).exists(),
            "only keep=3 rotated files"
        );
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with(&format!("line 0999 {}\n", "x".repeat(40))));
        let previous = std::fs::read_to_string(rotated_path(&path, 1)).unwrap();
        let last_of_previous = previous.lines().last().unwrap();
        let first_of_newest = newest.lines().next().unwrap();
        let num = |l: &str| l[5..9].parse::<u32>().unwrap();
        assert_eq!(
            num(last_of_previous) + 1,
            num(first_of_newest),
            "no line lost at rotation"
        );
    }

    #[test]
    fn lowering_keep_removes_the_extra_rotated_files() {
        let dir = TempDir::new("rotation-lower-keep");
        let path = dir.path().join("svc.log");
        let mut log = LogFile::new(path.clone(), spec(100, 4)).unwrap();
        for i in 0..100 {
            log.push(&format!("line {i:04} padding padding"));
        }
        log.flush();
        assert!(rotated_path(&path, 4).exists());
        log.set_spec(spec(100, 2));
        for i in 0..10 {
            log.push(&format!("line {i:04} padding padding"));
        }
        log.flush();
        assert!(rotated_path(&path, 2).exists());
        assert!(
            !rotated_path(&path, 3).exists(),
            "keep lowered to 2 by a reload"
        );
        assert!(
            !rotated_path(&path, 4).exists(),
            "keep lowered to 2 by a reload"
        );
    }

    #[test]
    fn keep_zero_truncates_instead_of_rotating() {
        let dir = TempDir::new("rotation-keep-zero");
        let path = dir.path().join("svc.log");
        let mut log = LogFile::new(path.clone(), spec(100, 0)).unwrap();
        for i in 0..50 {
            log.push(&format!("line {i:04} padding padding"));
            log.flush();
        }
        assert!(!rotated_path(&path, 1).exists());
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.len() <= 100);
        assert!(content.ends_with("line 0049 padding padding\n"));
    }

    #[test]
    fn a_symlink_at_the_log_path_is_refused() {
        let dir = TempDir::new("symlink");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "precious\n").unwrap();
        let path = dir.path().join("svc.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = LogFile::new(path.clone(), spec(100, 1)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn held_lines_wait_for_the_file_and_rotate_a_full_one_from_an_earlier_run_first() {
        let dir = TempDir::new("held");
        let path = dir.path().join("svc.log");
        std::fs::write(&path, format!("{}\n", "x".repeat(90))).unwrap();
        let mut log = LogFile::new(path.clone(), spec(100, 1)).unwrap();
        log.hold("held note");
        log.flush();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().len(),
            91,
            "held lines wait"
        );
        log.write_held();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "held note\n");
        assert_eq!(
            std::fs::read_to_string(rotated_path(&path, 1)).unwrap(),
            format!("{}\n", "x".repeat(90)),
            "the earlier run's file was rotated, not overfilled"
        );
    }

    #[test]
    fn a_new_log_file_is_created_with_mode_0640() {
        let dir = TempDir::new("mode");
        let path = dir.path().join("svc.log");
        let mut log = LogFile::new(path.clone(), spec(100, 1)).unwrap();
        log.push("first line");
        log.flush();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "no more than 0640, got {mode:o}");
    }
}
