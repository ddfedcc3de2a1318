//! Capture of services' stdout/stderr into rotating files, and reading them back.
//!
//! One [`Capture`] per service (not per process) owns two pipes whose write ends become
//! fds 1 and 2 of every process of that service, across restarts. A tokio task drains
//! both read ends and appends timestamped lines to `<log_dir>/<name>.log`, created at the
//! service's first output or at the first note of holdfast's that must be written (a
//! service that never prints has no file; reading its logs gives nothing, not an error):
//!
//! ```text
//! 2026-11-25T12:00:00.123Z stdout   listening on :8080
//! 2026-11-25T12:00:00.124Z stderr   warning: cache is cold
//! 2026-11-25T12:00:01.000Z holdfast exited 3, restarting in 2s
//! ```
//!
//! Invariants:
//! - the child never blocks because of the disk: the reader drains the pipes promptly and
//!   drops (and counts) what it cannot write, then writes one `dropped N bytes` line
//!   once writing works again;
//! - memory is bounded: a partial line is held up to [`MAX_LINE`] bytes, the in-memory
//!   ring of recent lines is bounded in lines and bytes;
//! - the log file is never opened through a symlink.
//!
//! Reading back: [`tail`] for the last lines, [`read`] for several services merged by
//! time, [`Follower`] (and [`follow`]) for `logs -f`, which keeps up across rotation.
//! The daemon does the reading for `holdfast logs` (see `control::logs`).

mod capture;
mod file;
mod follow;
pub mod journal;
mod line;
mod pipes;
pub mod read;
mod record;
mod ring;
mod spare;
mod tail;

#[cfg(test)]
pub(crate) mod testutil;

pub use capture::Capture;
pub use follow::{Follower, Stopper, follow};
pub use line::MAX_LINE;
pub use record::{Stream, text_of};
pub use tail::tail;
