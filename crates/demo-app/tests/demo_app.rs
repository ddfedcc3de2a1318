//! Scenarios that run the real `demo-app` binary and talk to it over TCP, signals,
//! socket activation and NOTIFY_SOCKET, the way holdfast will.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::{net::UnixDatagram, process::ExitStatusExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const DEADLINE: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_demo-app");

/// A running demo-app whose output lines (stdout and stderr) can be waited for.
/// Killed on drop, so a failing test leaves nothing behind.
struct App {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl App {
    fn start(args: &[&str]) -> App {
        App::start_command(Command::new(BIN), args)
    }

    fn start_command(mut command: Command, args: &[&str]) -> App {
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo-app spawns");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward_lines(stdout, sender.clone());
        forward_lines(stderr, sender);
        App {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Starts on an ephemeral port and returns the app with its `host:port`.
    fn serving(args: &[&str]) -> (App, String) {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut app = App::start(&all);
        let addr = addr_in(&app.wait_for_line(" listening on "));
        (app, addr)
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"))
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("the app is alive to be signalled");
    }

    /// Returns the first output line containing `needle`, failing after the deadline.
    fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no output line containing {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait works on our child") {
                return status;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("demo-app did not exit within {DEADLINE:?}");
    }

    fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("try_wait works on our child")
            .is_none()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stream: impl Read + Send + 'static, sender: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
}

/// Kills a grandchild on drop: it is not our child, so nothing else would.
struct Stray(Pid);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
    }
}

/// The address in the startup line `demo-app pid=N listening on ADDR (ORIGIN)`.
fn addr_in(line: &str) -> String {
    line.split(" listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the startup line names the address")
        .to_owned()
}

fn pid_in(line: &str) -> Pid {
    let digits: String = line
        .split("pid=")
        .nth(1)
        .expect("the line carries pid=N")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Pid::from_raw(digits.parse().expect("pid=N is a number"))
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header line");
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length").map_or(0, |length| {
        length.parse().expect("a numeric content-length")
    });
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8(body).expect("text bodies"),
    })
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("the app accepts connections");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeouts can be set");
    BufReader::new(stream)
}

fn send(connection: &mut BufReader<TcpStream>, path: &str) {
    write!(
        connection.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"
    )
    .expect("the request is written");
}

fn get(addr: &str, path: &str) -> Response {
    let mut connection = connect(addr);
    send(&mut connection, path);
    read_response(&mut connection).expect("the app answers")
}

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("demo-app-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn serves_health_and_a_status_page() {
    let (app, addr) = App::serving(&[]);
    let health = get(&addr, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let index = get(&addr, "/");
    assert!(
        index.body.contains(&format!("pid={}", app.child.id())),
        "the status page names our pid: {index:?}"
    );
}

#[test]
fn health_mode_switches_between_ok_and_failing() {
    let (_app, addr) = App::serving(&["--health-fail"]);
    assert_eq!(
        get(&addr, "/health").status,
        503,
        "--health-fail starts failing"
    );
    get(&addr, "/health/ok");
    assert_eq!(get(&addr, "/health").status, 200);
    get(&addr, "/health/fail");
    assert_eq!(get(&addr, "/health").status, 503);
}

#[test]
fn crash_after_exits_with_the_requested_code() {
    let mut app = App::start(&[
        "--listen",
        "127.0.0.1:0",
        "--crash-after",
        "50ms",
        "--exit-code",
        "42",
    ]);
    assert_eq!(app.wait_for_exit().code(), Some(42));
}

#[test]
fn crash_endpoint_answers_before_exiting_with_its_code() {
    let (mut app, addr) = App::serving(&[]);
    let response = get(&addr, "/crash?code=7");
    assert_eq!(response.status, 200, "the crash is announced first");
    assert_eq!(app.wait_for_exit().code(), Some(7));
}

#[test]
fn a_panic_in_a_request_ends_the_process_with_code_101() {
    let (mut app, addr) = App::serving(&[]);
    let mut connection = connect(&addr);
    send(&mut connection, "/panic");
    assert!(
        read_response(&mut connection).is_err(),
        "a panicking request gets no answer"
    );
    assert_eq!(app.wait_for_exit().code(), Some(101));
    app.wait_for_line("deliberate panic requested by GET /panic");
}

#[test]
fn segfault_after_dies_of_a_real_sigsegv() {
    let mut app = App::start(&["--listen", "127.0.0.1:0", "--segfault-after", "50ms"]);
    assert_eq!(app.wait_for_exit().signal(), Some(Signal::SIGSEGV as i32));
}

#[test]
fn exit_immediately_appends_a_monotonic_timestamp_and_pid() {
    let path = temp_path("timestamps");
    let path_arg = path.to_str().expect("temp paths are UTF-8");
    for _ in 0..2 {
        let mut app = App::start(&[
            "--exit-immediately",
            "--exit-code",
            "3",
            "--timestamp-file",
            path_arg,
        ]);
        assert_eq!(app.wait_for_exit().code(), Some(3));
    }
    let text = std::fs::read_to_string(&path).expect("the timestamp file exists");
    let stamps: Vec<(u128, u32)> = text
        .lines()
        .map(|line| {
            let (nanos, pid) = line.split_once(' ').expect("<ns> <pid>");
            (nanos.parse().expect("ns"), pid.parse().expect("pid"))
        })
        .collect();
    assert_eq!(stamps.len(), 2, "one line per start: {text:?}");
    assert!(
        stamps[0].0 < stamps[1].0,
        "the monotonic clock only goes forward"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn timestamp_exit_appends_an_exit_line_after_the_start_line() {
    let path = temp_path("timestamps-exit");
    let path_arg = path.to_str().expect("temp paths are UTF-8");
    let mut app = App::start(&[
        "--exit-immediately",
        "--timestamp-file",
        path_arg,
        "--timestamp-exit",
    ]);
    assert_eq!(app.wait_for_exit().code(), Some(1));
    let text = std::fs::read_to_string(&path).expect("the timestamp file exists");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "a start line and an exit line: {text:?}");
    assert_eq!(
        lines[0].len(),
        2,
        "the start line is `<ns> <pid>`: {text:?}"
    );
    assert_eq!(
        lines[1].get(2),
        Some(&"exit"),
        "then `<ns> <pid> exit`: {text:?}"
    );
    assert_eq!(
        lines[0][1], lines[1][1],
        "both lines come from the same pid"
    );
    let start: u128 = lines[0][0].parse().expect("ns");
    let exit: u128 = lines[1][0].parse().expect("ns");
    assert!(
        start <= exit,
        "the exit is stamped after the start: {text:?}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn inherited_listen_fds_socket_is_served_and_not_passed_on() {
    // systemd-socket-activate binds, sets LISTEN_FDS/LISTEN_PID and execs demo-app on
    // the first connection.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("an ephemeral port is free")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut activate = Command::new("/usr/bin/systemd-socket-activate");
    activate.args(["-l", &addr, "--fdname=web", BIN]);
    let mut app = App::start_command(activate, &["--fork-grandchild"]);
    app.wait_for_line(&format!("Listening on {addr}"));

    let health = get(&addr, "/health");
    assert_eq!(health.status, 200);
    let line = app.wait_for_line(" listening on ");
    assert!(
        line.ends_with(&format!("{addr} (LISTEN_FDS)")),
        "served the inherited socket: {line}"
    );
    app.wait_for_line("inherited fd 3 is named \"web\"");

    let grandchild = Stray(pid_in(&app.wait_for_line("grandchild pid=")));
    let environ =
        std::fs::read(format!("/proc/{}/environ", grandchild.0)).expect("the grandchild runs");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("LISTEN_"),
        "activation variables are not inherited: {environ:?}"
    );
}

#[test]
fn notify_socket_gets_ready_once_serving_and_watchdog_pings_stop_when_hung() {
    let path = temp_path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the notify socket binds");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeouts can be set");
    let mut command = Command::new(BIN);
    command
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "50000");
    let mut app = App::start_command(
        command,
        &["--listen", "127.0.0.1:0", "--slow-start", "50ms"],
    );

    let mut buffer = [0; 4096];
    let mut receive = || {
        let len = socket.recv(&mut buffer).expect("a notification arrives");
        String::from_utf8_lossy(&buffer[..len]).into_owned()
    };
    let ready = receive();
    assert!(
        ready.contains("READY=1\n"),
        "first message is readiness: {ready:?}"
    );
    let addr = addr_in(&app.wait_for_line(" listening on "));
    assert!(
        ready.contains(&format!("STATUS=serving on {addr}")),
        "{ready:?}"
    );
    assert_eq!(receive(), "WATCHDOG=1\n");

    assert_eq!(get(&addr, "/hang").body, "hanging\n");
    // Pings sent before the hang may still be queued (a slow GET lets several through),
    // and at most one more may be on its way; after that the socket stays quiet.
    socket
        .set_nonblocking(true)
        .expect("the socket can be made non-blocking");
    while socket.recv(&mut buffer).is_ok() {}
    socket
        .set_nonblocking(false)
        .expect("the socket can be made blocking again");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeouts can be set");
    let _ = socket.recv(&mut buffer);
    assert!(
        socket.recv(&mut buffer).is_err(),
        "a hung app stops pinging the watchdog"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_hung_app_answers_nothing_and_ignores_sigterm() {
    let (mut app, addr) = App::serving(&[]);
    get(&addr, "/hang");
    let mut connection = connect(&addr);
    connection
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeouts can be set");
    send(&mut connection, "/health");
    assert!(
        read_response(&mut connection).is_err(),
        "no answer once hung"
    );
    app.signal(Signal::SIGTERM);
    assert!(app.is_running(), "only SIGKILL ends a hung app");
}

#[test]
fn ignore_sigterm_survives_sigterm_and_stops_on_sigint() {
    let (mut app, addr) = App::serving(&["--ignore-sigterm"]);
    app.signal(Signal::SIGTERM);
    app.wait_for_line("ignoring SIGTERM");
    assert_eq!(
        get(&addr, "/health").status,
        200,
        "still serving after SIGTERM"
    );
    assert!(app.is_running());
    app.signal(Signal::SIGINT);
    assert!(
        app.wait_for_exit().success(),
        "SIGINT still drains and exits 0"
    );
}

#[test]
fn drain_answers_the_next_request_on_a_keep_alive_connection_with_connection_close() {
    let (mut app, addr) = App::serving(&["--drain-idle", "10s"]);
    let mut connection = connect(&addr);
    send(&mut connection, "/health");
    let before = read_response(&mut connection).expect("the first request is answered");
    assert_eq!(
        before.headers.get("connection"),
        None,
        "keep-alive before the drain"
    );

    app.signal(Signal::SIGTERM);
    app.wait_for_line("shutting down on SIGTERM");
    send(&mut connection, "/health");
    let during = read_response(&mut connection).expect("a request during the drain is answered");
    assert_eq!(during.status, 200);
    assert_eq!(
        during.headers.get("connection").map(String::as_str),
        Some("close")
    );
    let mut rest = Vec::new();
    connection
        .read_to_end(&mut rest)
        .expect("the app closes the connection");
    assert!(rest.is_empty());

    assert!(app.wait_for_exit().success(), "a drained app exits 0");
    app.wait_for_line("drained, exiting");
}

#[test]
fn eat_memory_makes_the_memory_resident() {
    let (mut app, _addr) = App::serving(&["--eat-memory", "64MiB"]);
    app.wait_for_line("ate 64MiB");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", app.pid())).expect("the app runs");
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/pid/status");
    assert!(rss_kib >= 64 * 1024, "64 MiB touched, RSS is {rss_kib} KiB");
}

#[test]
fn fork_with_escape_puts_the_grandchild_in_its_own_session() {
    let (mut app, addr) = App::serving(&[]);
    let response = get(&addr, "/fork?escape=1");
    let grandchild = Stray(pid_in(&response.body));
    // Printed by the grandchild itself, so setsid(1) has done its work by then.
    app.wait_for_line(&format!("grandchild pid={} sleeping forever", grandchild.0));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", grandchild.0))
        .expect("the grandchild runs");
    // Fields after the command's closing parenthesis: state ppid pgrp session ...
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        grandchild.0.to_string(),
        "the grandchild leads a new session"
    );
}

#[test]
fn every_response_names_the_build_and_the_status_page_shows_it() {
    let (_app, addr) = App::serving(&["--build-id", "B7"]);
    for path in ["/", "/health", "/no-such-page"] {
        let response = get(&addr, path);
        assert_eq!(
            response.headers.get("x-build-id").map(String::as_str),
            Some("B7"),
            "{path}: {response:?}"
        );
    }
    let index = get(&addr, "/");
    assert!(index.body.contains("build=B7 "), "{index:?}");
}

#[test]
fn version_prints_the_build_and_exits_0() {
    let output = Command::new(BIN)
        .args(["--build-id", "A", "--version"])
        .output()
        .expect("demo-app runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("demo-app {} (build A)\n", env!("CARGO_PKG_VERSION"))
    );
    let default = Command::new(BIN).arg("-V").output().expect("demo-app runs");
    assert!(
        String::from_utf8_lossy(&default.stdout).ends_with("(build dev)\n"),
        "{default:?}"
    );
}

#[test]
fn a_build_id_that_cannot_be_a_header_is_refused() {
    let output = Command::new(BIN)
        .args(["--build-id", "two words", "--version"])
        .output()
        .expect("demo-app runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid build id"),
        "{output:?}"
    );
}

#[test]
fn reuseport_lets_a_second_app_listen_on_the_same_port_and_take_over() {
    let (mut old, addr) = App::serving(&["--reuseport", "--build-id", "old"]);
    let mut new = App::start(&["--listen", &addr, "--reuseport", "--build-id", "new"]);
    let line = new.wait_for_line(" listening on ");
    assert_eq!(
        addr_in(&line),
        addr,
        "the second app binds the same address"
    );

    old.signal(Signal::SIGTERM);
    assert!(
        old.wait_for_exit().success(),
        "the old app drains and exits 0"
    );
    let response = get(&addr, "/");
    assert_eq!(
        response.headers.get("x-build-id").map(String::as_str),
        Some("new"),
        "the port is served by the app still listening: {response:?}"
    );
}

#[test]
fn without_reuseport_a_second_app_cannot_bind_the_same_port() {
    let (_first, addr) = App::serving(&[]);
    let mut second = App::start(&["--listen", &addr]);
    assert_eq!(second.wait_for_exit().code(), Some(1));
    second.wait_for_line("failed to start: bind");
}

#[test]
fn unhealthy_after_turns_health_to_503_while_serving_the_rest() {
    let (mut app, addr) = App::serving(&["--unhealthy-after", "100ms"]);
    app.wait_for_line("turning unhealthy");
    assert_eq!(get(&addr, "/health").status, 503);
    assert_eq!(get(&addr, "/").status, 200, "only /health goes bad");
}
