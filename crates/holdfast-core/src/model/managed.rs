//! `managed_by`: a service another supervisor (systemd, supervisord) runs, and holdfast
//! only observes: it probes its health and, when it turns unhealthy, asks that
//! supervisor (the upstream) to restart it. holdfast never spawns it, unless it takes
//! the service over because the upstream went away (`takeover = true`).

use std::fmt;
use std::time::Duration;

/// Who runs an observed service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A systemd unit (`systemd:web.service`), driven with `systemctl`.
    Systemd { unit: String },
    /// A supervisord program (`supervisord:web`), driven over its XML-RPC interface.
    Supervisord { program: String },
}

impl fmt::Display for Upstream {
    /// As the config writes it: `systemd:web.service`, `supervisord:web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Systemd { unit } => write!(f, "systemd:{unit}"),
            Upstream::Supervisord { program } => write!(f, "supervisord:{program}"),
        }
    }
}

/// What holdfast does when the upstream stays unreachable past `arbiter_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// Report it (`upstream_unreachable`) and do nothing else: never a second copy.
    #[default]
    Never,
    /// Adopt the upstream's process if it still lives (and restart it with `command`
    /// once it ends), or start `command`: holdfast runs the service from then on.
    Allowed,
}

/// `managed_by` and the keys that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedBy {
    pub upstream: Upstream,
    pub takeover: Takeover,
    /// How long a restart asked of the upstream may take to show (a new start), and
    /// how long the upstream may stay unreachable before it counts as gone.
    pub arbiter_timeout: Duration,
    /// Health failures within this long of any (re)start the upstream made are ignored.
    pub health_grace_period: Duration,
    /// How often the upstream's view is read (`sync_interval`; default: the health
    /// probes' interval, else [`SYNC_INTERVAL`]).
    pub sync_interval: Duration,
}

/// Default `arbiter_timeout`.
pub const ARBITER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `health_grace_period`.
pub const HEALTH_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default `sync_interval` of a service without health probes.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Where supervisord's XML-RPC interface is (`[holdfast.supervisord]`, the names of
/// supervisorctl's `[supervisorctl]` section).
#[derive(Clone, PartialEq, Eq)]
pub struct SupervisordAccess {
    pub server: SupervisordServer,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never prints the password (plans and effects are logged with `{:?}`).
impl std::fmt::Debug for SupervisordAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisordAccess")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// supervisord's `serverurl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisordServer {
    /// `unix:///var/run/supervisor.sock`
    Unix(std::path::PathBuf),
    /// `http://127.0.0.1:9001`: the `host:port`.
    Http { authority: String },
}

/// supervisorctl's default `serverurl`.
pub const SUPERVISORD_SERVERURL: &str = "unix:///var/run/supervisor.sock";

impl SupervisordServer {
    /// Reads a `serverurl` as supervisorctl writes it; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix socket path must be absolute (unix:///path)".to_owned());
            }
            return Ok(Self::Unix(path.into()));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            let port_ok = authority
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if authority.contains('/') || !port_ok {
                return Err("write http://HOST:PORT (no path)".to_owned());
            }
            return Ok(Self::Http {
                authority: authority.to_owned(),
            });
        }
        Err("use unix:///path/to/supervisor.sock or http://HOST:PORT".to_owned())
    }
}

impl fmt::Display for SupervisordServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisordServer::Unix(path) => write!(f, "unix://{}", path.display()),
            SupervisordServer::Http { authority } => write!(f, "http://{authority}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisord_password_is_never_printed() {
        let access = SupervisordAccess {
            server: SupervisordServer::Unix("/run/supervisor.sock".into()),
            username: Some("admin".into()),
            password: Some("hunter2".into()),
        };
        let printed = format!("{access:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
