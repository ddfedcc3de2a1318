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
    pub(crate) fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(max_lines.min(1024)),
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    pub(crate) fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            let old = self
                .lines
                .pop_front()
                .expect("ring holds more than one line");
            self.bytes -= old.len();
        }
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

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let mut ring = Ring::new(3, 100);
        for i in 0..10 {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.last(2), vec!["line 8", "line 9"]);
        assert_eq!(ring.last(10), vec!["line 7", "line 8", "line 9"]);

        ring.push("x".repeat(95));
        assert_eq!(ring.last(10).len(), 1, "byte bound evicts older lines");
        ring.push("y".repeat(200));
        assert_eq!(
            ring.last(10),
            vec!["y".repeat(200)],
            "the newest line is always kept"
        );
    }
}
