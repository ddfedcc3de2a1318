//! What starts an upgrade, and what stops a bad build before anything changes: a flip of
//! the watched `current` symlink (an atomic rename, as `ln -sfn` does) and `holdfast
//! upgrade NAME [--to PATH]`, each verified first (a regular executable file, its
//! `.sha256`, the `verify` command). A refused build is an `upgrade_refused` event and an
//! error answer; the running build keeps running.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use holdfast::control::protocol::EventRecord;
use support::deploy::Deploy;
use support::{Daemon, describe, event_records, stderr, stdout};

/// A build that runs until stopped and answers `--version` with `version`'s exit code.
fn script(version_exit: i32) -> String {
    format!("#!/bin/sh\nif [ \"$1\" = --version ]; then exit {version_exit}; fi\nexec sleep 1000\n")
}

/// A deploy tree with build a (good) and `current -> builds/a`.
fn deploy() -> Deploy {
    let deploy = Deploy::new();
    deploy.build("a", &script(0), 0o755);
    deploy.flip("builds/a");
    deploy
}

/// The config of `api`, whose program is `current/server`.
fn config(deploy: &Deploy, upgrade_extra: &str) -> String {
    format!(
        r#"
[service.api]
command = ["{link}/server"]
start_secs = "0s"

[service.api.upgrade]
mode = "reuseport"
watch = "{link}"
ready_timeout = "30s"
drain = "5s"
bake = "1s"
{upgrade_extra}
"#,
        link = deploy.current().display()
    )
}

fn events(daemon: &Daemon, kind: &str) -> Vec<EventRecord> {
    let output = daemon.cli(&["events", "--json", "-n", "1000", "api"]);
    event_records(&output)
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// Waits for the `upgrade_refused` event of `api` and returns its reason.
fn refusal(daemon: &Daemon, build: &Path) -> String {
    let mut found = None;
    daemon.wait_until("api's upgrade_refused event", |d| {
        found = events(d, "upgrade_refused").into_iter().next();
        found.is_some()
    });
    let event = found.expect("waited for it");
    assert_eq!(
        event.data["build"],
        build.display().to_string(),
        "{event:?}"
    );
    event.data["reason"]
        .as_str()
        .expect("a reason string")
        .to_owned()
}

/// What must hold after a refusal: the old run is untouched and no rollout began.
fn nothing_changed(daemon: &Daemon, pid: u32, build_a: &Path) {
    let api = daemon.service("api");
    assert_eq!(api.state, "running");
    assert_eq!(api.pid, Some(pid), "the old run keeps running");
    let upgrade = api.upgrade.expect("api has [upgrade]");
    assert_eq!(upgrade.build, build_a.display().to_string());
    assert_eq!(upgrade.rollout, None);
    assert!(events(daemon, "upgrade_started").is_empty());
}

/// The canonical path of build A, as the daemon resolved it at load.
fn build_a(deploy: &Deploy) -> PathBuf {
    fs::canonicalize(deploy.dir("a").join("server")).expect("build a exists")
}

#[test]
fn a_flip_to_a_non_executable_file_changes_nothing() {
    let deploy = deploy();
    let daemon = Daemon::start(&config(&deploy, ""));
    let pid = daemon.running_pid("api");
    let b = deploy.build("b", &script(0), 0o644);
    deploy.flip("builds/b");
    let reason = refusal(&daemon, &fs::canonicalize(&b).expect("b exists"));
    assert!(reason.starts_with("not executable"), "{reason}");
    nothing_changed(&daemon, pid, &build_a(&deploy));

    // By hand, the same build is refused with the same reason, as an error.
    let output = daemon.cli(&["upgrade", "api"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("not executable"),
        "{}",
        describe(&output)
    );
    nothing_changed(&daemon, pid, &build_a(&deploy));
}

#[test]
fn a_flip_to_a_build_with_a_wrong_checksum_changes_nothing() {
    let deploy = deploy();
    let daemon = Daemon::start(&config(&deploy, ""));
    let pid = daemon.running_pid("api");
    let b = deploy.build("b", &script(0), 0o755);
    let wrong = "0".repeat(64);
    fs::write(
        b.with_file_name("server.sha256"),
        format!("{wrong}  server\n"),
    )
    .expect("write the checksum file");
    deploy.flip("builds/b");
    let reason = refusal(&daemon, &fs::canonicalize(&b).expect("b exists"));
    assert!(reason.starts_with("checksum mismatch"), "{reason}");
    nothing_changed(&daemon, pid, &build_a(&deploy));
}

#[test]
fn a_failing_verify_command_refuses_the_build() {
    let deploy = deploy();
    let verify = r#"verify = { command = ["{bin}", "--version"], timeout = "30s" }"#;
    let daemon = Daemon::start(&config(&deploy, verify));
    let pid = daemon.running_pid("api");
    let b = deploy.build("b", &script(3), 0o755);
    deploy.flip("builds/b");
    let reason = refusal(&daemon, &fs::canonicalize(&b).expect("b exists"));
    assert_eq!(reason, "the verify command exited 3");
    nothing_changed(&daemon, pid, &build_a(&deploy));
}

#[test]
fn a_verify_command_that_hangs_is_killed_at_its_timeout_and_refuses_the_build() {
    let deploy = deploy();
    let verify = r#"verify = { command = ["{bin}", "--version"], timeout = "1s" }"#;
    let daemon = Daemon::start(&config(&deploy, verify));
    let pid = daemon.running_pid("api");
    let pidfile = deploy.dir("b").with_file_name("verify.pid");
    let hangs = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo $$ > {}; exec sleep 1000; fi\nexec sleep 1000\n",
        pidfile.display()
    );
    let b = deploy.build("b", &hangs, 0o755);
    deploy.flip("builds/b");
    let reason = refusal(&daemon, &fs::canonicalize(&b).expect("b exists"));
    assert_eq!(reason, "the verify command timed out after 1s");
    let verify_pid: u32 = fs::read_to_string(&pidfile)
        .expect("the verify command wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    daemon.wait_until("the verify command is gone", |_| {
        !support::is_alive(verify_pid)
    });
    nothing_changed(&daemon, pid, &build_a(&deploy));
}

#[test]
fn a_link_to_a_missing_file_is_refused() {
    let deploy = deploy();
    let daemon = Daemon::start(&config(&deploy, ""));
    let pid = daemon.running_pid("api");
    deploy.flip("builds/gone");
    let reason = refusal(&daemon, &deploy.dir("gone").join("server"));
    assert_eq!(reason, "the link points to a missing file");
    nothing_changed(&daemon, pid, &build_a(&deploy));
}

#[test]
fn a_flip_to_a_good_build_rolls_it_out_and_upgrade_by_hand_waits_for_its_outcome() {
    let deploy = deploy();
    let verify = r#"verify = { command = ["{bin}", "--version"], timeout = "30s" }"#;
    let daemon = Daemon::start(&config(&deploy, verify));
    daemon.running_pid("api");
    let b = fs::canonicalize(deploy.build("b", &script(0), 0o755)).expect("b exists");
    deploy.flip("builds/b");
    // A deploy that flips the link and asks at once gets the one rollout, whichever of
    // the two the daemon saw first, and waits for it.
    let output = daemon.cli(&["upgrade", "api"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    daemon.wait_for_service("api", "runs build b", |s| {
        s.upgrade
            .as_ref()
            .is_some_and(|u| u.build == b.display().to_string())
            && s.upgrade.as_ref().is_some_and(|u| u.rollout.is_none())
    });
    assert_eq!(events(&daemon, "upgraded").len(), 1);
    assert_eq!(events(&daemon, "upgrade_started").len(), 1);

    let c = fs::canonicalize(deploy.build("c", &script(0), 0o755)).expect("c exists");
    let output = daemon.cli(&["upgrade", "api", "--to", &c.display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains("upgrade_started") && printed.contains("upgraded"),
        "the rollout's events are printed: {printed}"
    );
    let api = daemon.service("api");
    assert_eq!(
        api.upgrade.expect("[upgrade]").build,
        c.display().to_string()
    );

    let build_line = format!(
        "build: {} (watching {})",
        c.display(),
        deploy.current().display()
    );
    let output = daemon.cli_ok(&["upgrade", "--status"]);
    assert_eq!(
        stdout(&output),
        format!("api: reuseport\n  {build_line}\n"),
        "{}",
        describe(&output)
    );
    let output = daemon.cli_ok(&["status", "api"]);
    assert!(
        stdout(&output).contains(&build_line),
        "{}",
        describe(&output)
    );

    // A rollout bakes for 1s: a wait of 1ms gives up (exit 5), the rollout goes on.
    let b_path = b.display().to_string();
    let output = daemon.cli(&["upgrade", "api", "--to", &b_path, "--timeout", "1ms"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        stderr(&output).contains("still upgrading"),
        "{}",
        describe(&output)
    );
    daemon.wait_for_service("api", "is back on build b", |s| {
        s.upgrade
            .as_ref()
            .is_some_and(|u| u.build == b_path && u.rollout.is_none())
    });
}

#[test]
fn a_rolled_back_build_points_the_link_back_and_that_flip_starts_no_upgrade() {
    let deploy = deploy();
    let daemon = Daemon::start(&config(&deploy, "rollback_link = true"));
    daemon.running_pid("api");
    deploy.build("c", "#!/bin/sh\nexit 1\n", 0o755);
    deploy.flip("builds/c");
    daemon.wait_until("api rolled back", |d| !events(d, "rolled_back").is_empty());
    deploy.wait_points_at(&daemon, "builds/a");
    // A good flip after it: once it is rolled out, every flip before it was handled.
    let d = fs::canonicalize(deploy.build("d", &script(0), 0o755)).expect("d exists");
    deploy.flip("builds/d");
    daemon.wait_until("api upgraded to d", |dm| !events(dm, "upgraded").is_empty());
    let started: Vec<String> = events(&daemon, "upgrade_started")
        .iter()
        .map(|e| e.data["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    let c = fs::canonicalize(deploy.dir("c").join("server")).expect("c exists");
    assert_eq!(
        started,
        [c.display().to_string(), d.display().to_string()],
        "the flip back to a started nothing"
    );
}

#[test]
fn upgrade_of_a_base_name_waits_until_every_instance_runs_the_build() {
    let deploy = deploy();
    let config =
        config(&deploy, "").replace("start_secs = \"0s\"", "start_secs = \"0s\"\ninstances = 2");
    let daemon = Daemon::start(&config);
    daemon.running_pid("api@0");
    daemon.running_pid("api@1");
    let b = fs::canonicalize(deploy.build("b", &script(0), 0o755)).expect("b exists");
    let b = b.display().to_string();
    let output = daemon.cli(&["upgrade", "api", "--to", &b]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    for instance in ["api@0", "api@1"] {
        let service = daemon.service(instance);
        assert_eq!(service.upgrade.expect("[upgrade]").build, b, "{instance}");
    }
    let printed = stdout(&output);
    let kinds = printed.lines().filter_map(|l| l.split_whitespace().nth(2));
    let upgraded = kinds.filter(|kind| *kind == "upgraded").count();
    assert_eq!(
        upgraded,
        2,
        "each instance's upgraded event: {}",
        describe(&output)
    );
}

#[test]
fn a_rollback_of_a_later_instance_points_the_link_back_at_the_old_build() {
    let deploy = deploy();
    let config =
        config(&deploy, "").replace("start_secs = \"0s\"", "start_secs = \"0s\"\ninstances = 2");
    let daemon = Daemon::start(&config);
    daemon.running_pid("api@0");
    daemon.running_pid("api@1");
    // The canary (api@0) is fine with it; api@1 exits at once.
    let crashes_on_1 = "#!/bin/sh\n[ \"$HOLDFAST_INSTANCE\" = 1 ] && exit 1\nexec sleep 1000\n";
    deploy.build("c", crashes_on_1, 0o755);
    deploy.flip("builds/c");
    daemon.wait_until("api@1 rolled back", |d| {
        events(d, "rolled_back")
            .iter()
            .any(|e| e.service.as_ref().is_some_and(|s| s.as_str() == "api@1"))
    });
    let a = build_a(&deploy).display().to_string();
    daemon.wait_for("both instances back on build a", |status| {
        let on_a = |name: &str| {
            support::find_service(status, name)
                .and_then(|s| s.upgrade.as_ref())
                .is_some_and(|u| u.build == a && u.rollout.is_none())
        };
        (on_a("api@0") && on_a("api@1")).then_some(())
    });
    deploy.wait_points_at(&daemon, "builds/a");
}

#[test]
fn watches_follow_a_reload() {
    let deploy = deploy();
    let unwatched = config(&deploy, "").replace("watch = ", "# watch = ");
    let daemon = Daemon::start(&unwatched);
    daemon.running_pid("api");
    daemon.write_config(&config(&deploy, ""));
    daemon.cli_ok(&["reload"]);
    let b = deploy.build("b", &script(0), 0o644);
    deploy.flip("builds/b");
    let reason = refusal(&daemon, &fs::canonicalize(&b).expect("b exists"));
    assert!(reason.starts_with("not executable"), "{reason}");
}

#[test]
fn upgrade_of_a_service_without_an_upgrade_section_is_a_precise_error() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let pid = daemon.running_pid("web");
    for args in [&["upgrade", "web"][..], &["upgrade", "--status", "web"]] {
        let output = daemon.cli(args);
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(
            stderr(&output).contains("web has no [service.web.upgrade] section"),
            "{}",
            describe(&output)
        );
    }
    let output = daemon.cli(&["upgrade", "wbe"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("did you mean \"web\""),
        "{}",
        describe(&output)
    );
    let output = daemon.cli(&["upgrade", "--status"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(stdout(&output), "no service has an [upgrade] section\n");
    assert_eq!(daemon.running_pid("web"), pid, "nothing changed");
}
