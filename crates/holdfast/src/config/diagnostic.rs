//! Config errors as miette diagnostics.
//!
//! One [`ConfigError::Invalid`] carries every [`Problem`] found in a file as related
//! diagnostics, sorted by position, so the user fixes them all in one round. Each problem
//! has a message (what is wrong, naming the key), a label under the offending snippet and,
//! whenever we can say how to fix it, a help hint.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

/// Width of [`ConfigError::render_plain`], fixed so output is stable across terminals.
const PLAIN_WIDTH: usize = 100;

/// Why a config could not be turned into a [`Plan`](crate::model::Plan).
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("failed to read config file {path:?}: {error}")]
    #[diagnostic(help("check that the file exists and is readable by this user"))]
    Read {
        path: PathBuf,
        // Not `#[source]`: the message already includes it and miette would print it twice.
        error: std::io::Error,
    },
    /// The file was read but has problems; all of them are in `problems`.
    #[error("invalid config {origin}: {}", count(problems.len()))]
    Invalid {
        origin: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[related]
        problems: Vec<Problem>,
    },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

impl ConfigError {
    /// Builds the error for `problems` found in `src`, sorted by where they occur.
    pub(crate) fn invalid(origin: &str, src: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| p.span.map_or(0, |s| s.offset()));
        let src: Arc<str> = Arc::from(src);
        Self::Invalid {
            origin: origin.to_owned(),
            src: NamedSource::new(origin, src),
            problems,
        }
    }

    /// Every problem found; empty for [`ConfigError::Read`].
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }

    /// The full report as deterministic text: no colour, unicode box drawing, 100
    /// columns. Used in `reload` replies and snapshot tests.
    pub fn render_plain(&self) -> String {
        self.render(GraphicalTheme::unicode_nocolor(), PLAIN_WIDTH)
    }

    /// The full report for a terminal, in colour when `colour` is set.
    pub fn render_terminal(&self, colour: bool) -> String {
        let theme = if colour {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        self.render(theme, PLAIN_WIDTH)
    }

    fn render(&self, theme: GraphicalTheme, width: usize) -> String {
        let mut out = String::new();
        GraphicalReportHandler::new_themed(theme)
            .with_width(width)
            .with_links(false)
            .render_report(&mut out, self)
            .expect("rendering into a String cannot fail");
        // miette pads some lines ("Error: ", empty source lines); trailing blanks only
        // make replies and snapshots noisy.
        let mut trimmed = String::with_capacity(out.len());
        for line in out.lines() {
            trimmed.push_str(line.trim_end());
            trimmed.push('\n');
        }
        trimmed
    }
}

/// One thing wrong with a config, pointing at the offending snippet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct Problem {
    message: String,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}

impl Problem {
    pub(crate) fn new(
        message: impl Into<String>,
        span: Range<usize>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            span: Some(span.into()),
            label: label.into(),
            help: None,
        }
    }

    /// A problem of the file as a whole (its owner or mode), with no snippet to point at.
    pub(crate) fn unplaced(message: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span: None,
            label: label.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// What is wrong, naming the key or table.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The text shown under the offending snippet.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// How to fix it, when we know.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// Byte range of the offending snippet in the source.
    pub fn span(&self) -> Option<Range<usize>> {
        self.span.map(|s| s.offset()..s.offset() + s.len())
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys and names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word` if it is within edit distance 2 (ties: first wins).
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean "x"? valid keys: a, b, c` (the first part only when something is close).
pub(crate) fn unknown_key_help(key: &str, valid: &[&str]) -> String {
    let list = Listing(valid);
    match closest(key, valid.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? valid keys here: {list}"),
        None if valid.is_empty() => "this table takes no keys".to_owned(),
        None => format!("valid keys here: {list}"),
    }
}

/// `did you mean "x"? {heading}: a, b, c` for a value that must be one of `valid` (the
/// first part only when something is close).
pub(crate) fn choice_help(word: &str, valid: &[&str], heading: &str) -> String {
    let list = Listing(valid);
    match closest(word, valid.iter().copied()) {
        Some(best) => format!("did you mean \"{best}\"? {heading}: {list}"),
        None => format!("{heading}: {list}"),
    }
}

struct Listing<'a>(&'a [&'a str]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("restart", "restart"), 0);
        assert_eq!(edit_distance("restat", "restart"), 1);
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("burts", "burst"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_only_suggests_within_distance_two() {
        let keys = ["restart", "restart_sec", "start_secs"];
        assert_eq!(closest("restat", keys), Some("restart"));
        assert_eq!(closest("restart_secs", keys), Some("restart_sec"));
        assert_eq!(closest("whatever", keys), None);
    }

    #[test]
    fn unknown_key_help_lists_valid_keys_and_the_closest_one() {
        assert_eq!(
            unknown_key_help("burts", &["interval", "burst"]),
            "did you mean `burst`? valid keys here: interval, burst"
        );
        assert_eq!(
            unknown_key_help("zzz", &["interval", "burst"]),
            "valid keys here: interval, burst"
        );
    }
}
