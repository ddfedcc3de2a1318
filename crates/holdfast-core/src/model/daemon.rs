//! Settings of holdfast itself: the `[holdfast]` table.

use std::path::PathBuf;

use super::SupervisordAccess;

/// Settings of the daemon itself (`[holdfast]` table). Changing them needs a restart of
/// holdfast; `reload` reports such changes and keeps the running values.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Unix control socket, created with mode 0600.
    pub control: PathBuf,
    /// Besides root, members of this group may use the control socket.
    pub control_group: Option<GroupRef>,
    /// Members of this group may also use the verbs that change the daemon itself
    /// (`shutdown`, `reload`, `signal`, `upgrade`), like root; `control_group` members
    /// may only read and start/stop/restart.
    pub admin_group: Option<GroupRef>,
    /// Crash reports, quarantine queue, upgrade state.
    pub state_dir: PathBuf,
    /// Captured stdout/stderr, one file per service.
    pub log_dir: PathBuf,
    /// Variables of holdfast's own environment passed on to every service (systemd
    /// `PassEnvironment=`); valid names, none of [`PRIVATE_ENV`].
    pub pass_env: Vec<String>,
    /// `[holdfast.supervisord]`: where the supervisord of `managed_by = "supervisord:X"`
    /// services answers; `None`: `SUPERVISOR_SERVER_URL`, else supervisorctl's default.
    pub supervisord: Option<Box<SupervisordAccess>>,
    /// The HTTP server (`/health`, `/control`, the dashboard); off when `None`.
    pub http: Option<std::net::SocketAddr>,
}

/// Variables of holdfast's own environment that describe holdfast's situation, not the
/// service's: passing them on would make a service answer holdfast's systemd. Never
/// passed on, not even with `inherit_env` or `pass_env`.
pub const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "HOLDFAST_CONFIG",
    "HOLDFAST_SOCKET",
    "HOLDFAST_RESUME",
];

/// A group as written in the config, resolved to its gid at validation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub name: String,
    pub gid: u32,
}
