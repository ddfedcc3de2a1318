//! Security refusals, each tried with the real binary: control-socket rights per verb.
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
