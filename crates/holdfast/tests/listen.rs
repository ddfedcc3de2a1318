//! `listen` end to end: holdfast binds the sockets once, passes them to every run by the
//! socket-activation protocol, and keeps them open while runs come and go.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{Daemon, holdfast, kill_9, run, stderr};

/// A free loopback address (bound and released here; another process taking it before
/// holdfast binds it is unlikely).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// The demo app on a socket holdfast binds at `addr`, running once it says READY=1.
fn web(addr: SocketAddr, extra: &str) -> Daemon {
    let daemon = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--print-env"]
listen = ["tcp://{addr}"]
ready = "notify"
{extra}
"#
    ));
    daemon.wait_for_service("web", "is running", |s| s.state == "running");
    daemon
}

/// `GET /` over a fresh connection: the answering demo app's pid.
fn answering_pid(stream: &mut TcpStream) -> u32 {
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let pid = response
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pid in the response: {response:?}"));
    pid.parse().expect("a pid")
}

/// What fd 3 of `pid` is (`socket:[inode]` for a socket).
fn fd3(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/3"))
        .map(|target| target.display().to_string())
        .unwrap_or_default()
}

fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read the environment");
    raw.split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn a_listen_socket_is_passed_with_listen_fds_and_its_pid() {
    let addr = free_addr();
    let daemon = web(addr, "");
    let pid = daemon.running_pid("web");

    let answered = answering_pid(&mut TcpStream::connect(addr).expect("connect"));

    assert_eq!(answered, pid, "the service answers on holdfast's socket");
    // demo-app prints this after the line that says where it listens.
    let log = daemon.wait_log("web", "inherited fd 3 is named \"web\"");
    assert!(
        log.contains(&format!("listening on {addr} (LISTEN_FDS)")),
        "{log}"
    );
    assert!(log.contains("LISTEN_FDNAMES=web"), "{log}");
    assert!(
        fd3(pid).starts_with("socket:"),
        "fd 3 of {pid}: {}",
        fd3(pid)
    );
}

#[test]
fn the_listen_socket_stays_open_while_the_service_restarts() {
    let addr = free_addr();
    // Not restarted by itself: the gap lasts until the test starts it again.
    let daemon = web(addr, "restart = \"no\"");
    let old = daemon.running_pid("web");

    kill_9(old);
    daemon.wait_for_service("web", "is down", |s| {
        s.state != "running" && s.pid.is_none()
    });
    let mut early = TcpStream::connect(addr).expect("the backlog takes the connection");
    daemon.cli_ok(&["start", "web"]);

    let answered = answering_pid(&mut early);
    let new = daemon.running_pid("web");
    assert_ne!(answered, old);
    assert_eq!(
        answered, new,
        "the next run answers the client that came in the gap"
    );
}

#[test]
fn instances_share_one_listen_socket() {
    let addr = free_addr();
    let daemon = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}"]
listen = ["tcp://{addr}"]
instances = 2
ready = "notify"
"#
    ));
    let pids: Vec<u32> = ["web@0", "web@1"]
        .iter()
        .map(|name| {
            daemon.wait_for_service(name, "is running", |s| s.state == "running");
            daemon.running_pid(name)
        })
        .collect();

    let sockets: Vec<String> = pids.iter().map(|pid| fd3(*pid)).collect();
    assert!(sockets[0].starts_with("socket:"), "{sockets:?}");
    assert_eq!(sockets[0], sockets[1], "one socket, two acceptors");
    for pid in &pids {
        assert!(
            environ(*pid).contains(&"LISTEN_FDNAMES=web".to_owned()),
            "named after the base service"
        );
    }
    let answered = answering_pid(&mut TcpStream::connect(addr).expect("connect"));
    assert!(pids.contains(&answered), "{answered} is one of {pids:?}");
}

#[test]
fn a_unix_listen_socket_is_passed_kept_across_restarts_and_removed_with_its_service() {
    let daemon = Daemon::start(
        r#"
[service.api]
command = ["sleep", "1000"]
listen = ["unix:{DIR}/api.sock"]
"#,
    );
    daemon.wait_for_service("api", "is running", |s| s.state == "running");
    let path = daemon.dir().join("api.sock");
    let pid = daemon.running_pid("api");
    let env = environ(pid);
    for var in [
        "LISTEN_FDS=1".to_owned(),
        format!("LISTEN_PID={pid}"),
        "LISTEN_FDNAMES=api".to_owned(),
    ] {
        assert!(env.contains(&var), "{var} in {env:?}");
    }
    let socket = fd3(pid);
    assert!(socket.starts_with("socket:"), "{socket}");
    let mode = std::fs::metadata(&path)
        .expect("the socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    std::os::unix::net::UnixStream::connect(&path).expect("the backlog takes a connection");

    daemon.cli_ok(&["restart", "api"]);
    let again = daemon.wait_for_service("api", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });
    assert_eq!(fd3(again.pid.expect("running")), socket, "the same socket");

    daemon.write_config("");
    daemon.cli_ok(&["reload"]);
    daemon.wait_until("the socket file is removed", |_| !path.exists());
}

#[test]
fn a_reload_that_drops_an_address_closes_it_and_one_that_keeps_it_keeps_the_socket() {
    let (kept, dropped) = (free_addr(), free_addr());
    let config = |addrs: &str| {
        format!("[service.api]\ncommand = [\"sleep\", \"1000\"]\nlisten = [{addrs}]\n")
    };
    let daemon = Daemon::start(&config(&format!("\"tcp://{kept}\", \"tcp://{dropped}\"")));
    daemon.wait_for_service("api", "is running", |s| s.state == "running");
    let socket = fd3(daemon.running_pid("api"));

    let old = daemon.running_pid("api");

    daemon.write_config(&config(&format!("\"tcp://{kept}\"")));
    daemon.cli_ok(&["reload"]);
    let restarted = daemon.wait_for_service("api", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != old)
    });
    let pid = restarted.pid.expect("running");

    assert!(environ(pid).contains(&"LISTEN_FDS=1".to_owned()));

    assert_eq!(fd3(pid), socket, "the kept address keeps its socket");
    daemon.wait_until("the dropped address is closed", |_| {
        TcpListener::bind(dropped).is_ok()
    });
}

#[test]
fn a_bind_that_fails_is_a_spawn_failure_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = taken.local_addr().expect("local address");
    let daemon = Daemon::start(&format!(
        "[service.api]\ncommand = [\"sleep\", \"1000\"]\nlisten = [\"tcp://{addr}\"]\nrestart = \"no\"\n"
    ));
    let failed = daemon.wait_for_service("api", "fails to start", |s| s.state == "failed");
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("cannot listen on tcp://{addr}")) && reason.contains("in use"),
        "{reason}"
    );
}

fn check(contents: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("holdfast-listen-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{:x}.toml", name_for(contents)));
    std::fs::write(&path, contents).expect("write the config");
    let mut cmd = holdfast();
    cmd.arg("check").arg(&path);
    run(cmd)
}

/// A file name per config, so the tests of this file do not overwrite each other's.
fn name_for(contents: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    contents.hash(&mut hasher);
    hasher.finish()
}

#[test]
fn check_rejects_upgrade_modes_without_what_they_need() {
    let cases = [
        (
            "[service.a]\ncommand = [\"/bin/sleep\"]\n[service.a.upgrade]\nmode = \"handover\"\n",
            "`service.a.upgrade.mode = \"handover\"` needs `listen`",
        ),
        (
            "[service.a]\ncommand = [\"/bin/sleep\"]\nlisten = [\"tcp://127.0.0.1:8080\"]\n\
             [service.a.upgrade]\nmode = \"proxy\"\nproxy = \"http\"\n",
            "would not know which port to listen on",
        ),
        (
            "[service.a]\ncommand = [\"/bin/sleep\", \"{port}\"]\nlisten = [\"unix:/run/a.sock\"]\n\
             [service.a.upgrade]\nmode = \"proxy\"\nproxy = \"tcp\"\n",
            "the proxy of `service.a` forwards TCP only",
        ),
        (
            "[service.a]\ncommand = [\"/bin/sleep\"]\nlisten = [\"tcp://127.0.0.1:8080\"]\n\
             [service.a.upgrade]\nmode = \"reuseport\"\n",
            "`service.a.listen` does not apply to mode = \"reuseport\"",
        ),
        (
            "[service.a]\ncommand = [\"/bin/sleep\", \"{port}\"]\n",
            "`{port}` in `service.a.command` without proxy mode",
        ),
        (
            "[service.a]\ncommand = [\"/usr/bin/sleep\"]\nlisten = [\"tcp://127.0.0.1:8080\"]\n\
             [service.a.upgrade]\nmode = \"handover\"\nwatch = \"/usr/bin\"\n",
            "`service.a.upgrade.watch` is not a symlink",
        ),
    ];
    for (config, expected) in cases {
        let output = check(config);
        assert_eq!(
            output.status.code(),
            Some(3),
            "an invalid config: {config}\n{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{config}\n{}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(".toml:"), "points at the file");
    }
}

#[test]
fn check_accepts_a_build_behind_a_watched_link() {
    let dir = std::env::temp_dir().join(format!("holdfast-listen-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b1")).expect("a build directory");
    std::fs::copy("/bin/sleep", dir.join("b1/server")).expect("a build");
    std::os::unix::fs::symlink(dir.join("b1"), dir.join("current")).expect("the link");
    let config = format!(
        "[service.api]\ncommand = [\"{current}/server\", \"1000\"]\nlisten = [\"tcp://127.0.0.1:8080\"]\n\
         [service.api.upgrade]\nmode = \"handover\"\nwatch = \"{current}\"\n",
        current = dir.join("current").display()
    );
    let output = check(&config);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = holdfast::config::load(Path::new(&{
        let path = dir.join("holdfast.toml");
        std::fs::write(&path, &config).expect("write");
        path
    }))
    .expect("valid");
    let api = &plan.services[&"api".parse().expect("name")];
    assert_eq!(
        api.upgrade.as_ref().map(|u| u.build.clone()),
        Some(std::fs::canonicalize(dir.join("b1/server")).expect("real path"))
    );
}

#[test]
fn probes_and_hooks_never_get_the_listen_sockets() {
    let addr = free_addr();
    let daemon = Daemon::start(&format!(
        r#"
[service.api]
command = ["sleep", "1000"]
listen = ["tcp://{addr}"]
[service.api.health]
exec = ["/bin/sh", "-c", "env > {{DIR}}/probe.env"]
interval = "1s"
[service.api.on]
spawned = ["/bin/sh", "-c", "env > {{DIR}}/hook.env"]
"#
    ));
    daemon.wait_for_service("api", "is running", |s| s.state == "running");
    let pid = daemon.running_pid("api");
    assert!(environ(pid).contains(&"LISTEN_FDS=1".to_owned()));
    for helper in ["probe.env", "hook.env"] {
        let path = daemon.dir().join(helper);
        daemon.wait_until(&format!("the {helper} is written"), |_| {
            std::fs::read_to_string(&path).is_ok_and(|env| env.contains("INVOCATION_ID="))
        });
        let env = std::fs::read_to_string(&path).expect("written");
        assert!(!env.contains("LISTEN_"), "{helper}: {env}");
    }
}

#[test]
fn a_proxied_service_gets_no_listen_sockets_but_its_public_address_is_bound() {
    let addr = free_addr();
    let daemon = Daemon::start(&format!(
        r#"
[service.api]
command = ["sleep", "1000"]
env = {{ PORT = "{{port}}" }}
listen = ["tcp://{addr}"]
[service.api.upgrade]
mode = "proxy"
"#
    ));
    daemon.wait_for_service("api", "is running", |s| s.state == "running");
    let env = environ(daemon.running_pid("api"));

    assert!(!env.iter().any(|var| var.starts_with("LISTEN_")), "{env:?}");
    TcpStream::connect(addr).expect("holdfast holds the public address");
}

#[test]
fn a_reuseport_service_makes_holdfast_migrate_queued_connections_in_its_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root may set net.ipv4.tcp_migrate_req");
        return;
    }
    // In a namespace of its own, so that the test changes nothing on the host.
    let daemon = Daemon::start_in_new_netns(
        r#"
[service.api]
command = ["sleep", "1000"]
[service.api.upgrade]
mode = "reuseport"
"#,
    );
    daemon.wait_for_service("api", "is running", |s| s.state == "running");
    let mut read = std::process::Command::new("nsenter");
    read.arg(format!("--net=/proc/{}/ns/net", daemon.host_pid()))
        .args(["cat", "/proc/sys/net/ipv4/tcp_migrate_req"]);

    let output = run(read);

    assert_eq!(support::stdout(&output).trim(), "1", "{}", stderr(&output));
}
