//! A clean service environment, like systemd's: services see `PATH`, `LANG`, their user's
//! identity, `PWD`, `INVOCATION_ID`, `HOLDFAST_SERVICE`, the `pass_env` variables and
//! their configured `env`, and nothing else of holdfast's environment unless
//! `inherit_env = true`. Read from `/proc/PID/environ` of the real processes.

mod support;

use std::collections::BTreeMap;

use support::{Daemon, TAG_VAR};

/// systemd's default `PATH`, holdfast's too.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables holdfast gets on top of the harness's own (`HF_TEST`, `HOLDFAST_LOG`).
const DAEMON_ENV: &[(&str, &str)] = &[("LANG", "C.UTF-8"), ("HF_SECRET", "leak")];

fn environ(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("the process is alive");
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn main_pid(daemon: &Daemon, name: &str) -> u32 {
    daemon
        .wait_for_service(name, "has a pid", |s| s.pid.is_some())
        .pid
        .expect("waited for the pid")
}

/// The user the tests (and so holdfast) run as, from the password database.
fn own_user() -> nix::unistd::User {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .expect("read the password database")
        .expect("the test user has an entry")
}

#[test]
fn a_service_sees_exactly_the_clean_environment_and_none_of_holdfasts_other_variables() {
    let daemon = Daemon::start_with_env(
        r#"
[service.app]
command = ["sleep", "1000"]
working_dir = "{DIR}"
env = { APP_MODE = "production" }
"#,
        DAEMON_ENV,
    );
    let env = environ(main_pid(&daemon, "app"));
    let user = own_user();
    let dir = daemon.dir().display().to_string();
    let home = user.dir.display().to_string();
    let shell = user.shell.display().to_string();
    let invocation = env.get("INVOCATION_ID").cloned().unwrap_or_default();
    let expected: BTreeMap<String, String> = [
        ("PATH", DEFAULT_PATH),
        ("LANG", "C.UTF-8"),
        ("HOME", home.as_str()),
        ("USER", user.name.as_str()),
        ("LOGNAME", user.name.as_str()),
        ("SHELL", shell.as_str()),
        ("PWD", dir.as_str()),
        ("INVOCATION_ID", invocation.as_str()),
        ("HOLDFAST_SERVICE", "app"),
        ("APP_MODE", "production"),
        (TAG_VAR, daemon.tag()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        env, expected,
        "only the clean environment: no HF_SECRET, HOLDFAST_LOG or other variable of holdfast"
    );
    assert_eq!(invocation.len(), 32, "128 bits in hex: {invocation}");
    assert!(invocation.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn inherit_env_brings_back_holdfasts_environment() {
    let daemon = Daemon::start_with_env(
        r#"
[service.legacy]
command = ["sleep", "1000"]
inherit_env = true
"#,
        DAEMON_ENV,
    );
    let env = environ(main_pid(&daemon, "legacy"));
    assert_eq!(env.get("HF_SECRET").map(String::as_str), Some("leak"));
    assert_eq!(env.get("HOLDFAST_LOG").map(String::as_str), Some("info"));
    assert_eq!(
        env.get("PATH"),
        std::env::var("PATH").ok().as_ref(),
        "holdfast's own PATH"
    );
    assert_eq!(
        env.get("HOLDFAST_SERVICE").map(String::as_str),
        Some("legacy")
    );
    assert!(env.contains_key("INVOCATION_ID"));
}

#[test]
fn pass_env_hands_the_named_variables_to_services_and_their_hooks() {
    // The harness's header has `pass_env = ["HF_TEST"]`; HF_SECRET is not listed.
    let daemon = Daemon::start_with_env(
        r#"
[service.app]
command = ["sleep", "1000"]
[service.app.on]
spawned = ["/bin/sh", "-c", "env > {DIR}/hook.tmp && mv {DIR}/hook.tmp {DIR}/hook.env"]
"#,
        DAEMON_ENV,
    );
    let env = environ(main_pid(&daemon, "app"));
    assert_eq!(env.get(TAG_VAR).map(String::as_str), Some(daemon.tag()));
    assert!(!env.contains_key("HF_SECRET"), "not in pass_env: {env:?}");

    let hook_env = daemon.dir().join("hook.env");
    daemon.wait_until("the hook wrote its environment", |_| hook_env.exists());
    let hook: BTreeMap<String, String> = std::fs::read_to_string(&hook_env)
        .expect("read the hook's environment")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(hook.get(TAG_VAR).map(String::as_str), Some(daemon.tag()));
    assert!(!hook.contains_key("HF_SECRET"));
    assert_eq!(
        hook.get("INVOCATION_ID"),
        env.get("INVOCATION_ID"),
        "a hook shares the INVOCATION_ID of the run it is about"
    );
}

#[test]
fn invocation_id_differs_between_two_runs() {
    let daemon = Daemon::start(
        r#"
[service.app]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let first_pid = main_pid(&daemon, "app");
    let first = environ(first_pid)["INVOCATION_ID"].clone();
    daemon.cli_ok(&["restart", "app"]);
    let second_pid = daemon
        .wait_for_service("app", "runs again", |s| {
            s.state == "running" && s.pid.is_some_and(|p| p != first_pid)
        })
        .pid
        .expect("a running service has a pid");
    let second = environ(second_pid)["INVOCATION_ID"].clone();
    assert_ne!(first, second, "a fresh id per run");
}

#[test]
fn a_command_is_looked_up_in_the_services_path_not_holdfasts() {
    // Only holdfast's PATH has the directory with `only-here`.
    let bin = std::env::temp_dir().join(format!("holdfast-path-{}", std::process::id()));
    std::fs::create_dir_all(&bin).expect("create the bin directory");
    let program = bin.join("only-here");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 1000\n").expect("write the program");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make it executable");
    let holdfast_path = format!("{}:/usr/bin:/bin", bin.display());
    let service_path = format!("PATH = \"{}:/usr/bin:/bin\"", bin.display());
    let configured = format!(
        r#"
[service.configured]
command = ["only-here"]
env = {{ {service_path} }}
"#
    );
    // Without `env.PATH` the program is not found: `check` (and so `up`) says so, looking
    // it up the way the spawn would, in the service's default PATH.
    let config = std::env::temp_dir().join(format!("holdfast-path-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("{configured}\n[service.clean]\ncommand = [\"only-here\"]\n"),
    )
    .expect("write the config");
    let check = support::run({
        let mut cmd = support::holdfast();
        cmd.arg("check").arg(&config).env("PATH", &holdfast_path);
        cmd
    });
    let report = support::stderr(&check);
    assert!(!check.status.success(), "{}", support::describe(&check));
    assert!(
        report.contains("program `only-here` of `service.clean.command` is not in PATH")
            && !report.contains("service.configured.command"),
        "only clean's program is unknown: {report}"
    );
    let _ = std::fs::remove_file(&config);
    let daemon = Daemon::start_with_env(&configured, &[("PATH", &holdfast_path)]);
    let pid = main_pid(&daemon, "configured");
    assert!(support::is_alive(pid), "found in the configured PATH");
    let _ = std::fs::remove_dir_all(&bin);
}

#[test]
fn a_relative_path_entry_is_searched_in_the_service_working_dir() {
    // `bin` in PATH means `<working_dir>/bin`, where execvp in the service would look,
    // not holdfast's own directory.
    let app = std::env::temp_dir().join(format!("holdfast-relpath-{}", std::process::id()));
    let bin = app.join("bin");
    std::fs::create_dir_all(&bin).expect("create app/bin");
    let tool = bin.join("tool");
    std::fs::write(&tool, "#!/bin/sh\nexec sleep 1000\n").expect("write the tool");
    let mut perms = std::fs::metadata(&tool).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&tool, perms).expect("chmod");
    let config = format!(
        "[service.tool]\ncommand = [\"tool\"]\nworking_dir = \"{}\"\nenv = {{ PATH = \"bin:/usr/bin:/bin\" }}\nstart_secs = \"0s\"\n",
        app.display()
    );

    let daemon = Daemon::start(&config);
    main_pid(&daemon, "tool");
    let mut check = support::holdfast();
    check.arg("check").arg(daemon.config_path());
    let check = support::run(check);
    assert!(check.status.success(), "{}", support::describe(&check));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&app);
}
