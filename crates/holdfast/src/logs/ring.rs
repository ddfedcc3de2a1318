//! The last lines of a service's output, kept in memory for crash and quarantine reports.
//!
//! Invariant: at most `max_lines` lines and `max_bytes` bytes are held (the newest line
//! is always kept, even if it alone exceeds `max_bytes`, which [`super::MAX_LINE`] bounds).

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    /// An empty ring: nothing is allocated until the first line (most services of a large
    /// set never print).
    pub(crate) fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// Keeps the line that `write` puts in the (empty) buffer it is given. Once the ring
    /// is full, that is the oldest line's buffer: a busy stream costs a copy per line,
    /// not an allocation.
    pub(crate) fn push(&mut self, write: impl FnOnce(&mut String)) {
        let mut line = if self.lines.len() >= self.max_lines {
            self.pop_oldest()
        } else {
            String::new()
        };
        line.clear();
        write(&mut line);
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > 1 && self.bytes > self.max_bytes {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> String {
        let old = self
            .lines
            .pop_front()
            .expect("only called on a ring that holds lines");
        self.bytes -= old.len();
        old
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn last(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Ring {
        fn push_text(&mut self, text: &str) {
            self.push(|line| line.push_str(text));
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let mut ring = Ring::new(3, 100);
        for i in 0..10 {
            ring.push_text(&format!("line {i}"));
        }
        assert_eq!(ring.last(2), vec!["line 8", "line 9"]);
        assert_eq!(ring.last(10), vec!["line 7", "line 8", "line 9"]);

        ring.push_text(&"x".repeat(95));
        assert_eq!(ring.last(10).len(), 1, "byte bound evicts older lines");
        ring.push_text(&"y".repeat(200));
        assert_eq!(
            ring.last(10),
            vec!["y".repeat(200)],
            "the newest line is always kept"
        );
    }
}
