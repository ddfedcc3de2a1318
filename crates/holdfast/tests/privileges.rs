//! Privileges and resource limits, checked in the kernel's own view of the service
//! (`/proc/PID/status`, `/proc/PID/limits`, the service's cgroup): a non-root user
//! without root's groups, an ambient CAP_NET_BIND_SERVICE, rlimits, CPU affinity, a
//! memory limit that OOM-kills (reported as such), a pids limit that contains a fork
//! bomb, and a cgroup kill that catches a process that left the process group.
//!
//! These tests need root (they switch users and create cgroups). The unprivileged user
//! `holdfast-test` is created on first use if missing (scripts/install-deps does too).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Daemon, TEST_USER, holdfast_cgroups, is_alive, kill_9, test_user, wait_until};

/// The value of `field` in /proc/PID/status (`"Uid"` → `"994\t994\t994\t994"`).
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The service's cgroup directory in the hierarchy that holds `file` (v2: the unified
/// one; v1: the first controller hierarchy that has it), from /proc/PID/cgroup.
fn cgroup_dir(pid: u32, file: &str) -> PathBuf {
    try_cgroup_dir(pid, file).unwrap_or_else(|| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        panic!("pid {pid} is in no holdfast cgroup with {file}:\n{text}")
    })
}

/// Like `cgroup_dir`, `None` when the process is gone or in no such cgroup.
fn try_cgroup_dir(pid: u32, file: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let candidates = text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?.trim_start_matches('/');
        let mount = if controllers.is_empty() {
            if PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else {
            PathBuf::from("/sys/fs/cgroup").join(controllers.split(',').next()?)
        };
        Some(mount.join(path))
    });
    candidates
        .filter(|dir| dir.join(file).exists())
        .find(|dir| {
            dir.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("holdfast"))
        })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn procs(dir: &Path) -> Vec<u32> {
    read(&dir.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// GET `path` from `addr`; the status line and body.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(support::DEADLINE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn a_service_runs_as_its_user_without_any_group_of_root() {
    let (uid, gid) = test_user();
    let daemon = Daemon::start(&format!(
        r#"
[service.app]
command = ["/bin/sleep", "1000"]
user = "{TEST_USER}"
umask = "0027"
"#
    ));
    let pid = daemon.running_pid("app");
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let groups: Vec<u32> = status_field(pid, "Groups")
        .split_whitespace()
        .map(|g| g.parse().expect("numeric gid"))
        .collect();
    assert!(
        !groups.contains(&0),
        "root's group is gone from the supplementary groups: {groups:?}"
    );
    assert_eq!(groups, [gid], "only the user's own group");
    assert_eq!(
        status_field(pid, "CapEff"),
        "0000000000000000",
        "no capabilities"
    );
    assert_eq!(
        status_field(pid, "NoNewPrivs"),
        "1",
        "no_new_privs by default"
    );
    assert_eq!(status_field(pid, "Umask"), "0027");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    let environ = String::from_utf8_lossy(&environ);
    for var in [format!("USER={TEST_USER}"), format!("LOGNAME={TEST_USER}")] {
        assert!(
            environ.split('\0').any(|e| e == var),
            "{var} in the environment"
        );
    }
}

#[test]
fn cap_net_bind_service_lets_a_non_root_service_bind_port_81_and_without_it_the_bind_fails() {
    test_user();
    let daemon = Daemon::start(&format!(
        r#"
[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:81"]
user = "{TEST_USER}"
capabilities = ["CAP_NET_BIND_SERVICE"]

[service.nocap]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:82"]
user = "{TEST_USER}"
restart = "no"
"#
    ));
    let pid = daemon.running_pid("web");
    let bind_service = format!("{:016x}", 1u64 << 10);
    assert_eq!(
        status_field(pid, "CapAmb"),
        bind_service,
        "ambient CAP_NET_BIND_SERVICE"
    );
    assert_eq!(
        status_field(pid, "CapEff"),
        bind_service,
        "and nothing else"
    );
    assert_eq!(
        status_field(pid, "CapBnd"),
        bind_service,
        "the bounding set is reduced"
    );
    let mut answer = String::new();
    wait_until("the non-root service answers on port 81", || {
        answer = http_get("127.0.0.1:81", "/").unwrap_or_default();
        answer.starts_with("HTTP/1.1 200")
    });

    let nocap = daemon.wait_for_service("nocap", "has failed", |s| s.state == "failed");
    assert_eq!(
        nocap.last_exit.and_then(|e| e.code),
        Some(1),
        "demo-app exits 1"
    );
    let logs = support::stdout(&daemon.cli_ok(&["logs", "nocap"]));
    assert!(
        logs.contains("bind 127.0.0.1:82: Permission denied"),
        "EACCES is visible in the service's log:\n{logs}"
    );
}

#[test]
fn rlimits_and_cpu_affinity_show_in_proc() {
    let daemon = Daemon::start(
        r#"
[service.limited]
command = ["/bin/sleep", "1000"]
limits = { nofile = 4096, core = "infinity" }
cpu_affinity = [1]
oom_score_adjust = 500

[service.default]
command = ["/bin/sleep", "1000"]
"#,
    );
    let pid = daemon.running_pid("limited");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{limits}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("Max open files"), "Max open files 4096 4096 files");
    assert_eq!(
        line("Max core file size"),
        "Max core file size unlimited unlimited bytes"
    );
    assert_eq!(status_field(pid, "Cpus_allowed_list"), "1");
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("read");
    assert_eq!(oom.trim(), "500");

    // Without `limits.nofile` a service gets the soft limit holdfast started with (ours),
    // although holdfast raised its own.
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let default_pid = daemon.running_pid("default");
    let limits = std::fs::read_to_string(format!("/proc/{default_pid}/limits")).expect("read");
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a nofile line")
        .split_whitespace()
        .collect();
    assert_eq!(nofile[3..5], [soft.to_string(), hard.to_string()]);
}

#[test]
fn a_memory_hog_is_oom_killed_reported_and_restarted_while_another_service_runs_on() {
    let daemon = Daemon::start(
        r#"
[service.hog]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--eat-memory-step", "8MiB", "--eat-memory-every", "50ms"]
limits = { memory = "64MiB" }
restart = "always"
restart_sec = "200ms"
start_secs = "0s"
start_limit = { interval = "10s", burst = 1000 }

[service.bystander]
command = ["/bin/sleep", "1000"]
"#,
    );
    let bystander = daemon.running_pid("bystander");
    let started = daemon.wait_for_service("hog", "is running", |s| s.state == "running");
    let first = started.pid.expect("a running service has a pid");
    // The hog may be killed at any moment: read its limit from whichever instance runs.
    let mut limit = String::new();
    daemon.wait_until("the hog's memory limit is readable", |d| {
        let Some(pid) = d.service("hog").pid else {
            return false;
        };
        let found = ["memory.limit_in_bytes", "memory.max"]
            .into_iter()
            .find_map(|file| Some(read(&try_cgroup_dir(pid, file)?.join(file))));
        limit = found.unwrap_or_default();
        !limit.is_empty()
    });
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    let hog = daemon.wait_for_service("hog", "was oom-killed and restarted", |s| {
        let oom = s
            .last_exit
            .as_ref()
            .is_some_and(|e| e.description == "oom-killed");
        oom && s.restarts > started.restarts && s.state == "running"
    });
    assert_ne!(hog.pid, Some(first), "a new process runs");
    let exit = hog.last_exit.expect("checked above");
    assert_eq!(
        exit.signal.as_deref(),
        Some("SIGKILL"),
        "the OOM killer's signal"
    );
    // The Exited event says so.
    daemon.wait_log("hog", "oom-killed");

    let other = daemon.service("bystander");
    assert_eq!(
        other.pid,
        Some(bystander),
        "the other service was not touched"
    );
    assert_eq!(other.restarts, 0);
    assert!(is_alive(bystander));
}

#[test]
fn a_fork_bomb_under_a_pids_limit_is_contained_and_stops_cleanly() {
    let daemon = Daemon::start(
        r#"
[service.bomb]
command = ["/bin/bash", "-c", ":(){ :|:& };: ; exec sleep 1000"]
limits = { pids = 64 }
start_secs = "0s"
stop = { signal = "TERM", timeout = "1s" }
"#,
    );
    let pid = daemon.running_pid("bomb");
    let dir = cgroup_dir(pid, "pids.max");
    assert_eq!(read(&dir.join("pids.max")).trim(), "64");
    daemon.wait_until("the bomb hits the pids limit", |_| {
        read(&dir.join("pids.events"))
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|refused| refused > 0)
    });
    let current: u64 = read(&dir.join("pids.current"))
        .trim()
        .parse()
        .expect("a number");
    assert!(current <= 64, "contained: {current} tasks");
    let members = procs(&dir);
    assert!(members.len() > 10, "the bomb did fork: {members:?}");

    daemon.cli_ok(&["stop", "bomb"]);
    daemon.wait_for_service("bomb", "is stopped", |s| s.state == "stopped");
    for member in members {
        assert!(
            !is_alive(member) || support::is_zombie(member),
            "bomb process {member} is gone"
        );
    }
    assert!(
        !dir.exists(),
        "the empty cgroup {} is removed",
        dir.display()
    );
}

#[test]
fn a_process_that_left_the_process_group_is_killed_at_stop() {
    let daemon = Daemon::start(
        r#"
[service.escaper]
command = ["/bin/sh", "-c", "setsid sleep 1001 & exec sleep 1000"]
start_secs = "0s"
"#,
    );
    let main = daemon.running_pid("escaper");
    let dir = cgroup_dir(main, "cgroup.procs");
    let mut escaped = None;
    daemon.wait_until("the escaped process runs in its own session", |_| {
        escaped = procs(&dir).into_iter().find(|&p| {
            p != main
                && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("1001"))
        });
        escaped.is_some()
    });
    let escaped = escaped.expect("found above");
    let sid = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        let after = &stat[stat.rfind(')').expect("comm ends") + 2..];
        after
            .split_whitespace()
            .nth(3)
            .expect("session field")
            .to_owned()
    };
    wait_until("setsid has run", || sid(escaped) == escaped.to_string());
    assert_ne!(
        sid(escaped),
        sid(main),
        "it left the service's session and group"
    );

    daemon.cli_ok(&["stop", "escaper"]);
    daemon.wait_for_service("escaper", "is stopped", |s| s.state == "stopped");
    wait_until("the escaped process is gone", || {
        !is_alive(escaped) || support::is_zombie(escaped)
    });
}

#[test]
fn doctor_names_the_cgroup_version_in_use() {
    let output = support::run({
        let mut cmd = support::holdfast();
        cmd.args(["doctor", "--json"]);
        cmd
    });
    assert!(output.status.success(), "{}", support::describe(&output));
    let report: serde_json::Value =
        serde_json::from_str(&support::stdout(&output)).expect("doctor --json prints JSON");
    let in_use = report["cgroup"]["in_use"]
        .as_str()
        .expect("a cgroup version");
    assert!(matches!(in_use, "v1" | "v2"), "{in_use}");
    assert!(
        report["capabilities"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let text = support::stdout(&support::run({
        let mut cmd = support::holdfast();
        cmd.arg("doctor");
        cmd
    }));
    assert!(text.contains(&format!("holdfast uses {in_use}")), "{text}");
}

#[test]
fn doctor_counts_an_empty_notify_socket_and_invocation_id_as_unset_as_the_detection_does() {
    let output = support::run({
        let mut cmd = support::holdfast();
        cmd.args(["doctor", "--json"])
            .env("NOTIFY_SOCKET", "")
            .env("INVOCATION_ID", "");
        cmd
    });
    assert!(output.status.success(), "{}", support::describe(&output));
    let report: serde_json::Value =
        serde_json::from_str(&support::stdout(&output)).expect("doctor --json prints JSON");
    let systemd = &report["systemd"];
    assert_eq!(systemd["notify_socket"], false, "{systemd}");
    assert_eq!(systemd["invocation_id"], false, "{systemd}");
    assert_eq!(systemd["under_systemd"], false, "{systemd}");
}

#[test]
fn a_failing_setup_step_is_named_in_the_spawn_error() {
    // `check` (and so `up`/`reload`) rejects a working_dir that is missing, so the
    // directory exists when the config is loaded and goes away before the start.
    let daemon = Daemon::start("");
    let dir = daemon.dir().join("gone");
    std::fs::create_dir(&dir).expect("create the working dir");
    daemon.write_config(
        r#"
[service.nodir]
command = ["/bin/sleep", "1000"]
working_dir = "{DIR}/gone"
autostart = false
restart = "no"
"#,
    );
    daemon.cli_ok(&["reload"]);
    std::fs::remove_dir(&dir).expect("remove the working dir");
    daemon.cli(&["start", "nodir"]);
    let failed = daemon.wait_for_service("nodir", "has failed", |s| s.state == "failed");
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains("chdir") && reason.contains("ENOENT"),
        "the reason names the step and the errno: {reason}"
    );
}

/// The home directory of `user` in the passwd database.
fn home_of(user: &str) -> String {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .expect("failed to run getent");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(':')
        .nth(5)
        .expect("a passwd entry has a home field")
        .to_owned()
}

#[test]
fn hooks_and_exec_probes_run_with_the_service_user_environment_and_limits() {
    let (uid, _) = test_user();
    let home = home_of(TEST_USER);
    // Every process of the service reports the same world: uid, nofile, HOME, USER and
    // the service's own variable. The probe passes only when it sees exactly that.
    let describe = r#"echo "$1 $(id -u) $(ulimit -n) $HOME $USER $FOO""#;
    let expected = format!("{uid} 4096 {home} {TEST_USER} bar");
    let daemon = Daemon::start(&format!(
        r#"
[service.app]
command = ["/bin/sh", "-c", '{describe}; exec sleep 1000', "sh", "main"]
user = "{TEST_USER}"
env = {{ FOO = "bar" }}
limits = {{ nofile = 4096 }}
ready = "health"

[service.app.health]
exec = ["/bin/sh", "-c", '[ "$(id -u) $(ulimit -n) $HOME $USER $FOO" = "{expected}" ]']
interval = "1s"
timeout = "1s"

[service.app.on]
started = ["/bin/sh", "-c", '{describe}', "sh", "hook"]
"#
    ));
    daemon.wait_for_service(
        "app",
        "is running: its exec probe saw the service's user, env and limits",
        |s| s.state == "running",
    );
    daemon.wait_until("the hook on started printed what it sees", |d| {
        d.log("app").contains("stdout   hook ")
    });
    let log = daemon.log("app");
    for role in ["main", "hook"] {
        assert!(
            log.contains(&format!("stdout   {role} {expected}")),
            "the {role} sees `{expected}`:\n{log}"
        );
    }
}

#[test]
fn a_service_cgroup_removed_between_two_runs_is_created_again_at_the_next_start() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
restart = "always"
restart_sec = "3s"
start_secs = "0s"
"#,
    );
    let pid = daemon.running_pid("web");
    let dirs = holdfast_cgroups(pid);
    if dirs.is_empty() {
        eprintln!("skipped: the service runs in no holdfast cgroup (cgroups unavailable)");
        return;
    }
    kill_9(pid);
    daemon.wait_for_service("web", "is waiting to restart", |s| s.state == "backoff");
    // Removed by someone else while empty, before the restart comes.
    for dir in &dirs {
        wait_until(&format!("{} is removed", dir.display()), || {
            std::fs::remove_dir(dir).is_ok() || !dir.exists()
        });
    }

    let again = daemon.wait_for_service("web", "runs again", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != pid)
    });
    let new_pid = again.pid.expect("running");
    assert_eq!(
        holdfast_cgroups(new_pid),
        dirs,
        "the new run is in the same cgroups, created again"
    );
}

/// The memory limit of `pid`'s holdfast cgroup, `None` when it is in none with a memory
/// controller (v1: a service without a memory limit is not in that hierarchy).
fn memory_limit(pid: u32) -> Option<String> {
    ["memory.limit_in_bytes", "memory.max"]
        .into_iter()
        .find_map(|file| Some(read(&try_cgroup_dir(pid, file)?.join(file))))
        .map(|limit| limit.trim().to_owned())
}

#[test]
fn a_memory_limit_added_by_a_reload_holds_for_the_next_run_and_one_removed_no_longer_does() {
    let config = |limits: &str| {
        format!(
            r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
{limits}
"#
        )
    };
    let daemon = Daemon::start(&config(""));
    let first = daemon.running_pid("web");
    if holdfast_cgroups(first).is_empty() {
        eprintln!("skipped: the service runs in no holdfast cgroup (cgroups unavailable)");
        return;
    }
    let unlimited = |limit: Option<String>| matches!(limit.as_deref(), None | Some("max"));
    assert!(unlimited(memory_limit(first)), "{:?}", memory_limit(first));

    let reload_to = |limits: &str, before: u32| {
        daemon.write_config(&config(limits));
        daemon.cli_ok(&["reload"]);
        daemon
            .wait_for_service("web", "runs again after the reload", |s| {
                s.state == "running" && s.pid.is_some_and(|p| p != before)
            })
            .pid
            .expect("running")
    };
    let limited = reload_to(r#"limits = { memory = "64MiB" }"#, first);
    assert_eq!(memory_limit(limited), Some((64u64 << 20).to_string()));
    let again = reload_to("", limited);
    assert!(
        unlimited(memory_limit(again)),
        "the removed limit no longer holds: {:?}",
        memory_limit(again)
    );
}
