//! holdfast under a real systemd (PID 1 of a `systemd-nspawn` container): as the
//! `Type=notify` unit `holdfast gen systemd --self` writes, killed and restarted by
//! systemd without a duplicated or orphaned service, logging structured fields to the
//! journal, and asking systemd to restart a unit it only observes.

mod support;

use support::systemd::{Container, SHARED, UNDER_TEST};
use support::{demo_app, free_port};

/// Boots a container, or prints why this machine cannot and returns `None`.
fn container() -> Option<Container> {
    match Container::boot() {
        Ok(container) => Some(container),
        Err(reason) => {
            eprintln!("SKIP: {reason}");
            None
        }
    }
}

fn demo_app_inside() -> String {
    let path = demo_app();
    let name = path.file_name().expect("a file name").to_string_lossy();
    format!("{UNDER_TEST}/{name}")
}

/// Writes holdfast's config into the shared directory; its path inside the container.
fn write_config(container: &Container, toml: &str) -> String {
    let header = "\
[holdfast]
control = \"/run/holdfast/control.sock\"
state_dir = \"/var/lib/holdfast\"
log_dir = \"/var/log/holdfast\"

";
    std::fs::write(
        container.shared().join("holdfast.toml"),
        format!("{header}{toml}"),
    )
    .expect("failed to write the config");
    format!("{SHARED}/holdfast.toml")
}

/// Installs the unit `holdfast gen systemd --self` writes for `config`, checks it with
/// `systemd-analyze verify` and starts it (a `Type=notify` start returns once holdfast
/// said READY=1).
fn install_and_start_holdfast(container: &Container, config: &str) {
    let holdfast = container.holdfast();
    container.ok(&format!(
        "{holdfast} gen systemd --self --config {config} > /etc/systemd/system/holdfast.service"
    ));
    let verify = container.ok("systemd-analyze verify /etc/systemd/system/holdfast.service 2>&1");
    assert_eq!(verify.trim(), "", "systemd-analyze verify complains");
    container.ok("systemctl daemon-reload && systemctl start holdfast.service");
}

/// `(name, pid)` of every running service, from `holdfast status --json`.
fn service_pids(container: &Container) -> Vec<(String, u32)> {
    let json = container.ok(&format!(
        "{} status --json --socket /run/holdfast/control.sock",
        container.holdfast()
    ));
    let status: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    let mut pids: Vec<(String, u32)> = status["services"]
        .as_array()
        .expect("a list of services")
        .iter()
        .filter_map(|s| {
            let pid = s["pid"].as_u64()?;
            Some((s["name"].as_str()?.to_owned(), u32::try_from(pid).ok()?))
        })
        .collect();
    pids.sort();
    pids
}

/// The first entry holdfast logged to the journal about service `name`, as
/// `journalctl -o json` reads it back.
fn journal_entry_of(container: &Container, name: &str) -> serde_json::Value {
    let mut json = String::new();
    container.wait_until(
        &format!("a journal entry with HOLDFAST_SERVICE={name}"),
        |c| {
            json = c.ok(&format!(
                "journalctl -u holdfast.service -o json --no-pager HOLDFAST_SERVICE={name}"
            ));
            !json.trim().is_empty()
        },
    );
    let line = json.lines().next().expect("waited for above");
    serde_json::from_str(line).expect("journalctl -o json writes JSON lines")
}

/// Waits until holdfast's unit journal holds `text`: journald takes a unit's output
/// asynchronously, so a line may land after the `systemctl` call that caused it returned.
fn wait_journal(container: &Container, text: &str) {
    container.wait_until(&format!("holdfast's journal holds {text:?}"), |c| {
        c.ok("journalctl -u holdfast.service --no-pager -o cat")
            .contains(text)
    });
}

/// How many processes inside the container run `program`.
fn count_processes(container: &Container, program: &str) -> usize {
    let out = container.run(&format!("pgrep -c -x {program}"));
    support::stdout(&out).trim().parse().unwrap_or(0)
}

#[test]
fn holdfast_runs_as_its_generated_notify_unit_and_a_sigkill_restarts_it_without_duplicates() {
    let Some(container) = container() else { return };
    let port = free_port();
    let config = write_config(
        &container,
        &format!(
            r#"
[service.web]
command = ["{}", "--listen", "127.0.0.1:{port}"]
ready = "notify"

[service.ticker]
command = ["/bin/sh", "-c", "while :; do echo tick; sleep 0.2; done"]
"#,
            demo_app_inside()
        ),
    );
    install_and_start_holdfast(&container, &config);

    assert_eq!(container.show("holdfast", "ActiveState"), "active");
    assert_ne!(container.show("holdfast", "WatchdogUSec"), "0");
    container.wait_until("holdfast's STATUS= shows both services running", |c| {
        c.show("holdfast", "StatusText").contains("2 running")
    });
    let status = container.ok(&format!(
        "{} status --socket /run/holdfast/control.sock",
        container.holdfast()
    ));
    assert!(
        status.contains("under systemd:holdfast.service"),
        "holdfast knows systemd restarts it: {status}"
    );
    let before = service_pids(&container);
    assert_eq!(before.len(), 2, "both services run: {before:?}");

    let first = container.show("holdfast", "MainPID");
    container.ok("systemctl kill --signal=KILL --kill-whom=main holdfast.service");
    container.wait_until("systemd restarted holdfast", |c| {
        let main = c.show("holdfast", "MainPID");
        main != first && main != "0" && c.show("holdfast", "ActiveState") == "active"
    });
    assert_eq!(container.show("holdfast", "NRestarts"), "1");
    container.wait_until("the new holdfast answers", |c| {
        c.run(&format!(
            "{} status --socket /run/holdfast/control.sock",
            c.holdfast()
        ))
        .status
        .code()
            == Some(0)
    });
    assert_eq!(
        service_pids(&container),
        before,
        "the same processes, adopted"
    );
    let demo = demo_app()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(count_processes(&container, &demo), 1, "no duplicate web");
    // Every service process is still in holdfast's unit: none was orphaned.
    let group = container.show("holdfast", "ControlGroup");
    for (name, pid) in &before {
        let cgroup = container.ok(&format!("cat /proc/{pid}/cgroup"));
        assert!(
            cgroup.contains(&group),
            "{name} (pid {pid}) left holdfast's unit {group}: {cgroup}"
        );
    }

    let entry = journal_entry_of(&container, "web");
    for field in ["HOLDFAST_EVENT", "PRIORITY", "CODE_FILE", "CODE_LINE"] {
        assert!(entry.get(field).is_some(), "{field} in {entry}");
    }
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "holdfast");
    eprintln!("a journal entry of holdfast about web: {entry}");

    container.ok("systemctl stop holdfast.service");
    assert_eq!(
        count_processes(&container, &demo),
        0,
        "stopped with holdfast"
    );
}

#[test]
fn a_stop_that_outlasts_timeout_stop_sec_leaves_no_service_running() {
    let Some(container) = container() else { return };
    let config = write_config(
        &container,
        "[service.stubborn]\ncommand = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\n\
         stop = { timeout = \"600s\" }\n",
    );
    install_and_start_holdfast(&container, &config);
    wait_journal(&container, "cgroup-release: ");
    let pids = service_pids(&container);
    let [(_, pid)] = pids.as_slice() else {
        panic!("one service expected: {pids:?}")
    };
    // A stop timeout shorter than the service's: SIGKILL (KillMode=process) reaches
    // holdfast alone while it still waits for the service to stop.
    container.ok(
        "mkdir -p /etc/systemd/system/holdfast.service.d && \
         printf '[Service]\\nTimeoutStopSec=3s\\n' > /etc/systemd/system/holdfast.service.d/short.conf && \
         systemctl daemon-reload",
    );
    container.run("systemctl stop holdfast.service");
    assert_eq!(container.show("holdfast", "Result"), "timeout");
    container.wait_until(
        &format!("the service (pid {pid}) left by the timed-out holdfast is gone"),
        |c| c.run(&format!("test -d /proc/{pid}")).status.code() != Some(0),
    );
    wait_journal(&container, "cgroup-reap: service result timeout: killed");
}

#[test]
fn a_unit_holdfast_observes_is_restarted_through_systemd_when_its_health_fails() {
    let Some(container) = container() else { return };
    let port = free_port();
    container.ok(&format!(
        "systemd-run --unit=web --property=Restart=always {} --listen 127.0.0.1:{port}",
        demo_app_inside()
    ));
    let config = write_config(
        &container,
        &format!(
            r#"
[service.web]
managed_by = "systemd:web.service"
arbiter_timeout = "5s"
health_grace_period = "1s"
sync_interval = "200ms"

[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "200ms"
timeout = "150ms"
degraded = {{ failures = 1, within = "10s" }}
unhealthy = {{ failures = 2, within = "10s" }}
"#
        ),
    );
    install_and_start_holdfast(&container, &config);
    let old: u32 = container.show("web", "MainPID").parse().expect("a pid");
    container.wait_until("holdfast follows systemd's pid of web", |c| {
        service_pids(c) == vec![("web".to_owned(), old)]
    });

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(support::web::get(addr, "/health/fail").status, 200);
    container.wait_until("systemd restarted web with a new pid", |c| {
        let main = c.show("web", "MainPID");
        main != "0" && main != old.to_string()
    });
    let new: u32 = container.show("web", "MainPID").parse().expect("a pid");
    container.wait_until("holdfast follows the new pid", |c| {
        service_pids(c) == vec![("web".to_owned(), new)]
    });
    let events = container.ok(&format!(
        "{} events --json --socket /run/holdfast/control.sock web",
        container.holdfast()
    ));
    assert!(
        events.contains("\"upstream_restart_requested\""),
        "holdfast asked systemd: {events}"
    );
    let demo = demo_app()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        count_processes(&container, &demo),
        1,
        "holdfast spawned none"
    );
    let cgroup = container.ok(&format!("cat /proc/{new}/cgroup"));
    assert!(
        cgroup.contains("web.service"),
        "systemd's, not holdfast's: {cgroup}"
    );
}
