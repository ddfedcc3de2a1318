//! The line format of captured logs: `<UTC RFC 3339 millis> <tag padded to 8> <text>`.
//!
//! The tag is fixed-width so columns line up and `grep ' stderr '` finds exactly one
//! stream.
//!
//! A record whose text did not end with a newline in the service's output ends with
//! [`NO_NEWLINE`]: a piece of a line longer than [`super::MAX_LINE`], or an unfinished
//! line written out because its run ended or its writer went quiet.

use std::borrow::Cow;
use std::time::SystemTime;

/// Where a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// holdfast's own notes about the service (`started pid 42`, `dropped N bytes …`).
    Holdfast,
}

impl Stream {
    /// The tag as written in the file, always 8 bytes so that columns line up.
    pub fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout  ",
            Stream::Stderr => "stderr  ",
            Stream::Holdfast => "holdfast",
        }
    }
}

#[cfg(test)]
pub(crate) const TAG_WIDTH: usize = 8;

/// Appended to a record whose text did not end with a newline, so that a reader can tell
/// `printf 'FATAL: x'` from `echo 'FATAL: x'`.
pub const NO_NEWLINE: &str = " [no newline]";

/// The stream and the text of a formatted line (its `[no newline]` mark taken off), or
/// `None` for a line not in the format.
pub fn text_of(line: &str) -> Option<(Stream, &str)> {
    let (_stamp, rest) = line.split_once(' ')?;
    let tag = rest.get(..Stream::Stdout.tag().len())?;
    let stream = [Stream::Stdout, Stream::Stderr, Stream::Holdfast]
        .into_iter()
        .find(|s| s.tag() == tag)?;
    let text = rest.get(tag.len() + 1..).unwrap_or_default();
    Some((stream, text.strip_suffix(NO_NEWLINE).unwrap_or(text)))
}

/// How a record's text ended in the stream it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// At a newline (holdfast's own notes always do).
    Newline,
    /// Without one; the record is marked with [`NO_NEWLINE`].
    Unfinished,
}

/// A timestamp formatted once and shared by all lines read in the same chunk.
pub(crate) struct Stamp(String);

impl Stamp {
    pub(crate) fn now() -> Self {
        Self::at(SystemTime::now())
    }

    pub(crate) fn at(time: SystemTime) -> Self {
        Stamp(humantime::format_rfc3339_millis(time).to_string())
    }

    /// The start of every record of `stream` with this stamp, built once for all of them.
    pub(crate) fn prefix(&self, stream: Stream) -> Prefix {
        Prefix(format!("{} {} ", self.0, stream.tag()))
    }
}

/// `<stamp> <tag> `: the start of a record, shared by the lines of one read.
pub(crate) struct Prefix(String);

/// One record before formatting: its text checked for UTF-8 once, so that its length is
/// known before it is written (rotation needs it) and it can be written to several places
/// without allocating. Invalid UTF-8 is replaced (lossy) so the file stays valid UTF-8 for
/// every reader.
pub(crate) struct Record<'a> {
    prefix: &'a Prefix,
    /// Borrowed unless the text had to be repaired.
    text: Cow<'a, str>,
    ending: Ending,
}

impl<'a> Record<'a> {
    pub(crate) fn new(prefix: &'a Prefix, text: &'a [u8], ending: Ending) -> Self {
        Record {
            prefix,
            // `from_utf8` first: its ASCII fast path is several times faster than the
            // lossy decoder on the valid text that nearly every line is.
            text: match std::str::from_utf8(text) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(text),
            },
            ending,
        }
    }

    /// Length of the formatted line without its newline.
    pub(crate) fn len(&self) -> usize {
        self.parts().iter().map(|part| part.len()).sum()
    }

    /// Appends the formatted line, without its newline.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        for part in self.parts() {
            out.extend_from_slice(part.as_bytes());
        }
    }

    /// Appends the formatted line, without its newline.
    pub(crate) fn push_to(&self, out: &mut String) {
        for part in self.parts() {
            out.push_str(part);
        }
    }

    /// The formatted line, in pieces.
    fn parts(&self) -> [&str; 3] {
        let marker = match self.ending {
            Ending::Newline => "",
            Ending::Unfinished => NO_NEWLINE,
        };
        [&self.prefix.0, &self.text, marker]
    }
}

/// Formats one line without its trailing newline (see [`Record`]).
#[cfg(test)]
pub(crate) fn format(stamp: &Stamp, stream: Stream, text: &[u8], ending: Ending) -> String {
    let prefix = stamp.prefix(stream);
    let record = Record::new(&prefix, text, ending);
    let mut line = String::with_capacity(record.len());
    record.push_to(&mut line);
    line
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn lines_carry_utc_millis_and_a_fixed_width_tag() {
        let stamp = Stamp::at(UNIX_EPOCH + Duration::from_millis(1_795_000_000_123));
        assert_eq!(
            format(&stamp, Stream::Stdout, b"hello", Ending::Newline),
            "2026-11-18T11:06:40.123Z stdout   hello"
        );
        assert_eq!(
            format(&stamp, Stream::Holdfast, b"started pid 42", Ending::Newline),
            "2026-11-18T11:06:40.123Z holdfast started pid 42"
        );
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Holdfast] {
            assert_eq!(stream.tag().len(), TAG_WIDTH, "tags are fixed-width");
        }
    }

    #[test]
    fn the_text_of_a_formatted_line_is_found_again() {
        let stamp = Stamp::at(UNIX_EPOCH);
        let line = format(&stamp, Stream::Stderr, b"panic: boom", Ending::Unfinished);
        assert_eq!(text_of(&line), Some((Stream::Stderr, "panic: boom")));
        let note = format(&stamp, Stream::Holdfast, b"exited 2", Ending::Newline);
        assert_eq!(text_of(&note), Some((Stream::Holdfast, "exited 2")));
        assert_eq!(text_of("not a record"), None);
    }

    #[test]
    fn a_record_without_its_newline_is_marked() {
        let stamp = Stamp::at(UNIX_EPOCH);
        assert!(
            format(&stamp, Stream::Stdout, b"FATAL: x", Ending::Unfinished)
                .ends_with("stdout   FATAL: x [no newline]")
        );
    }

    #[test]
    fn invalid_utf8_is_written_lossily() {
        let stamp = Stamp::at(UNIX_EPOCH);
        assert!(
            format(&stamp, Stream::Stderr, b"a\xffb", Ending::Newline)
                .ends_with("stderr   a\u{fffd}b")
        );
    }
}
