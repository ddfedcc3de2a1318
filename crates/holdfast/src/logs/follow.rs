//! `logs -f`: following a log file as it grows, across rotation, driven by inotify (the
//! `notify` crate) rather than polling.
//!
//! Invariants:
//! - no line is lost at a rotation: the path is checked *before* the old file is read to
//!   its end (the writer never writes to a file after renaming it away), and a follower
//!   that fell behind by several rotations reads the rotated files in between, as long as
//!   they are kept;
//! - the log directory is watched, not the file, so a file that is renamed away or
//!   created later is noticed; events about other files are ignored;
//! - a truncated file (rotation with `keep = 0`) is read again from its start (best effort:
//!   a follower that notices the truncation only after the file grew past its old
//!   position cannot tell).

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::file::rotated_path;
use super::tail::{fill_from_rotated, tail_of};

/// A partial line longer than this is emitted as it is (the writer splits long lines
/// well below it; this only bounds memory for foreign files).
const MAX_PARTIAL: usize = 1024 * 1024;

/// Follows log files from the point where they were opened: one file (`logs -f web`)
/// or several (`logs -f`), with one watcher and on one thread whatever their number
/// (inotify instances are few: 128 per user by default).
pub struct Follower {
    readers: Vec<Reader>,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    /// Set by a [`Stopper`], which then wakes us through `wake`.
    stopped: Arc<AtomicBool>,
    wake: mpsc::Sender<notify::Result<notify::Event>>,
    // Dropping the watcher ends the event stream, so it lives as long as we do.
    _watcher: RecommendedWatcher,
}

/// Ends a [`Follower::run`] from another thread, even while no line comes (a reader
/// that went away must not keep a thread and a watch until the service writes again).
#[derive(Clone)]
pub struct Stopper {
    stopped: Arc<AtomicBool>,
    wake: mpsc::Sender<notify::Result<notify::Event>>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // An event without paths counts as ours, so `run` wakes up and sees the flag.
        let _ = self
            .wake
            .send(Ok(notify::Event::new(notify::EventKind::Other)));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Calls `on_line` for every line appended to `path` from now on, until it returns
/// `ControlFlow::Break` (or forever). See [`Follower`].
pub fn follow(path: &Path, on_line: impl FnMut(&str) -> ControlFlow<()>) -> io::Result<()> {
    Follower::open(path)?.run(on_line)
}

impl Follower {
    /// Starts following `path` at its current end. The file need not exist yet; its
    /// directory must.
    pub fn open(path: &Path) -> io::Result<Follower> {
        Self::open_all(&[path.to_owned()])
    }

    /// Starts following each of `paths` at its current end (see [`Follower::open`]).
    pub fn open_all(paths: &[PathBuf]) -> io::Result<Follower> {
        let (tx, events) = mpsc::channel();
        let wake = tx.clone();
        let mut watcher = notify::recommended_watcher(tx)
            .map_err(|err| io::Error::other(format!("failed to watch log files: {err}")))?;
        let mut watched: Vec<PathBuf> = Vec::new();
        let mut readers = Vec::new();
        for path in paths {
            let name = path.file_name().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot follow \"{}\": not a file path", path.display()),
                )
            })?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !watched.iter().any(|w| w == dir) {
                // Watch before opening: a line written in between shows up as an event.
                watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|err| {
                        io::Error::other(format!("failed to watch \"{}\": {err}", dir.display()))
                    })?;
                watched.push(dir.to_owned());
            }
            readers.push(Reader::open(dir.join(name))?);
        }
        Ok(Follower {
            readers,
            events,
            stopped: Arc::new(AtomicBool::new(false)),
            wake,
            _watcher: watcher,
        })
    }

    /// A handle that ends [`Follower::run`] from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stopped: Arc::clone(&self.stopped),
            wake: self.wake.clone(),
        }
    }

    /// The last `n` lines before the point where following starts (like [`super::tail`],
    /// but without a race against lines written after [`Follower::open`]); of the first
    /// file for a follower of several.
    pub fn backlog(&mut self, n: usize) -> io::Result<Vec<String>> {
        self.backlog_of(0, n)
    }

    /// How many files are followed.
    pub fn files(&self) -> usize {
        self.readers.len()
    }

    /// Like [`Follower::backlog`], of the `index`-th file given to [`Follower::open_all`].
    pub fn backlog_of(&mut self, index: usize, n: usize) -> io::Result<Vec<String>> {
        self.readers[index].backlog(n)
    }

    /// Calls `on_line` for each new line (without newline) until it returns `Break` or
    /// a [`Stopper`] stops it. Blocks between writes without waking up.
    pub fn run(self, mut on_line: impl FnMut(&str) -> ControlFlow<()>) -> io::Result<()> {
        self.run_all(|_, line| on_line(line))
    }

    /// Like [`Follower::run`] for several files: `on_line(index, line)`, with the index of
    /// the file in [`Follower::open_all`]'s list.
    pub fn run_all(
        mut self,
        mut on_line: impl FnMut(usize, &str) -> ControlFlow<()>,
    ) -> io::Result<()> {
        let mut dirty: Vec<bool> = vec![true; self.readers.len()];
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(());
            }
            for (index, reader) in self.readers.iter_mut().enumerate() {
                if !std::mem::take(&mut dirty[index]) {
                    continue;
                }
                if reader
                    .catch_up(&mut |line| on_line(index, line))?
                    .is_break()
                {
                    return Ok(());
                }
            }
            // Wait for an event about one of our files, then take all queued ones at once.
            loop {
                let event = self
                    .events
                    .recv()
                    .map_err(|_| io::Error::other("the file watcher stopped"))?;
                if self.mark(event, &mut dirty)? {
                    break;
                }
            }
            while let Ok(event) = self.events.try_recv() {
                self.mark(event, &mut dirty)?;
            }
        }
    }

    /// Marks the files `event` is about; says whether there was one.
    fn mark(&self, event: notify::Result<notify::Event>, dirty: &mut [bool]) -> io::Result<bool> {
        let event =
            event.map_err(|err| io::Error::other(format!("failed to watch log file: {err}")))?;
        let all = event.need_rescan() || event.paths.is_empty();
        let mut any = false;
        for (reader, dirty) in self.readers.iter().zip(dirty.iter_mut()) {
            if all || event.paths.contains(&reader.path) {
                *dirty = true;
                any = true;
            }
        }
        Ok(any)
    }
}

/// One followed file: where we are in it, across rotations.
struct Reader {
    /// The file path as the watcher reports it (directory as given, plus file name).
    path: PathBuf,
    /// The file being read and its identity; `None` while the path does not exist.
    file: Option<(File, FileId)>,
    /// While `file` is `None`: the last file written before the one to read next, if
    /// any (a service that has not printed yet has no file; by the time it appears, it
    /// may have been rotated already, and none of its lines may be skipped).
    before: Option<FileId>,
    pos: u64,
    partial: Vec<u8>,
}

impl Reader {
    fn open(path: PathBuf) -> io::Result<Reader> {
        // Before the path is opened: a file created after this look is one to follow.
        let before = match std::fs::metadata(rotated_path(&path, 1)) {
            Ok(meta) => Some(FileId::of(&meta)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let file = open_existing(&path)?;
        let pos = match &file {
            Some((file, _)) => file.metadata()?.len(),
            None => 0,
        };
        Ok(Reader {
            path,
            file,
            before,
            pos,
            partial: Vec::new(),
        })
    }

    fn backlog(&mut self, n: usize) -> io::Result<Vec<String>> {
        let lines = match &mut self.file {
            Some((file, _)) => tail_of(file, self.pos, n)?,
            None => Vec::new(),
        };
        fill_from_rotated(&self.path, lines, n)
    }

    /// Reads everything new, switching to a new file at the path after a rotation.
    fn catch_up(
        &mut self,
        on_line: &mut impl FnMut(&str) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        loop {
            // Stat first: whatever the old file holds by now is all it will ever hold.
            let current = match std::fs::metadata(&self.path) {
                Ok(meta) => Some(FileId::of(&meta)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                Err(err) => return Err(err),
            };
            if self.read_new(on_line)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
            let replaced = match (current, &self.file) {
                (Some(id), Some((_, ours))) => id != *ours,
                (Some(_), None) => true,
                (None, _) => false, // renamed away, the new file is not there yet
            };
            if !replaced {
                return Ok(ControlFlow::Continue(()));
            }
            if self.emit_partial(on_line).is_break() {
                return Ok(ControlFlow::Break(()));
            }
            let last = match &self.file {
                Some((_, ours)) => Some(*ours),
                None => self.before,
            };
            self.file = self.next_file(last)?;
            if self.file.is_none() {
                self.before = last;
            }
            self.pos = 0;
        }
    }

    /// The file written after `ours`: when the writer rotated more than once since we
    /// last looked, that is a rotated file (`<path>.k-1` if ours is now `<path>.k`), so
    /// no kept file is skipped.
    ///
    /// The writer may rotate while we look. Rotation renames from the oldest down
    /// (`.k` → `.k+1` before `.k-1` → `.k`, `.1` → `.2` before the path → `.1`), so our
    /// upward scan cannot miss our file (it only moves up), at most sees one gap, and if
    /// ours is still at `.k` after opening `.k-1`, that was the file right after ours.
    /// Without a file of ours (none was written before we started), every file there is
    /// newer: the oldest comes next.
    fn next_file(&self, ours: Option<FileId>) -> io::Result<Option<(File, FileId)>> {
        loop {
            let mut found = None;
            let mut oldest = None;
            let mut gap = false;
            let mut missing_in_a_row = 0;
            for k in 1.. {
                match std::fs::metadata(rotated_path(&self.path, k)) {
                    Ok(meta) if Some(FileId::of(&meta)) == ours => {
                        found = Some(k);
                        break;
                    }
                    Ok(_) => {
                        oldest = Some(k);
                        gap |= missing_in_a_row > 0;
                        missing_in_a_row = 0;
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        missing_in_a_row += 1;
                        if missing_in_a_row == 2 {
                            break;
                        }
                    }
                    Err(err) => return Err(err),
                }
            }
            match (found, oldest) {
                (Some(k), _) => {
                    let next = match k {
                        1 => self.path.clone(),
                        k => rotated_path(&self.path, k - 1),
                    };
                    let Some(opened) = open_existing(&next)? else {
                        continue; // moved meanwhile: look again
                    };
                    let unmoved = std::fs::metadata(rotated_path(&self.path, k))
                        .is_ok_and(|meta| Some(FileId::of(&meta)) == ours);
                    if unmoved {
                        return Ok(Some(opened));
                    }
                }
                // Caught in the middle of a rotation: look again.
                (None, _) if gap => {}
                // Ours is gone (removed beyond `keep`): every rotated file is newer.
                (None, Some(oldest)) => {
                    if let Some(opened) = open_existing(&rotated_path(&self.path, oldest))? {
                        return Ok(Some(opened));
                    }
                }
                (None, None) => return open_existing(&self.path),
            }
        }
    }

    /// Reads the current file from `pos` to its end, emitting complete lines.
    fn read_new(
        &mut self,
        on_line: &mut impl FnMut(&str) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        let Some((file, _)) = &mut self.file else {
            return Ok(ControlFlow::Continue(()));
        };
        if file.metadata()?.len() < self.pos {
            // Truncated in place: start over.
            self.pos = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return Ok(ControlFlow::Continue(())),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.pos += n as u64;
            let mut rest = &buf[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&rest[..nl]);
                rest = &rest[nl + 1..];
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if on_line(&line).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_PARTIAL {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if on_line(&line).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
    }

    /// The old file ended without a newline: its last line is complete all the same.
    fn emit_partial(
        &mut self,
        on_line: &mut impl FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.partial.is_empty() {
            return ControlFlow::Continue(());
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        on_line(&line)
    }
}

fn open_existing(path: &Path) -> io::Result<Option<(File, FileId)>> {
    match File::open(path) {
        Ok(file) => {
            let id = FileId::of(&file.metadata()?);
            Ok(Some((file, id)))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("failed to open log file \"{}\": {err}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Duration;

    use super::*;
    use crate::logs::file::LogFile;
    use crate::logs::testutil::TempDir;
    use crate::model::{LogForward, LogSpec};

    /// Follows `path` on a thread, sending lines back, until `count` lines were seen.
    fn follow_in_background(follower: Follower, count: usize) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = 0;
            follower
                .run(|line| {
                    seen += 1;
                    let _ = tx.send(line.to_owned());
                    if seen == count {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("following works");
        });
        rx
    }

    fn collect(rx: &mpsc::Receiver<String>, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        while lines.len() < count {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Timeout) => panic!("timed out; got {lines:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("follower ended; got {lines:?}"),
            }
        }
        lines
    }

    #[test]
    fn follow_sees_appended_lines() {
        let dir = TempDir::new("follow-append");
        let path = dir.path().join("svc.log");
        std::fs::write(&path, "old 1\nold 2\n").unwrap();
        let mut follower = Follower::open(&path).unwrap();
        assert_eq!(follower.backlog(1).unwrap(), vec!["old 2"]);
        let rx = follow_in_background(follower, 3);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"new 1\nnew").unwrap();
        file.write_all(b" 2\n").unwrap();
        file.write_all(b"new 3\n").unwrap();
        assert_eq!(collect(&rx, 3), vec!["new 1", "new 2", "new 3"]);
    }

    #[test]
    fn follow_continues_after_rotation_without_losing_lines() {
        let dir = TempDir::new("follow-rotation");
        let path = dir.path().join("svc.log");
        let spec = LogSpec {
            max_size: 300,
            keep: 1,
            forward: LogForward::FileOnly,
        };
        let mut log = LogFile::new(path.clone(), spec).unwrap();
        let rx = follow_in_background(Follower::open(&path).unwrap(), 100);

        // In step with the follower: each line is seen before the next is written.
        for i in 0..100 {
            let line = format!("line {i:03} of the service");
            log.push(&line);
            log.flush();
            assert_eq!(collect(&rx, 1), vec![line]);
        }
        assert!(rotated_path(&path, 1).exists(), "the writer rotated");
    }

    #[test]
    fn a_follower_behind_by_several_rotations_reads_the_rotated_files_in_order() {
        let dir = TempDir::new("follow-behind");
        let path = dir.path().join("svc.log");
        // Every rotated file is kept, so nothing can be lost however far behind we are.
        let spec = LogSpec {
            max_size: 300,
            keep: 100,
            forward: LogForward::FileOnly,
        };
        let mut log = LogFile::new(path.clone(), spec).unwrap();
        let rx = follow_in_background(Follower::open(&path).unwrap(), 500);

        let expected: Vec<String> = (0..500)
            .map(|i| format!("line {i:03} of the service"))
            .collect();
        for line in &expected {
            log.push(line);
            log.flush();
        }
        assert!(
            rotated_path(&path, 20).exists(),
            "the writer rotated many times"
        );
        assert_eq!(collect(&rx, 500), expected);
    }

    #[test]
    fn one_follower_follows_several_files_naming_each_line_s_file() {
        let dir = TempDir::new("follow-several");
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(&a, "old a\n").unwrap();
        let mut follower = Follower::open_all(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(follower.backlog_of(0, 5).unwrap(), vec!["old a"]);
        assert!(follower.backlog_of(1, 5).unwrap().is_empty());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            follower
                .run_all(|index, line| {
                    let _ = tx.send(format!("{index}:{line}"));
                    ControlFlow::Continue(())
                })
                .expect("following works");
        });
        std::fs::write(&b, "new b\n").unwrap();
        assert_eq!(collect(&rx, 1), vec!["1:new b"]);
        let mut file = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        file.write_all(b"new a\n").unwrap();
        assert_eq!(collect(&rx, 1), vec!["0:new a"]);
    }

    #[test]
    fn a_stopper_ends_a_follower_that_sees_no_lines() {
        let dir = TempDir::new("follow-stop");
        let path = dir.path().join("svc.log");
        let follower = Follower::open(&path).unwrap();
        let stopper = follower.stopper();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let result = follower.run(|_| ControlFlow::Continue(()));
            let _ = done_tx.send(result.is_ok());
        });
        stopper.stop();
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(true));
    }

    #[test]
    fn follow_waits_for_a_file_that_does_not_exist_yet() {
        let dir = TempDir::new("follow-create");
        let path = dir.path().join("svc.log");
        let mut follower = Follower::open(&path).unwrap();
        assert!(follower.backlog(10).unwrap().is_empty());
        let rx = follow_in_background(follower, 2);
        std::fs::write(&path, "first\nsecond\n").unwrap();
        assert_eq!(collect(&rx, 2), vec!["first", "second"]);
    }
}
