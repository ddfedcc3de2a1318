//! Reading several services' logs as one stream ordered by time (`logs`, `logs a b`),
//! within a time window and/or as the last N lines overall.
//!
//! Invariants:
//! - memory is bounded by one line per service, whatever the size of the files: lines
//!   are merged as they are read, and "the last N" is found by counting first and then
//!   skipping, never by holding N lines;
//! - the files read are opened once, up front, and read only up to the length they had
//!   then, so a rotation or a busy writer meanwhile neither repeats nor cuts lines (a
//!   rotation *while* they are opened may hide one file: best effort, as for `tail`);
//! - a line's time is its stamp, whose fixed-width RFC 3339 form sorts as text, so no
//!   line is parsed (a line without a stamp takes the time of the line before it).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::file::rotated_path;
use super::line::MAX_LINE;

/// Length of the stamp that starts every line (`2026-11-25T12:00:00.123Z`).
pub const STAMP_LEN: usize = 24;
/// Longest line read; longer ones (not written by holdfast) are cut there.
const MAX_READ_LINE: u64 = (MAX_LINE + 1024) as u64;
/// Bytes read per step when scanning backwards.
const BLOCK: u64 = 64 * 1024;

/// Which lines to show: stamps compared as text, both bounds inclusive (like
/// journalctl's `--since`/`--until`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Window {
    fn too_early(&self, stamp: &str) -> bool {
        self.since.as_deref().is_some_and(|since| stamp < since)
    }

    fn too_late(&self, stamp: &str) -> bool {
        self.until.as_deref().is_some_and(|until| stamp > until)
    }

    /// Whether a line of this time is shown.
    pub fn contains(&self, stamp: &str) -> bool {
        !self.too_early(stamp) && !self.too_late(stamp)
    }
}

/// The time of `line`: its stamp, or `None` for a line that does not start with one.
pub fn stamp_of(line: &str) -> Option<&str> {
    let stamp = line.get(..STAMP_LEN)?;
    let looks_right = stamp.as_bytes()[STAMP_LEN - 1] == b'Z' && stamp.as_bytes()[10] == b'T';
    looks_right.then_some(stamp)
}

/// One service's log files, opened at once: rotated ones oldest first, then the current
/// one, each with the length it had when opened.
struct Snapshot {
    files: Vec<(File, u64)>,
}

impl Snapshot {
    fn open(path: &Path) -> io::Result<Snapshot> {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut missing_in_a_row = 0;
        for k in 1.. {
            let rotated = rotated_path(path, k);
            if rotated.exists() {
                paths.push(rotated);
                missing_in_a_row = 0;
            } else {
                missing_in_a_row += 1;
                // A gap of one is a rotation in progress; two is the end.
                if missing_in_a_row == 2 {
                    break;
                }
            }
        }
        paths.reverse();
        paths.push(path.to_owned());
        let mut files: Vec<(File, u64)> = Vec::new();
        let mut seen = Vec::new();
        for path in paths {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("failed to open log file \"{}\": {err}", path.display()),
                    ));
                }
            };
            let meta = file.metadata()?;
            // Rotated while we opened: the same file under two names is read once.
            if seen.contains(&(meta.dev(), meta.ino())) {
                continue;
            }
            seen.push((meta.dev(), meta.ino()));
            files.push((file, meta.len()));
        }
        Ok(Snapshot { files })
    }

    /// Where the last `n` lines begin: (file index, offset).
    fn start_of_last(&mut self, n: usize) -> io::Result<(usize, u64)> {
        let mut wanted = n;
        for index in (0..self.files.len()).rev() {
            let (file, end) = &mut self.files[index];
            match start_of_last_in(file, *end, wanted)? {
                Ok(offset) => return Ok((index, offset)),
                Err(lines) => wanted -= lines,
            }
        }
        Ok((0, 0))
    }
}

/// The offset where the last `n` lines of the first `end` bytes of `file` begin, or
/// `Err(lines)` with the number of lines when it has fewer than `n`.
fn start_of_last_in(file: &mut File, end: u64, n: usize) -> io::Result<Result<u64, usize>> {
    if n == 0 {
        return Ok(Ok(end));
    }
    let mut newlines = 0;
    let mut pos = end;
    let mut block = vec![0; BLOCK as usize];
    while pos > 0 {
        let step = BLOCK.min(pos);
        let start = pos - step;
        let buf = &mut block[..step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        for (i, &byte) in buf.iter().enumerate().rev() {
            let at = start + i as u64;
            // The newline that ends the last line does not start one.
            if byte != b'\n' || at + 1 == end {
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(Ok(at + 1));
            }
        }
        pos = start;
    }
    Ok(Err(if end == 0 { 0 } else { newlines + 1 }))
}

/// Reads one service's lines forward from a position of its snapshot.
struct Cursor {
    files: Vec<(BufReader<File>, u64)>,
    index: usize,
    /// The time of the last line read, for lines without a stamp.
    stamp: String,
}

impl Cursor {
    fn new(snapshot: &Snapshot, (index, offset): (usize, u64)) -> io::Result<Cursor> {
        let mut files = Vec::new();
        for (i, (file, end)) in snapshot.files.iter().enumerate() {
            let mut file = file.try_clone()?;
            let at = if i == index { offset } else { 0 };
            file.seek(SeekFrom::Start(at))?;
            files.push((BufReader::new(file), end - at.min(*end)));
        }
        Ok(Cursor {
            files,
            index,
            stamp: String::new(),
        })
    }

    /// The next line and its time, `None` at the end of the snapshot.
    fn next_line(&mut self) -> io::Result<Option<(String, String)>> {
        while let Some((reader, left)) = self.files.get_mut(self.index) {
            if *left == 0 {
                self.index += 1;
                continue;
            }
            let mut bytes = Vec::new();
            let n = reader
                .by_ref()
                .take((*left).min(MAX_READ_LINE))
                .read_until(b'\n', &mut bytes)?;
            if n == 0 {
                // Shorter than when opened (truncated): nothing more in this file.
                *left = 0;
                continue;
            }
            *left -= n as u64;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            let line = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(stamp) = stamp_of(&line) {
                self.stamp = stamp.to_owned();
            }
            return Ok(Some((self.stamp.clone(), line)));
        }
        Ok(None)
    }
}

/// Merges the services' cursors by time; a tie goes to the service listed first.
struct Merge {
    cursors: Vec<Cursor>,
    heads: Vec<Option<(String, String)>>,
}

impl Merge {
    fn new(mut cursors: Vec<Cursor>) -> io::Result<Merge> {
        let heads = cursors
            .iter_mut()
            .map(Cursor::next_line)
            .collect::<io::Result<_>>()?;
        Ok(Merge { cursors, heads })
    }

    /// The earliest line left: (source index, stamp, line).
    fn next_line(&mut self) -> io::Result<Option<(usize, String, String)>> {
        let earliest = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, head)| head.as_ref().map(|(stamp, _)| (i, stamp)))
            .min_by(|(i, a), (j, b)| a.cmp(b).then(i.cmp(j)))
            .map(|(i, _)| i);
        let Some(i) = earliest else {
            return Ok(None);
        };
        let next = self.cursors[i].next_line()?;
        let (stamp, line) = std::mem::replace(&mut self.heads[i], next).expect("a head");
        Ok(Some((i, stamp, line)))
    }
}

/// Calls `emit(source index, line)` for the lines of `paths` (merged by time) that fall
/// in `window`, only the last `last` of them when given, until `emit` breaks.
/// A service without a log file yet has no lines.
pub fn read(
    paths: &[PathBuf],
    window: &Window,
    last: Option<usize>,
    mut emit: impl FnMut(usize, &str) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut snapshots = paths
        .iter()
        .map(|path| Snapshot::open(path))
        .collect::<io::Result<Vec<_>>>()?;
    // Without an upper bound, a service's last `n` shown lines are among its last `n`
    // lines, so nothing before them needs reading.
    let starts = match (last, &window.until) {
        (Some(n), None) => snapshots
            .iter_mut()
            .map(|s| s.start_of_last(n))
            .collect::<io::Result<Vec<_>>>()?,
        _ => vec![(0, 0); snapshots.len()],
    };
    let merge = |snapshots: &[Snapshot]| -> io::Result<Merge> {
        let cursors = snapshots
            .iter()
            .zip(&starts)
            .map(|(snapshot, &start)| Cursor::new(snapshot, start))
            .collect::<io::Result<Vec<_>>>()?;
        Merge::new(cursors)
    };
    let mut skip = match last {
        Some(n) => count(merge(&snapshots)?, window)?.saturating_sub(n),
        None => 0,
    };
    let mut lines = merge(&snapshots)?;
    while let Some((source, stamp, line)) = lines.next_line()? {
        if window.too_late(&stamp) {
            break;
        }
        if window.too_early(&stamp) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if emit(source, &line).is_break() {
            break;
        }
    }
    Ok(())
}

/// How many merged lines fall in `window`.
fn count(mut lines: Merge, window: &Window) -> io::Result<usize> {
    let mut n = 0;
    while let Some((_, stamp, _)) = lines.next_line()? {
        if window.too_late(&stamp) {
            break;
        }
        n += usize::from(!window.too_early(&stamp));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testutil::TempDir;

    fn stamped(second: u32, text: &str) -> String {
        format!("2026-11-25T12:00:{second:02}.000Z stdout   {text}\n")
    }

    fn collect(paths: &[PathBuf], window: &Window, last: Option<usize>) -> Vec<(usize, String)> {
        let mut lines = Vec::new();
        read(paths, window, last, |source, line| {
            lines.push((source, line[STAMP_LEN + 10..].to_owned()));
            ControlFlow::Continue(())
        })
        .unwrap();
        lines
    }

    fn two_services(dir: &TempDir) -> Vec<PathBuf> {
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(
            rotated_path(&a, 1),
            [stamped(1, "a1"), stamped(3, "a3")].concat(),
        )
        .unwrap();
        std::fs::write(&a, [stamped(5, "a5"), stamped(6, "a6")].concat()).unwrap();
        std::fs::write(
            &b,
            [stamped(2, "b2"), stamped(4, "b4"), stamped(6, "b6")].concat(),
        )
        .unwrap();
        vec![a, b]
    }

    fn texts(lines: &[(usize, String)]) -> Vec<&str> {
        lines.iter().map(|(_, text)| text.as_str()).collect()
    }

    #[test]
    fn services_are_merged_by_time_across_rotated_files() {
        let dir = TempDir::new("read-merge");
        let lines = collect(&two_services(&dir), &Window::default(), None);
        assert_eq!(
            texts(&lines),
            ["a1", "b2", "a3", "b4", "a5", "a6", "b6"],
            "a tie goes to the service listed first"
        );
        assert_eq!(lines[1].0, 1, "each line names its source");
    }

    #[test]
    fn the_last_n_lines_are_counted_over_all_services() {
        let dir = TempDir::new("read-last");
        let paths = two_services(&dir);
        let lines = collect(&paths, &Window::default(), Some(3));
        assert_eq!(texts(&lines), ["a5", "a6", "b6"]);
        let lines = collect(&paths, &Window::default(), Some(6));
        assert_eq!(texts(&lines), ["b2", "a3", "b4", "a5", "a6", "b6"]);
        let lines = collect(&paths, &Window::default(), Some(100));
        assert_eq!(lines.len(), 7, "fewer lines than asked is all of them");
        assert!(collect(&paths, &Window::default(), Some(0)).is_empty());
    }

    #[test]
    fn since_and_until_are_inclusive_and_combine_with_last() {
        let dir = TempDir::new("read-window");
        let paths = two_services(&dir);
        let window = Window {
            since: Some("2026-11-25T12:00:02.000Z".into()),
            until: Some("2026-11-25T12:00:05.000Z".into()),
        };
        assert_eq!(
            texts(&collect(&paths, &window, None)),
            ["b2", "a3", "b4", "a5"]
        );
        assert_eq!(texts(&collect(&paths, &window, Some(2))), ["b4", "a5"]);
        let since = Window {
            since: Some("2026-11-25T12:00:05.500Z".into()),
            until: None,
        };
        assert_eq!(texts(&collect(&paths, &since, Some(5))), ["a6", "b6"]);
    }

    #[test]
    fn a_missing_log_file_has_no_lines_and_a_line_without_stamp_keeps_its_place() {
        let dir = TempDir::new("read-odd");
        let a = dir.path().join("a.log");
        std::fs::write(
            &a,
            [
                stamped(1, "a1"),
                "  continued\n".to_owned(),
                stamped(3, "a3"),
            ]
            .concat(),
        )
        .unwrap();
        let b = dir.path().join("b.log");
        std::fs::write(&b, stamped(2, "b2")).unwrap();
        let mut lines = Vec::new();
        let paths = [a, dir.path().join("none.log"), b];
        read(&paths, &Window::default(), None, |source, line| {
            lines.push((source, line.to_owned()));
            ControlFlow::Continue(())
        })
        .unwrap();
        let sources: Vec<usize> = lines.iter().map(|(s, _)| *s).collect();
        assert_eq!(sources, [0, 0, 2, 0]);
        assert_eq!(lines[1].1, "  continued");
    }

    #[test]
    fn the_start_of_the_last_lines_is_found_backwards_across_blocks() {
        let dir = TempDir::new("read-start");
        let path = dir.path().join("a.log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut file = File::open(&path).unwrap();
        let end = text.len() as u64;
        let offset = start_of_last_in(&mut file, end, 20_000).unwrap().unwrap();
        assert!(text[offset as usize..].starts_with("line 30000\n"));
        assert_eq!(
            start_of_last_in(&mut file, end, 60_000).unwrap(),
            Err(50_000)
        );
        std::fs::write(&path, "a\nb").unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(start_of_last_in(&mut file, 3, 1).unwrap(), Ok(2));
        assert_eq!(start_of_last_in(&mut file, 3, 5).unwrap(), Err(2));
    }
}
