//! Proxy mode (`[service.X.upgrade] mode = "proxy"`) end to end: holdfast accepts on the
//! service's public `listen` address and forwards to the demo app, which listens on the
//! private port holdfast gave its run as `{port}`.
//!
//! Clients here count every failed request and connection; they run until the service
//! has been restarted, never for a set time.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use support::Daemon;

/// A port nobody listens on right now (holdfast binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port is available")
        .port()
}

fn config(public: u16, protocol: &str) -> String {
    format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}", "--drain-idle", "100ms"]
listen = ["tcp://127.0.0.1:{public}"]
ready = {{ tcp = "127.0.0.1:{{port}}" }}
restart_sec = "0s"

[service.web.upgrade]
mode = "proxy"
proxy = "{protocol}"
"#
    )
}

/// One HTTP/1.1 client connection, kept alive across requests.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        // Only so that a broken proxy fails the test instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` and reads the whole response: its status and body.
    fn get(&mut self, path: &str, close: bool) -> io::Result<(u16, String)> {
        let connection = if close { "close" } else { "keep-alive" };
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: web\r\nConnection: {connection}\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no status line: {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.ok_or_else(|| io::Error::other("no Content-Length"))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One request on a new connection.
fn get_once(port: u16, path: &str) -> io::Result<(u16, String)> {
    Client::connect(port)?.get(path, true)
}

/// The pid the demo app reports in its `/` answer.
fn answered_pid(body: &str) -> Option<u32> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

/// The value of `--listen` in the command line of `pid`.
fn listen_arg(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the run is alive");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--listen").expect("--listen");
    args[i + 1].clone()
}

#[test]
fn proxy_mode_forwards_requests_to_the_run_on_its_private_port() {
    let public = free_port();
    let daemon = Daemon::start(&config(public, "http"));
    let pid = daemon.running_pid("web");
    let private = listen_arg(pid);
    assert_ne!(private, "127.0.0.1:{port}", "{{port}} is substituted");
    assert_ne!(private, format!("127.0.0.1:{public}"));
    let (status, body) = get_once(public, "/").expect("the proxy answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(answered_pid(&body), Some(pid), "{body}");
    // The run really listens on its private port: the proxy forwarded there.
    let private_port: u16 = private.rsplit(':').next().unwrap().parse().unwrap();
    let (_, direct) = get_once(private_port, "/").expect("the run answers directly");
    assert_eq!(answered_pid(&direct), Some(pid));
    // Several requests on one kept-alive client connection all reach the run.
    let mut client = Client::connect(public).unwrap();
    for _ in 0..3 {
        let (status, body) = client.get("/", false).expect("kept alive");
        assert_eq!((status, answered_pid(&body)), (200, Some(pid)));
    }
}

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    last_pid: AtomicU64,
}

impl Tally {
    fn record(&self, result: io::Result<(u16, String)>) -> bool {
        match result {
            Ok((200, body)) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let pid = answered_pid(&body).map_or(0, u64::from);
                self.last_pid.store(pid, Ordering::Relaxed);
                true
            }
            other => {
                eprintln!("failed request: {other:?}");
                self.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Clients that send requests until told to stop: `keep_alive` threads each on one
/// connection for all their requests, one thread with a new connection per request.
fn load(
    port: u16,
    keep_alive: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for i in 0..=keep_alive {
        let (stop, tally) = (stop.clone(), tally.clone());
        threads.push(thread::spawn(move || {
            let new_connections = i == keep_alive;
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    match Client::connect(port) {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            tally.record(Err(e));
                            continue;
                        }
                    }
                }
                let c = client.as_mut().expect("connected above");
                let ok = tally.record(c.get("/", new_connections));
                if new_connections || !ok {
                    client = None;
                }
            }
        }));
    }
    threads
}

/// Under load through the proxy, `disrupt(pid)` ends the running run `times` times; each
/// time a new run takes over, and not one request fails.
fn holds_requests_across(times: usize, what: &str, disrupt: impl Fn(&Daemon, u32)) {
    let public = free_port();
    let daemon = Daemon::start(&config(public, "http"));
    let mut pid = daemon.running_pid("web");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let threads = load(public, 4, &stop, &tally);
    for _ in 0..times {
        let before = tally.ok.load(Ordering::Relaxed);
        support::wait_until("requests are answered", || {
            tally.ok.load(Ordering::Relaxed) > before + 200
        });
        disrupt(&daemon, pid);
        let old = pid;
        pid = daemon.wait_for("web runs a new process", |status| {
            let s = support::find_service(status, "web")?;
            (s.state == "running" && s.pid != Some(old)).then_some(s.pid?)
        });
        support::wait_until("the new run answers through the proxy", || {
            tally.last_pid.load(Ordering::Relaxed) == u64::from(pid)
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!("{ok} requests answered across {times} {what}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

#[test]
fn proxy_mode_holds_requests_while_the_service_restarts() {
    holds_requests_across(3, "restarts", |daemon, _| {
        daemon.cli_ok(&["restart", "web"]);
    });
}

#[test]
fn proxy_mode_holds_requests_while_a_killed_run_is_restarted() {
    // Requests in flight die with it; GETs go again, to the next run.
    holds_requests_across(2, "kills", |_, pid| support::kill_9(pid));
}

#[test]
fn proxy_mode_tcp_splices_each_connection_to_the_run_current_when_it_was_accepted() {
    let public = free_port();
    let daemon = Daemon::start(&config(public, "tcp"));
    let pid = daemon.running_pid("web");
    // Bytes of a kept-alive connection all go to the run it was spliced to.
    let mut client = Client::connect(public).unwrap();
    for _ in 0..2 {
        let (_, body) = client.get("/", false).expect("spliced to the run");
        assert_eq!(answered_pid(&body), Some(pid));
    }
    drop(client);
    daemon.cli_ok(&["restart", "web"]);
    let new = daemon.wait_for("web runs a new process", |status| {
        let s = support::find_service(status, "web")?;
        (s.state == "running" && s.pid != Some(pid)).then_some(s.pid?)
    });
    let (status, body) = get_once(public, "/").expect("a new connection reaches the new run");
    assert_eq!((status, answered_pid(&body)), (200, Some(new)), "{body}");
}

#[test]
fn proxy_mode_takes_turns_over_the_instances_of_a_service() {
    let public = free_port();
    let config = config(public, "http").replace(
        "restart_sec = \"0s\"",
        "restart_sec = \"0s\"\ninstances = 2",
    );
    let daemon = Daemon::start(&config);
    let pids = [daemon.running_pid("web@0"), daemon.running_pid("web@1")];
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = get_once(public, "/").expect("the proxy answers");
        assert_eq!(status, 200, "{body}");
        seen.insert(answered_pid(&body).expect("a pid"));
    }
    assert_eq!(seen, pids.into_iter().collect(), "both instances answered");
}

#[test]
fn proxy_mode_probes_each_run_on_its_private_port() {
    let public = free_port();
    let config = format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{port}}"]
listen = ["tcp://127.0.0.1:{public}"]
ready = "health"

[service.web.health]
http = "http://127.0.0.1:{{port}}/health"
interval = "100ms"

[service.web.upgrade]
mode = "proxy"
"#
    );
    let daemon = Daemon::start(&config);
    // Ready only once a probe reached the run: on its own port, not on port 0.
    let pid = daemon.running_pid("web");
    let (_, body) = get_once(public, "/").expect("the proxy answers");
    assert_eq!(answered_pid(&body), Some(pid));
}
