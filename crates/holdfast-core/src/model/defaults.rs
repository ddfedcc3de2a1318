//! Defaults, in one place so docs, config and tests agree.

use std::time::Duration;

pub const CONTROL: &str = "/run/holdfast/control.sock";
pub const STATE_DIR: &str = "/var/lib/holdfast";
pub const LOG_DIR: &str = "/var/log/holdfast";
/// `PATH` of a service unless `env` or `inherit_env` gives another (systemd's).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// systemd's `RestartSec=` default.
pub const RESTART_SEC: Duration = Duration::from_millis(100);
/// systemd's `DefaultStartLimitIntervalSec=` and `DefaultStartLimitBurst=`.
pub const START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
pub const START_LIMIT_BURST: u32 = 5;
/// supervisord's `startsecs` default, for a service without `ready`.
pub const START_SECS: Duration = Duration::from_secs(1);
/// `start_secs` of a service with `ready`: running as soon as it is ready.
pub const START_SECS_WITH_READY: Duration = Duration::ZERO;
/// supervisord's `stopwaitsecs` default (systemd's 90 s is too long for most services).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const BACKOFF_FACTOR: f64 = 2.0;
pub const BACKOFF_JITTER: f64 = 0.1;
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
pub const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const LOG_KEEP: u32 = 5;
/// How long an event hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// systemd's `DefaultTimeoutStartSec=`.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Also capped at the interval when that is shorter.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const HEALTH_GRACE: Duration = Duration::ZERO;
pub const DEGRADED_FAILURES: u32 = 2;
pub const DEGRADED_WITHIN: Duration = Duration::from_secs(60);
pub const UNHEALTHY_FAILURES: u32 = 4;
pub const UNHEALTHY_WITHIN: Duration = Duration::from_secs(120);
pub const RECOVER_SUCCESSES: u32 = 3;
/// Log lines kept in a quarantine record.
pub const QUARANTINE_LOG_LINES: usize = 20;

/// How long a hung run gets to print its stacks after its `dump_signal`.
pub const DUMP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
