//! `up` and `reload` refuse a config that would fail at spawn on this machine, the same
//! checks `holdfast check` makes (a missing program, a missing `working_dir`, a CPU or a
//! `nofile` the machine does not have, two services on one readiness port).

mod support;

use support::{Daemon, describe, stdout};

#[test]
fn up_refuses_a_missing_program_and_names_it_at_file_line() {
    let dir = std::env::temp_dir().join(format!("holdfast-spawn-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        "[holdfast]\ncontrol = \"control.sock\"\nlog_dir = \"logs\"\nstate_dir = \"state\"\n\n\
         [service.web]\ncommand = [\"/opt/x\"]\n",
    )
    .expect("config is writable");
    let mut cmd = support::holdfast();
    cmd.arg("up").arg("-c").arg(&config);
    let output = support::run(cmd);
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let text = support::stderr(&output);
    assert!(
        text.contains("holdfast.toml:7:12]") && text.contains("no such file: /opt/x"),
        "the diagnostic points at the program:\n{text}"
    );
    assert!(
        !dir.join("control.sock").exists(),
        "the daemon never started"
    );
}

#[test]
fn reload_with_a_missing_program_is_rejected_and_nothing_changes() {
    let daemon = Daemon::start(
        r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"
"#,
    );
    let before = daemon.wait_for("web runs", |s| {
        let web = support::find_service(s, "web")?;
        (web.state == "running").then_some(web.pid?)
    });
    daemon.write_config(
        r#"
[service.web]
command = ["no-such-program-xyz", "1000"]
start_secs = "0s"

[service.api]
command = ["sleep", "1000"]
working_dir = "/nonexistent/dir"
"#,
    );

    let output = daemon.cli(&["reload"]);

    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(text.contains("2 problems"), "{text}");
    assert!(
        text.contains("program `no-such-program-xyz` of `service.web.command` is not in PATH"),
        "{text}"
    );
    assert!(
        text.contains("`service.api.working_dir` does not exist"),
        "{text}"
    );
    let web = daemon.service("web");
    assert_eq!(web.pid, Some(before), "web was not touched");
    assert_eq!(daemon.status().services.len(), 1, "api was not added");
}
