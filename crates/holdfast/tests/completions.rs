//! Shell completion knows the running daemon's services: the completion entry point
//! (`COMPLETE=<shell> holdfast -- <line>`, what the registered script calls at each TAB)
//! lists their names where a service is expected.

mod support;

use std::process::Output;

use support::{Daemon, describe, stdout};

const SERVICES: &str = r#"
[service.web]
command = ["sleep", "1000"]
start_secs = "0s"

[service.worker]
command = ["sleep", "1000"]
start_secs = "0s"
"#;

/// A daemon with both services running, so their state (shown as help) is settled.
fn running_daemon() -> Daemon {
    let daemon = Daemon::start(SERVICES);
    daemon.wait_until("both services run", |d| {
        d.status().services.iter().all(|s| s.state == "running")
    });
    daemon
}

/// Asks the completion entry point of `shell` for the candidates of the last word of
/// `line`, the way the generated script does.
fn complete(shell: &str, line: &[&str], socket_env: Option<&std::path::Path>) -> Output {
    let mut cmd = support::holdfast();
    cmd.env("COMPLETE", shell)
        .env("_CLAP_COMPLETE_INDEX", (line.len() - 1).to_string())
        .arg("--")
        .args(line);
    if let Some(socket) = socket_env {
        cmd.env("HOLDFAST_SOCKET", socket);
    }
    support::run(cmd)
}

fn candidates(output: &Output) -> Vec<String> {
    assert_eq!(output.status.code(), Some(0), "{}", describe(output));
    stdout(output).lines().map(str::to_owned).collect()
}

#[test]
fn completing_stop_lists_the_daemons_service_names() {
    let daemon = running_daemon();
    let socket = daemon.socket();

    let bash = candidates(&complete("bash", &["holdfast", "stop", ""], Some(&socket)));
    assert!(
        bash.starts_with(&["web".to_owned(), "worker".to_owned()]),
        "{bash:?}"
    );
    let prefix = candidates(&complete(
        "bash",
        &["holdfast", "stop", "wo"],
        Some(&socket),
    ));
    assert_eq!(prefix, ["worker"]);

    let fish = candidates(&complete(
        "fish",
        &["holdfast", "restart", ""],
        Some(&socket),
    ));
    assert!(fish.contains(&"web\trunning".to_owned()), "{fish:?}");
    let zsh = candidates(&complete("zsh", &["holdfast", "logs", "w"], Some(&socket)));
    assert!(
        zsh.contains(&"web:running".to_owned()) && zsh.contains(&"worker:running".to_owned()),
        "{zsh:?}"
    );
}

#[test]
fn the_socket_on_the_line_being_completed_is_the_one_asked() {
    let daemon = running_daemon();
    let socket = daemon.socket();
    let socket = socket.to_str().expect("utf-8 test path");

    let line = ["holdfast", "start", "--socket", socket, "we"];
    assert_eq!(candidates(&complete("bash", &line, None)), ["web"]);
}

#[test]
fn without_a_daemon_completion_offers_no_names_and_does_not_fail() {
    let missing = std::path::Path::new("/nonexistent/holdfast.sock");
    let names = candidates(&complete("bash", &["holdfast", "stop", "w"], Some(missing)));
    assert_eq!(names, Vec::<String>::new());
}

#[test]
fn the_bash_script_completes_service_names_in_a_real_bash() {
    let daemon = running_daemon();
    // The registered function, called as bash's `complete -F` would for `holdfast stop w<TAB>`.
    let script = format!(
        "source <({bin} completions bash)\n\
         COMP_WORDS=(holdfast stop w); COMP_CWORD=2; COMP_TYPE=9\n\
         _clap_complete_holdfast holdfast w stop\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        bin = support::holdfast_bin().display()
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env("HOLDFAST_SOCKET", daemon.socket())
        .env_remove("COMPLETE");
    let names = candidates(&support::run(cmd));
    assert_eq!(names, ["web", "worker"]);
}
