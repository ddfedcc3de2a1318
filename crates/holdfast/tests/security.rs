//! Security refusals, each tried with the real binary: control-socket rights per verb,
//! configs and programs other users could rewrite (holdfast runs as root), and a symlink
//! planted at a log file path.
//!
//! These tests need root (they switch to uid 65534 with setpriv).

mod support;

use std::path::Path;

use support::{Daemon, as_nobody, as_nobody_in, describe, holdfast_for_anyone, stderr};

/// gid of `staff`, the admin group of these tests.
const STAFF: u32 = 50;

#[test]
fn a_control_group_member_may_restart_but_only_an_admin_group_member_may_reload_or_shut_down() {
    let daemon = Daemon::start(
        r#"
control_group = "nogroup"
admin_group = "staff"

[service.web]
command = ["/bin/sleep", "1000"]
"#,
    );
    daemon.wait_for_service("web", "is running", |s| s.state == "running");
    let bin = holdfast_for_anyone(&daemon);
    let socket = daemon.socket();
    let socket = socket.to_str().expect("a UTF-8 path");
    let operator = |args: &[&str]| {
        let args: Vec<&str> = args.iter().copied().chain(["-s", socket]).collect();
        as_nobody(&daemon, &bin, &args)
    };

    let restarted = operator(&["restart", "web"]);
    assert_eq!(restarted.status.code(), Some(0), "{}", describe(&restarted));
    for verb in [
        &["shutdown"][..],
        &["reload"],
        &["signal", "web", "HUP"],
        &["upgrade", "--self"],
    ] {
        let refused = operator(verb);
        assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
        let said = stderr(&refused);
        assert!(
            said.contains(&format!("uid 65534 may not `{}", verb[0]))
                && said.contains("members of admin_group (gid 50)"),
            "{}",
            describe(&refused)
        );
    }
    daemon.wait_for_service("web", "is still supervised after the refusals", |s| {
        s.state == "running"
    });

    let reloaded = as_nobody_in(&daemon, &[STAFF], &bin, &["reload", "-s", socket]);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap_or(Path::new("/nonexistent")));
    assert_eq!(reloaded.status.code(), Some(0), "{}", describe(&reloaded));
}

/// `text` without the line breaks, frames and indents of a diagnostic, which wraps long
/// paths anywhere.
fn flat(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[test]
fn a_config_other_users_can_write_is_refused_by_reload_and_check_and_the_running_one_stays() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["/bin/sleep", "1000"]
"#,
    );
    let pid = daemon.wait_for_service("web", "is running", |s| s.state == "running");
    let pid = pid.pid;
    let config = daemon.config_path();
    chmod(&config, 0o666);

    let reload = daemon.cli(&["reload"]);
    let check = support::run({
        let mut cmd = support::holdfast();
        cmd.arg("check").arg(&config);
        cmd
    });
    chmod(&config, 0o644);
    let said = flat(&format!(
        "refusing config {}: it is writable by group and other users (mode 0666)",
        config.display()
    ));
    for refused in [&reload, &check] {
        assert_eq!(refused.status.code(), Some(3), "{}", describe(refused));
        assert!(
            flat(&stderr(refused)).contains(&said) && flat(&stderr(refused)).contains("chmodgo-w"),
            "{}",
            describe(refused)
        );
    }
    let web = daemon.service("web");
    assert_eq!(
        (web.state.as_str(), web.pid),
        ("running", pid),
        "the running config stays"
    );
}

#[test]
fn a_service_program_other_users_can_write_is_refused() {
    let daemon = Daemon::start("");
    let program = daemon.dir().join("open-to-all.sh");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 1000\n").expect("write the program");
    chmod(&program, 0o777);
    daemon.write_config(&format!(
        "[service.open]\ncommand = [\"{}\"]\n",
        program.display()
    ));

    let refused = daemon.cli(&["reload"]);
    assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
    assert!(
        flat(&stderr(&refused)).contains(&flat(&format!(
            "{} is writable by other users (mode 0777): chmod o-w",
            program.display()
        ))),
        "{}",
        describe(&refused)
    );
    assert!(daemon.status().services.is_empty(), "nothing was started");
}

#[test]
fn a_symlink_planted_at_a_log_file_path_is_refused_not_followed() {
    let daemon = Daemon::start("");
    let precious = daemon.dir().join("precious");
    std::fs::write(&precious, "precious\n").expect("write the target");
    let logs = daemon.dir().join("logs");
    std::fs::create_dir_all(&logs).expect("the log directory");
    let link = logs.join("victim.log");
    std::os::unix::fs::symlink(&precious, &link).expect("plant the link");
    daemon.write_config(
        r#"
[service.victim]
command = ["/bin/sh", "-c", "echo overwrite; exec sleep 1000"]
"#,
    );
    let reload = daemon.cli(&["reload"]);

    assert_eq!(reload.status.code(), Some(1), "{}", describe(&reload));
    assert!(
        stderr(&reload).contains(&format!(
            "victim: failed: cannot capture output in {}: refusing to open log file \"{}\": \
             it is a symbolic link",
            logs.display(),
            link.display()
        )),
        "{}",
        describe(&reload)
    );
    assert_eq!(
        std::fs::read_to_string(&precious).expect("read the target"),
        "precious\n",
        "the link was not followed"
    );
    assert!(
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
        "the link is left for the admin to look at"
    );
}

#[test]
fn up_refuses_a_config_in_a_directory_its_group_can_write() {
    let dir = std::env::temp_dir().join(format!("holdfast-sec-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the config's directory");
    chmod(&dir, 0o775);
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        "[holdfast]\ncontrol = \"control.sock\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n",
    )
    .expect("write the config");

    let up = support::run({
        let mut cmd = support::holdfast();
        cmd.args(["up", "-c"]).arg(&config);
        cmd
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(up.status.code(), Some(3), "{}", describe(&up));
    assert!(
        flat(&stderr(&up)).contains(&flat(&format!(
            "its directory {} is writable by its group (mode 0775)",
            dir.display()
        ))) && flat(&stderr(&up)).contains("chmodgo-w"),
        "{}",
        describe(&up)
    );
    assert!(!dir.join("control.sock").exists(), "nothing was started");
}

#[test]
fn a_service_opting_out_of_no_new_privs_under_a_holdfast_that_has_it_is_named_not_silently_held_back()
 {
    // As under its generated unit's NoNewPrivileges=yes (every service kept it then).
    let kept = "[service.api]\ncommand = [\"sleep\", \"300\"]\n";
    let daemon = Daemon::start_wrapped(kept, &["setpriv", "--no-new-privs"], &[]);
    daemon.running_pid("api");
    let sudo = "[service.admin]\ncommand = [\"sleep\", \"300\"]\nno_new_privs = false\n";
    daemon.write_config(&format!("{kept}\n{sudo}"));
    let expected = "[service.admin].no_new_privs = false (holdfast itself runs with no_new_privs";
    for args in [&["reload", "--dry-run"][..], &["reload"]] {
        let said = support::stdout(&daemon.cli_ok(args));
        assert!(said.contains(expected), "{args:?}: {said}");
    }
    daemon.running_pid("admin");
    // Unchanged by the next reload: said once, where it changed.
    let said = support::stdout(&daemon.cli_ok(&["reload"]));
    assert!(!said.contains("no_new_privs"), "{said}");

    // Started so: up warns.
    let again = Daemon::start_wrapped(
        &format!("{kept}\n{sudo}"),
        &["setpriv", "--no-new-privs"],
        &[],
    );
    support::wait_until("up warns", || again.stderr().contains(expected));

    // A holdfast without it honours the opt-out: nothing to say.
    let free = Daemon::start(kept);
    free.write_config(&format!("{kept}\n{sudo}"));
    let said = support::stdout(&free.cli_ok(&["reload"]));
    assert!(!said.contains("no_new_privs"), "{said}");
}
