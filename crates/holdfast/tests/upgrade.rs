//! Zero-downtime upgrades end to end, under load from a real load generator (`wrk`, see
//! `support::load`): builds are directories holding a `server` wrapper script, `current`
//! is a symlink to one of them, and a deploy flips it with an atomic rename (what
//! `ln -sfn B current.tmp && mv -T current.tmp current` does). In each mode (handover,
//! reuseport, proxy) a flip from A to B must fail no request and move every client to
//! B; a build that crashes at start (C) or turns unhealthy while baking (D) is rolled
//! back failing no request; a flip to a file that is not executable or fails its
//! checksum changes nothing.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use holdfast::control::protocol::EventRecord;
use support::deploy::Deploy;
use support::load::{Connections, Load, LoadReport};
use support::{Daemon, demo_app, free_port};

/// The deploy tree of these scenarios: each build runs demo-app or the Go server through
/// a `server` script, and `current` links to a build's directory by its absolute path.
struct Builds(Deploy);

impl Builds {
    fn new() -> Builds {
        Builds(Deploy::new())
    }

    fn current(&self) -> PathBuf {
        self.0.current()
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.0.dir(id)
    }

    /// Build `id`: a `server` script that runs demo-app as build `id` with `args`.
    fn demo(&self, id: &str, args: &[&str]) -> &Self {
        let exec = format!(
            "exec {} --build-id {id} {} \"$@\"",
            demo_app().display(),
            args.join(" ")
        );
        self.script(id, &exec, 0o755)
    }

    /// Build `id` of the Go server built by [`go_server`].
    fn go(&self, id: &str, go_server: &Path) -> &Self {
        self.script(
            id,
            &format!("exec {} -build {id} \"$@\"", go_server.display()),
            0o755,
        )
    }

    fn script(&self, id: &str, exec: &str, mode: u32) -> &Self {
        self.0.build(id, &format!("#!/bin/sh\n{exec}\n"), mode);
        self
    }

    /// Build `id`, which is demo-app but cannot be executed (mode 0644).
    fn not_executable(&self, id: &str) -> &Self {
        let exec = format!("exec {} --build-id {id} \"$@\"", demo_app().display());
        self.script(id, &exec, 0o644)
    }

    /// Build `id`, a working demo-app with a `server.sha256` beside it that does not match.
    fn bad_checksum(&self, id: &str) -> &Self {
        self.demo(id, &[]);
        let wrong = format!("{}  server\n", "0".repeat(64));
        fs::write(self.dir(id).join("server.sha256"), wrong).expect("the checksum is written");
        self
    }

    /// Points `current` at build `id`.
    fn flip(&self, id: &str) {
        self.0.flip(self.dir(id));
    }

    /// Waits until `current` points at build `id`.
    fn wait_points_at(&self, daemon: &Daemon, id: &str) {
        self.0.wait_points_at(daemon, self.dir(id));
    }
}

/// How the service keeps its port open across an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// holdfast binds `listen` and passes it (LISTEN_FDS); demo-app serves it.
    Handover,
    /// demo-app binds the port itself with `--reuseport`.
    Reuseport,
    /// holdfast owns the port and forwards to the server on a private `{port}`.
    Proxy,
}

/// Which program the builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Demo,
    /// The Go net/http server, which only binds `-addr` and has no readiness protocol.
    Go,
}

/// Short: a good build is done soon after the old run is gone.
const BAKE: &str = "500ms";

/// The service `web` on public `port`, running `current/server` in `mode`, with
/// `extra` appended to `[service.web]` (before its `upgrade` table) and a new build
/// watched for `bake`.
fn config(
    builds: &Builds,
    port: u16,
    mode: Mode,
    server: Server,
    extra: &str,
    bake: &str,
) -> String {
    let current = builds.current().display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let (command, listen, ready, upgrade) = match (mode, server) {
        (Mode::Handover, _) => (
            String::new(),
            format!("listen = [\"tcp://{addr}\"]\n"),
            "\"notify\"",
            "mode = \"handover\"",
        ),
        (Mode::Reuseport, _) => (
            format!(", \"--listen\", \"{addr}\", \"--reuseport\""),
            String::new(),
            "\"notify\"",
            "mode = \"reuseport\"",
        ),
        (Mode::Proxy, Server::Demo) => (
            ", \"--listen\", \"127.0.0.1:{port}\"".to_owned(),
            format!("listen = [\"tcp://{addr}\"]\n"),
            "\"notify\"",
            "mode = \"proxy\"\nproxy = \"http\"",
        ),
        (Mode::Proxy, Server::Go) => (
            ", \"-addr\", \"127.0.0.1:{port}\"".to_owned(),
            format!("listen = [\"tcp://{addr}\"]\n"),
            "{ http = \"http://127.0.0.1:{port}/health\" }",
            "mode = \"proxy\"\nproxy = \"http\"",
        ),
    };
    format!(
        r#"
[service.web]
command = ["{current}/server"{command}]
{listen}ready = {ready}
stop = {{ signal = "TERM", timeout = "20s" }}
{extra}
[service.web.upgrade]
{upgrade}
watch = "{current}"
ready_timeout = "20s"
drain = "20s"
bake = "{bake}"
rollback_link = true
verify = {{ command = ["{{bin}}", "--version"], timeout = "10s" }}
"#
    )
}

fn events(daemon: &Daemon) -> Vec<EventRecord> {
    support::event_records(&daemon.cli_ok(&["events", "--json"]))
}

/// Waits for the first event of `kind` (of any service) and returns it.
fn wait_event(daemon: &Daemon, kind: &str) -> EventRecord {
    let mut found = None;
    daemon.wait_until(&format!("an event {kind}"), |d| {
        found = events(d).into_iter().find(|e| e.kind == kind);
        found.is_some()
    });
    found.expect("found by the wait")
}

fn kinds(daemon: &Daemon) -> Vec<String> {
    events(daemon)
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.message))
        .collect()
}

fn running(daemon: &Daemon) -> u32 {
    daemon.wait_for_service("web", "runs", |s| s.state == "running");
    daemon.running_pid("web")
}

/// The run under load: starts on build A, waits until every load thread is answered by
/// A, runs `act`, waits until every thread is answered by `end`, stops the load.
fn under_load(addr: &str, connections: Connections, end: &str, act: impl FnOnce()) -> LoadReport {
    let load = Load::start(addr, connections);
    load.wait_all_on("A");
    act();
    load.wait_all_on(end);
    load.finish()
}

fn assert_switched(report: &LoadReport, from: &str, to: &str, what: &str) {
    report.assert_no_failures(what);
    assert!(
        report.by_build.get(from).is_some_and(|n| *n > 0)
            && report.by_build.get(to).is_some_and(|n| *n > 0),
        "{what}: responses come from {from}, then {to}: {report:#?}"
    );
    assert!(
        report.last_builds.iter().all(|b| b == to),
        "{what}: every client ends on {to}: {report:#?}"
    );
}

/// Flipping `current` from A to B under load in `mode` fails no request and ends with
/// every client answered by B.
fn flip_a_to_b(mode: Mode, server: Server, connections: Connections) {
    let go = match server {
        Server::Demo => None,
        Server::Go => match go_server() {
            Ok(path) => Some(path),
            Err(reason) => {
                println!("skipped: the Go server cannot be built: {reason}");
                return;
            }
        },
    };
    let builds = Builds::new();
    match &go {
        None => builds.demo("A", &[]).demo("B", &[]),
        Some(go) => builds.go("A", go).go("B", go),
    };
    builds.flip("A");
    let port = free_port();
    let daemon = Daemon::start(&config(&builds, port, mode, server, "", BAKE));
    let old = running(&daemon);

    let report = under_load(&format!("127.0.0.1:{port}"), connections, "B", || {
        builds.flip("B");
        wait_event(&daemon, "upgraded");
    });
    let what = format!("{mode:?} mode, {server:?} server, {connections:?}");
    assert_switched(&report, "A", "B", &what);
    assert_ne!(running(&daemon), old, "{what}: a new process serves B");
    println!("{what}: {report:?}");
}

#[test]
fn handover_flip_from_a_to_b_under_keep_alive_load_fails_no_request() {
    flip_a_to_b(Mode::Handover, Server::Demo, Connections::KeepAlive);
}

#[test]
fn handover_flip_from_a_to_b_under_new_connection_load_fails_no_request() {
    flip_a_to_b(Mode::Handover, Server::Demo, Connections::NewPerRequest);
}

#[test]
fn reuseport_flip_from_a_to_b_under_keep_alive_load_fails_no_request() {
    flip_a_to_b(Mode::Reuseport, Server::Demo, Connections::KeepAlive);
}

#[test]
fn reuseport_flip_from_a_to_b_under_new_connection_load_fails_no_request() {
    flip_a_to_b(Mode::Reuseport, Server::Demo, Connections::NewPerRequest);
}

#[test]
fn proxy_flip_from_a_to_b_under_keep_alive_load_fails_no_request() {
    flip_a_to_b(Mode::Proxy, Server::Demo, Connections::KeepAlive);
}

#[test]
fn proxy_flip_from_a_to_b_under_new_connection_load_fails_no_request() {
    flip_a_to_b(Mode::Proxy, Server::Demo, Connections::NewPerRequest);
}

#[test]
fn proxy_flip_of_an_unmodified_go_server_under_keep_alive_load_fails_no_request() {
    flip_a_to_b(Mode::Proxy, Server::Go, Connections::KeepAlive);
}

#[test]
fn proxy_flip_of_an_unmodified_go_server_under_new_connection_load_fails_no_request() {
    flip_a_to_b(Mode::Proxy, Server::Go, Connections::NewPerRequest);
}

/// Health checks of the public port (during bake only the new run answers it).
/// The health check of `web` on public `port`: in proxy mode, of each run on its
/// private port.
fn health(port: u16, mode: Mode) -> String {
    let port = match mode {
        Mode::Proxy => "{port}".to_owned(),
        Mode::Handover | Mode::Reuseport => port.to_string(),
    };
    format!(
        r#"[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "300ms"
timeout = "300ms"
unhealthy = {{ failures = 2, within = "10s", action = "none" }}
"#
    )
}

/// Flips to `bad` under load and waits for its rollback and for `current` to point
/// back at A: returns the load's report and the `rolled_back` event.
fn roll_back(bad: &str, mode: Mode, connections: Connections) -> (LoadReport, EventRecord) {
    let builds = Builds::new();
    builds
        .demo("A", &[])
        .demo("C", &["--exit-immediately"])
        .demo("D", &["--unhealthy-after", "3s"]);
    builds.flip("A");
    let port = free_port();
    // Long enough for D to turn unhealthy (after 3 s) while it bakes.
    let bake = "60s";
    let daemon = Daemon::start(&config(
        &builds,
        port,
        mode,
        Server::Demo,
        &health(port, mode),
        bake,
    ));
    running(&daemon);
    let mut rolled_back = None;
    let report = under_load(&format!("127.0.0.1:{port}"), connections, "A", || {
        builds.flip(bad);
        rolled_back = Some(wait_event(&daemon, "rolled_back"));
    });
    let event = rolled_back.expect("the rollback was awaited under load");
    let upgraded: Vec<String> = kinds(&daemon)
        .into_iter()
        .filter(|k| k.starts_with("upgraded "))
        .collect();
    assert!(
        upgraded.is_empty(),
        "{bad} never counts as upgraded: {upgraded:?}"
    );
    builds.wait_points_at(&daemon, "A");
    (report, event)
}

/// C exits at start: the old run never stopped, so C served nothing.
fn crash_at_start_rolls_back(mode: Mode, connections: Connections) {
    let (report, event) = roll_back("C", mode, connections);
    report.assert_no_failures(&format!("rollback of C, {mode:?}, {connections:?}"));
    assert_eq!(
        report.by_build.keys().collect::<Vec<_>>(),
        ["A"],
        "C never served: {report:#?}"
    );
    let reason = event.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit"),
        "the reason names the exit: {event:#?}"
    );
}

#[test]
fn a_build_that_crashes_at_start_is_rolled_back_failing_no_keep_alive_request() {
    crash_at_start_rolls_back(Mode::Handover, Connections::KeepAlive);
}

#[test]
fn a_build_that_crashes_at_start_is_rolled_back_failing_no_new_connection_request() {
    crash_at_start_rolls_back(Mode::Handover, Connections::NewPerRequest);
}

#[test]
fn with_reuseport_a_build_that_crashes_at_start_is_rolled_back_failing_no_request() {
    crash_at_start_rolls_back(Mode::Reuseport, Connections::KeepAlive);
}

#[test]
fn behind_the_proxy_a_build_that_crashes_at_start_is_rolled_back_failing_no_request() {
    crash_at_start_rolls_back(Mode::Proxy, Connections::KeepAlive);
}

/// D served while baking, then turned unhealthy: A runs again and gets every client.
fn unhealthy_while_baking_rolls_back(mode: Mode, connections: Connections) {
    let (report, event) = roll_back("D", mode, connections);
    report.assert_no_failures(&format!("rollback of D, {mode:?}, {connections:?}"));
    assert!(
        report.last_builds.iter().all(|b| b == "A"),
        "every client ends on A again: {report:#?}"
    );
    let reason = event.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("unhealthy"),
        "the reason says it turned unhealthy: {event:#?}"
    );
}

#[test]
fn a_build_that_turns_unhealthy_while_baking_is_rolled_back_failing_no_keep_alive_request() {
    unhealthy_while_baking_rolls_back(Mode::Handover, Connections::KeepAlive);
}

#[test]
fn a_build_that_turns_unhealthy_while_baking_is_rolled_back_failing_no_new_connection_request() {
    unhealthy_while_baking_rolls_back(Mode::Handover, Connections::NewPerRequest);
}

#[test]
fn with_reuseport_a_build_that_turns_unhealthy_while_baking_is_rolled_back_failing_no_request() {
    unhealthy_while_baking_rolls_back(Mode::Reuseport, Connections::KeepAlive);
}

#[test]
fn behind_the_proxy_a_build_that_turns_unhealthy_while_baking_is_rolled_back_failing_no_request() {
    unhealthy_while_baking_rolls_back(Mode::Proxy, Connections::KeepAlive);
}

/// Flips to `bad` under load: refused, nothing changes.
fn refused(bad: &str, prepare: impl FnOnce(&Builds), why: &str) {
    let builds = Builds::new();
    builds.demo("A", &[]);
    prepare(&builds);
    builds.flip("A");
    let port = free_port();
    let daemon = Daemon::start(&config(
        &builds,
        port,
        Mode::Handover,
        Server::Demo,
        "",
        BAKE,
    ));
    let pid = running(&daemon);
    let mut refusal = None;
    let report = under_load(
        &format!("127.0.0.1:{port}"),
        Connections::KeepAlive,
        "A",
        || {
            builds.flip(bad);
            refusal = Some(wait_event(&daemon, "upgrade_refused"));
        },
    );
    let refusal = refusal.expect("the refusal was awaited under load");
    report.assert_no_failures(&format!("flip to {bad}"));
    assert_eq!(
        report.by_build.keys().collect::<Vec<_>>(),
        ["A"],
        "only A served: {report:#?}"
    );
    assert_eq!(running(&daemon), pid, "the same process still serves A");
    let reason = refusal.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(why),
        "the refusal says {why:?}: {refusal:#?}"
    );
    let started: Vec<String> = kinds(&daemon)
        .into_iter()
        .filter(|k| k.starts_with("upgrade_started "))
        .collect();
    assert!(started.is_empty(), "no rollout started: {started:?}");
}

#[test]
fn a_flip_to_a_file_that_is_not_executable_changes_nothing_under_load() {
    refused(
        "E",
        |b| {
            b.not_executable("E");
        },
        "executable",
    );
}

#[test]
fn a_flip_to_a_build_failing_its_checksum_changes_nothing_under_load() {
    refused(
        "F",
        |b| {
            b.bad_checksum("F");
        },
        "checksum",
    );
}

/// Three instances of build A sharing one port (reuseport), each running; also builds
/// B and C (crashes at start).
fn three_instances() -> (Daemon, Builds, u16) {
    let builds = Builds::new();
    builds
        .demo("A", &[])
        .demo("B", &[])
        .demo("C", &["--exit-immediately"]);
    builds.flip("A");
    let port = free_port();
    let daemon = Daemon::start(&config(
        &builds,
        port,
        Mode::Reuseport,
        Server::Demo,
        "instances = 3\n",
        BAKE,
    ));
    for i in 0..3 {
        daemon.wait_for_service(&format!("web@{i}"), "runs", |s| s.state == "running");
    }
    (daemon, builds, port)
}

/// The rollout events (`upgrade_started`, `upgraded`, `rolled_back`) as (kind, service).
fn rollout_steps(daemon: &Daemon) -> Vec<(String, String)> {
    events(daemon)
        .into_iter()
        .filter(|e| ["upgrade_started", "upgraded", "rolled_back"].contains(&e.kind.as_str()))
        .map(|e| {
            let service = e.service.map(|s| s.as_str().to_owned()).unwrap_or_default();
            (e.kind, service)
        })
        .collect()
}

fn step(kind: &str, service: &str) -> (String, String) {
    (kind.to_owned(), service.to_owned())
}

#[test]
fn three_instances_upgrade_one_at_a_time_canary_first_failing_no_request() {
    let (daemon, builds, port) = three_instances();
    let report = under_load(
        &format!("127.0.0.1:{port}"),
        Connections::NewPerRequest,
        "B",
        || {
            builds.flip("B");
            daemon.wait_until("every instance is upgraded", |d| {
                events(d).iter().filter(|e| e.kind == "upgraded").count() == 3
            });
        },
    );
    assert_switched(&report, "A", "B", "three instances");

    // One at a time: each instance's rollout ends before the next one starts, web@0
    // (the canary) first.
    let expected: Vec<(String, String)> = (0..3)
        .flat_map(|i| {
            let name = format!("web@{i}");
            [step("upgrade_started", &name), step("upgraded", &name)]
        })
        .collect();
    assert_eq!(
        rollout_steps(&daemon),
        expected,
        "one instance at a time, canary first"
    );
}

#[test]
fn a_canary_that_crashes_is_rolled_back_and_the_other_instances_are_never_touched() {
    let (daemon, builds, port) = three_instances();
    let pids: Vec<u32> = (0..3)
        .map(|i| daemon.running_pid(&format!("web@{i}")))
        .collect();
    let report = under_load(
        &format!("127.0.0.1:{port}"),
        Connections::NewPerRequest,
        "A",
        || {
            builds.flip("C");
            wait_event(&daemon, "rolled_back");
        },
    );
    report.assert_no_failures("canary rollback of C");
    assert_eq!(
        report.by_build.keys().collect::<Vec<_>>(),
        ["A"],
        "C never served: {report:#?}"
    );
    assert_eq!(
        rollout_steps(&daemon),
        [
            step("upgrade_started", "web@0"),
            step("rolled_back", "web@0")
        ],
        "only the canary tried C"
    );
    for (i, pid) in pids.iter().enumerate().skip(1) {
        assert_eq!(
            daemon.running_pid(&format!("web@{i}")),
            *pid,
            "web@{i} kept serving A in the same process"
        );
    }
    builds.wait_points_at(&daemon, "A");
}

/// The harness itself: a steady service (no upgrade) under both kinds of load.
fn steady(server: &Path, args: &[&str], connections: Connections) -> LoadReport {
    let port = free_port();
    let mut command: Vec<String> = vec![server.display().to_string()];
    command.extend(args.iter().map(|a| a.replace("PORT", &port.to_string())));
    let daemon = Daemon::start(&format!(
        "[service.web]\ncommand = {command:?}\nready = {{ tcp = \"127.0.0.1:{port}\" }}\n"
    ));
    running(&daemon);
    under_load(&format!("127.0.0.1:{port}"), connections, "A", || {})
}

#[test]
fn the_load_counts_every_response_of_a_steady_service_by_build() {
    for connections in [Connections::KeepAlive, Connections::NewPerRequest] {
        let args = ["--build-id", "A", "--listen", "127.0.0.1:PORT"];
        let report = steady(&demo_app(), &args, connections);
        report.assert_no_failures("steady demo-app");
        assert_eq!(
            report.by_build.keys().collect::<Vec<_>>(),
            ["A"],
            "{report:#?}"
        );
        assert_eq!(
            report.by_status.get(&200),
            Some(&report.requests),
            "{report:#?}"
        );
        assert_eq!(report.last_builds, ["A", "A"], "{report:#?}");
    }
}

#[test]
fn the_go_server_names_its_build_under_load() {
    let go = match go_server() {
        Ok(path) => path,
        Err(reason) => {
            println!("skipped: the Go server cannot be built: {reason}");
            return;
        }
    };
    let report = steady(
        &go,
        &["-build", "A", "-addr", "127.0.0.1:PORT"],
        Connections::KeepAlive,
    );
    report.assert_no_failures("steady Go server");
    assert_eq!(
        report.by_build.keys().collect::<Vec<_>>(),
        ["A"],
        "{report:#?}"
    );
}

/// Builds `tests/go/server.go` once per test process into the target directory, or
/// says why it cannot (no Go toolchain: `scripts/install-deps` installs golang-go).
fn go_server() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| support::go_build("server")).clone()
}
