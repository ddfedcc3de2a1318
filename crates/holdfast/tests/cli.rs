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
