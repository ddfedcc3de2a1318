//! `dump_signal`: what a hung run gets before it is killed (see [`super::StopSpec`]).

use std::time::Duration;

use crate::unix::Signal;

/// The dump signal and how long the run gets to print its stacks (and exit) before the
/// kill goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpSpec {
    pub signal: Signal,
    pub wait: Duration,
}
