//! The command line. Every misbehaviour the HTTP endpoints offer can also be switched on
//! at startup, so tests and benchmarks can make the app fail without an HTTP round trip.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;

const ENDPOINTS: &str = "\
Endpoints (GET; all but / and /health also accept POST):
  /                          build id, pid, uptime and request count
  /health                    200 ok | 503 failing | no answer when hanging
  /health/ok|fail|hang       switch what /health does
  /crash?code=N              answer, then exit with N (default 1)
  /panic                     panic: exit code 101, stack with RUST_BACKTRACE=1
  /segfault                  die of SIGSEGV
  /hang                      answer, then never answer anything again
  /alloc?mb=N                allocate, touch and keep N MiB
  /fork?escape=0|1           spawn a grandchild sleeping forever (1: in a new session)";

/// A realistic HTTP service for holdfast's demo, integration tests and benchmarks.
///
/// Serves on the first socket inherited through LISTEN_FDS (when LISTEN_PID is our pid),
/// otherwise binds --listen. With NOTIFY_SOCKET set it sends READY=1 once accepting and
/// WATCHDOG=1 every WATCHDOG_USEC/2. SIGTERM or SIGINT drains and exits 0. Every
/// response carries `X-Build-Id: <--build-id>`.
#[derive(Debug, Parser)]
#[command(name = "demo-app", after_help = ENDPOINTS)]
pub struct Args {
    /// Print `demo-app VERSION (build ID)` and exit
    // Our own flag, not clap's: clap's prints before --build-id is known.
    #[arg(short = 'V', long)]
    pub version: bool,

    /// Which build this is: sent as `X-Build-Id` with every response, shown on `/` and
    /// by --version (upgrade tests run builds that differ only in this)
    #[arg(long, value_name = "ID", default_value = "dev", value_parser = parse_build_id)]
    pub build_id: String,

    /// Address to bind when no socket is inherited through LISTEN_FDS
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Bind --listen with SO_REUSEPORT, so an old and a new run can both listen on it
    /// during an upgrade
    #[arg(long)]
    pub reuseport: bool,

    /// Sleep this long before binding and notifying readiness
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slow_start: Option<Duration>,

    /// Keep running on SIGTERM (logs "ignoring SIGTERM"); SIGINT still stops the app
    #[arg(long)]
    pub ignore_sigterm: bool,

    /// Start with /health answering 503
    #[arg(long)]
    pub health_fail: bool,

    /// Never send WATCHDOG=1, even when WATCHDOG_USEC is set
    #[arg(long)]
    pub no_watchdog_pings: bool,

    /// After SIGTERM, give idle keep-alive connections this long to send one last
    /// request (answered with `Connection: close`) before closing them
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub drain_idle: Duration,

    /// Exit even if requests are still in flight this long after SIGTERM
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Print the environment at startup
    #[arg(long)]
    pub print_env: bool,

    /// Turn /health to 503 after this long (a build that goes bad once running)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Failures")]
    pub unhealthy_after: Option<Duration>,

    /// Exit with --exit-code after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Failures")]
    pub crash_after: Option<Duration>,

    /// Exit code used by --crash-after and --exit-immediately
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Failures")]
    pub exit_code: u8,

    /// Panic after this long (exit code 101, backtrace with RUST_BACKTRACE=1)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Failures")]
    pub panic_after: Option<Duration>,

    /// --panic-after panics this many calls deep (`demo_app::chaos::nested` frames in
    /// the backtrace), as a bug in a helper would
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Failures")]
    pub panic_depth: u32,

    /// Die of a real SIGSEGV after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Failures")]
    pub segfault_after: Option<Duration>,

    /// Stop answering requests, watchdog pings and SIGTERM after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Failures")]
    pub hang_after: Option<Duration>,

    /// At startup, spawn a grandchild that sleeps forever (and ignores SIGTERM with
    /// --ignore-sigterm)
    #[arg(long, help_heading = "Failures")]
    pub fork_grandchild: bool,

    /// Allocate and touch this much memory at startup (with --eat-memory-step: grow up to it;
    /// without a limit when omitted)
    #[arg(long, value_name = "SIZE", help_heading = "Memory")]
    pub eat_memory: Option<Size>,

    /// Grow memory by this much every --eat-memory-every
    #[arg(
        long,
        value_name = "SIZE",
        requires = "eat_memory_every",
        help_heading = "Memory"
    )]
    pub eat_memory_step: Option<Size>,

    /// Interval between two --eat-memory-step allocations
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "eat_memory_step", help_heading = "Memory")]
    pub eat_memory_every: Option<Duration>,

    /// Exit with --exit-code right away (respawn benchmarks; a build that crashes at start)
    #[arg(long, help_heading = "Benchmarks")]
    pub exit_immediately: bool,

    /// Append "<CLOCK_MONOTONIC ns> <pid>" to this file first thing at startup
    #[arg(long, value_name = "PATH", help_heading = "Benchmarks")]
    pub timestamp_file: Option<PathBuf>,

    /// With --exit-immediately and --timestamp-file: also append
    /// "<CLOCK_MONOTONIC ns> <pid> exit" right before exiting
    #[arg(
        long,
        requires_all = ["exit_immediately", "timestamp_file"],
        help_heading = "Benchmarks"
    )]
    pub timestamp_exit: bool,

    /// Instead of serving: flood holdfast's control socket SOCKET, holding
    /// --flood-connections idle connections and reopening each one the daemon closes;
    /// prints each distinct line the daemon answers on them (a refusal, a timeout)
    #[arg(long, value_name = "SOCKET", help_heading = "Failures")]
    pub flood_control: Option<PathBuf>,

    /// Connections held by --flood-control
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        requires = "flood_control",
        help_heading = "Failures"
    )]
    pub flood_connections: usize,

    /// Instead of serving, send junk datagrams to this unix datagram socket (a
    /// service manager's NOTIFY_SOCKET) as fast as it takes them, for ever
    #[arg(long, value_name = "PATH", help_heading = "Attacks")]
    pub flood_notify: Option<PathBuf>,

    /// Internal: run as the grandchild spawned by --fork-grandchild and /fork
    #[arg(long, hide = true)]
    pub grandchild: bool,

    /// Detach like a traditional daemon (for `type = "forking"`): the started process
    /// exits 0 at once, the daemon runs in a new session and writes its pid to PIDFILE
    /// once it listens
    #[arg(long, value_name = "PIDFILE", help_heading = "Daemon")]
    pub daemonize: Option<PathBuf>,

    /// With --daemonize: fork once (the daemon leads its own session, like redis and
    /// nginx) or twice (the classic double fork: it leads nothing)
    #[arg(
        long,
        value_enum,
        default_value = "once",
        requires = "daemonize",
        help_heading = "Daemon"
    )]
    pub forks: Forks,

    /// Internal: which stage of --daemonize this process is
    #[arg(long, value_enum, hide = true, requires = "daemonize")]
    pub daemon_stage: Option<DaemonStage>,
}

/// How many times `--daemonize` forks before the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Forks {
    Once,
    Twice,
}

/// A process started by `--daemonize` (the forker itself has no stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonStage {
    /// In the new session; forks the daemon and exits (`--forks twice`).
    Detached,
    /// The daemon proper.
    Daemon,
}

impl DaemonStage {
    pub fn as_arg(self) -> &'static str {
        match self {
            DaemonStage::Detached => "detached",
            DaemonStage::Daemon => "daemon",
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// A build id goes into a response header: visible ASCII only, at least one character.
fn parse_build_id(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid build id {text:?}: use visible ASCII characters without spaces"
        ))
    }
}

/// A byte count written like `64MiB`, `512k` or `1G` (binary multiples) or `100MB`
/// (decimal multiples); a bare number is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected a number like 64MiB"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => return Err(format!("invalid size {text:?}: unknown unit {other:?}")),
        };
        number
            .checked_mul(multiplier)
            .map(Size)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = 1 << 20;
        if self.0 >= mib && self.0 % mib == 0 {
            write!(f, "{}MiB", self.0 / mib)
        } else {
            write!(f, "{}B", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!("64MiB".parse(), Ok(Size(64 << 20)));
        assert_eq!("512k".parse(), Ok(Size(512 << 10)));
        assert_eq!("1G".parse(), Ok(Size(1 << 30)));
        assert_eq!("100MB".parse(), Ok(Size(100_000_000)));
        assert_eq!("4096".parse(), Ok(Size(4096)));
        assert_eq!(" 2 mib ".parse(), Ok(Size(2 << 20)));
    }

    #[test]
    fn sizes_reject_garbage_and_overflow() {
        assert!("MiB".parse::<Size>().is_err());
        assert!("12 parsecs".parse::<Size>().is_err());
        assert!("99999999999999999999GiB".parse::<Size>().is_err());
        assert!("18446744073709551615GiB".parse::<Size>().is_err());
    }

    #[test]
    fn sizes_display_in_mebibytes_when_whole() {
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
        assert_eq!(Size(1000).to_string(), "1000B");
    }

    #[test]
    fn build_ids_are_visible_ascii() {
        assert_eq!(
            parse_build_id("v1.2-rc3+abc"),
            Ok("v1.2-rc3+abc".to_owned())
        );
        assert!(parse_build_id("").is_err());
        assert!(parse_build_id("two words").is_err());
        assert!(parse_build_id("caf\u{e9}").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
