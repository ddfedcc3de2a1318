//! A real supervisord (PyPI `supervisor`, installed into `.venv` by
//! `scripts/install-deps`) in a directory of the test's own, with its XML-RPC on a unix
//! socket there.
//!
//! Every process it starts carries the test's `HF_TEST` tag (supervisord passes its
//! environment on), so dropping it SIGKILLs supervisord and everything of the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{TAG_VAR, kill_tagged, run, stdout, unique_tag, workspace_root};

pub struct Supervisord {
    child: Option<Child>,
    dir: PathBuf,
    tag: String,
}

impl Supervisord {
    /// `.venv/bin/<tool>`, or why there is none.
    pub fn tool(tool: &str) -> Result<PathBuf, String> {
        let path = workspace_root().join(".venv/bin").join(tool);
        if path.exists() {
            Ok(path)
        } else {
            Err(format!(
                "{} is missing (scripts/install-deps installs it)",
                path.display()
            ))
        }
    }

    /// Starts supervisord in the foreground on a config of `programs` (`[program:x]`
    /// sections; `{DIR}` stands for the test's directory) and waits until it answers.
    pub fn start(programs: &str) -> Result<Supervisord, String> {
        Self::tool("supervisord")?;
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("holdfast-supervisord-{tag}"));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut supervisord = Supervisord {
            child: None,
            dir,
            tag,
        };
        supervisord.start_again(programs)?;
        Ok(supervisord)
    }

    /// Starts it (again, after a `kill_9` or `stop`) in the same directory, on the same
    /// socket, with `programs` now, and waits until it answers.
    pub fn start_again(&mut self, programs: &str) -> Result<(), String> {
        let supervisord = Self::tool("supervisord")?;
        let d = self.dir.display();
        let config = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n{}",
            programs.replace("{DIR}", &d.to_string())
        );
        fs::write(self.dir.join("supervisord.conf"), config).map_err(|e| e.to_string())?;
        let child = Command::new(supervisord)
            .arg("-c")
            .arg(self.dir.join("supervisord.conf"))
            .env(TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("supervisord did not start: {e}"))?;
        self.child = Some(child);
        super::wait_until("supervisord answers supervisorctl", || {
            self.ctl(&["pid"]).status.success()
        });
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix://<dir>/supervisor.sock`: the `serverurl` of its XML-RPC.
    pub fn serverurl(&self) -> String {
        format!("unix://{}/supervisor.sock", self.dir.display())
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Runs `supervisorctl ARGS` against it.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(Self::tool("supervisorctl").expect("beside supervisord"));
        cmd.arg("-c")
            .arg(self.dir.join("supervisord.conf"))
            .args(args)
            .stdin(Stdio::null());
        run(cmd)
    }

    /// The pid of `program` as supervisord reports it, if it runs.
    pub fn pid_of(&self, program: &str) -> Option<u32> {
        stdout(&self.ctl(&["pid", program]))
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid != 0)
    }

    /// The pid of `program` while supervisord says it is RUNNING.
    pub fn running_pid(&self, program: &str) -> Option<u32> {
        let status = stdout(&self.ctl(&["status", program]));
        if !status.contains("RUNNING") {
            return None;
        }
        status
            .split("pid ")
            .nth(1)?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until `program` is RUNNING; its pid.
    pub fn wait_running(&self, program: &str) -> u32 {
        let mut pid = None;
        super::wait_until(&format!("supervisord runs {program}"), || {
            pid = self.running_pid(program);
            pid.is_some()
        });
        pid.expect("awaited")
    }

    /// supervisord's own pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("supervisord runs").id()
    }

    /// A clean stop: supervisord stops its programs, then exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// SIGKILLs supervisord alone: what it started lives on, reparented.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        self.kill_9();
        kill_tagged(&self.tag);
        if std::thread::panicking() {
            eprintln!("supervisord's files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
