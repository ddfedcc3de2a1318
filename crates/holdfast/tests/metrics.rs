//! `/metrics` end to end: the answer parses with the Python `prometheus_client`
//! parsers (the Prometheus text format and OpenMetrics), and counters fed by events
//! move when a service crashes.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::web::{self, HTTP_ON};
use support::{Daemon, free_port, kill_9, workspace_root};

/// Parses stdin with both parsers of the real `prometheus_client` and prints every
/// sample as `name{k="v",...} value`, labels sorted, one per line (from the
/// OpenMetrics parser; the text-format one must accept the same input).
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as text_format
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
text = sys.stdin.read()
list(text_format(text))
for family in openmetrics(text):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

/// The samples of the daemon's `/metrics`, as parsed by Python's `prometheus_client`.
fn scrape(daemon: &Daemon) -> BTreeMap<String, f64> {
    let answer = web::get(web::addr(daemon), "/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.head.contains("application/openmetrics-text"),
        "{}",
        answer.head
    );
    let python = workspace_root().join(".venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (run scripts/install-deps): {e}", python.display()));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(answer.body.as_bytes())
        .expect("python reads the metrics");
    let out = child.wait_with_output().expect("python runs");
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        answer.body
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn config(port: u16) -> String {
    format!(
        r#"{HTTP_ON}
[service.api]
command = ["sleep", "300"]

[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{port}"]

[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "200ms"
"#
    )
}

#[test]
fn metrics_parse_with_prometheus_client_and_the_restart_counter_rises_after_a_crash() {
    let port = free_port();
    let daemon = Daemon::start(&config(port));
    let first = daemon.running_pid("api");
    daemon.wait_for_service("web", "web passed a probe", |s| {
        s.health.as_ref().is_some_and(|h| h.successes >= 1)
    });
    let before = scrape(&daemon);
    let sample = |m: &BTreeMap<String, f64>, name: &str| m.get(name).copied();
    assert_eq!(
        sample(&before, r#"holdfast_service_up{service="api"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &before,
            r#"holdfast_service_state{service="api",state="running"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &before,
            r#"holdfast_service_state{service="api",state="failed"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&before, r#"holdfast_service_health_level{service="web"}"#),
        Some(0.0)
    );
    let restarts = r#"holdfast_service_restarts_total{reason="exit",service="api"}"#;
    assert_eq!(
        sample(&before, restarts),
        None,
        "no restart yet: {before:#?}"
    );
    let probes =
        r#"holdfast_probe_duration_seconds_count{outcome="ok",probe="http",service="web"}"#;
    assert!(
        sample(&before, probes).is_some_and(|n| n >= 1.0),
        "{before:#?}"
    );
    assert_eq!(
        sample(
            &before,
            &format!(
                r#"holdfast_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    for name in [
        "holdfast_open_fds{}",
        "holdfast_resident_memory_bytes{}",
        "holdfast_children{}",
    ] {
        assert!(
            sample(&before, name).is_some_and(|v| v > 0.0),
            "{name}: {before:#?}"
        );
    }
    assert!(sample(&before, "holdfast_event_loop_lag_seconds{}").is_some());
    for name in [
        "holdfast_journal_dropped_lines_total{}",
        "holdfast_log_dropped_entries_total{}",
    ] {
        assert_eq!(sample(&before, name), Some(0.0), "{name}: {before:#?}");
    }

    kill_9(first);
    daemon.wait_for_service("api", "api runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first)
    });
    let after = scrape(&daemon);
    assert_eq!(sample(&after, restarts), Some(1.0), "{after:#?}");
    assert_eq!(
        sample(
            &after,
            r#"holdfast_service_exits_total{code="",service="api",signal="SIGKILL"}"#
        ),
        Some(1.0),
        "{after:#?}"
    );
    assert_eq!(
        sample(&after, r#"holdfast_service_up{service="api"}"#),
        Some(1.0)
    );
}

#[test]
fn exec_probes_are_timed_in_the_probe_histogram_with_each_outcome() {
    let daemon = Daemon::start(&format!(
        r#"{HTTP_ON}
[service.passing]
command = ["sleep", "300"]
[service.passing.health]
exec = ["true"]
interval = "200ms"

[service.failing]
command = ["sleep", "300"]
[service.failing.health]
exec = ["false"]
interval = "200ms"
unhealthy = {{ failures = 1000, within = "1s", action = "none" }}

[service.hanging]
command = ["sleep", "300"]
[service.hanging.health]
exec = ["sleep", "3600"]
interval = "200ms"
timeout = "100ms"
unhealthy = {{ failures = 1000, within = "1s", action = "none" }}
"#
    ));
    for name in ["passing", "failing", "hanging"] {
        daemon.wait_for_service(name, "a probe result arrived", |s| {
            s.health.as_ref().is_some_and(|h| h.probes >= 1)
        });
    }
    let metrics = scrape(&daemon);
    let series = |part: &str, service: &str, outcome: &str| {
        let name = format!(
            r#"holdfast_probe_duration_seconds_{part}{{outcome="{outcome}",probe="exec",service="{service}"}}"#
        );
        metrics.get(&name).copied()
    };
    for (service, outcome) in [
        ("passing", "ok"),
        ("failing", "fail"),
        ("hanging", "timeout"),
    ] {
        assert!(
            series("count", service, outcome).is_some_and(|n| n >= 1.0),
            "{service} {outcome}: {metrics:#?}"
        );
    }
    // A probe killed at its timeout took at least the timeout.
    let (count, sum) = (
        series("count", "hanging", "timeout").expect("checked above"),
        series("sum", "hanging", "timeout").expect("a histogram has a sum"),
    );
    assert!(sum >= count * 0.1, "{count} probes took {sum}s in all");
}

#[test]
fn counters_and_probe_timings_go_on_across_upgrade_self_instead_of_starting_over() {
    let port = free_port();
    let daemon = Daemon::start(&config(port));
    let first = daemon.running_pid("api");
    kill_9(first);
    daemon.wait_for_service("api", "api runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first)
    });
    daemon.wait_for_service("web", "web passed a probe", |s| {
        s.health.as_ref().is_some_and(|h| h.successes >= 1)
    });
    let restarts = r#"holdfast_service_restarts_total{reason="exit",service="api"}"#;
    let exits = r#"holdfast_service_exits_total{code="",service="api",signal="SIGKILL"}"#;
    let probes =
        r#"holdfast_probe_duration_seconds_count{outcome="ok",probe="http",service="web"}"#;
    let before = scrape(&daemon);
    assert_eq!(before.get(restarts), Some(&1.0), "{before:#?}");
    assert_eq!(before.get(exits), Some(&1.0), "{before:#?}");
    let probed = before.get(probes).copied().expect("web was probed");

    daemon.cli_ok(&["upgrade", "--self"]);
    assert_eq!(
        daemon.status().daemon.execs,
        1,
        "holdfast re-executed itself"
    );
    let after = scrape(&daemon);
    assert_eq!(after.get(restarts), Some(&1.0), "{after:#?}");
    assert_eq!(after.get(exits), Some(&1.0), "{after:#?}");
    assert!(
        after.get(probes).is_some_and(|&n| n >= probed),
        "{probed} probes before, after: {after:#?}"
    );
    // Every bucket carried over: none counts fewer than before.
    for (name, value) in &before {
        if name.starts_with("holdfast_probe_duration_seconds_bucket") {
            assert!(
                after.get(name).is_some_and(|v| v >= value),
                "{name}: {value} before, after: {after:#?}"
            );
        }
    }
}
