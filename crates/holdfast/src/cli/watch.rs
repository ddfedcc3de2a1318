//! `holdfast status --watch` (and `holdfast top`): the status table, kept current.
//!
//! Redrawn when something happens (it follows the event feed, as `events -f` does, and
//! fetches the status again) and, while some service has a run, once a second with its
//! uptime counted on locally from the last fetch; idle, it sleeps.
//! On a terminal it draws on the alternate screen and gives the terminal back as it was
//! on Ctrl-C (or SIGTERM/SIGHUP) and when the daemon goes away; otherwise it prints one
//! plain snapshot per change, for a log or a pipe, and ends when the reader goes away
//! (`status --watch | head -3`).

use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::status;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{ErrorKind, Reply, Request, Status};

/// How often uptimes are redrawn while something runs.
const TICK: Duration = Duration::from_secs(1);

/// Switch to the alternate screen and hide the cursor; and back.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// What wakes the view.
enum Wake {
    /// An event was published (or some were missed): the status is fetched again.
    Event,
    /// The event feed ended: the daemon stopped (or the socket broke).
    FeedEnded(Result<(), ClientError>),
    /// Ctrl-C, SIGTERM or SIGHUP.
    Quit,
}

/// Why the view ended without an error.
enum Ended {
    /// A quit signal.
    Quit,
    /// The daemon shut down: said on stderr once the terminal is given back.
    DaemonStopped,
    /// Nobody reads stdout any more.
    OutputClosed,
}

/// How the view draws.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Screen {
    /// A terminal: redrawn in place, coloured unless `NO_COLOR`.
    Terminal { colour: bool },
    /// A pipe or a file: one snapshot after another.
    Plain,
}

/// The alternate screen, left when dropped: at the end and on a panic alike.
struct AltScreen;

impl AltScreen {
    fn enter() -> Self {
        let mut out = io::stdout().lock();
        let _ = write!(out, "{ENTER}");
        let _ = out.flush();
        AltScreen
    }
}

impl Drop for AltScreen {
    fn drop(&mut self) {
        // `write!`, not `print!`: a panic while stdout is gone must not panic again here.
        let mut out = io::stdout().lock();
        let _ = write!(out, "{LEAVE}");
        let _ = out.flush();
    }
}

pub fn run(socket: &Path, names: &[String]) -> miette::Result<ExitCode> {
    // Blocked in every thread before any is spawned, so only `quit_on_signal` gets
    // them: the terminal is restored by this process, not left on the alternate screen.
    let quit = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    let _ = quit.thread_block();
    let (wake, woken) = mpsc::channel();
    // The newest event is asked before the first fetch and followed from: an event
    // published after it reaches the view even if the follower registers late.
    let first = client::newest_event(socket).and_then(|seen| {
        let status = status::fetch_named(socket, names)?;
        follow_events(socket.to_owned(), seen, wake.clone());
        Ok(status)
    });
    let first = match first {
        Ok(status) => status,
        Err(e) => return Ok(super::service::report(e)),
    };
    quit_on_signal(quit, wake);
    let (screen, alt) = if io::stdout().is_terminal() {
        let colour = std::env::var_os("NO_COLOR").is_none();
        (Screen::Terminal { colour }, Some(AltScreen::enter()))
    } else {
        (Screen::Plain, None)
    };
    let ended = watch(socket, names, first, screen, &woken);
    drop(alt);
    match ended {
        Ok(Ended::DaemonStopped) => {
            eprintln!("holdfast stopped: nothing more to watch");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ended::Quit | Ended::OutputClosed) => Ok(ExitCode::SUCCESS),
        Err(e) => Ok(super::service::report(e)),
    }
}

/// Draws until a quit signal, the daemon is gone (its error, or a clean shutdown) or
/// stdout is.
fn watch(
    socket: &Path,
    names: &[String],
    first: Status,
    screen: Screen,
    woken: &mpsc::Receiver<Wake>,
) -> Result<Ended, ClientError> {
    let mut status = first;
    let mut fetched = Instant::now();
    let mut last = String::new();
    loop {
        if draw(&aged(&status, fetched.elapsed()), screen, &mut last).is_err() {
            return Ok(Ended::OutputClosed);
        }
        // Only the terminal shows uptimes ticking; a plain snapshot is per change.
        let ticking =
            screen != Screen::Plain && status.services.iter().any(|s| s.uptime_ms.is_some());
        let wake = if ticking {
            match woken.recv_timeout(TICK) {
                Ok(wake) => Some(wake),
                // A tick: uptimes are counted on from the last fetch, nothing is asked.
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Wake::Quit),
            }
        } else {
            Some(woken.recv().unwrap_or(Wake::Quit))
        };
        // A burst of events (a boot, a reload) is one redraw.
        for wake in wake
            .into_iter()
            .chain(std::iter::from_fn(|| woken.try_recv().ok()))
        {
            match wake {
                Wake::Event => {}
                Wake::Quit => return Ok(Ended::Quit),
                Wake::FeedEnded(result) => return result.map(|()| Ended::DaemonStopped),
            }
        }
        status = match status::fetch_named(socket, names) {
            Ok(status) => status,
            // What woke the view was the shutdown's first event: the feed ends soon.
            Err(ClientError::Daemon(e)) if e.kind == ErrorKind::ShuttingDown => {
                return Ok(Ended::DaemonStopped);
            }
            Err(e) => return Err(e),
        };
        fetched = Instant::now();
    }
}

/// `status` as it is `elapsed` after it was fetched: each run's uptime counted on.
fn aged(status: &Status, elapsed: Duration) -> Status {
    let mut status = status.clone();
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    for service in &mut status.services {
        if let Some(uptime) = &mut service.uptime_ms {
            *uptime = uptime.saturating_add(ms);
        }
    }
    status
}

/// Draws `status`; a plain snapshot only when it differs from the `last` one. An error
/// is stdout's (a closed pipe): the view ends.
fn draw(status: &Status, screen: Screen, last: &mut String) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match screen {
        Screen::Terminal { colour } => {
            write!(out, "{CLEAR}{}", status::render(status, colour))?;
        }
        Screen::Plain => {
            let text = status::render(status, false);
            if text == *last {
                return Ok(());
            }
            writeln!(out, "{text}")?;
            *last = text;
        }
    }
    out.flush()
}

/// Follows the daemon's event feed after event `seen` on a thread of its own; each
/// event wakes the view. A follower too slow for the feed is cut off with a `lagged`
/// error: it asks for the newest event, then wakes the view to fetch the status anew
/// (what it missed is in there) and follows again from that event.
fn follow_events(socket: PathBuf, mut seen: u64, wake: mpsc::Sender<Wake>) {
    std::thread::spawn(move || {
        let ended = loop {
            let request = Request::Events {
                follow: true,
                service: None,
                since: Some(seen),
                last: None,
            };
            let ended = client::stream(&socket, request, |reply| match reply {
                Reply::Event { .. } if wake.send(Wake::Event).is_ok() => ControlFlow::Continue(()),
                _ => ControlFlow::Break(()),
            });
            match ended {
                Err(ClientError::Daemon(e)) if e.kind == ErrorKind::Lagged => {
                    seen = match client::newest_event(&socket) {
                        Ok(newest) => newest,
                        Err(e) => break Err(e),
                    };
                    if wake.send(Wake::Event).is_err() {
                        return;
                    }
                }
                ended => break ended,
            }
        };
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
