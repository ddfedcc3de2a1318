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
