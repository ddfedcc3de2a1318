//! holdfast as a program of a real supervisord: it knows who restarts it, and when
//! supervisord restarts it after a SIGKILL its services are adopted, not started twice.

mod support;

use std::process::Command;

use support::supervisord::Supervisord;
use support::{describe, holdfast, holdfast_bin, is_alive, kill_9, run, stdout};

/// A supervisord whose program `holdfast` (not started yet) runs holdfast on the config
/// `holdfast.toml` in its directory: one service, `ticker`.
fn supervisord_with_holdfast() -> Option<Supervisord> {
    let program = format!(
        "[program:holdfast]\ncommand={} up -c {{DIR}}/holdfast.toml\n\
         autostart=false\nautorestart=true\nstartsecs=0\nstopwaitsecs=30\n",
        holdfast_bin().display()
    );
    let supervisord = match Supervisord::start(&program) {
        Ok(s) => s,
        Err(reason) => {
            eprintln!("SKIP: {reason}");
            return None;
        }
    };
    let dir = supervisord.dir().display().to_string();
    let config = format!(
        r#"[holdfast]
control = "{dir}/control.sock"
state_dir = "{dir}/state"
log_dir = "{dir}/logs"
pass_env = ["HF_TEST"]

[service.ticker]
command = ["/bin/sh", "-c", "while :; do echo tick; sleep 0.2; done"]
start_secs = "0s"
"#
    );
    std::fs::write(supervisord.dir().join("holdfast.toml"), config).expect("config written");
    let started = supervisord.ctl(&["start", "holdfast"]);
    assert!(started.status.success(), "{}", describe(&started));
    Some(supervisord)
}

/// `holdfast status --json` against the daemon of `supervisord`'s directory, once it
/// answers.
fn status(supervisord: &Supervisord) -> serde_json::Value {
    let socket = supervisord.dir().join("control.sock");
    let mut json = None;
    support::wait_until("holdfast answers status", || {
        let mut cmd: Command = holdfast();
        cmd.args(["status", "--json", "--socket"]).arg(&socket);
        let out = run(cmd);
        json = serde_json::from_str(&stdout(&out)).ok();
        json.is_some()
    });
    json.expect("answered")
}

fn ticker_pid(status: &serde_json::Value) -> Option<u64> {
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "ticker")?["pid"]
        .as_u64()
}

/// The test's processes running the ticker's loop.
fn tickers(supervisord: &Supervisord) -> usize {
    support::group_leaders_running(supervisord.tag(), "echo tick").len()
}

#[test]
fn under_supervisord_holdfast_knows_it_and_a_sigkill_restart_adopts_its_services() {
    let Some(supervisord) = supervisord_with_holdfast() else {
        return;
    };
    let mut first = status(&supervisord);
    support::wait_until("the ticker runs", || {
        first = status(&supervisord);
        ticker_pid(&first).is_some()
    });
    assert_eq!(first["daemon"]["managed_by"], "supervisord:holdfast");
    let ticker = ticker_pid(&first).expect("runs");

    let holdfast_pid = supervisord.pid_of("holdfast").expect("holdfast runs");
    kill_9(holdfast_pid);
    support::wait_until("supervisord restarted holdfast", || {
        supervisord
            .pid_of("holdfast")
            .is_some_and(|pid| pid != holdfast_pid && is_alive(pid))
    });
    let mut again = status(&supervisord);
    support::wait_until("the new holdfast answers", || {
        again = status(&supervisord);
        again["daemon"]["pid"] != first["daemon"]["pid"]
    });
    assert_eq!(ticker_pid(&again), Some(ticker), "the ticker was adopted");
    assert_eq!(tickers(&supervisord), 1, "and not started a second time");

    let stopped = supervisord.ctl(&["stop", "holdfast"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    assert_eq!(tickers(&supervisord), 0, "services stop with holdfast");
}
