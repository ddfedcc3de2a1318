//! A service's output: its log file and where else its lines go.

/// Capture of the service's stdout/stderr into `<log_dir>/<name>.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpec {
    /// Rotate when the file would grow past this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`<name>.log.1` … `<name>.log.N`).
    pub keep: u32,
    /// Where else each line goes (`log.journald`).
    pub forward: LogForward,
}

/// Where a service's lines go besides its log file, which always has them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogForward {
    #[default]
    FileOnly,
    /// Also a native journal entry per line, `SYSLOG_IDENTIFIER=<service>`.
    Journald,
}
