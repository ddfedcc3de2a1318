//! holdfast's HTTP server end to end: `/health` for outer checks, token-protected
//! `/control` and its heartbeat, the token file, the config that turns it on.

mod support;

use support::Daemon;
use support::web::{self, HTTP_ON};

fn two_services() -> String {
    format!(
        "{HTTP_ON}\
[service.api]
command = [\"sleep\", \"300\"]

[service.flaky]
command = [\"sh\", \"-c\", \"exec sleep 300\"]
restart = \"no\"
"
    )
}

#[test]
fn health_answers_200_while_every_service_runs_and_503_once_one_has_failed() {
    let daemon = Daemon::start(&two_services());
    daemon.running_pid("api");
    daemon.running_pid("flaky");
    let addr = web::addr(&daemon);
    let answer = web::get(addr, "/health");
    assert_eq!(answer.status, 200, "{answer:?}");
    let report = answer.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["holdfast"]["pid"], daemon.host_pid());
    assert_eq!(report["services"][0]["name"], "api");
    assert_eq!(report["services"][0]["state"], "running");
    assert_eq!(report["services"][0]["pid"], daemon.running_pid("api"));

    support::kill_9(daemon.running_pid("flaky"));
    daemon.wait_for_service("flaky", "failed", |s| s.state == "failed");
    let answer = web::get(addr, "/health");
    assert_eq!(answer.status, 503, "{answer:?}");
    let report = answer.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["services"][1]["state"], "failed");
    assert_eq!(report["services"][1]["ok"], false);
    assert_eq!(report["status"], "failing");

    // holdfast itself answers: its liveness check passes whatever its services do.
    let answer = web::get(addr, "/health?scope=holdfast");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["status"], "failing");
    let answer = web::get(addr, "/health?scope=everything");
    assert_eq!(answer.status, 400, "{answer:?}");
}

#[test]
fn control_without_the_token_is_refused_with_401_and_changes_nothing() {
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let restart = r#"{"verb":"restart","services":["api"]}"#;
    let answer = web::post(addr, "/control", None, restart);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    let wrong = "0".repeat(64);
    let answer = web::post(addr, "/control", Some(&wrong), restart);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(web::get(addr, "/control/heartbeat").status, 401);
    // Whatever came in before is applied by now: a later request was answered.
    assert_eq!(web::get(addr, "/health").status, 200);
    assert_eq!(daemon.service("api").pid, Some(pid), "nothing restarted");
    assert_eq!(daemon.service("api").restarts, 0);
}

#[test]
fn control_with_the_token_restarts_a_service_and_its_pid_changes() {
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let answer = web::control(&daemon, r#"{"verb":"restart","services":["api"]}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    let done = answer.json();
    assert_eq!(done["verb"], "restart");
    assert_eq!(done["replies"][0]["kind"], "accepted", "{done}");
    daemon.wait_for_service("api", "running again with a new pid", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });

    let answer = web::control(&daemon, r#"{"verb":"stop","services":["flaky"]}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    daemon.wait_for_service("flaky", "stopped", |s| s.state == "stopped");
}

#[test]
fn control_restarts_two_services_in_one_waited_request_answered_once_both_run_again() {
    let daemon = Daemon::start(&two_services());
    let before = [daemon.running_pid("api"), daemon.running_pid("flaky")];
    let answer = web::control(&daemon, r#"{"verb":"restart","services":["api","flaky"]}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    let done = answer.json();
    assert_eq!(done["verb"], "restart");
    let replies = done["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 2, "one reply per service: {done}");
    assert!(replies.iter().all(|r| r["kind"] == "accepted"), "{done}");
    // Waited for like the CLI's `restart api flaky`: each counts as started (1 s up by
    // default) before the answer, so the status read after it shows both new runs.
    let status = daemon.status();
    for (name, old) in ["api", "flaky"].into_iter().zip(before) {
        let service = support::service(&status, name);
        assert_eq!(service.state, "running", "{name}: {service:?}");
        assert!(service.pid.is_some_and(|p| p != old), "{name}: {service:?}");
    }
}

#[test]
fn control_answers_502_with_the_failed_outcome_when_a_started_service_fails_at_once() {
    let daemon = Daemon::start(&format!(
        "{HTTP_ON}\
[service.crashy]
command = [\"sh\", \"-c\", \"exit 1\"]
autostart = false
restart = \"no\"
"
    ));
    let answer = web::control(&daemon, r#"{"verb":"start","services":["crashy"]}"#);
    // Accepted, as the CLI's `start crashy` is, but failed (the CLI exits non-zero): the
    // answer says so in its status and in the outcome.
    assert_eq!(answer.status, 502, "{answer:?}");
    let done = answer.json();
    assert_eq!(done["replies"][0]["kind"], "accepted", "{done}");
    assert_eq!(done["outcomes"][0]["name"], "crashy", "{done}");
    assert_eq!(done["outcomes"][0]["verdict"], "failed", "{done}");
    assert_eq!(daemon.service("crashy").state, "failed");
}

#[test]
fn control_answers_400_with_the_reason_for_a_bad_verb_or_an_unknown_service() {
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let post = |body: &str| web::control(&daemon, body);

    let answer = post(r#"{"verb":"explode","services":["api"]}"#);
    assert_eq!(answer.status, 400, "{answer:?}");
    let message = answer.json()["error"]["message"].to_string();
    assert!(message.contains("unknown variant `explode`"), "{message}");

    // One unknown name and no service is touched, as with the CLI.
    let answer = post(r#"{"verb":"stop","services":["api","apj"]}"#);
    assert_eq!(answer.status, 400, "{answer:?}");
    let message = answer.json()["error"]["message"].to_string();
    assert!(
        message.contains("no service named \\\"apj\\\""),
        "{message}"
    );
    assert!(message.contains("did you mean \\\"api\\\""), "{message}");

    let answer = post("{not json");
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = post(r#"{"verb":"signal","services":["api"],"signal":"SIGNOPE"}"#);
    assert_eq!(answer.status, 400, "{answer:?}");

    assert_eq!(daemon.service("api").state, "running");
    assert_eq!(daemon.service("api").pid, Some(pid), "nothing changed");
}

#[test]
fn the_heartbeat_says_which_holdfast_answers_and_a_restarted_one_keeps_its_token() {
    let mut daemon = Daemon::start(&two_services());
    daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let token = web::token(&daemon);
    let path = daemon.dir().join("state/http.token");
    let mode = std::fs::metadata(&path).expect("token file").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let beat = |addr, token: &str| {
        let answer = web::get_with_token(addr, "/control/heartbeat", token);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    };
    let first = beat(addr, &token);
    assert_eq!(first["pid"], daemon.host_pid());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    assert_eq!(first["boot_id"], boot_id.trim());
    assert!(first["seq"].as_u64().is_some_and(|seq| seq > 0), "{first}");

    daemon.kill_9_and_start_again();
    assert_eq!(web::token(&daemon), token, "the token is reused");
    let addr = web::addr(&daemon);
    let second = beat(addr, &token);
    assert_eq!(second["pid"], daemon.host_pid());
    assert_ne!(second["instance"], first["instance"], "another start");
}

#[test]
fn up_fails_before_any_service_starts_when_the_http_port_is_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port();
    let dir = std::env::temp_dir().join(format!("holdfast-http-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let marker = dir.join("started");
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "[holdfast]\ncontrol = \"control.sock\"\nlog_dir = \"logs\"\nstate_dir = \"state\"\n\
             http = \"127.0.0.1:{port}\"\n\n[service.app]\n\
             command = [\"sh\", \"-c\", \"touch {}; exec sleep 100\"]\n",
            marker.display()
        ),
    )
    .expect("config");
    let mut up = support::holdfast();
    up.args(["up", "-c"]).arg(&config);
    let output = support::run(up);
    assert!(!output.status.success(), "{}", support::describe(&output));
    let text = support::stderr(&output);
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && text.contains("the port is in use"),
        "{text}"
    );
    assert!(!marker.exists(), "no service started");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_http_server_is_off_without_http_and_warns_when_it_listens_beyond_loopback() {
    let daemon = Daemon::start("[service.api]\ncommand = [\"sleep\", \"300\"]\n");
    daemon.running_pid("api");
    assert!(
        !daemon.stderr().contains("dashboard:"),
        "{}",
        daemon.stderr()
    );
    assert!(!daemon.dir().join("state/http.token").exists());

    let open =
        Daemon::start("http = \"0.0.0.0:0\"\n\n[service.api]\ncommand = [\"sleep\", \"300\"]\n");
    let addr = web::addr(&open);
    assert!(addr.ip().is_unspecified(), "{addr}");
    assert!(
        open.stderr().contains("reachable from other machines"),
        "{}",
        open.stderr()
    );
}

/// A `GET /api/events` stream being read.
struct EventStream {
    lines: std::io::Lines<std::io::BufReader<std::net::TcpStream>>,
    /// The markers (`event: NAME` without id) read so far, with their data.
    markers: Vec<(String, serde_json::Value)>,
}

impl EventStream {
    fn open(addr: std::net::SocketAddr, headers: &str) -> EventStream {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(support::DEADLINE))
            .expect("timeout");
        write!(
            stream,
            "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )
        .expect("request");
        EventStream {
            lines: BufReader::new(stream).lines(),
            markers: Vec::new(),
        }
    }

    /// Reads until `done` says enough (given the events and the markers read by this
    /// call); returns the `(id, record)` pairs read.
    fn read_until(
        &mut self,
        mut done: impl FnMut(&[(u64, serde_json::Value)], &[(String, serde_json::Value)]) -> bool,
    ) -> Vec<(u64, serde_json::Value)> {
        let mut events = Vec::new();
        let first_marker = self.markers.len();
        let (mut id, mut name) = (None, None);
        while !done(&events, &self.markers[first_marker..]) {
            let line = self
                .lines
                .next()
                .expect("the stream goes on until the expected events came")
                .expect("a line within the deadline");
            if line.is_empty() {
                (id, name) = (None, None);
            } else if let Some(seq) = line.strip_prefix("id:") {
                id = seq.trim().parse().ok();
            } else if let Some(event) = line.strip_prefix("event:") {
                name = Some(event.trim().to_owned());
            } else if let Some(data) = line.strip_prefix("data:") {
                let data: serde_json::Value = serde_json::from_str(data.trim()).expect("JSON data");
                match name.take() {
                    Some(name) => self.markers.push((name, data)),
                    None => events.push((id.expect("every event has an id"), data)),
                }
            }
        }
        events
    }

    /// Reads the backlog, up to the `caught_up` marker.
    fn backlog(&mut self) -> Vec<(u64, serde_json::Value)> {
        self.read_until(|_, markers| markers.iter().any(|(m, _)| m == "caught_up"))
    }
}

/// Reads server-sent events from `GET /api/events` until `done` says enough; returns
/// the `(id, record)` pairs read.
fn read_events(
    addr: std::net::SocketAddr,
    headers: &str,
    mut done: impl FnMut(&[(u64, serde_json::Value)]) -> bool,
) -> Vec<(u64, serde_json::Value)> {
    EventStream::open(addr, headers).read_until(|events, _| done(events))
}

#[test]
fn the_event_stream_sends_the_history_then_a_crash_and_restart_live_and_resumes_after_an_id() {
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let spawned_api = |e: &serde_json::Value| e["kind"] == "spawned" && e["service"] == "api";
    let mut stream = EventStream::open(addr, "");
    let history = stream.backlog();
    let (spawn_id, _) = history
        .iter()
        .find(|(_, e)| spawned_api(e))
        .cloned()
        .expect("found");

    // The stream is open and caught up before the kill: the crash comes live.
    support::kill_9(pid);
    let live = stream.read_until(|events, _| events.iter().any(|(_, e)| spawned_api(e)));
    let exited = live
        .iter()
        .find(|(_, e)| e["kind"] == "exited" && e["service"] == "api")
        .expect("the exit came live");
    assert!(exited.0 > spawn_id, "{live:?}");
    assert!(
        history.iter().all(|(_, e)| e["kind"] != "exited"),
        "{history:?}"
    );
    assert!(
        live.windows(2).all(|w| w[0].0 < w[1].0),
        "in order: {live:?}"
    );

    // A browser reconnecting with the last id it saw gets only what came after.
    let resumed = read_events(addr, &format!("Last-Event-ID: {spawn_id}\r\n"), |events| {
        events.iter().any(|(_, e)| e["kind"] == "exited")
    });
    assert!(resumed.iter().all(|(id, _)| *id > spawn_id), "{resumed:?}");
}

#[test]
fn a_browser_resuming_with_an_id_past_the_newest_gets_a_gap_the_history_and_live_events() {
    // A page that saw a previous holdfast's events (numbered higher than this one's).
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let last_id = 1_000_000;
    let mut stream = EventStream::open(addr, &format!("Last-Event-ID: {last_id}\r\n"));
    let backlog = stream.backlog();
    assert_eq!(stream.markers[0].0, "gap", "{:?}", stream.markers);
    assert_eq!(stream.markers[0].1["reason"], "restarted");
    assert!(
        backlog.iter().any(|(_, e)| e["kind"] == "spawned"),
        "the history is sent: {backlog:?}"
    );
    let newest = backlog.last().expect("events").0;
    // And what happens from there comes live, numbered below the page's old id.
    daemon.cli_ok(&["restart", "api"]);
    let live = stream.read_until(|events, _| {
        events
            .iter()
            .any(|(_, e)| e["kind"] == "spawned" && e["service"] == "api")
    });
    assert!(
        live.iter().all(|(id, _)| *id > newest && *id < last_id),
        "{live:?}"
    );
    assert_ne!(daemon.running_pid("api"), pid);
}

#[test]
fn the_read_api_shows_status_without_a_token_and_crash_reports_and_log_tails_only_with_it() {
    let daemon = Daemon::start(&format!(
        "{HTTP_ON}\
[service.talker]
command = [\"sh\", \"-c\", \"for i in 1 2 3 4 5; do echo line $i; done; exec sleep 300\"]

[service.crasher]
command = [\"sh\", \"-c\", \"echo about to fail; exit 3\"]
restart = \"no\"
"
    ));
    daemon.running_pid("talker");
    let addr = web::addr(&daemon);
    let status = web::get(addr, "/api/status").json();
    assert_eq!(status["daemon"]["pid"], daemon.host_pid());
    assert_eq!(status["services"].as_array().map(Vec::len), Some(2));

    // Service output and stacks need the token.
    for path in ["/api/logs/talker", "/api/crashes", "/api/crashes/x"] {
        let refused = web::get(addr, path);
        assert_eq!(refused.status, 401, "{path}: {refused:?}");
        assert!(!refused.body.contains("line 1"), "{refused:?}");
    }
    let token = web::token(&daemon);
    let get = |path: &str| web::get_with_token(addr, path, &token);
    // The scheme is case-insensitive (RFC 7235).
    let lower = web::request(
        addr,
        "GET",
        "/api/crashes",
        &[("Authorization", &format!("bearer {token}"))],
        "",
    );
    assert_eq!(lower.status, 200, "{lower:?}");

    let line = |v: &serde_json::Value| v["line"].as_str().unwrap_or_default().to_owned();
    let mut all = Vec::new();
    daemon.wait_until("talker's five lines are in its log", |_| {
        let tail = get("/api/logs/talker").json();
        all = tail["lines"].as_array().cloned().unwrap_or_default();
        all.iter().any(|l| line(l).ends_with("stdout   line 5"))
    });
    let first_output = all.iter().map(line).find(|l| l.contains(" stdout "));
    assert!(
        first_output.is_some_and(|l| l.ends_with("line 1")),
        "{all:?}"
    );
    let tail = get("/api/logs/talker?n=2").json();
    let last_two: Vec<String> = tail["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(line)
        .collect();
    let expected: Vec<String> = all[all.len() - 2..].iter().map(line).collect();
    assert_eq!(last_two, expected);
    let unknown = get("/api/logs/nope");
    assert_eq!(unknown.status, 400, "{unknown:?}");

    let mut list = serde_json::Value::Null;
    daemon.wait_until("a crash report of crasher", |_| {
        list = get("/api/crashes").json();
        list["crashes"].as_array().is_some_and(|c| !c.is_empty())
    });
    let id = list["crashes"][0]["id"].as_str().expect("an id").to_owned();
    let report = get(&format!("/api/crashes/{id}"));
    assert_eq!(report.status, 200, "{report:?}");
    let report = report.json();
    assert_eq!(report["service"], "crasher");
    assert_eq!(report["code"], 3);
    assert!(
        report["log"].to_string().contains("about to fail"),
        "{report}"
    );
}

#[test]
fn a_reload_moves_the_http_server_or_says_why_it_stays() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let first = support::free_port();
    let daemon = Daemon::start(&format!("http = \"127.0.0.1:{first}\"\n\n{service}"));
    daemon.running_pid("api");
    let at = |port: u16| -> std::net::SocketAddr {
        format!("127.0.0.1:{port}").parse().expect("an address")
    };
    assert_eq!(web::get(at(first), "/health").status, 200);

    let second = support::free_port();
    daemon.write_config(&format!("http = \"127.0.0.1:{second}\"\n\n{service}"));
    daemon.cli_ok(&["reload"]);
    assert_eq!(web::get(at(second), "/health").status, 200);
    daemon.wait_until("the old port is closed", |_| {
        std::net::TcpStream::connect(at(first)).is_err()
    });

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let busy = taken.local_addr().expect("addr").port();
    daemon.write_config(&format!("http = \"127.0.0.1:{busy}\"\n\n{service}"));
    let output = daemon.cli_ok(&["reload"]);
    let said = support::stdout(&output);
    assert!(
        said.contains("[holdfast].http")
            && said.contains("the port is in use")
            && said.contains(&format!("still on 127.0.0.1:{second}")),
        "{said}"
    );
    assert_eq!(web::get(at(second), "/health").status, 200, "still served");
    drop(taken);

    daemon.write_config(service);
    daemon.cli_ok(&["reload"]);
    daemon.wait_until("the server is off", |_| {
        std::net::TcpStream::connect(at(second)).is_err()
    });
}

#[test]
fn a_reload_lists_a_change_of_the_http_address_and_a_dry_run_only_lists_it() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let first = support::free_port();
    let second = support::free_port();
    let on = |port: u16| format!("http = \"127.0.0.1:{port}\"\n\n{service}");
    let at = |port: u16| -> std::net::SocketAddr {
        format!("127.0.0.1:{port}").parse().expect("an address")
    };
    let daemon = Daemon::start(&on(first));
    daemon.running_pid("api");
    let dry_run = |config: &str| {
        daemon.write_config(config);
        support::stdout(&daemon.cli_ok(&["reload", "--dry-run"]))
    };

    let moved = format!("~ changed: [holdfast].http: 127.0.0.1:{first} -> 127.0.0.1:{second}");
    let said = dry_run(&on(second));
    assert!(
        said.contains("reload would apply this plan") && said.contains(&moved),
        "{said}"
    );
    let off = format!("~ changed: [holdfast].http: 127.0.0.1:{first} -> off");
    let said = dry_run(service);
    assert!(said.contains(&off), "{said}");
    assert_eq!(web::get(at(first), "/health").status, 200, "nothing moved");

    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(said.contains(&off), "{said}");
    daemon.wait_until("the server is off", |_| {
        std::net::TcpStream::connect(at(first)).is_err()
    });
    let said = dry_run(&on(second));
    assert!(
        said.contains(&format!(
            "~ changed: [holdfast].http: off -> 127.0.0.1:{second}"
        )),
        "{said}"
    );
}

#[test]
fn a_reload_turns_on_an_http_server_that_was_off_at_start_with_a_new_token() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let daemon = Daemon::start(service);
    let pid = daemon.running_pid("api");
    assert!(!daemon.dir().join("state/http.token").exists());

    let port = support::free_port();
    daemon.write_config(&format!("http = \"127.0.0.1:{port}\"\n\n{service}"));
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains(&format!(
            "~ changed: [holdfast].http: off -> 127.0.0.1:{port}"
        )),
        "{said}"
    );
    assert_eq!(web::addr(&daemon), on("127.0.0.1", port));
    assert_eq!(web::get(on("127.0.0.1", port), "/health").status, 200);
    let answer = web::control(&daemon, r#"{"verb": "restart", "services": ["api"]}"#);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_ne!(daemon.running_pid("api"), pid, "the token works");
}

/// `ip:port` of a test's HTTP server.
fn on(ip: &str, port: u16) -> std::net::SocketAddr {
    format!("{ip}:{port}").parse().expect("an address")
}

#[test]
fn a_reload_moves_the_http_server_to_another_ip_on_the_same_port_and_back_with_the_same_token() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let port = support::free_port();
    let config = |ip: &str| format!("http = \"{ip}:{port}\"\n\n{service}");
    let daemon = Daemon::start(&config("127.0.0.1"));
    daemon.running_pid("api");
    let token = web::token(&daemon);
    assert_eq!(web::get(on("127.0.0.1", port), "/health").status, 200);

    // 127.0.0.2 reaches only a server on the unspecified address.
    daemon.write_config(&config("0.0.0.0"));
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains(&format!(
            "~ changed: [holdfast].http: 127.0.0.1:{port} -> 0.0.0.0:{port}"
        )),
        "{said}"
    );
    assert_eq!(web::get(on("127.0.0.2", port), "/health").status, 200);
    let beat = web::get_with_token(on("127.0.0.2", port), "/control/heartbeat", &token);
    assert_eq!(beat.status, 200, "the same token: {beat:?}");

    daemon.write_config(&config("127.0.0.1"));
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains(&format!(
            "~ changed: [holdfast].http: 0.0.0.0:{port} -> 127.0.0.1:{port}"
        )),
        "{said}"
    );
    daemon.wait_until("the unspecified address is closed", |_| {
        std::net::TcpStream::connect(on("127.0.0.2", port)).is_err()
    });
    let beat = web::get_with_token(on("127.0.0.1", port), "/control/heartbeat", &token);
    assert_eq!(beat.status, 200, "{beat:?}");
}

#[test]
fn a_move_to_the_same_port_on_another_ip_that_another_process_holds_stays_on_the_old_address() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let port = support::free_port();
    let config = |ip: &str| format!("http = \"{ip}:{port}\"\n\n{service}");
    let daemon = Daemon::start(&config("127.0.0.1"));
    daemon.running_pid("api");
    let token = web::token(&daemon);
    // Beside holdfast's 127.0.0.1:P (two addresses, neither unspecified), and in the
    // way of 0.0.0.0:P even once holdfast closed its own socket.
    let other = std::net::TcpListener::bind(on("127.0.0.2", port)).expect("127.0.0.2:P");

    daemon.write_config(&config("0.0.0.0"));
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains("! not applied: [holdfast].http")
            && said.contains("the port is in use")
            && said.contains("the next reload tries again")
            && said.contains(&format!("still on 127.0.0.1:{port}")),
        "{said}"
    );
    let beat = web::get_with_token(on("127.0.0.1", port), "/control/heartbeat", &token);
    assert_eq!(beat.status, 200, "still served: {beat:?}");

    drop(other);
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains(&format!(
            "~ changed: [holdfast].http: 127.0.0.1:{port} -> 0.0.0.0:{port}"
        )),
        "the next reload tries again: {said}"
    );
    assert_eq!(web::get(on("127.0.0.2", port), "/health").status, 200);
}

#[test]
fn a_move_to_another_specific_ip_that_another_process_holds_leaves_the_old_socket_open() {
    let service = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let port = support::free_port();
    let config = |ip: &str| format!("http = \"{ip}:{port}\"\n\n{service}");
    let daemon = Daemon::start(&config("127.0.0.1"));
    daemon.running_pid("api");
    // 127.0.0.1:P is not in the way of 127.0.0.2:P: only the other process is, so
    // holdfast's socket is never closed for the attempt.
    let other = std::net::TcpListener::bind(on("127.0.0.2", port)).expect("127.0.0.2:P");

    daemon.write_config(&config("127.0.0.2"));
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(
        said.contains("! not applied: [holdfast].http")
            && said.contains("the port is in use")
            && said.contains(&format!("still on 127.0.0.1:{port}")),
        "{said}"
    );
    assert!(!said.contains("after closing"), "no gap: {said}");
    assert_eq!(web::get(on("127.0.0.1", port), "/health").status, 200);
    drop(other);
}

#[test]
fn after_upgrade_self_the_same_address_answers_with_the_same_token() {
    let port = support::free_port();
    let daemon = Daemon::start(&format!(
        "http = \"127.0.0.1:{port}\"\n\n[service.api]\ncommand = [\"sleep\", \"300\"]\n"
    ));
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let token = web::token(&daemon);
    let before = web::get_with_token(addr, "/control/heartbeat", &token).json();
    daemon.cli_ok(&["upgrade", "--self"]);
    assert_eq!(daemon.status().daemon.execs, 1);
    let beat = web::get_with_token(addr, "/control/heartbeat", &token);
    assert_eq!(beat.status, 200, "{beat:?}");
    assert_eq!(beat.json()["pid"], daemon.host_pid());
    assert_ne!(
        beat.json()["instance"],
        before["instance"],
        "the instance changes when holdfast re-executed itself"
    );
    assert_eq!(daemon.service("api").pid, Some(pid));
}

#[test]
fn the_event_stream_sends_the_shutdown_and_then_ends() {
    use std::io::{BufRead, BufReader, Write};
    let mut daemon = Daemon::start(&two_services());
    daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(support::DEADLINE))
        .expect("timeout");
    write!(
        stream,
        "GET /api/events?last=0 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut lines = BufReader::new(stream).lines();
    let head = lines.next().expect("a status line").expect("read");
    assert!(head.contains(" 200 "), "{head}");
    daemon.cli_ok(&["shutdown"]);
    daemon.wait_exit();
    // Everything up to the end of the stream, which must come (not the read deadline).
    let rest: Vec<String> = lines
        .map(|l| l.expect("the stream ends, not the deadline"))
        .collect();
    let kinds: Vec<String> = rest
        .iter()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d.trim()).expect("JSON")["kind"].to_string()
        })
        .collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("\"shutdown_completed\""),
        "{rest:?}"
    );
}

#[test]
fn http_token_prints_the_token_and_the_dashboard_url_carrying_it() {
    let daemon = Daemon::start(&two_services());
    let token = web::token(&daemon);
    let http_token = |daemon: &Daemon| {
        let mut cmd = support::holdfast();
        cmd.args(["http-token", "-c"]).arg(daemon.config_path());
        support::run(cmd)
    };
    let output = http_token(&daemon);
    assert!(output.status.success(), "{}", support::describe(&output));
    assert_eq!(support::stdout(&output).trim(), token);
    assert!(
        support::stderr(&output).contains(&format!("/#token={token}")),
        "{}",
        support::describe(&output)
    );

    let off = Daemon::start("[service.api]\ncommand = [\"sleep\", \"300\"]\n");
    let output = http_token(&off);
    assert!(!output.status.success());
    assert!(
        support::stderr(&output).contains("the HTTP server is off"),
        "{}",
        support::describe(&output)
    );
}

#[test]
fn a_request_for_another_host_name_is_refused_with_421_so_a_rebound_page_reads_nothing() {
    let daemon = Daemon::start(&two_services());
    daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let port = addr.port();
    let with_host = |host: &str, path: &str| {
        // The client sends its own Host first; a second one would be ambiguous, so the
        // raw request is written here.
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("answer");
        raw
    };
    for host in [format!("evil.example:{port}"), "evil.example".to_owned()] {
        for path in ["/api/status", "/api/events", "/health", "/"] {
            let raw = with_host(&host, path);
            assert!(raw.starts_with("HTTP/1.1 421"), "{host} {path}: {raw}");
            assert!(!raw.contains("\"services\""), "{raw}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let raw = with_host(&host, "/health");
        assert!(raw.starts_with("HTTP/1.1 200"), "{host}: {raw}");
    }
}

#[test]
fn idle_connections_beyond_the_cap_are_closed_and_health_still_answers() {
    use std::io::Read;
    let daemon = Daemon::start(&two_services());
    daemon.running_pid("api");
    let addr = web::addr(&daemon);
    // More idle connections than the server holds (256): none sends a byte.
    let mut idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    // Served once the idle ones time out (header read timeout), not never.
    let answer = web::get(addr, "/health");
    assert_eq!(answer.status, 200, "{answer:?}");
    let token = web::token(&daemon);
    assert_eq!(
        web::get_with_token(addr, "/control/heartbeat", &token).status,
        200
    );
    // The server closed the first idle connection (end of stream, not our deadline).
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(support::DEADLINE))
        .expect("timeout");
    let mut rest = Vec::new();
    let closed = first.read_to_end(&mut rest);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed by the server: {closed:?}"
    );
}
