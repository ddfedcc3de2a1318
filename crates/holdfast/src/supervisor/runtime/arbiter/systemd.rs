//! systemd, through `systemctl`: `systemctl show UNIT --property=...` for its view of
//! a unit, `systemctl restart UNIT` to restart it. Both run as helper processes of the
//! service (see `arbiter::run_systemctl`); this module builds their arguments and reads
//! what `show` prints.

use std::time::Duration;

use crate::supervisor::service::{UpstreamState, UpstreamView};
use crate::unix::Pid;

/// The properties `show` is asked for.
const PROPERTIES: &str =
    "LoadState,ActiveState,SubState,MainPID,ExecMainStartTimestampMonotonic,NRestarts,Result";

/// `systemctl show` of `unit`.
pub fn show_args(unit: &str) -> Vec<String> {
    vec![
        "systemctl".to_owned(),
        "show".to_owned(),
        unit.to_owned(),
        format!("--property={PROPERTIES}"),
    ]
}

/// `systemctl restart` of `unit`, not waiting for the job: the new start shows at
/// the next syncs, within `arbiter_timeout` or not at all.
pub fn restart_args(unit: &str) -> Vec<String> {
    ["systemctl", "restart", "--no-block", unit]
        .map(str::to_owned)
        .to_vec()
}

/// What `systemctl show` printed, as holdfast's view; `now_usec` is `CLOCK_MONOTONIC`
/// now, for the uptime. An output without `ActiveState=` is no answer (systemctl
/// could not reach systemd): the error quotes it.
pub fn parse_show(output: &str, now_usec: u64) -> Result<UpstreamView, String> {
    let get = |key: &str| {
        output.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k == key).then(|| v.trim())
        })
    };
    let Some(active) = get("ActiveState") else {
        let text = output.trim();
        return Err(if text.is_empty() {
            "systemctl show printed nothing".to_owned()
        } else {
            format!("systemctl show: {}", text.lines().next().unwrap_or(text))
        });
    };
    let sub = get("SubState").unwrap_or("");
    let load = get("LoadState").unwrap_or("loaded");
    let state = match (load, active) {
        ("not-found" | "bad-setting" | "error" | "masked", _) => UpstreamState::Unknown,
        (_, "active" | "reloading" | "refreshing") => UpstreamState::Running,
        (_, "activating") => UpstreamState::Starting,
        (_, "deactivating") => UpstreamState::Stopping,
        (_, "inactive") => UpstreamState::Stopped,
        (_, "failed") => UpstreamState::Failed,
        _ => UpstreamState::Unknown,
    };
    let detail = match (load, get("Result")) {
        ("loaded", Some(result)) if result != "success" => format!("{active}/{sub} ({result})"),
        ("loaded", _) => format!("{active}/{sub}"),
        (load, _) => load.to_owned(),
    };
    let pid = get("MainPID")
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
        .map(Pid::from_raw);
    let start = get("ExecMainStartTimestampMonotonic")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0);
    let uptime = match (state, start) {
        (UpstreamState::Running, Some(start)) => {
            Some(Duration::from_micros(now_usec.saturating_sub(start)))
        }
        _ => None,
    };
    Ok(UpstreamView {
        state,
        detail,
        pid,
        start,
        uptime,
        proc_start: None,
        upstream_pid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_unit_is_running_with_its_main_pid() {
        let out = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=321\n\
            ExecMainStartTimestampMonotonic=5000000\nNRestarts=2\nResult=success\n";
        let view = parse_show(out, 65_000_000).unwrap();
        assert_eq!(view.state, UpstreamState::Running);
        assert_eq!(view.detail, "active/running");
        assert_eq!(view.pid, Some(Pid::from_raw(321)));
        assert_eq!(view.start, Some(5_000_000));
        assert_eq!(view.uptime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_failed_unit_says_why_and_has_no_pid() {
        let out = "LoadState=loaded\nActiveState=failed\nSubState=failed\nMainPID=0\n\
            ExecMainStartTimestampMonotonic=0\nNRestarts=5\nResult=exit-code\n";
        let view = parse_show(out, 1).unwrap();
        assert_eq!(view.state, UpstreamState::Failed);
        assert_eq!(view.detail, "failed/failed (exit-code)");
        assert_eq!((view.pid, view.start, view.uptime), (None, None, None));
    }

    #[test]
    fn an_unknown_unit_is_seen_but_unknown() {
        let out = "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n";
        let view = parse_show(out, 1).unwrap();
        assert_eq!(view.state, UpstreamState::Unknown);
        assert_eq!(view.detail, "not-found");
    }

    #[test]
    fn no_active_state_is_no_answer() {
        let err = parse_show(
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n",
            1,
        )
        .unwrap_err();
        assert!(err.contains("not been booted with systemd"), "{err}");
        assert!(parse_show("", 1).is_err());
        let args = show_args("web.service");
        assert_eq!(args[..3], ["systemctl", "show", "web.service"]);
        assert!(args[3].starts_with("--property=") && args[3].contains("MainPID"));
    }
}
