//! The few operating-system values the core reasons about — process ids, signals and the
//! reaper's sequence numbers — as plain data. The core never calls the OS; `holdfast-sys`
//! converts these to and from the kernel's (and checks at compile time that the signal
//! numbers below are the platform's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A process id, as the kernel numbers it (`pid_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pid(i32);

impl Pid {
    pub const fn from_raw(pid: i32) -> Self {
        Self(pid)
    }

    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Counts reaps: every reaped child gets the next number. A pid seen alive when the count
/// was `n` can only have exited in a reap numbered after `n`; a reap of the same pid
/// numbered `n` or earlier was of an earlier process that had the same pid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReapSeq(pub u64);

macro_rules! signals {
    ($($name:ident = $n:literal),* $(,)?) => {
        /// The standard signals, numbered as on Linux (x86, ARM, RISC-V, PowerPC, s390).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(i32)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Signal {
            $($name = $n),*
        }

        impl Signal {
            /// Every signal, in number order.
            pub const ALL: &[Signal] = &[$(Signal::$name),*];

            /// The name with its `SIG` prefix, as `kill -l` and systemd print it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Signal::$name => stringify!($name)),*
                }
            }
        }

        impl TryFrom<i32> for Signal {
            type Error = UnknownSignal;

            fn try_from(n: i32) -> Result<Self, UnknownSignal> {
                match n {
                    $($n => Ok(Signal::$name),)*
                    _ => Err(UnknownSignal),
                }
            }
        }
    };
}

signals! {
    SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGILL = 4, SIGTRAP = 5, SIGABRT = 6, SIGBUS = 7,
    SIGFPE = 8, SIGKILL = 9, SIGUSR1 = 10, SIGSEGV = 11, SIGUSR2 = 12, SIGPIPE = 13,
    SIGALRM = 14, SIGTERM = 15, SIGSTKFLT = 16, SIGCHLD = 17, SIGCONT = 18, SIGSTOP = 19,
    SIGTSTP = 20, SIGTTIN = 21, SIGTTOU = 22, SIGURG = 23, SIGXCPU = 24, SIGXFSZ = 25,
    SIGVTALRM = 26, SIGPROF = 27, SIGWINCH = 28, SIGIO = 29, SIGPWR = 30, SIGSYS = 31,
}

/// A number or name that is no standard signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownSignal;

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown signal")
    }
}

impl std::error::Error for UnknownSignal {}

impl FromStr for Signal {
    type Err = UnknownSignal;

    /// The full name (`SIGTERM`), exactly; callers accept other spellings first.
    fn from_str(s: &str) -> Result<Self, UnknownSignal> {
        Signal::ALL
            .iter()
            .copied()
            .find(|signal| signal.as_str() == s)
            .ok_or(UnknownSignal)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for &signal in Signal::ALL {
            assert_eq!(Signal::try_from(signal as i32), Ok(signal));
            assert_eq!(signal.as_str().parse(), Ok(signal));
        }
        assert_eq!("TERM".parse::<Signal>(), Err(UnknownSignal));
        assert_eq!(Signal::try_from(0), Err(UnknownSignal));
        assert_eq!(Signal::SIGTERM.to_string(), "SIGTERM");
    }
}
