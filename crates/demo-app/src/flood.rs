//! `--flood-control SOCKET`: a misbehaving local client of holdfast's control socket. It
//! holds N idle connections (never sending a request), reopens each one the daemon
//! closes after a short pause, and prints every distinct line the daemon answered on
//! them, so a test can see a refusal without a flood of output. Runs until killed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause before reopening a closed connection: keeps the flood from spinning a core.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

pub fn run(socket: &Path, connections: usize) -> ! {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..connections {
        let socket = socket.to_owned();
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || hold(&socket, &seen));
    }
    loop {
        std::thread::park();
    }
}

/// Holds one connection open for as long as the daemon lets it, again and again.
fn hold(socket: &PathBuf, seen: &Mutex<HashSet<String>>) -> ! {
    loop {
        let line = match UnixStream::connect(socket) {
            Ok(stream) => {
                let mut line = String::new();
                // Blocks while the daemon keeps the idle connection open.
                match BufReader::new(stream).read_line(&mut line) {
                    Ok(_) => line.trim_end().to_owned(),
                    Err(e) => format!("read failed: {e}"),
                }
            }
            Err(e) => format!("connect failed: {e}"),
        };
        if !line.is_empty()
            && seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(line.clone())
        {
            println!("{line}");
        }
        std::thread::sleep(REOPEN_PAUSE);
    }
}
