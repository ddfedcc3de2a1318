//! `--daemonize PIDFILE`: detach like a traditional Unix daemon, for `type = "forking"`.
//!
//! The process started by the supervisor (the forker) relaunches itself in a new session
//! through `setsid(1)` and exits 0 at once, without waiting for the daemon: the pidfile
//! appears only later, once the daemon listens, as with redis or nginx. With
//! `--forks twice` the process in the new session forks once more and exits too (the
//! classic double fork): the daemon is then neither a session nor a group leader, and
//! its session and group are those of a process that no longer exists.
//!
//! Each stage is a fresh exec of this binary (no fork without exec, no unsafe code),
//! told which stage it is by the hidden `--daemon-stage`.

use std::{
    ffi::OsString,
    io,
    path::Path,
    process::{Command, Stdio},
};

use crate::cli::{DaemonStage, Forks};

/// Runs the forker's or the intermediate's part and says whether this process must exit
/// now (it handed over) or is the daemon and goes on.
pub fn hand_over(forks: Forks, stage: Option<DaemonStage>) -> io::Result<Handover> {
    let next = match (stage, forks) {
        (Some(DaemonStage::Daemon), _) => return Ok(Handover::IAmTheDaemon),
        (None, Forks::Once) | (Some(DaemonStage::Detached), _) => DaemonStage::Daemon,
        (None, Forks::Twice) => DaemonStage::Detached,
    };
    let exe = std::env::current_exe()?;
    let mut command = match stage {
        // The forker is a process group leader (its supervisor made it one), so its
        // child is not, and setsid(1) calls setsid() and execs in place.
        None => {
            let mut command = Command::new("setsid");
            command.arg(exe);
            command
        }
        Some(_) => Command::new(exe),
    };
    command
        .args(relaunch_args(std::env::args_os().skip(1), next))
        .stdin(Stdio::null());
    let child = command.spawn()?;
    println!(
        "demo-app pid={} handed over to pid={} ({next:?})",
        std::process::id(),
        child.id()
    );
    Ok(Handover::Exit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// This process started the next stage and must exit 0 without waiting for it.
    Exit,
    /// This process is the daemon: serve, and write the pidfile once listening.
    IAmTheDaemon,
}

/// Writes our pid the way most daemons do: create (or truncate), then write, so that
/// a watcher may see the empty file before the pid.
pub fn write_pidfile(path: &Path) -> io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Our own arguments with `--daemon-stage` set to `stage`.
fn relaunch_args(args: impl Iterator<Item = OsString>, stage: DaemonStage) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if arg == "--daemon-stage" {
            skip_value = true;
            continue;
        }
        if arg.to_string_lossy().starts_with("--daemon-stage=") {
            continue;
        }
        out.push(arg);
    }
    out.push("--daemon-stage".into());
    out.push(stage.as_arg().into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_is_replaced_and_other_arguments_kept() {
        let args = [
            "--listen",
            "127.0.0.1:1",
            "--daemon-stage",
            "detached",
            "--x",
        ]
        .map(OsString::from)
        .into_iter();
        let out = relaunch_args(args, DaemonStage::Daemon);
        assert_eq!(
            out,
            ["--listen", "127.0.0.1:1", "--x", "--daemon-stage", "daemon"].map(OsString::from)
        );
    }
}
