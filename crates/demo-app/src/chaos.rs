//! Deliberate failures: exit codes, panics, segfaults, hangs, memory growth and stray
//! grandchildren. Each is reachable from the command line and over HTTP. Also a
//! notify-socket flood (command line only), an attack rather than a failure.
//!
//! Choices worth knowing:
//! - A panic anywhere ends the process (exit code 101) via [`install_panic_hook`], with
//!   the standard message and, with `RUST_BACKTRACE=1`, a stack on stderr. Without the
//!   hook tokio would swallow a panic inside a request task.
//! - A hang is a process-wide flag ([`Shared::hang`]): requests never get an answer,
//!   watchdog pings stop and SIGTERM is ignored, as in a real deadlock. SIGSTOP was not
//!   used because supervisors (systemd included) send SIGCONT after SIGTERM, which
//!   would cure the "hang"; only SIGKILL ends this one.

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::sys::signal::{Signal, raise};

use crate::{
    cli::Args,
    listen::ACTIVATION_VARS,
    state::{Health, Shared},
};

/// Exits right away with `code`, as a crashing service would.
pub fn crash(code: u8) -> ! {
    eprintln!("crashing with exit code {code}");
    std::process::exit(i32::from(code))
}

/// Panics with a recognisable message; the hook turns it into exit code 101.
pub fn panic(origin: &str) -> ! {
    panic!("deliberate panic requested by {origin}")
}

/// Panics `depth` calls deep: each level is a frame of its own in the backtrace.
#[inline(never)]
pub fn nested(depth: u32, origin: &str) -> ! {
    if depth == 0 {
        panic!("deliberate nested panic requested by {origin}")
    }
    eprintln!("descending: depth {depth}");
    nested(std::hint::black_box(depth - 1), origin)
}

/// Makes any panic, on any thread, print the standard report and end the process with
/// exit code 101, as a panic in `main` would.
pub fn install_panic_hook() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
}

/// Dies of a real SIGSEGV (default action: terminate, dump core).
pub fn segfault() -> ! {
    eprintln!("raising SIGSEGV");
    // std installs a SIGSEGV handler to report stack overflows; for a fault outside a
    // guard page it restores the default disposition and returns, so the first signal
    // can be swallowed. The second one meets the default action. Resetting the
    // disposition ourselves would need unsafe code (sigaction).
    for _ in 0..2 {
        let _ = raise(Signal::SIGSEGV);
    }
    unreachable!("SIGSEGV with its default disposition terminates the process")
}

/// Freezes the app for good (see the module doc).
pub fn hang(shared: &Shared) {
    eprintln!("hanging: no more answers, watchdog pings or SIGTERM handling");
    shared.hang();
}

/// Whether a grandchild stays in our session and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Same session and process group: a group kill reaches it.
    Stay,
    /// New session via `setsid(1)`, like a daemon that detaches; only a cgroup finds it.
    Setsid,
}

/// Spawns `demo-app --grandchild`, which sleeps forever, and returns its pid. A thread
/// waits for it so it never lingers as a zombie of ours.
pub fn spawn_grandchild(escape: Escape, ignore_sigterm: bool) -> io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut command = match escape {
        Escape::Stay => Command::new(exe),
        // We are not a process group leader, so setsid(1) calls setsid() and execs in
        // place: the pid it reports is the grandchild's own.
        Escape::Setsid => {
            let mut command = Command::new("setsid");
            command.arg(exe);
            command
        }
    };
    command.arg("--grandchild").stdin(Stdio::null());
    if ignore_sigterm {
        command.arg("--ignore-sigterm");
    }
    for var in ACTIVATION_VARS {
        command.env_remove(var);
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    std::thread::spawn(move || match child.wait() {
        Ok(status) => eprintln!("grandchild pid={pid} ended: {status}"),
        Err(error) => eprintln!("failed to wait for grandchild pid={pid}: {error}"),
    });
    Ok(pid)
}

/// The `--grandchild` mode: sleep forever; with `ignore_sigterm`, survive SIGTERM too.
pub fn grandchild_main(ignore_sigterm: bool) -> ! {
    println!("grandchild pid={} sleeping forever", std::process::id());
    if ignore_sigterm {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds when the process has fds left");
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs in a fresh process");
            loop {
                term.recv().await;
                println!("grandchild ignoring SIGTERM");
            }
        })
    }
    loop {
        std::thread::park();
    }
}

/// The `--flood-notify` mode: an attacker (any local user may write to a notify socket)
/// sending junk notifications as fast as the socket takes them. A full socket buffer
/// blocks the send, which is the receiver's pace; a missing socket is retried.
pub fn flood_notify(path: &Path) -> ! {
    let socket = UnixDatagram::unbound().unwrap_or_else(|error| {
        eprintln!("demo-app: failed to create a datagram socket: {error}");
        std::process::exit(1)
    });
    println!("flooding {} with junk notifications", path.display());
    loop {
        let _ = socket.send_to(b"READY=1\nSTATUS=junk from a flood\nMAINPID=2", path);
    }
}

/// Starts the timers of `--crash-after`, `--panic-after`, `--segfault-after`,
/// `--unhealthy-after`, `--hang-after` and the gradual growth of `--eat-memory-step`.
pub fn arm(args: &Args, shared: &Arc<Shared>) {
    if let Some(delay) = args.crash_after {
        let code = args.exit_code;
        after(delay, move || crash(code));
    }
    if let Some(delay) = args.panic_after {
        let depth = args.panic_depth;
        if depth == 0 {
            after(delay, || panic("--panic-after"));
        } else {
            after(delay, move || nested(depth, "--panic-after"));
        }
    }
    if let Some(delay) = args.segfault_after {
        after(delay, || segfault());
    }
    if let Some(delay) = args.unhealthy_after {
        let shared = Arc::clone(shared);
        after(delay, move || {
            shared.set_health(Health::Failing);
            println!("turning unhealthy: /health answers 503 from now on");
        });
    }
    if let Some(delay) = args.hang_after {
        let shared = Arc::clone(shared);
        after(delay, move || hang(&shared));
    }
    if let (Some(step), Some(every)) = (args.eat_memory_step, args.eat_memory_every) {
        let limit = args.eat_memory.map(|size| size.bytes());
        tokio::spawn(grow_memory(Arc::clone(shared), step.bytes(), every, limit));
    }
}

fn after(delay: Duration, action: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        action();
    });
}

async fn grow_memory(shared: Arc<Shared>, step: u64, every: Duration, limit: Option<u64>) {
    let mut held: u64 = 0;
    let mut ticks = tokio::time::interval(every);
    while limit.is_none_or(|limit| held < limit) {
        ticks.tick().await;
        let bytes = limit.map_or(step, |limit| step.min(limit - held));
        shared.hoard(to_usize(bytes));
        held += bytes;
        println!("eaten {} MiB so far", held >> 20);
    }
}

/// Converts a byte count for allocation; demo-app only runs on 64-bit targets.
pub fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).expect("byte counts fit in usize on 64-bit targets")
}
