//! A real systemd as PID 1 of a `systemd-nspawn` container, for the tests of holdfast
//! under systemd and beside it.
//!
//! The root filesystem is a minimal Debian built once by `scripts/systemd-container.sh`
//! (`sd_setup`, run by `scripts/install-deps`) and cached; each boot lays a tmpfs over it
//! (`--volatile=overlay`), so a test starts from a pristine system and leaves nothing.
//! The container shares the host's network (tests reach its services on loopback) and
//! sees two host directories: the build's binaries, read-only at [`UNDER_TEST`], and a
//! directory of the test's own at [`SHARED`] (configs in, artefacts out).
//!
//! Dropping the container powers it off (SIGTERM to nspawn = a clean shutdown), then
//! SIGKILLs it if that takes too long.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{DEADLINE, children, demo_app, describe, holdfast_bin, run, stdout};

/// Where the container sees the directory of the `holdfast` and `demo-app` binaries.
pub const UNDER_TEST: &str = "/opt/under-test";
/// Where the container sees the test's own directory.
pub const SHARED: &str = "/srv/test";
/// How long a boot may take on a loaded machine (it takes well under a second idle).
const BOOT_DEADLINE: Duration = Duration::from_secs(90);

pub struct Container {
    nspawn: Child,
    leader: u32,
    dir: PathBuf,
}

impl Container {
    /// Boots a container, or says why this machine cannot (the caller skips the test
    /// with that reason).
    pub fn boot() -> Result<Container, String> {
        let rootfs = PathBuf::from(
            std::env::var("SD_ROOTFS").unwrap_or_else(|_| "/var/tmp/sdci-rootfs".into()),
        );
        if !rootfs.join("lib/systemd/systemd").exists() {
            return Err(format!(
                "no systemd container root filesystem at {} (scripts/install-deps builds it)",
                rootfs.display()
            ));
        }
        if !nix::unistd::Uid::effective().is_root() {
            return Err("booting a systemd-nspawn container needs root".into());
        }
        let binaries = demo_app()
            .parent()
            .expect("binaries live in a directory")
            .to_owned();
        let name = format!("hf-{}", super::unique_tag());
        let dir = std::env::temp_dir().join(format!("holdfast-sd-{name}"));
        fs::create_dir_all(dir.join("shared")).map_err(|e| e.to_string())?;
        let console = fs::File::create(dir.join("console.log")).map_err(|e| e.to_string())?;
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "-q",
                "--register=no",
                "--keep-unit",
                "-b",
                "--console=passive",
            ])
            .args(["--volatile=overlay", "-M", &name, "-D"])
            .arg(&rootfs)
            .arg(format!("--bind-ro={}:{UNDER_TEST}", binaries.display()))
            .arg(format!("--bind={}:{SHARED}", dir.join("shared").display()))
            .stdin(Stdio::null())
            .stdout(console.try_clone().map_err(|e| e.to_string())?)
            .stderr(console)
            .spawn()
            .map_err(|e| format!("systemd-nspawn did not start: {e}"))?;
        let mut container = Container {
            nspawn,
            leader: 0,
            dir,
        };
        container.wait_for_boot()?;
        Ok(container)
    }

    /// Waits for the container's PID 1 (the child of nspawn called `systemd`), then for
    /// the boot to finish.
    fn wait_for_boot(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while self.leader == 0 {
            self.leader = children(self.nspawn.id())
                .into_iter()
                .find(|pid| {
                    fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                })
                .unwrap_or(0);
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn exited ({status}): {}",
                    self.console()
                ));
            }
            if start.elapsed() > BOOT_DEADLINE {
                return Err(format!("no systemd in the container: {}", self.console()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let state = stdout(&self.run("systemctl is-system-running"));
            match state.trim() {
                "running" | "degraded" => return Ok(()),
                _ if start.elapsed() > BOOT_DEADLINE => {
                    return Err(format!(
                        "the boot did not finish ({state}): {}",
                        self.console()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The host path of the directory the container sees at [`SHARED`].
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// Runs a shell script inside the container (all its namespaces), to completion.
    pub fn run(&self, script: &str) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &self.leader.to_string(),
            "-a",
            "/bin/sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null());
        run(cmd)
    }

    /// Like [`Container::run`], failing the test unless the script succeeds; its stdout.
    pub fn ok(&self, script: &str) -> String {
        let output = self.run(script);
        assert!(
            output.status.success(),
            "in the container: {script}\n{}",
            describe(&output)
        );
        stdout(&output)
    }

    /// One property of a unit, as `systemctl show --value` prints it.
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&format!(
            "systemctl show {unit} --property={property} --value"
        ))
        .trim()
        .to_owned()
    }

    /// Polls `cond` until it holds; on time-out fails naming `what`, with the journal's
    /// tail.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() > DEADLINE {
                let journal = stdout(&self.run("journalctl --no-pager -n 60"));
                panic!("timed out after {DEADLINE:?} waiting until {what}\n{journal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where holdfast lives inside the container.
    pub fn holdfast(&self) -> String {
        let name = holdfast_bin();
        let name = name.file_name().expect("a file name").to_string_lossy();
        format!("{UNDER_TEST}/{name}")
    }

    fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        // nspawn turns SIGTERM into a clean poweroff of the container.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while matches!(self.nspawn.try_wait(), Ok(None)) && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        if std::thread::panicking() {
            eprintln!("container files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
