//! The last lines of a log file, read backwards from the end so a huge file costs only
//! the bytes of the lines asked for.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::file::rotated_path;

/// Bytes read per step backwards.
const BLOCK: u64 = 64 * 1024;

/// The last `n` lines of `path` (oldest first, without newlines, invalid UTF-8 replaced).
/// If the file has fewer than `n` lines (it was just rotated), the rest comes from the end
/// of `<path>.1`. A missing file is not an error: a service that has not printed yet has
/// none.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let lines = match File::open(path) {
        Ok(mut file) => {
            let end = file.metadata()?.len();
            tail_of(&mut file, end, n)?
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err),
    };
    fill_from_rotated(path, lines, n)
}

/// Completes `lines` (the end of `path`) to `n` lines with the end of `<path>.1`, for a
/// file that was just rotated. A missing `<path>.1` is not an error.
pub(crate) fn fill_from_rotated(
    path: &Path,
    mut lines: Vec<String>,
    n: usize,
) -> io::Result<Vec<String>> {
    if lines.len() >= n {
        return Ok(lines);
    }
    match File::open(rotated_path(path, 1)) {
        Ok(mut older) => {
            let end = older.metadata()?.len();
            let mut earlier = tail_of(&mut older, end, n - lines.len())?;
            earlier.append(&mut lines);
            Ok(earlier)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(lines),
        Err(err) => Err(err),
    }
}

/// The last `n` lines of the first `end` bytes of `file`. A last line without newline
/// counts as a line.
pub(crate) fn tail_of(file: &mut File, end: u64, n: usize) -> io::Result<Vec<String>> {
    if n == 0 || end == 0 {
        return Ok(Vec::new());
    }
    // `buf` holds the bytes `start..end`, read backwards block by block until it
    // contains `n` newlines before the last line's end, or the start of the file.
    let mut buf: Vec<u8> = Vec::new();
    let mut start = end;
    let mut newlines = 0;
    while start > 0 {
        let step = BLOCK.min(start);
        start -= step;
        let mut block = vec![0; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        // A newline that ends the file terminates the last line, it does not start one.
        let counted = if buf.is_empty() {
            block.strip_suffix(b"\n").unwrap_or(&block)
        } else {
            &block[..]
        };
        newlines += counted.iter().filter(|&&b| b == b'\n').count();
        block.extend_from_slice(&buf);
        buf = block;
        if newlines >= n {
            break;
        }
    }
    let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<String> = text
        .rsplit(|&b| b == b'\n')
        .take(if start > 0 || newlines >= n {
            n
        } else {
            newlines + 1
        })
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines.reverse();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::logs::testutil::TempDir;

    fn numbered(range: std::ops::Range<usize>) -> String {
        range.fold(String::new(), |mut s, i| {
            writeln!(s, "line {i}").unwrap();
            s
        })
    }

    #[test]
    fn tail_returns_the_last_n_lines() {
        let dir = TempDir::new("tail");
        let path = dir.path().join("svc.log");
        std::fs::write(&path, numbered(0..100_000)).unwrap();
        assert_eq!(
            tail(&path, 3).unwrap(),
            vec!["line 99997", "line 99998", "line 99999"]
        );
        assert_eq!(tail(&path, 0).unwrap(), Vec::<String>::new());
        let many = tail(&path, 20_000).unwrap();
        assert_eq!(many.len(), 20_000, "spans several blocks");
        assert_eq!(many[0], "line 80000");
    }

    #[test]
    fn tail_keeps_a_last_line_without_newline_and_empty_lines() {
        let dir = TempDir::new("tail-partial");
        let path = dir.path().join("svc.log");
        std::fs::write(&path, "a\n\nb\npartial").unwrap();
        assert_eq!(tail(&path, 3).unwrap(), vec!["", "b", "partial"]);
        assert_eq!(tail(&path, 10).unwrap(), vec!["a", "", "b", "partial"]);
    }

    #[test]
    fn tail_of_a_short_file_also_reads_the_rotated_one() {
        let dir = TempDir::new("tail-rotated");
        let path = dir.path().join("svc.log");
        std::fs::write(rotated_path(&path, 1), numbered(0..10)).unwrap();
        std::fs::write(&path, numbered(10..12)).unwrap();
        assert_eq!(
            tail(&path, 4).unwrap(),
            vec!["line 8", "line 9", "line 10", "line 11"]
        );
        assert_eq!(tail(&path, 100).unwrap().len(), 12);
        std::fs::write(&path, "").unwrap();
        assert_eq!(tail(&path, 2).unwrap(), vec!["line 8", "line 9"]);
    }

    #[test]
    fn tail_of_a_file_not_created_yet_is_empty() {
        let dir = TempDir::new("tail-missing");
        let path = dir.path().join("svc.log");
        assert_eq!(tail(&path, 5).unwrap(), Vec::<String>::new());
        std::fs::write(rotated_path(&path, 1), numbered(0..3)).unwrap();
        assert_eq!(tail(&path, 2).unwrap(), vec!["line 1", "line 2"]);
    }
}
