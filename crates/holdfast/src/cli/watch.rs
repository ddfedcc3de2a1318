//! `holdfast status --watch` (and `holdfast top`): the status table, kept current.
//!
//! Redrawn when something happens (it follows the event feed, as `events -f` does) and
//! once a second only while some service has a run whose uptime ticks; idle, it sleeps.
//! On a terminal it draws on the alternate screen and gives the terminal back as it was
//! on Ctrl-C (or SIGTERM/SIGHUP) and when the daemon goes away; otherwise it prints one
//! plain snapshot per change, for a log or a pipe.

use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use super::status;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{Reply, Request, Status};

/// How often uptimes are redrawn while something runs.
const TICK: Duration = Duration::from_secs(1);

/// Switch to the alternate screen and hide the cursor; and back.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// What wakes the view.
enum Wake {
    /// An event was published.
    Event,
    /// The event feed ended: the daemon stopped (or the socket broke).
    FeedEnded(Result<(), ClientError>),
    /// Ctrl-C, SIGTERM or SIGHUP.
    Quit,
}

/// How the view draws.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Screen {
    /// A terminal: redrawn in place, coloured unless `NO_COLOR`.
    Terminal { colour: bool },
    /// A pipe or a file: one snapshot after another.
    Plain,
}

pub fn run(socket: &Path, names: &[String]) -> miette::Result<ExitCode> {
    // Blocked in every thread before any is spawned, so only `quit_on_signal` gets
    // them: the terminal is restored by this process, not left on the alternate screen.
    let quit = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    let _ = quit.thread_block();
    let first = match status::fetch_named(socket, names) {
        Ok(status) => status,
        Err(e) => return Ok(super::service::report(e)),
    };
    let (wake, woken) = mpsc::channel();
    follow_events(socket.to_owned(), wake.clone());
    quit_on_signal(quit, wake);
    let screen = if io::stdout().is_terminal() {
        let colour = std::env::var_os("NO_COLOR").is_none();
        print!("{ENTER}");
        Screen::Terminal { colour }
    } else {
        Screen::Plain
    };
    let ended = watch(socket, names, first, screen, &woken);
    if let Screen::Terminal { .. } = screen {
        print!("{LEAVE}");
        let _ = io::stdout().flush();
    }
    match ended {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Ok(super::service::report(e)),
    }
}

/// Draws until a quit signal (Ok) or the daemon is gone (its error, or Ok at a clean
/// shutdown, said on stderr).
fn watch(
    socket: &Path,
    names: &[String],
    first: Status,
    screen: Screen,
    woken: &mpsc::Receiver<Wake>,
) -> Result<(), ClientError> {
    let mut status = first;
    let mut last = String::new();
    loop {
        draw(&status, screen, &mut last);
        // Only the terminal shows uptimes ticking; a plain snapshot is per change.
        let ticking =
            screen != Screen::Plain && status.services.iter().any(|s| s.uptime_ms.is_some());
        let wake = if ticking {
            match woken.recv_timeout(TICK) {
                Ok(wake) => Some(wake),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Wake::Quit),
            }
        } else {
            Some(woken.recv().unwrap_or(Wake::Quit))
        };
        match wake {
            None | Some(Wake::Event) => {}
            Some(Wake::Quit) => return Ok(()),
            Some(Wake::FeedEnded(result)) => {
                if result.is_ok() {
                    eprintln!("holdfast stopped: nothing more to watch");
                }
                return result;
            }
        }
        // A burst of events (a boot, a reload) is one redraw.
        while let Ok(wake) = woken.try_recv() {
            match wake {
                Wake::Event => {}
                Wake::Quit => return Ok(()),
                Wake::FeedEnded(result) => return result,
            }
        }
        status = status::fetch_named(socket, names)?;
    }
}

/// Draws `status`; a plain snapshot only when it differs from the `last` one.
fn draw(status: &Status, screen: Screen, last: &mut String) {
    let mut out = io::stdout().lock();
    let _ = match screen {
        Screen::Terminal { colour } => {
            write!(out, "{CLEAR}{}", status::render(status, colour))
        }
        Screen::Plain => {
            let text = status::render(status, false);
            if text == *last {
                return;
            }
            let written = writeln!(out, "{text}");
            *last = text;
            written
        }
    };
    let _ = out.flush();
}

/// Follows the daemon's event feed on a thread of its own; each event wakes the view.
fn follow_events(socket: PathBuf, wake: mpsc::Sender<Wake>) {
    std::thread::spawn(move || {
        let request = Request::Events {
            follow: true,
            service: None,
            since: None,
            last: Some(0),
        };
        let ended = client::stream(&socket, request, |reply| match reply {
            Reply::Event { .. } if wake.send(Wake::Event).is_ok() => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        });
        let _ = wake.send(Wake::FeedEnded(ended));
    });
}

/// Waits for the blocked quit signals on a thread of its own.
fn quit_on_signal(signals: SigSet, wake: mpsc::Sender<Wake>) {
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            let _ = wake.send(Wake::Quit);
        }
    });
}
