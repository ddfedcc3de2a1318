//! holdfast's own log: where it goes (stderr or the journal) and in which format.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;

use super::journald::JournaldLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines on stderr look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One sentence a line (colored on a terminal).
    #[default]
    Human,
    /// One JSON object a line: timestamp, level, fields (message included), target.
    Json,
}

/// Where holdfast's own log goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// The journal when stderr is connected to it (`JOURNAL_STREAM`, as systemd sets
    /// it for a unit), stderr otherwise.
    #[default]
    Auto,
    Stderr,
    /// Native journal entries with structured fields (`HOLDFAST_SERVICE=`, ...).
    Journald,
}

/// The journal entries' field prefix: `service` becomes `HOLDFAST_SERVICE`.
const FIELD_PREFIX: &str = "HOLDFAST";

/// Sets up holdfast's log; the level comes from `HOLDFAST_LOG` (default `info`).
pub fn init(format: LogFormat, target: LogTarget) {
    let journald = match target {
        LogTarget::Stderr => None,
        LogTarget::Auto if !stderr_is_journal() => None,
        LogTarget::Auto | LogTarget::Journald => match JournaldLayer::new(FIELD_PREFIX, "holdfast")
        {
            Ok(layer) => Some(layer),
            Err(e) => {
                // Not fatal: the log still goes somewhere someone can read it.
                eprintln!("holdfast: cannot log to the journal ({e}): logging to stderr");
                None
            }
        },
    };
    let registry = tracing_subscriber::registry().with(filter());
    let _ = match (journald, format) {
        (Some(journald), _) => registry.with(journald).try_init(),
        (None, LogFormat::Human) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(super::human::Human::new())
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        (None, LogFormat::Json) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("HOLDFAST_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `device:inode` of that stream (systemd.exec(5)); a stderr redirected elsewhere by
/// a child of the unit no longer matches.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|m| names_stream(stream.to_str().unwrap_or_default(), m.dev(), m.ino()))
}

/// Whether a `JOURNAL_STREAM` value (`device:inode`, both decimal) names this file.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        .is_some_and(|named| named == (dev, ino))
}

#[cfg(test)]
mod tests {
    use super::names_stream;

    #[test]
    fn journal_stream_names_a_file_by_device_and_inode() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346));
        assert!(!names_stream("9:12345", 8, 12345));
        for bad in ["", "8", "8:", ":1", "x:1", "8:1:2"] {
            assert!(!names_stream(bad, 8, 1), "{bad:?}");
        }
    }
}
