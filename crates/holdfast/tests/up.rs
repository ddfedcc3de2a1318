//! `holdfast up` that cannot start: it says once what failed, naming the path, and leaves
//! nothing behind (no cgroup, no socket taken from a running daemon).

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use support::{Daemon, describe, holdfast, stderr};

/// Runs `holdfast up -c config` to its (failed) end; returns its pid and output.
fn failed_up(config: &Path) -> (u32, Output) {
    let child = holdfast()
        .args(["up", "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to spawn holdfast up");
    let pid = child.id();
    let output = child
        .wait_with_output()
        .expect("failed to wait for holdfast up");
    assert!(
        !output.status.success(),
        "up must fail: {}",
        describe(&output)
    );
    (pid, output)
}

/// cgroup directories of the daemon with this pid (`holdfast-<hash>.<pid>`), in any
/// hierarchy.
fn cgroups_of(pid: u32) -> Vec<String> {
    let suffix = format!(".{pid}");
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    let mut dirs: Vec<_> = hierarchies.flatten().map(|e| e.path()).collect();
    dirs.push("/sys/fs/cgroup".into());
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("holdfast-") && name.ends_with(&suffix) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// `text` mentions `path`, also when the report wrapped it over lines.
fn names(text: &str, path: &Path) -> bool {
    let squeeze = |s: &str| {
        s.split_whitespace()
            .filter(|word| *word != "│")
            .collect::<String>()
    };
    squeeze(text).contains(&squeeze(&path.display().to_string()))
}

/// The error is said once: no line of it repeats.
fn assert_said_once(output: &Output, needle: &str) {
    let text = stderr(output);
    assert_eq!(
        text.matches(needle).count(),
        1,
        "`{needle}` said exactly once:\n{text}"
    );
}

#[test]
fn up_with_a_log_dir_that_is_a_file_names_it_once_and_leaves_no_cgroup() {
    let dir = tempdir();
    let log_dir = dir.join("logs");
    std::fs::write(&log_dir, "not a directory").expect("write the file");
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        "[holdfast]\ncontrol = \"control.sock\"\nlog_dir = \"logs\"\nstate_dir = \"state\"\n\n\
         [service.app]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    )
    .expect("write the config");
    let (pid, output) = failed_up(&config);
    assert_eq!(cgroups_of(pid), Vec::<String>::new(), "no cgroup is left");
    let text = stderr(&output);
    assert!(
        names(&text, &log_dir),
        "the error names the log directory {}:\n{text}",
        log_dir.display()
    );
    assert_said_once(&output, "File exists");
    assert!(!dir.join("control.sock").exists(), "no socket is left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_up_on_a_socket_in_use_refuses_and_leaves_the_first_daemon_alone() {
    let daemon = Daemon::start(
        r#"
[service.app]
command = ["/bin/sleep", "1000"]
"#,
    );
    let (pid, output) = failed_up(&daemon.config_path());
    assert_eq!(cgroups_of(pid), Vec::<String>::new(), "no cgroup is left");
    let text = stderr(&output);
    assert!(
        names(&text, &daemon.socket()),
        "the refusal names the socket:\n{text}"
    );
    assert_said_once(&output, "already");
    daemon.wait_for_service("app", "still runs under the first daemon", |s| {
        s.state == "running"
    });
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_even_with_its_own_control_socket() {
    let daemon = Daemon::start(
        r#"
[service.app]
command = ["/bin/sleep", "1000"]
ready = "notify"
start_timeout = "infinity"
"#,
    );
    let dir = tempdir();
    let config = dir.join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[holdfast]\ncontrol = \"{}/other.sock\"\nstate_dir = \"{}\"\nlog_dir = \"{}/logs\"\n\n\
             [service.other]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
            dir.display(),
            daemon.dir().join("state").display(),
            dir.display()
        ),
    )
    .expect("write the second config");
    let notify = daemon.dir().join("state/notify.sock");
    let inode = |p: &Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("the notify socket"))
    };
    let before = inode(&notify);
    let (_, output) = failed_up(&config);
    let text = stderr(&output);
    let holder = format!("pid {}", daemon.host_pid());
    assert!(
        text.contains(&holder),
        "the refusal names the holder:\n{text}"
    );
    assert!(
        names(&text, &daemon.dir().join("state")),
        "and the state directory:\n{text}"
    );
    assert!(
        !dir.join("other.sock").exists(),
        "the second daemon took no control socket"
    );
    assert_eq!(
        inode(&notify),
        before,
        "the first daemon's notify socket was not bound again"
    );
    daemon.wait_for_service("app", "still starting under the first daemon", |s| {
        s.state == "starting"
    });
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "holdfast-up-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

#[test]
fn status_answers_while_a_shutdown_waits_for_its_last_hooks() {
    // The `stopped` hook runs on after every service stopped; the daemon waits for it.
    let daemon = Daemon::start(
        r#"
[service.a]
command = ["sleep", "1000"]
[service.a.on]
stopped = ["/bin/sh", "-c", "echo $$ > {DIR}/hook.pid; exec sleep 20"]
"#,
    );
    daemon.wait_for_service("a", "runs", |s| s.state == "running");
    let holdfast = nix::unistd::Pid::from_raw(daemon.host_pid() as i32);
    nix::sys::signal::kill(holdfast, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let hook_pid = daemon.dir().join("hook.pid");
    support::wait_until("the stopped hook runs", || hook_pid.exists());

    let status = daemon.cli(&["status"]);
    let text = support::stdout(&status);
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.ends_with(", shutting down")),
        "{}",
        describe(&status)
    );
    assert!(text.contains("stopped"), "{}", describe(&status));
}
