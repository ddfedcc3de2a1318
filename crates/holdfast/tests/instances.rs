//! `instances = N` end to end: three copies of the demo app, each on its own loopback
//! port (`{instance + PORT}`), supervised one by one and restarted one after another.

mod support;

use std::net::{TcpListener, TcpStream};

use holdfast::control::protocol::EventRecord;
use support::{Daemon, describe, holdfast, is_alive, run, stderr, stdout};

/// A port `p` with `p` .. `p + 3` free on 127.0.0.1 (bound and released here; another
/// process taking one before the demo app binds it is unlikely): three instances, and a
/// fourth added by a reload.
fn four_free_ports() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let base = first.local_addr().expect("local address").port();
        let Some(last) = base.checked_add(3) else {
            continue;
        };
        let rest: Vec<_> = (base + 1..=last)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
}

/// Three demo apps on `base`, `base + 1`, `base + 2`, each running once it says READY=1.
fn three_webs() -> (Daemon, u16) {
    let base = four_free_ports();
    let daemon = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{{instance + {base}}}", "--print-env"]
instances = 3
ready = "notify"
restart = "always"
restart_sec = "100ms"
env = {{ SHARD = "shard-{{instance}}" }}
"#
    ));
    for i in 0..3 {
        daemon.wait_for_service(&format!("web@{i}"), "is running", |s| s.state == "running");
    }
    (daemon, base)
}

fn pid_of(daemon: &Daemon, name: &str) -> u32 {
    daemon
        .service(name)
        .pid
        .expect("a running service has a pid")
}

fn events(daemon: &Daemon) -> Vec<EventRecord> {
    support::event_records(&daemon.cli_ok(&["events", "--json"]))
}

/// Where the first event of `kind` for `service` at or after `from` is.
fn position(events: &[EventRecord], from: usize, service: &str, kind: &str) -> Option<usize> {
    events[from..]
        .iter()
        .position(|e| e.kind == kind && e.service.as_ref().is_some_and(|s| s.as_str() == service))
        .map(|p| p + from)
}

#[test]
fn three_instances_each_serve_their_own_port_and_know_their_number() {
    let (daemon, base) = three_webs();
    let status = daemon.status();
    let names: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web@0", "web@1", "web@2"]);
    for i in 0..3u16 {
        TcpStream::connect(("127.0.0.1", base + i))
            .unwrap_or_else(|e| panic!("web@{i} listens on {}: {e}", base + i));
        // The environment is printed before " listening on ", on the same pipe.
        let log = daemon.wait_log(&format!("web@{i}"), " listening on ");
        assert!(log.contains(&format!("HOLDFAST_INSTANCE={i}")), "{log}");
        assert!(log.contains(&format!("HOLDFAST_SERVICE=web@{i}")), "{log}");
        assert!(log.contains(&format!("SHARD=shard-{i}")), "{log}");
    }
    let text = stdout(&daemon.cli_ok(&["status"]));
    for i in 0..3 {
        assert!(text.contains(&format!("web@{i}")), "{text}");
    }
    let one = stdout(&daemon.cli_ok(&["status", "--json", "web@1"]));
    assert!(
        one.contains("\"web@1\"") && !one.contains("\"web@0\""),
        "{one}"
    );
    let all = stdout(&daemon.cli_ok(&["status", "--json", "web"]));
    assert!(
        all.contains("\"web@0\"") && all.contains("\"web@2\""),
        "{all}"
    );

    let of_web = support::event_records(&daemon.cli_ok(&["events", "--json", "web"]));
    let named: std::collections::BTreeSet<&str> = of_web
        .iter()
        .filter_map(|e| e.service.as_ref().map(|s| s.as_str()))
        .collect();
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["web@0", "web@1", "web@2"]
    );
    let of_one = support::event_records(&daemon.cli_ok(&["events", "--json", "web@1"]));
    assert!(
        of_one
            .iter()
            .all(|e| e.service.as_ref().is_some_and(|s| s.as_str() == "web@1"))
    );
    let logs = stdout(&daemon.cli_ok(&["logs", "-n", "1000", "web"]));
    for i in 0..3 {
        assert!(logs.contains(&format!("SHARD=shard-{i}")), "{logs}");
    }
}

#[test]
fn killing_instance_1_restarts_only_it() {
    let (daemon, _) = three_webs();
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&daemon, &format!("web@{i}")))
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(before[1]).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill web@1");
    let again = daemon.wait_for_service("web@1", "runs a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != before[1])
    });
    assert_eq!(again.restarts, 1);
    for i in [0, 2] {
        let s = daemon.service(&format!("web@{i}"));
        assert_eq!(s.pid, Some(before[i]), "web@{i} kept its process");
        assert_eq!(s.restarts, 0, "web@{i} was not restarted");
    }
    let events = events(&daemon);
    let exited: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "exited")
        .filter_map(|e| e.service.as_ref().map(|s| s.as_str()))
        .collect();
    assert_eq!(exited, ["web@1"], "only web@1 exited");
}

#[test]
fn restart_web_replaces_the_instances_one_after_another() {
    let (daemon, _) = three_webs();
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&daemon, &format!("web@{i}")))
        .collect();
    let from = events(&daemon).len();

    let out = daemon.cli_ok(&["restart", "web"]);
    let said = stdout(&out);
    // One outcome line per instance ("running (pid N)", or "started (pid N), now ..." when
    // the answer raced the status).
    for i in 0..3 {
        assert!(said.contains(&format!("web@{i}: ")), "{}", describe(&out));
    }
    for (i, old) in before.iter().enumerate() {
        let now = pid_of(&daemon, &format!("web@{i}"));
        assert_ne!(now, *old, "web@{i} runs a new process");
        assert!(!is_alive(*old), "web@{i}'s old process is gone");
    }

    assert_rolled(&events(&daemon), from);
}

/// From event `from` on, each instance was stopped only once the one before it was back
/// up: web@0 started again before web@1 was asked to stop, and so on.
fn assert_rolled(events: &[EventRecord], from: usize) {
    let at = |service: &str, kind: &str, from: usize| {
        position(events, from, service, kind)
            .unwrap_or_else(|| panic!("no {kind} of {service} after #{from}: {events:#?}"))
    };
    let stop0 = at("web@0", "stop_requested", from);
    let up0 = at("web@0", "started", stop0);
    let stop1 = at("web@1", "stop_requested", from);
    let up1 = at("web@1", "started", stop1);
    let stop2 = at("web@2", "stop_requested", from);
    let up2 = at("web@2", "started", stop2);
    assert!(
        up0 < stop1 && up1 < stop2,
        "each instance is stopped only once the one before is back up: \
         web@0 stop #{stop0} up #{up0}, web@1 stop #{stop1} up #{up1}, web@2 stop #{stop2} up #{up2}"
    );
}

#[test]
fn a_restart_without_waiting_still_rolls_in_the_daemon() {
    let (daemon, _) = three_webs();
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&daemon, &format!("web@{i}")))
        .collect();
    let from = events(&daemon).len();
    let out = daemon.cli_ok(&["restart", "--no-block", "web"]);
    assert!(
        stdout(&out).contains("one after another"),
        "{}",
        describe(&out)
    );
    for (i, old) in before.iter().enumerate() {
        daemon.wait_for_service(&format!("web@{i}"), "runs a new process", |s| {
            s.state == "running" && s.pid.is_some_and(|p| p != *old)
        });
    }
    assert_rolled(&events(&daemon), from);
}

#[test]
fn restart_of_one_instance_restarts_only_it() {
    let (daemon, _) = three_webs();
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&daemon, &format!("web@{i}")))
        .collect();
    let out = daemon.cli_ok(&["restart", "web@1"]);
    assert!(stdout(&out).contains("web@1: "), "{}", describe(&out));
    assert_ne!(pid_of(&daemon, "web@1"), before[1]);
    assert_eq!(pid_of(&daemon, "web@0"), before[0]);
    assert_eq!(pid_of(&daemon, "web@2"), before[2]);
    let events = events(&daemon);
    assert!(
        events
            .iter()
            .filter(|e| e.kind == "stop_requested")
            .all(|e| e.service.as_ref().is_some_and(|s| s.as_str() == "web@1")),
        "{events:#?}"
    );
}

#[test]
fn stop_and_start_of_the_base_name_act_on_every_instance() {
    let (daemon, _) = three_webs();
    let out = daemon.cli_ok(&["stop", "web"]);
    for i in 0..3 {
        assert!(
            stdout(&out).contains(&format!("web@{i}: stopped")),
            "{}",
            describe(&out)
        );
    }
    daemon.cli_ok(&["start", "web"]);
    for i in 0..3 {
        assert_eq!(daemon.service(&format!("web@{i}")).state, "running");
    }
}

#[test]
fn a_reload_that_changes_the_count_adds_and_removes_instances() {
    let (daemon, base) = three_webs();
    let kept = pid_of(&daemon, "web@0");
    let config = daemon.read_config();
    daemon.write_raw_config(&config.replace("instances = 3", "instances = 2"));
    daemon.cli_ok(&["reload"]);
    daemon.wait_until("web@2 is gone", |d| {
        d.status()
            .services
            .iter()
            .all(|s| s.name.as_str() != "web@2")
    });
    assert_eq!(
        pid_of(&daemon, "web@0"),
        kept,
        "an unchanged instance keeps running"
    );

    daemon.write_raw_config(&config.replace("instances = 3", "instances = 4"));
    daemon.cli_ok(&["reload"]);
    let _ = base;
    daemon.wait_for_service("web@3", "is running", |s| s.state == "running");
    daemon.wait_for_service("web@2", "is running", |s| s.state == "running");
    assert_eq!(pid_of(&daemon, "web@0"), kept);
}

#[test]
fn bad_instance_counts_are_config_errors() {
    let dir = std::env::temp_dir().join(format!("holdfast-instances-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    for (value, expected) in [
        ("0", "must be between 1 and 256, not 0"),
        ("-3", "must be between 1 and 256, not -3"),
        ("1000000", "must be between 1 and 256, not 1000000"),
        ("2.5", "wrong type for `service.web.instances`"),
        ("\"three\"", "wrong type for `service.web.instances`"),
    ] {
        let path = dir.join("holdfast.toml");
        std::fs::write(
            &path,
            format!("[service.web]\ncommand = [\"/bin/sleep\", \"9\"]\ninstances = {value}\n"),
        )
        .expect("config is writable");
        let mut cmd = holdfast();
        cmd.arg("check").arg(&path);
        let out = run(cmd);
        assert_eq!(
            out.status.code(),
            Some(3),
            "instances = {value}: {}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains(expected),
            "instances = {value}: {}",
            describe(&out)
        );
    }
    let path = dir.join("holdfast.toml");
    std::fs::write(
        &path,
        "[service.\"web@1\"]\ncommand = [\"/bin/sleep\", \"9\"]\n",
    )
    .expect("config is writable");
    let mut cmd = holdfast();
    cmd.arg("check").arg(&path);
    let out = run(cmd);
    assert!(
        stderr(&out).contains("`@` marks an instance"),
        "{}",
        describe(&out)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_second_restart_during_a_roll_joins_it_and_never_takes_two_copies_down() {
    let (daemon, _) = three_webs();
    let first = pid_of(&daemon, "web@0");
    let from = events(&daemon).len();
    daemon.cli_ok(&["restart", "--no-block", "web"]);
    // web@0 is back up, so the roll has moved on to web@1.
    daemon.wait_for_service("web@0", "runs a new process", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first)
    });
    let out = daemon.cli_ok(&["restart", "web"]);
    for i in 0..3 {
        assert!(
            stdout(&out).contains(&format!("web@{i}: ")),
            "{}",
            describe(&out)
        );
    }
    // At any point of the event history, at most one instance was asked to stop and not
    // yet back up.
    let mut down = std::collections::BTreeSet::new();
    for event in &events(&daemon)[from..] {
        let Some(service) = event.service.as_ref().map(|s| s.as_str().to_owned()) else {
            continue;
        };
        match event.kind.as_str() {
            "stop_requested" => {
                down.insert(service);
            }
            "started" => {
                down.remove(&service);
            }
            _ => {}
        }
        assert!(
            down.len() <= 1,
            "{down:?} were down at once at #{}",
            event.seq
        );
    }
}

#[test]
fn status_lists_instances_by_number() {
    let daemon = Daemon::start("[service.web]\ncommand = [\"sleep\", \"1000\"]\ninstances = 12\n");
    let status = daemon.status();
    let names: Vec<String> = status
        .services
        .iter()
        .map(|s| s.name.as_str().to_owned())
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("web@{i}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn is_active_of_a_base_name_answers_for_each_instance() {
    let daemon = Daemon::start("[service.web]\ncommand = [\"sleep\", \"1000\"]\ninstances = 2\n");
    daemon.wait_until("both run", |d| {
        d.status().services.iter().all(|s| s.state == "running")
    });
    let active = daemon.cli(&["is-active", "web"]);
    assert_eq!(active.status.code(), Some(0), "{}", describe(&active));
    assert_eq!(stdout(&active), "running\nrunning\n");
    let failed = daemon.cli(&["is-failed", "web"]);
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
}

#[test]
fn start_of_a_base_name_releases_its_quarantined_instances() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["/bin/sh", "-c", "[ -e {DIR}/fixed ] && exec sleep 1000; exit 7"]
instances = 2
start_secs = "0s"
[service.web.exit_codes]
7 = { action = "quarantine" }
"#,
    );
    daemon.wait_until("both copies are quarantined", |d| {
        d.status().services.iter().all(|s| s.state == "quarantined")
    });
    std::fs::write(daemon.dir().join("fixed"), "").expect("fix the service");

    let start = daemon.cli(&["start", "--no-block", "web"]);
    assert!(start.status.success(), "{}", describe(&start));
    let said = stdout(&start);
    assert!(said.contains("released web@0 from quarantine"), "{said}");
    assert!(said.contains("released web@1 from quarantine"), "{said}");
    let list = stdout(&daemon.cli(&["quarantine", "list"]));
    assert!(!list.contains("PENDING"), "{list}");
    daemon.wait_until("both run again", |d| {
        d.status().services.iter().all(|s| s.state == "running")
    });
}
