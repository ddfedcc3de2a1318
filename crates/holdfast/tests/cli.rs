//! The CLI surface that needs no daemon: help, completions, checking the example config.

mod support;

use support::{describe, holdfast, run, stdout, workspace_root};

#[test]
fn help_lists_the_subcommands() {
    let mut cmd = holdfast();
    cmd.arg("--help");

    let output = run(cmd);

    assert!(output.status.success(), "{}", describe(&output));
    let help = stdout(&output);
    for sub in [
        "up", "check", "status", "start", "stop", "reload", "logs", "shutdown",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lists {sub}:\n{help}"
        );
    }
}

#[test]
fn completions_for_bash_are_printed() {
    let mut cmd = holdfast();
    cmd.args(["completions", "bash"]);

    let output = run(cmd);

    assert!(output.status.success(), "{}", describe(&output));
    let script = stdout(&output);
    assert!(
        script.contains("holdfast") && script.contains("complete"),
        "a bash completion script for holdfast:\n{script}"
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let example = workspace_root().join("examples/holdfast.toml");
    let mut cmd = holdfast();
    cmd.arg("check").arg(&example);

    let output = run(cmd);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

#[test]
fn a_reader_that_went_away_ends_the_cli_quietly_as_with_ls() {
    use std::os::unix::process::ExitStatusExt;
    let daemon = support::Daemon::start("[service.web]\ncommand = [\"sleep\", \"1000\"]\n");
    // A pipe whose read end is closed before holdfast writes: `holdfast status | head -0`.
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let output = support::holdfast()
        .arg("status")
        .arg("-s")
        .arg(daemon.socket())
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run holdfast status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "ended by SIGPIPE like any Unix tool: {:?}, stderr: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
