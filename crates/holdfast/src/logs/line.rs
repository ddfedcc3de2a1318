//! Splitting a byte stream into lines: pure, no I/O.
//!
//! Invariant: at most [`MAX_LINE`] bytes are held for a partial line. A longer line is
//! emitted in pieces of at most `MAX_LINE` bytes, cut before a UTF-8 sequence when one
//! straddles the limit, so a lossily decoded piece stays readable. Every emitted piece
//! says whether it ended at a newline ([`Ending`]).

use super::record::Ending;

/// Longest line written as one record; longer ones are split.
pub const MAX_LINE: usize = 16 * 1024;

/// Holds the partial line of one stream between reads.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `chunk`, calling `emit` for every complete line (without `\n` or `\r\n`) and
    /// for every `MAX_LINE` piece of an overlong one ([`Ending::Unfinished`]).
    pub(crate) fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8], Ending)) {
        while !chunk.is_empty() {
            let room = MAX_LINE - self.partial.len();
            // One byte past the room: a newline right at the limit still ends a line of
            // exactly MAX_LINE bytes instead of producing an extra empty one.
            let window = &chunk[..chunk.len().min(room + 1)];
            if let Some(nl) = memchr::memchr(b'\n', window) {
                if self.partial.is_empty() {
                    emit(trim_cr(&chunk[..nl]), Ending::Newline);
                } else {
                    self.partial.extend_from_slice(&chunk[..nl]);
                    emit(trim_cr(&self.partial), Ending::Newline);
                    self.partial.clear();
                }
                chunk = &chunk[nl + 1..];
            } else if chunk.len() <= room {
                // The whole rest fits: hold it until its newline.
                self.partial.extend_from_slice(chunk);
                return;
            } else {
                // The line is longer than MAX_LINE: emit a piece.
                self.partial.extend_from_slice(&chunk[..room]);
                chunk = &chunk[room..];
                let cut = utf8_cut(&self.partial);
                emit(&self.partial[..cut], Ending::Unfinished);
                self.partial.drain(..cut);
            }
        }
    }

    /// Emits the held partial line, if any, as [`Ending::Unfinished`]: at EOF, at the end
    /// of a run, or when its writer went quiet.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8], Ending)) {
        if !self.partial.is_empty() {
            emit(&self.partial, Ending::Unfinished);
            self.partial.clear();
        }
    }

    /// Takes the held partial line, unwritten (it goes on in another image of holdfast,
    /// see `Capture::freeze`).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }

    /// Whether a partial line is held, waiting for its newline.
    pub(crate) fn is_pending(&self) -> bool {
        !self.partial.is_empty()
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where to cut a full buffer: before a multi-byte UTF-8 sequence that is incomplete at
/// the end, or at the end if there is none (or the bytes are not UTF-8 anyway).
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back for the lead byte
        }
        let needed = match b {
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        split_with_endings(chunks)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    fn split_with_endings(chunks: &[&[u8]]) -> Vec<(Vec<u8>, Ending)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter.push(chunk, |l, e| out.push((l.to_vec(), e)));
        }
        splitter.finish(|l, e| out.push((l.to_vec(), e)));
        out
    }

    #[test]
    fn pieces_without_their_newline_are_unfinished() {
        let mut input = vec![b'x'; MAX_LINE + 3];
        input.extend_from_slice(b"\nlast");
        let endings: Vec<(usize, Ending)> = split_with_endings(&[&input])
            .into_iter()
            .map(|(l, e)| (l.len(), e))
            .collect();
        assert_eq!(
            endings,
            vec![
                (MAX_LINE, Ending::Unfinished),
                (3, Ending::Newline),
                (4, Ending::Unfinished)
            ]
        );
    }

    #[test]
    fn only_a_held_partial_line_is_pending() {
        let mut splitter = LineSplitter::default();
        splitter.push(b"done\n", |_, _| {});
        assert!(!splitter.is_pending());
        splitter.push(b"FATAL: x", |_, _| {});
        assert!(splitter.is_pending());
        splitter.finish(|_, _| {});
        assert!(!splitter.is_pending());
    }

    #[test]
    fn a_partial_line_is_held_until_its_newline() {
        let lines = split(&[b"hel", b"lo\nwor", b"ld\r\n", b"\n"]);
        assert_eq!(
            lines,
            vec![b"hello".to_vec(), b"world".to_vec(), b"".to_vec()]
        );
    }

    #[test]
    fn a_partial_line_is_emitted_at_eof() {
        assert_eq!(
            split(&[b"a\nno newline"]),
            vec![b"a".to_vec(), b"no newline".to_vec()]
        );
    }

    #[test]
    fn overlong_lines_are_split_at_max_line() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        // Fed in odd-sized chunks to cross every boundary.
        let chunks: Vec<&[u8]> = input.chunks(1000).collect();
        let lines = split(&chunks);
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_LINE, MAX_LINE, 10, 4]);
        assert_eq!(
            lines.concat().len(),
            long.len() + 4,
            "no byte lost or added"
        );
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_stays_one_line() {
        let mut input = vec![b'x'; MAX_LINE];
        input.extend_from_slice(b"\n");
        let chunks: Vec<&[u8]> = input.chunks(MAX_LINE).collect();
        let sizes: Vec<usize> = split(&chunks).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_LINE]);
    }

    #[test]
    fn a_split_never_cuts_a_utf8_character() {
        let mut input = vec![b'x'; MAX_LINE - 1];
        input.extend_from_slice("é".as_bytes());
        input.push(b'\n');
        let lines = split(&[&input]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "é".as_bytes());
    }
}
