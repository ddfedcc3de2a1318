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
    let addr = web::addr(&daemon);
    let token = web::token(&daemon);
    let answer = web::post(
        addr,
        "/control",
        Some(&token),
        r#"{"verb":"restart","services":["api"]}"#,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let done = answer.json();
    assert_eq!(done["verb"], "restart");
    assert_eq!(done["replies"][0]["kind"], "accepted", "{done}");
    daemon.wait_for_service("api", "running again with a new pid", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });

    let answer = web::post(
        addr,
        "/control",
        Some(&token),
        r#"{"verb":"stop","services":["flaky"]}"#,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    daemon.wait_for_service("flaky", "stopped", |s| s.state == "stopped");
}

#[test]
fn control_answers_400_with_the_reason_for_a_bad_verb_or_an_unknown_service() {
    let daemon = Daemon::start(&two_services());
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let token = web::token(&daemon);
    let post = |body: &str| web::post(addr, "/control", Some(&token), body);

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
        let answer = web::request(
            addr,
            "GET",
            "/control/heartbeat",
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        );
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
