//! `holdfast status --watch` (and `holdfast top`): redrawn at events, plain snapshots
//! without a terminal, the alternate screen on a terminal (a pseudo-terminal made by
//! `script`), given back on Ctrl-C.

mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use support::{Daemon, holdfast, holdfast_bin, kill_9, wait_until};

const SERVICE: &str = r#"
[service.api]
command = ["sleep", "300"]
"#;

/// Everything a child writes to its stdout, gathered by a thread.
struct Gathered {
    out: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

fn gather(child: &mut Child) -> Gathered {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let sink = Arc::clone(&out);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("not poisoned")
                .extend_from_slice(&buf[..n]);
        }
    });
    Gathered { out, reader }
}

impl Gathered {
    /// What has arrived so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("not poisoned")).into_owned()
    }

    /// Everything, once the child exited: the thread may still be reading its last
    /// bytes (the terminal being given back) when the exit is seen.
    fn all(self) -> String {
        let Gathered { out, reader } = self;
        reader.join().expect("the reader does not panic");
        let all = out.lock().expect("not poisoned");
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Whether a line of the table shows `api` running as `pid`.
fn shows_running(out: &str, pid: u32) -> bool {
    out.lines().any(|l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.len() > 2 && cells[0] == "api" && cells[1] == "running" && cells[2] == pid.to_string()
    })
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the watch exits", || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.expect("exited")
}

/// Whether `script` (util-linux) is here to make a pseudo-terminal; says why not.
fn script_found() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `script` (util-linux) is missing: no pseudo-terminal to test on");
    }
    found
}

/// `holdfast top` on a pseudo-terminal made by `script`: what the test writes to its
/// stdin is typed at it. `script` runs the command with `$SHELL -c`; `exec` makes `top`
/// the only process on that terminal, so a typed Ctrl-C reaches it alone whatever the
/// shell (dash, unlike bash, would otherwise wait as its parent and die of the SIGINT).
fn top_on_a_terminal(daemon: &Daemon) -> Child {
    let command = format!(
        "exec {} top -s {}",
        sh_quoted(&holdfast_bin().display().to_string()),
        sh_quoted(&daemon.socket().display().to_string())
    );
    Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env(support::TAG_VAR, daemon.tag())
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script starts")
}

/// `word` as one shell word, whatever the checkout's path holds.
fn sh_quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[test]
fn status_watch_without_a_terminal_prints_a_snapshot_per_change_until_interrupted() {
    let daemon = Daemon::start(SERVICE);
    let first = daemon.running_pid("api");
    let mut watch = holdfast()
        .args(["status", "--watch", "-s"])
        .arg(daemon.socket())
        .env(support::TAG_VAR, daemon.tag())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holdfast status --watch starts");
    let out = gather(&mut watch);
    wait_until("the first snapshot shows api running", || {
        shows_running(&out.text(), first)
    });
    kill_9(first);
    let second = daemon.wait_for("api to run again", |s| {
        let api = s.services.iter().find(|s| s.name.as_str() == "api")?;
        (api.state == "running" && api.pid != Some(first)).then_some(api.pid?)
    });
    wait_until("a later snapshot shows the new pid", || {
        shows_running(&out.text(), second)
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(watch.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    assert!(wait_exit(&mut watch).success());
    let out = out.all();
    assert!(
        !out.contains('\x1b'),
        "no terminal control without a terminal: {out:?}"
    );
    assert!(
        out.matches("NAME ").count() >= 2,
        "one snapshot per change: {out}"
    );
}

#[test]
fn top_on_a_terminal_draws_on_the_alternate_screen_and_restores_the_terminal_on_ctrl_c() {
    if !script_found() {
        return;
    }
    let daemon = Daemon::start(SERVICE);
    let pid = daemon.running_pid("api");
    let mut term = top_on_a_terminal(&daemon);
    let out = gather(&mut term);
    wait_until("top draws api running on the alternate screen", || {
        let out = out.text();
        out.contains("\x1b[?1049h") && out.contains("api") && out.contains(&pid.to_string())
    });
    let mut keys = term.stdin.take().expect("stdin is piped");
    keys.write_all(b"\x03").expect("Ctrl-C is typed");
    keys.flush().expect("typed");
    assert!(wait_exit(&mut term).success(), "{:?}", out.text());
    drop(keys);
    let out = out.all();
    let drawn = out.rfind("\x1b[2J").expect("the screen was drawn");
    let left = out
        .rfind("\x1b[?1049l")
        .expect("the alternate screen was left");
    assert!(left > drawn, "the terminal is given back last: {out:?}");
    assert!(
        out[..left].ends_with("\x1b[?25h"),
        "the cursor is shown again: {out:?}"
    );
}

#[test]
fn top_says_holdfast_stopped_after_giving_the_terminal_back_when_the_daemon_shuts_down() {
    if !script_found() {
        return;
    }
    let mut daemon = Daemon::start(SERVICE);
    let pid = daemon.running_pid("api");
    let mut term = top_on_a_terminal(&daemon);
    let out = gather(&mut term);
    wait_until("top draws api running", || {
        let out = out.text();
        out.contains("\x1b[?1049h") && out.contains(&pid.to_string())
    });
    daemon.cli_ok(&["shutdown"]);
    assert!(daemon.wait_exit().success());
    assert!(wait_exit(&mut term).success(), "{:?}", out.text());
    let out = out.all();
    let left = out
        .rfind("\x1b[?1049l")
        .expect("the alternate screen was left");
    let said = out
        .rfind("holdfast stopped")
        .unwrap_or_else(|| panic!("top says the daemon stopped: {out:?}"));
    assert!(
        said > left,
        "said on the normal screen, not wiped with the alternate one: {out:?}"
    );
}

#[test]
fn status_watch_ends_when_its_reader_goes_away() {
    let daemon = Daemon::start(SERVICE);
    let first = daemon.running_pid("api");
    let mut watch = holdfast()
        .args(["status", "--watch", "-s"])
        .arg(daemon.socket())
        .env(support::TAG_VAR, daemon.tag())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holdfast status --watch starts");
    // Like `| head -1`: read the first line, then close the pipe.
    let mut stdout = watch.stdout.take().expect("stdout is piped");
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).expect("reads the first snapshot") == 1 && byte[0] != b'\n' {}
    drop(stdout);
    // A change makes it write again, into the closed pipe.
    kill_9(first);
    daemon.wait_for_service("api", "api runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first)
    });
    wait_exit(&mut watch);
}
