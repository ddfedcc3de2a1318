//! The core's plain process ids and signals, converted to the kernel's at this crate's
//! edge.

use holdfast_core::unix::{Pid, Signal};

/// The core numbers signals as Linux does; this checks at compile time that the platform
/// holdfast is built for agrees, so a conversion by number is exact.
const _: () = {
    let mut i = 0;
    while i < Signal::ALL.len() {
        let signal = Signal::ALL[i];
        assert!(
            nix_signal_number(signal) == signal as i32,
            "holdfast_core::unix::Signal numbers differ from this platform's"
        );
        i += 1;
    }
};

const fn nix_signal_number(signal: Signal) -> i32 {
    use nix::sys::signal::Signal as N;
    (match signal {
        Signal::SIGHUP => N::SIGHUP,
        Signal::SIGINT => N::SIGINT,
        Signal::SIGQUIT => N::SIGQUIT,
        Signal::SIGILL => N::SIGILL,
        Signal::SIGTRAP => N::SIGTRAP,
        Signal::SIGABRT => N::SIGABRT,
        Signal::SIGBUS => N::SIGBUS,
        Signal::SIGFPE => N::SIGFPE,
        Signal::SIGKILL => N::SIGKILL,
        Signal::SIGUSR1 => N::SIGUSR1,
        Signal::SIGSEGV => N::SIGSEGV,
        Signal::SIGUSR2 => N::SIGUSR2,
        Signal::SIGPIPE => N::SIGPIPE,
        Signal::SIGALRM => N::SIGALRM,
        Signal::SIGTERM => N::SIGTERM,
        Signal::SIGSTKFLT => N::SIGSTKFLT,
        Signal::SIGCHLD => N::SIGCHLD,
        Signal::SIGCONT => N::SIGCONT,
        Signal::SIGSTOP => N::SIGSTOP,
        Signal::SIGTSTP => N::SIGTSTP,
        Signal::SIGTTIN => N::SIGTTIN,
        Signal::SIGTTOU => N::SIGTTOU,
        Signal::SIGURG => N::SIGURG,
        Signal::SIGXCPU => N::SIGXCPU,
        Signal::SIGXFSZ => N::SIGXFSZ,
        Signal::SIGVTALRM => N::SIGVTALRM,
        Signal::SIGPROF => N::SIGPROF,
        Signal::SIGWINCH => N::SIGWINCH,
        Signal::SIGIO => N::SIGIO,
        Signal::SIGPWR => N::SIGPWR,
        Signal::SIGSYS => N::SIGSYS,
    }) as i32
}

pub fn nix_pid(pid: Pid) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid.as_raw())
}

pub fn core_pid(pid: nix::unistd::Pid) -> Pid {
    Pid::from_raw(pid.as_raw())
}

pub fn nix_signal(signal: Signal) -> nix::sys::signal::Signal {
    nix::sys::signal::Signal::try_from(signal as i32)
        .expect("every core signal is a platform signal (checked at compile time)")
}

/// `None` for a signal outside the standard set (a real-time signal).
pub fn core_signal(signal: nix::sys::signal::Signal) -> Option<Signal> {
    Signal::try_from(signal as i32).ok()
}

/// Sends `signal` to `pid` (`kill(2)`).
pub fn kill(pid: Pid, signal: Signal) -> nix::Result<()> {
    nix::sys::signal::kill(nix_pid(pid), nix_signal(signal))
}

/// holdfast's own pid.
pub fn getpid() -> Pid {
    core_pid(nix::unistd::getpid())
}

/// Restores the default action of SIGPIPE (end the process), which Rust's runtime sets to
/// "ignore": a command writing to a pipe whose reader has gone (`holdfast status | head`)
/// then ends quietly, as `ls | head` does, instead of panicking in `println!`. Not for the
/// daemon, which must see `EPIPE` on a socket whose client left.
#[expect(
    unsafe_code,
    reason = "changing a signal's disposition has no safe wrapper"
)]
pub fn end_quietly_on_broken_pipe() {
    use nix::sys::signal::{SigHandler, signal};
    // SAFETY: `SigDfl` installs no handler, so no code of ours runs in signal context;
    // the disposition is process-wide and set before any output is written.
    let _ = unsafe { signal(nix::sys::signal::Signal::SIGPIPE, SigHandler::SigDfl) };
}
