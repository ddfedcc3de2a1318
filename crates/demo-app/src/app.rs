//! The life of a demo-app process: arm the chaos timers, start (grandchild, memory,
//! slow start, listener), announce readiness, serve, drain on SIGTERM/SIGINT, exit 0.
//!
//! Signal handlers are installed before anything slow, so SIGTERM during a slow start
//! already stops the app (or is ignored with `--ignore-sigterm`).

use std::{
    fs::OpenOptions,
    future::Future,
    io::{self, Write},
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    sync::Arc,
};

use axum::http::HeaderValue;
use nix::time::{ClockId, clock_gettime};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    chaos::{self, Escape},
    cli::Args,
    daemonize,
    listen::{self, Origin, Share},
    notify,
    server::{self, Drain, Drained},
    state::{Health, Shared},
};

/// Runs the service until it has drained. `inherited` is the socket taken from
/// LISTEN_FDS before the runtime started, if any.
pub async fn run(args: Args, inherited: Option<(std::net::TcpListener, Origin)>) -> ExitCode {
    let health = if args.health_fail {
        Health::Failing
    } else {
        Health::Ok
    };
    let build_id = match HeaderValue::from_str(&args.build_id) {
        Ok(value) => value,
        Err(error) => return fail("invalid --build-id", io::Error::other(error)),
    };
    let shared = Arc::new(Shared::new(health, args.ignore_sigterm, build_id));
    let shutdown = match shutdown_requested(Arc::clone(&shared)) {
        Ok(shutdown) => shutdown,
        Err(error) => return fail("failed to install signal handlers", error),
    };
    tokio::pin!(shutdown);
    chaos::arm(&args, &shared);

    let started = tokio::select! {
        started = start(&args, &shared, inherited) => started,
        () = &mut shutdown => return ExitCode::SUCCESS,
    };
    let (listener, origin, addr) = match started {
        Ok(started) => started,
        Err(error) => return fail("failed to start", error),
    };
    println!(
        "demo-app pid={} listening on {addr} ({origin})",
        std::process::id()
    );
    if let Origin::Inherited { name: Some(name) } = &origin {
        println!("inherited fd 3 is named {name:?}");
    }
    if let Some(pidfile) = &args.daemonize
        && let Err(error) = daemonize::write_pidfile(pidfile)
    {
        return fail("failed to write the pidfile", error);
    }
    notify::ready(addr);
    // Pings start after READY=1 so a manager always hears readiness first (the
    // pinger's first tick is immediate and ran ahead of it on another worker).
    if !args.no_watchdog_pings {
        tokio::spawn(notify::watchdog(Arc::clone(&shared)));
    }

    let router = server::router(Arc::clone(&shared));
    let drain = Drain {
        idle: args.drain_idle,
        timeout: args.drain_timeout,
    };
    match server::serve(listener, router, shared, shutdown, drain).await {
        Drained::Clean => println!("drained, exiting"),
        Drained::TimedOut => println!("drain timed out with requests in flight, exiting"),
    }
    ExitCode::SUCCESS
}

/// Everything between process start and a listener that accepts.
async fn start(
    args: &Args,
    shared: &Shared,
    inherited: Option<(std::net::TcpListener, Origin)>,
) -> io::Result<(TcpListener, Origin, SocketAddr)> {
    if args.fork_grandchild {
        let pid = chaos::spawn_grandchild(Escape::Stay, args.ignore_sigterm)?;
        println!("grandchild pid={pid}");
    }
    if let (Some(size), None) = (args.eat_memory, args.eat_memory_step) {
        shared.hoard(chaos::to_usize(size.bytes()));
        println!("ate {size}");
    }
    if let Some(delay) = args.slow_start {
        println!("slow start: waiting {}", humantime::format_duration(delay));
        tokio::time::sleep(delay).await;
    }
    let share = if args.reuseport {
        Share::ReusePort
    } else {
        Share::Exclusive
    };
    let (listener, origin) = match inherited {
        Some(inherited) => inherited,
        None => listen::bind(args.listen, share).map_err(|error| {
            io::Error::new(error.kind(), format!("bind {}: {error}", args.listen))
        })?,
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((TcpListener::from_std(listener)?, origin, addr))
}

/// Resolves on the first SIGTERM or SIGINT that should stop the app: SIGTERM is
/// ignored with `--ignore-sigterm`, and a hung app ignores both. The handlers are
/// installed when this is called, not when the future is first polled.
fn shutdown_requested(shared: Arc<Shared>) -> io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if shared.is_hung() {
                continue;
            }
            if name == "SIGTERM" && shared.ignore_sigterm {
                println!("ignoring SIGTERM");
                continue;
            }
            // Draining before saying so: a request answered after the line (or after
            // STOPPING=1) already gets `Connection: close`; `serve` only sets it once
            // its accept loop sees this future end.
            shared.start_draining();
            println!("shutting down on {name}");
            notify::stopping();
            return;
        }
    })
}

/// Appends `<CLOCK_MONOTONIC ns> <pid>` to `path`, for respawn benchmarks.
pub fn write_timestamp(path: &Path) -> io::Result<()> {
    write_timestamp_marked(path, "")
}

/// Appends `<CLOCK_MONOTONIC ns> <pid><mark>` to `path`: the exit line of a respawn
/// benchmark carries the mark `" exit"`, so start and exit lines are told apart.
pub fn write_timestamp_marked(path: &Path, mark: &str) -> io::Result<()> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    let nanos = i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec());
    let line = format!("{nanos} {}{mark}\n", std::process::id());
    // One write call with O_APPEND, so concurrent writers never interleave a line.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

fn fail(what: &str, error: io::Error) -> ExitCode {
    eprintln!("demo-app: {what}: {error}");
    ExitCode::FAILURE
}
