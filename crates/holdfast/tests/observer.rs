//! Observer mode against a real supervisord (PyPI `supervisor`, from `.venv`, installed
//! by scripts/install-deps): holdfast watches a program supervisord runs, has
//! supervisord restart it when its health fails, never spawns a copy of its own, and
//! takes the program over only when supervisord is gone and `takeover = true`.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use holdfast::control::protocol::{EventRecord, ServiceStatus};
use support::supervisord::Supervisord;
use support::{Daemon, demo_app, descendants, is_alive, kill_9, tagged_processes, wait_until};

/// A real supervisord of one test running `[program:web]` (demo-app on `port`).
struct Supervised {
    sup: Supervisord,
    port: u16,
}

impl Supervised {
    /// `None` (with the reason printed) when supervisord is not installed.
    fn start() -> Option<Self> {
        Self::start_with("", "")
    }

    /// With more demo-app `args` and more `[program:web]` keys (`extra`, lines).
    fn start_with(args: &str, extra: &str) -> Option<Self> {
        let port = support::free_port();
        match Supervisord::start(&program(port, args, extra)) {
            Ok(sup) => Some(Self { sup, port }),
            Err(reason) => {
                eprintln!("SKIP: {reason}");
                None
            }
        }
    }

    fn wait_running(&self) -> u32 {
        self.sup.wait_running("web")
    }

    fn running_pid(&self) -> Option<u32> {
        self.sup.running_pid("web")
    }

    /// The holdfast config of an observed `web`, with `extra` keys.
    fn config(&self, extra: &str) -> String {
        format!(
            r#"
[holdfast.supervisord]
serverurl = "{serverurl}"

[service.web]
managed_by = "supervisord:web"
arbiter_timeout = "3s"
health_grace_period = "1s"
sync_interval = "200ms"
{extra}

[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "200ms"
timeout = "150ms"
degraded = {{ failures = 1, within = "10s" }}
unhealthy = {{ failures = 2, within = "10s" }}
"#,
            serverurl = self.sup.serverurl(),
            port = self.port,
        )
    }

    /// The keys that let holdfast take `web` over: `takeover` and the command it then
    /// runs (the same demo-app on the same port), with `extra` keys.
    fn takeover(&self, extra: &str) -> String {
        format!(
            "takeover = true\ncommand = [\"{}\", \"--listen\", \"127.0.0.1:{}\"]\n{extra}",
            demo_app().display(),
            self.port
        )
    }

    /// demo-app processes of this test, whoever started them.
    fn apps(&self) -> Vec<u32> {
        tagged_processes(self.sup.tag())
            .into_iter()
            .filter(|pid| comm(*pid).as_deref() == Some("demo-app"))
            .collect()
    }
}

/// `[program:web]`: demo-app on `port`, with more demo-app `args` and more keys.
fn program(port: u16, args: &str, extra: &str) -> String {
    format!(
        "[program:web]\ncommand={app} --listen 127.0.0.1:{port} {args}\n\
         startsecs=1\nautorestart=true\nstopasgroup=true\nkillasgroup=true\n\
         stdout_logfile={{DIR}}/web.log\nredirect_stderr=true\n{extra}",
        app = demo_app().display(),
    )
}

fn comm(pid: u32) -> Option<String> {
    Some(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// `GET path` on the demo app; the status line.
fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to demo-app");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// No demo-app among holdfast's descendants: it spawned none.
fn spawned_no_app(d: &Daemon) -> bool {
    descendants(d.host_pid())
        .into_iter()
        .all(|pid| comm(pid).as_deref() != Some("demo-app"))
}

fn events(d: &Daemon) -> Vec<String> {
    support::event_records(&d.cli_ok(&["events", "--json", "web"]))
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn web(d: &Daemon, what: &str, cond: impl FnMut(&ServiceStatus) -> bool) -> ServiceStatus {
    d.wait_for_service("web", what, cond)
}

#[test]
fn holdfast_observes_a_supervisord_program_as_running_with_supervisords_pid() {
    let Some(sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(""));
    let s = web(&d, "is running with supervisord's pid", |s| {
        s.state == "running" && s.pid == Some(pid)
    });
    let managed = s.managed_by.expect("status shows the upstream");
    assert_eq!(managed.upstream, "supervisord:web");
    assert_eq!(managed.state.as_deref(), Some("RUNNING"));
    assert_eq!(managed.pid, Some(pid));
    let text = support::stdout(&d.cli_ok(&["status"]));
    assert!(
        text.contains(&format!("managed by supervisord:web (RUNNING, pid {pid}")),
        "{text}"
    );
    assert!(spawned_no_app(&d), "holdfast spawned no demo-app");
    assert_eq!(sup.apps(), vec![pid], "one demo-app: supervisord's");
}

#[test]
fn a_failing_health_makes_supervisord_restart_the_program_and_holdfast_spawns_none() {
    let Some(sup) = Supervised::start() else {
        return;
    };
    let old = sup.wait_running();
    let d = Daemon::start(&sup.config(""));
    web(&d, "is observed healthy", |s| {
        s.pid == Some(old)
            && s.health
                .as_ref()
                .is_some_and(|h| h.probes > 0 && !h.in_grace)
    });
    assert!(get(sup.port, "/health/fail").contains("200"));
    let mut apps_seen = Vec::new();
    let mut new = None;
    wait_until("supervisord restarted web with a new pid", || {
        apps_seen.push(sup.apps().len());
        assert!(
            spawned_no_app(&d),
            "holdfast never spawns an observed program"
        );
        new = sup.running_pid().filter(|pid| *pid != old);
        new.is_some()
    });
    let new = new.expect("awaited");
    assert!(
        apps_seen.iter().all(|n| *n <= 1),
        "never two demo-apps: {apps_seen:?}"
    );
    assert!(!is_alive(old), "the old process is gone");
    web(&d, "follows the new pid", |s| s.pid == Some(new));
    let kinds = events(&d);
    assert!(
        kinds.contains(&"upstream_restart_requested".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"upstream_state".to_owned()), "{kinds:?}");
    let s = web(&d, "shows the arbitration", |s| {
        s.managed_by
            .as_ref()
            .is_some_and(|m| m.last_arbitration.is_some())
    });
    let last = s
        .managed_by
        .and_then(|m| m.last_arbitration)
        .unwrap_or_default();
    assert_eq!(last, format!("restarted by upstream (pid {new})"));
    assert_eq!(sup.apps(), vec![new]);
}

#[test]
fn a_program_that_ignores_sigterm_longer_than_arbiter_timeout_is_still_started_again() {
    // stopwaitsecs (6 s) outlasts arbiter_timeout (3 s): supervisord only SIGKILLs it
    // after holdfast's bound on one call has passed.
    let Some(sup) = Supervised::start_with("--ignore-sigterm", "stopwaitsecs=6\n") else {
        return;
    };
    let old = sup.wait_running();
    let d = Daemon::start(&sup.config(""));
    web(&d, "is observed healthy", |s| {
        s.pid == Some(old)
            && s.health
                .as_ref()
                .is_some_and(|h| h.probes > 0 && !h.in_grace)
    });
    assert!(get(sup.port, "/health/fail").contains("200"));
    let mut new = None;
    wait_until("supervisord runs web again, with a new pid", || {
        assert!(
            spawned_no_app(&d),
            "holdfast never spawns an observed program"
        );
        new = sup.running_pid().filter(|pid| *pid != old);
        new.is_some()
    });
    let new = new.expect("awaited");
    assert!(!is_alive(old), "the old process was killed");
    web(&d, "follows the new pid", |s| s.pid == Some(new));
    assert_eq!(sup.apps(), vec![new]);
}

#[test]
fn with_supervisord_killed_and_takeover_holdfast_adopts_the_program_then_restarts_it() {
    let Some(mut sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(&sup.takeover("restart_sec = \"100ms\"")));
    web(&d, "is observed", |s| s.pid == Some(pid));
    let supervisord = sup.sup.pid();
    sup.sup.kill_9();
    assert!(!is_alive(supervisord));
    assert!(
        is_alive(pid),
        "supervisord's SIGKILL leaves its program alive"
    );
    let s = web(&d, "is taken over with the live process", |s| {
        s.managed_by.as_ref().is_some_and(|m| m.taken_over)
    });
    assert_eq!(
        s.pid,
        Some(pid),
        "the same process, adopted: no second copy"
    );
    assert_eq!(s.state, "running");
    assert!(spawned_no_app(&d));
    let kinds = events(&d);
    assert!(
        kinds.contains(&"upstream_unreachable".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"taken_over".to_owned()), "{kinds:?}");
    // Moved into web's cgroup (where holdfast has cgroups): the one its own copy gets.
    let adopted_cgroups = support::holdfast_cgroups(pid);
    // Its end is an exit holdfast sees: it starts the command in its place.
    kill_9(pid);
    let s = web(&d, "runs a copy holdfast started", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });
    let new = s.pid.expect("running");
    assert!(
        descendants(d.host_pid()).contains(&new),
        "holdfast's own child"
    );
    assert_eq!(adopted_cgroups, support::holdfast_cgroups(new));
    wait_until("the new copy answers", || {
        TcpStream::connect(("127.0.0.1", sup.port)).is_ok()
    });
}

#[test]
fn after_a_takeover_a_supervisord_back_with_its_own_copy_is_reported_and_left_alone() {
    let Some(mut sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(&sup.takeover("")));
    web(&d, "is observed", |s| s.pid == Some(pid));
    sup.sup.kill_9();
    web(&d, "is taken over with the live process", |s| {
        s.managed_by.as_ref().is_some_and(|m| m.taken_over) && s.pid == Some(pid)
    });
    // supervisord comes back and starts its own web (on another port: holdfast's
    // holds the first).
    let returned = program(support::free_port(), "", "");
    sup.sup
        .start_again(&returned)
        .expect("supervisord starts again");
    let copy = sup.wait_running();
    assert_ne!(copy, pid);
    let s = web(&d, "reports supervisord's copy", |s| {
        s.managed_by
            .as_ref()
            .is_some_and(|m| m.duplicate_pid == Some(copy))
    });
    assert_eq!(s.pid, Some(pid), "holdfast still runs its own");
    assert!(events(&d).contains(&"upstream_duplicate".to_owned()));
    let text = support::stdout(&d.cli_ok(&["status", "web"]));
    assert!(
        text.contains(&format!(
            "DUPLICATE: supervisord:web runs its own copy too (pid {copy})"
        )),
        "{text}"
    );
    assert!(is_alive(copy) && is_alive(pid), "neither copy is touched");
    assert_eq!(sup.running_pid(), Some(copy));
    // Its own copy stopped by hand, a start observes supervisord's instead of
    // starting a second one beside it.
    d.cli_ok(&["stop", "web"]);
    wait_until("holdfast's copy is gone", || !is_alive(pid));
    d.cli_ok(&["start", "web"]);
    let s = web(&d, "observes supervisord's copy again", |s| {
        s.pid == Some(copy) && s.managed_by.as_ref().is_some_and(|m| !m.taken_over)
    });
    assert_eq!(s.state, "running");
    assert!(events(&d).contains(&"back_to_upstream".to_owned()));
    assert!(spawned_no_app(&d), "holdfast spawned no copy");
}

#[test]
fn a_supervisord_reload_is_not_taken_for_a_gone_supervisord() {
    let Some(sup) = Supervised::start() else {
        return;
    };
    let old = sup.wait_running();
    let d = Daemon::start(&sup.config(&sup.takeover("")));
    web(&d, "is observed", |s| s.pid == Some(old));
    let reload = sup.sup.ctl(&["reload"]);
    assert!(reload.status.success(), "{reload:?}");
    let mut new = None;
    wait_until("supervisord runs web again after its reload", || {
        new = sup.running_pid().filter(|pid| *pid != old);
        new.is_some()
    });
    let new = new.expect("awaited");
    let s = web(&d, "follows supervisord's new pid", |s| s.pid == Some(new));
    assert!(!s.managed_by.is_some_and(|m| m.taken_over));
    assert!(spawned_no_app(&d), "holdfast spawned no copy");
    assert!(!events(&d).contains(&"taken_over".to_owned()));
}

#[test]
fn a_stopped_supervisord_that_does_not_answer_is_not_taken_over() {
    let Some(sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(&sup.takeover("")));
    web(&d, "is observed", |s| s.pid == Some(pid));
    let supervisord = sup.sup.pid().to_string();
    let signal = |sig: &str| {
        let done = Command::new("kill").args([sig, &supervisord]).status();
        assert!(done.is_ok_and(|s| s.success()), "kill {sig}");
    };
    // Alive but silent: its socket accepts, nothing answers.
    signal("-STOP");
    d.wait_until("holdfast reports supervisord unreachable", |d| {
        events(d).contains(&"upstream_unreachable".to_owned())
    });
    let kinds = events(&d);
    signal("-CONT");
    assert!(!kinds.contains(&"taken_over".to_owned()), "{kinds:?}");
    assert!(spawned_no_app(&d), "holdfast spawned no copy");
    web(&d, "is observed again", |s| {
        s.state == "running" && s.pid == Some(pid)
    });
    assert!(!events(&d).contains(&"taken_over".to_owned()));
}

#[test]
fn with_supervisord_killed_and_no_takeover_holdfast_only_reports_it() {
    let Some(mut sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(""));
    web(&d, "is observed", |s| s.pid == Some(pid));
    sup.sup.kill_9();
    d.wait_until("holdfast reports supervisord unreachable", |d| {
        events(d).contains(&"upstream_unreachable".to_owned())
    });
    let s = web(&d, "is unknown", |s| s.state == "unknown");
    let managed = s.managed_by.expect("observed");
    assert!(managed.unreachable.is_some(), "{managed:?}");
    assert!(!managed.taken_over);
    let kinds = events(&d);
    assert!(!kinds.contains(&"taken_over".to_owned()), "{kinds:?}");
    assert!(spawned_no_app(&d), "holdfast spawned nothing");
    assert!(is_alive(pid), "the program is left alone");
}

#[test]
fn with_supervisord_stopped_cleanly_and_takeover_holdfast_starts_the_command() {
    let Some(mut sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(&sup.takeover("")));
    web(&d, "is observed", |s| s.pid == Some(pid));
    sup.sup.stop();
    assert!(
        !is_alive(pid),
        "a clean stop of supervisord stops its program"
    );
    let s = web(&d, "is taken over and started by holdfast", |s| {
        s.managed_by.as_ref().is_some_and(|m| m.taken_over) && s.state == "running"
    });
    let new = s.pid.expect("running");
    assert_ne!(new, pid);
    assert!(
        descendants(d.host_pid()).contains(&new),
        "holdfast's own child"
    );
    assert!(Path::new(&format!("/proc/{new}")).exists());
}

#[test]
fn a_service_after_an_observed_program_starts_only_once_supervisord_shows_it_running() {
    // supervisord says STARTING for startsecs before RUNNING: not up yet.
    let Some(sup) = Supervised::start_with("", "startsecs=3\n") else {
        return;
    };
    let config = format!(
        "{}\n[service.api]\ncommand = [\"sleep\", \"1000\"]\nafter = [\"web\"]\n",
        sup.config("")
    );
    let d = Daemon::start(&config);
    let pid = sup.wait_running();
    d.wait_for_service("api", "runs", |s| s.state == "running");
    let records = support::event_records(&d.cli_ok(&["events", "--json"]));
    let first = |service: &str, what: &dyn Fn(&EventRecord) -> bool| {
        records
            .iter()
            .find(|e| e.service.as_ref().is_some_and(|s| s.as_str() == service) && what(e))
            .map(|e| e.seq)
    };
    let web_running = first("web", &|e| {
        e.kind == "upstream_state"
            && e.data.get("state").and_then(|v| v.as_str()) == Some("running")
    })
    .expect("holdfast saw web running");
    let api_spawned = first("api", &|e| e.kind == "spawned").expect("api was spawned");
    assert!(
        web_running < api_spawned,
        "api is spawned only once supervisord shows web RUNNING: {records:#?}"
    );
    web(&d, "is observed with supervisord's pid", |s| {
        s.pid == Some(pid)
    });
    assert!(spawned_no_app(&d), "holdfast spawned no demo-app");
}

#[test]
fn a_reload_that_loosens_an_observed_programs_thresholds_applies_at_once_and_restarts_nothing() {
    let Some(sup) = Supervised::start() else {
        return;
    };
    let pid = sup.wait_running();
    let d = Daemon::start(&sup.config(""));
    web(&d, "is observed healthy", |s| {
        s.pid == Some(pid)
            && s.health
                .as_ref()
                .is_some_and(|h| h.probes > 0 && !h.in_grace)
    });
    // Unhealthy after 1000 failures instead of 2: the reload changes nothing that runs.
    let strict = "unhealthy = { failures = 2, within = \"10s\" }";
    let config = sup.config("");
    assert!(config.contains(strict));
    d.write_config(&config.replace(strict, "unhealthy = { failures = 1000, within = \"10s\" }"));
    d.cli_ok(&["reload"]);
    let s = web(&d, "is still observed", |s| s.state == "running");
    assert_eq!(s.pid, Some(pid), "nothing restarted at the reload");
    assert!(get(sup.port, "/health/fail").contains("200"));
    // Twice the old threshold: the old monitor would have asked for a restart by now.
    web(&d, "counts failures past the old threshold", |s| {
        s.health
            .as_ref()
            .is_some_and(|h| h.failures_unhealthy_window >= 4 && h.state == "degraded")
    });
    let kinds = events(&d);
    assert!(
        !kinds.contains(&"upstream_restart_requested".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        sup.running_pid(),
        Some(pid),
        "supervisord's process is the same"
    );
    assert!(spawned_no_app(&d));
}

/// The systemd path's plumbing, with a stand-in `systemctl` (first in the service's
/// `PATH`) that prints a unit's properties from a file and records restarts: the real
/// systemd is the systemd-container test's. What it checks here is holdfast's side:
/// `show` is run and read off the loop, its pid followed, `restart` asked on
/// UNHEALTHY, nothing spawned.
#[test]
fn a_systemd_unit_is_read_with_systemctl_show_and_restarted_with_systemctl_restart() {
    let dir = std::env::temp_dir().join(format!("observer-systemctl-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the stand-in's directory");
    let port = support::free_port();
    let app = Killed(
        Command::new(demo_app())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("start demo-app"),
    );
    let pid = app.0.id();
    let d = dir.display();
    fs::write(
        dir.join("unit"),
        format!(
            "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID={pid}\n\
             ExecMainStartTimestampMonotonic=1000\nResult=success\n"
        ),
    )
    .expect("write the unit's properties");
    let script =
        format!("#!/bin/sh\necho \"$*\" >> {d}/calls\ncase \"$1\" in show) cat {d}/unit ;; esac\n");
    let systemctl = dir.join("systemctl");
    fs::write(&systemctl, script).expect("write the stand-in");
    Command::new("chmod")
        .arg("755")
        .arg(&systemctl)
        .status()
        .expect("chmod");
    let config = format!(
        r#"
[service.web]
managed_by = "systemd:web.service"
arbiter_timeout = "2s"
health_grace_period = "1s"
sync_interval = "200ms"
env = {{ PATH = "{d}:/usr/bin:/bin" }}

[service.web.health]
http = "http://127.0.0.1:{port}/health"
interval = "200ms"
timeout = "150ms"
degraded = {{ failures = 1, within = "10s" }}
unhealthy = {{ failures = 2, within = "10s" }}
"#
    );
    let daemon = Daemon::start(&config);
    let s = web(&daemon, "is running with the unit's MainPID", |s| {
        s.state == "running" && s.pid == Some(pid)
    });
    let managed = s.managed_by.expect("observed");
    assert_eq!(managed.state.as_deref(), Some("active/running"));
    let calls = || fs::read_to_string(dir.join("calls")).unwrap_or_default();
    assert!(
        calls().contains("show web.service --property="),
        "{}",
        calls()
    );
    assert!(get(port, "/health/fail").contains("200"));
    wait_until("holdfast asks systemctl to restart the unit", || {
        calls().contains("restart --no-block web.service")
    });
    assert!(spawned_no_app(&daemon));
    drop(app);
    let _ = fs::remove_dir_all(&dir);
}

/// A child killed when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
