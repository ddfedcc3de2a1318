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
        let supervisord = Self::tool("supervisord")?;
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("holdfast-supervisord-{tag}"));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let d = dir.display();
        let config = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n{}",
            programs.replace("{DIR}", &d.to_string())
        );
        fs::write(dir.join("supervisord.conf"), config).map_err(|e| e.to_string())?;
        let child = Command::new(supervisord)
            .arg("-c")
            .arg(dir.join("supervisord.conf"))
            .env(TAG_VAR, &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("supervisord did not start: {e}"))?;
        let supervisord = Supervisord {
            child: Some(child),
            dir,
            tag,
        };
        super::wait_until("supervisord answers supervisorctl", || {
            supervisord.ctl(&["pid"]).status.success()
        });
        Ok(supervisord)
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

    /// supervisord's own pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("supervisord runs").id()
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
