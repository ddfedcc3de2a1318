//! Shared harness of the end-to-end tests: runs the real `holdfast` binary on a config in
//! a private temporary directory and drives it through its control socket and its CLI.
//!
//! Invariants:
//! - Every process a `Daemon` starts (the daemon, CLI calls, services and whatever they
//!   fork, escaped grandchildren included) inherits `HF_TEST=<tag>`, unique per `Daemon`
//!   (services through `pass_env` in the config header).
//!   Dropping the `Daemon` SIGKILLs every process carrying the tag, so a failing or
//!   panicking test leaks nothing and tests can run in parallel.
//! - Nothing waits by sleeping: `wait_*` poll a condition every 20 ms up to a generous
//!   deadline and panic saying what was awaited, with the tail of the daemon's own log.
//! - A failing test keeps its directory (config, socket, logs, daemon stderr) and prints
//!   where it is; a passing one removes it.

#![allow(dead_code, reason = "each test file uses its own part of the harness")]

pub mod deploy;
pub mod load;
pub mod supervisord;
pub mod systemd;
pub mod web;

use std::fmt::Debug;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast::control::protocol::{
    Envelope, Reply, Request, RequestBody, ResponseBody, ServiceStatus, Status, VERSION,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any awaited condition may take. Generous: the machine running the tests may
/// be heavily loaded, and a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// The environment variable that ties processes to one test.
pub const TAG_VAR: &str = "HF_TEST";
/// Written before the test's own TOML; paths are relative to the config file's directory.
/// Services get a clean environment: `pass_env` hands them the test's tag.
const HEADER: &str = "\
[holdfast]
control = \"control.sock\"
log_dir = \"logs\"
state_dir = \"state\"
pass_env = [\"HF_TEST\"]

";

pub fn holdfast_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The demo-app binary next to holdfast's, built once per test process if missing or
/// older than its sources (`cargo test -p holdfast` does not build other packages'
/// binaries, and a stale one lacks the switches newer tests use).
pub fn demo_app() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let bin = holdfast_bin();
        let profile_dir = bin
            .parent()
            .expect("the holdfast binary lives in a directory");
        let path = profile_dir.join("demo-app");
        let built = fs::metadata(&path).and_then(|m| m.modified()).ok();
        if built.is_some_and(|built| newest_demo_app_source() <= built) {
            return path;
        }
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory lives in a target directory");
        let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        build
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "demo-app", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("failed to run cargo to build demo-app");
        assert!(
            status.success() && path.exists(),
            "could not build demo-app ({status}) at {}",
            path.display()
        );
        path
    })
    .clone()
}

/// When demo-app's sources (its manifest and `src/`) last changed.
fn newest_demo_app_source() -> SystemTime {
    let crate_dir = workspace_root().join("crates/demo-app");
    let mut newest = UNIX_EPOCH;
    let mut visit = vec![crate_dir.join("Cargo.toml"), crate_dir.join("src")];
    while let Some(path) = visit.pop() {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if let Ok(modified) = meta.modified() {
            newest = newest.max(modified);
        }
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            visit.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    newest
}

/// A `holdfast` command with an environment that cannot reach a daemon by accident.
pub fn holdfast() -> Command {
    holdfast_at(&holdfast_bin())
}

/// Like `holdfast`, with the binary at `bin`.
pub fn holdfast_at(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_remove("HOLDFAST_SOCKET")
        .env_remove("HOLDFAST_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs a command to completion, failing the test if it takes longer than `DEADLINE`.
/// (A hung CLI must not hang the test; if it does hang, its process is left to the
/// owning `Daemon`'s guard, since it carries the test's tag.)
pub fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap_or_else(|e| panic!("failed to run {what}: {e}")),
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Both streams, labelled, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        stdout(output),
        stderr(output)
    )
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `DEADLINE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A running `holdfast up` in its own temporary directory. Dropping it kills the daemon
/// and every process of the test.
pub struct Daemon {
    dir: PathBuf,
    tag: String,
    /// `holdfast up`, or the launcher wrapping it (`unshare`).
    child: Child,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Writes `[holdfast]` settings pointing into a fresh directory followed by
    /// `services_toml`, starts `holdfast up` on it and waits until it answers `status`.
    ///
    /// In `services_toml`, `{DIR}` stands for the test's directory and `{DEMO_APP}` for
    /// the demo-app binary.
    pub fn start(services_toml: &str) -> Daemon {
        Self::launch(services_toml, &[])
    }

    /// Like `start`, with extra environment variables for holdfast itself (e.g. the
    /// `NOTIFY_SOCKET` of a fake service manager).
    pub fn start_with_env(services_toml: &str, env: &[(&str, &str)]) -> Daemon {
        Self::launch_with_env(services_toml, &[], env)
    }

    /// Like `start`, but holdfast runs as PID 1 of a new PID namespace
    /// (`unshare --pid --fork --mount-proc holdfast up ...`).
    pub fn start_as_pid_1(services_toml: &str) -> Daemon {
        Self::launch(
            services_toml,
            &["unshare", "--pid", "--fork", "--mount-proc"],
        )
    }

    /// Like `start`, but holdfast runs with both limits of `RLIMIT_NOFILE` set to `limit`
    /// (holdfast raises its soft limit to the hard one, so that is what it gets).
    pub fn start_with_nofile(services_toml: &str, limit: u64) -> Daemon {
        let nofile = format!("--nofile={limit}:{limit}");
        Self::launch(services_toml, &["prlimit", &nofile, "--"])
    }

    /// Like `start`, but holdfast runs in a new network namespace (`unshare --net`):
    /// for what holdfast changes in its namespace (`net.ipv4.*` sysctls). Needs root.
    pub fn start_in_new_netns(services_toml: &str) -> Daemon {
        Self::launch(services_toml, &["unshare", "--net"])
    }

    /// Like `start`, with holdfast started through `launcher` (a command that ends by
    /// executing its arguments, e.g. `unshare ... sh -c '...; exec "$@"' sh`) and extra
    /// environment variables for holdfast itself.
    pub fn start_wrapped(services_toml: &str, launcher: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::launch_with_env(services_toml, launcher, env)
    }

    /// Like `start`, with the holdfast binary at `bin` (a copy or link the test may
    /// replace, as a deploy would).
    pub fn start_from(bin: &Path, services_toml: &str) -> Daemon {
        Self::launch_bin(bin, services_toml, &[], &[])
    }

    fn launch(services_toml: &str, launcher: &[&str]) -> Daemon {
        Self::launch_with_env(services_toml, launcher, &[])
    }

    fn launch_with_env(services_toml: &str, launcher: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::launch_bin(&holdfast_bin(), services_toml, launcher, env)
    }

    fn launch_bin(
        bin: &Path,
        services_toml: &str,
        launcher: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("holdfast-it-{tag}"));
        fs::create_dir_all(&dir).expect("failed to create the test directory");
        let mut cmd = up_command(bin, &dir, &tag, launcher, env);
        fs::write(dir.join("holdfast.toml"), render(&dir, services_toml))
            .expect("failed to write the config");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        // From here on the guard kills whatever the test started, even if starting fails.
        let daemon = Daemon {
            dir,
            tag,
            child,
            exited: None,
        };
        daemon.wait_until("holdfast answers status on its control socket", |d| {
            d.try_status().is_ok()
        });
        daemon
    }

    /// SIGKILLs holdfast, whose services live on, and starts it again on the same
    /// config, state and log directories, as an init system restarts a crashed daemon.
    pub fn kill_9_and_start_again(&mut self) {
        self.kill_9_holdfast();
        self.start_again();
    }

    /// SIGKILLs holdfast (not its services) and waits until it is gone.
    pub fn kill_9_holdfast(&mut self) {
        kill_9(self.host_pid());
        let _ = self.child.wait();
    }

    /// Starts holdfast again on the same directories, after [`Daemon::kill_9_holdfast`].
    pub fn start_again(&mut self) {
        let mut cmd = up_command(&holdfast_bin(), &self.dir, &self.tag, &[], &[]);
        self.child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        self.exited = None;
        self.wait_until("the new holdfast answers status", |d| {
            d.try_status().is_ok()
        });
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("holdfast.toml")
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Replaces the config with the standard header plus `services_toml` (placeholders
    /// filled in), e.g. before a reload.
    pub fn write_config(&self, services_toml: &str) {
        self.write_raw_config(&render(&self.dir, services_toml));
    }

    /// Replaces the config file with exactly `text`.
    pub fn write_raw_config(&self, text: &str) {
        fs::write(self.config_path(), text).expect("failed to write the config");
    }

    pub fn read_config(&self) -> String {
        fs::read_to_string(self.config_path()).expect("failed to read the config")
    }

    /// The pid of the holdfast process as seen from the test (for `start_as_pid_1`, the
    /// launcher's child; holdfast itself reports pid 1).
    pub fn host_pid(&self) -> u32 {
        let launcher = self.child.id();
        if self.child_is_holdfast() {
            return launcher;
        }
        let children = children(launcher);
        assert_eq!(
            children.len(),
            1,
            "the launcher {launcher} should have exactly one child, holdfast"
        );
        children[0]
    }

    fn child_is_holdfast(&self) -> bool {
        fs::read_link(format!("/proc/{}/exe", self.child.id()))
            .is_ok_and(|exe| exe.file_name() == holdfast_bin().file_name())
    }

    /// Asks the daemon for its status over the control socket.
    pub fn try_status(&self) -> Result<Status, String> {
        let request = Envelope {
            v: VERSION,
            body: RequestBody::Request(Request::Status),
        };
        let mut line = serde_json::to_string(&request).expect("a request serializes");
        line.push('\n');
        let mut stream = UnixStream::connect(self.socket())
            .map_err(|e| format!("connect {}: {e}", self.socket().display()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(line.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        let envelope: Envelope<ResponseBody> =
            serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))?;
        match envelope.body {
            ResponseBody::Ok(Reply::Status(status)) => Ok(status),
            other => Err(format!("unexpected answer to status: {other:?}")),
        }
    }

    pub fn status(&self) -> Status {
        self.try_status()
            .unwrap_or_else(|e| self.fail(&format!("status failed: {e}")))
    }

    /// The current status of one service; panics if there is no such service.
    pub fn service(&self, name: &str) -> ServiceStatus {
        service(&self.status(), name).clone()
    }

    /// Polls `cond` until it holds; panics naming `what`, with the daemon's log tail.
    pub fn wait_until(&self, what: &str, cond: impl FnMut(&Self) -> bool) {
        self.wait_until_within(DEADLINE, what, cond);
    }

    /// Like [`Daemon::wait_until`], for work whose length depends on how busy the
    /// machine is (thousands of restarts): a deadline of its own.
    pub fn wait_until_within(
        &self,
        deadline: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> bool,
    ) {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() >= deadline {
                self.fail(&format!(
                    "timed out after {deadline:?} waiting until {what}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls the status until `f` returns `Some`, and returns that. Panics naming `what`,
    /// with the last status seen and the daemon's log tail.
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&Status) -> Option<T>) -> T {
        let start = Instant::now();
        let mut last = None;
        loop {
            match self.try_status() {
                Ok(status) => {
                    if let Some(found) = f(&status) {
                        return found;
                    }
                    last = Some(status);
                }
                Err(e) if self.has_exited() => {
                    self.fail(&format!("holdfast exited while waiting until {what}: {e}"))
                }
                Err(_) => {}
            }
            if start.elapsed() >= DEADLINE {
                self.fail(&format!(
                    "timed out after {DEADLINE:?} waiting until {what}; last status: {}",
                    last.map_or_else(|| "none".to_owned(), |s| pretty(&s))
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until service `name` satisfies `cond`, returns its status then.
    pub fn wait_for_service(
        &self,
        name: &str,
        what: &str,
        mut cond: impl FnMut(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        self.wait_for(&format!("{name} {what}"), |status| {
            find_service(status, name).filter(|s| cond(s)).cloned()
        })
    }

    /// Waits until service `name` runs; returns its main pid.
    pub fn running_pid(&self, name: &str) -> u32 {
        self.wait_for_service(name, "is running", |s| s.state == "running")
            .pid
            .expect("a running service has a pid")
    }

    /// Runs `holdfast ARGS -s SOCKET` (a command that talks to the daemon).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = holdfast();
        cmd.args(args)
            .arg("-s")
            .arg(self.socket())
            .env(TAG_VAR, &self.tag);
        run(cmd)
    }

    /// Like `cli`, and fails the test unless the command succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let output = self.cli(args);
        if !output.status.success() {
            self.fail(&format!(
                "holdfast {} failed: {}",
                args.join(" "),
                describe(&output)
            ));
        }
        output
    }

    /// Everything holdfast wrote to its stderr (its own log) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("holdfast.stderr")).unwrap_or_default()
    }

    /// The captured output of service `name` (its current log file).
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the log of `name` holds `text` and returns the log. A service's output
    /// and holdfast's notes reach the file through the capture task, so they may land
    /// after the state or event a test waited on.
    pub fn wait_log(&self, name: &str, text: &str) -> String {
        let mut log = String::new();
        self.wait_until(&format!("{name}'s log holds {text:?}"), |d| {
            log = d.log(name);
            log.contains(text)
        });
        log
    }

    pub fn has_exited(&self) -> bool {
        // An exited but not yet waited-for child is a zombie: that counts as exited.
        self.exited.is_some() || !is_alive(self.child.id())
    }

    /// Waits for holdfast (or its launcher) to exit and returns its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait().expect("failed to wait for holdfast") {
                Some(status) => {
                    self.exited = Some(status);
                    return status;
                }
                None if start.elapsed() >= DEADLINE => {
                    self.fail(&format!("holdfast did not exit within {DEADLINE:?}"))
                }
                None => std::thread::sleep(POLL),
            }
        }
    }

    /// Panics with `message`, the test directory and the tail of holdfast's log.
    pub fn fail(&self, message: &str) -> ! {
        let log = self.stderr();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "{message}\n--- holdfast stderr (last 40 lines; dir {}) ---\n{tail}",
            self.dir.display()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        kill_tagged(&self.tag);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("holdfast test directory kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Builds `tests/go/{name}.go` into the target directory as `go-{name}`, or says why it
/// cannot (no Go toolchain: `scripts/install-deps` installs golang-go). Callers keep the
/// result, to build once per test process.
pub fn go_build(name: &str) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/go/{name}.go"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let binary = dir.join(format!("go-{name}"));
    // Built under a name of its own, then renamed into place: test processes running
    // in parallel never see a half-written binary.
    let own = dir.join(format!("go-{name}.{}", std::process::id()));
    let output = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&own)
        .arg(&source)
        // Go's build cache is safe to share between concurrent builds.
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .output()
        .map_err(|e| format!("`go` cannot run ({e}); install golang-go"))?;
    if !output.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::rename(&own, &binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    Ok(binary)
}

/// A port nobody listens on right now (the service under test binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port is available")
        .port()
}

/// `holdfast up` on the config in `dir` (through `launcher`, if any), its output
/// appended to `holdfast.stdout` and `holdfast.stderr` there.
fn up_command(
    bin: &Path,
    dir: &Path,
    tag: &str,
    launcher: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let append = |name: &str| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap_or_else(|e| panic!("failed to open the daemon's {name}: {e}"))
    };
    let mut cmd = match launcher.split_first() {
        None => holdfast_at(bin),
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd.env_remove("HOLDFAST_SOCKET")
                .env_remove("HOLDFAST_CONFIG")
                .stdin(Stdio::null());
            cmd
        }
    };
    cmd.arg("up")
        .arg("-c")
        .arg(dir.join("holdfast.toml"))
        .env(TAG_VAR, tag)
        .env("HOLDFAST_LOG", "info")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(append("holdfast.stdout"))
        .stderr(append("holdfast.stderr"));
    cmd
}

/// The config file for `services_toml` in `dir`: the standard header, placeholders
/// filled in.
fn render(dir: &Path, services_toml: &str) -> String {
    let mut body = services_toml.replace("{DIR}", &dir.display().to_string());
    if body.contains("{DEMO_APP}") {
        body = body.replace("{DEMO_APP}", &demo_app().display().to_string());
    }
    format!("{HEADER}{body}")
}

fn unique_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// SIGKILLs every process carrying `HF_TEST=<tag>` until none is left (a dying daemon
/// or service may fork once more between two scans).
fn kill_tagged(tag: &str) {
    for _ in 0..250 {
        let pids = tagged_processes(tag);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Cleanup retry, not a wait for a condition under test: give SIGKILL a moment.
        std::thread::sleep(POLL);
    }
    eprintln!("warning: processes of test {tag} survived SIGKILL for 5 s");
}

/// Live (non-zombie) processes whose environment has `HF_TEST=<tag>`.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|entry| entry == needle.as_bytes())
            })
        })
        .collect()
}

/// The test's processes that lead their process group (as holdfast starts every
/// service) and whose command line holds `text`, with that command line. A shell's
/// forked child shows the shell's command line until it execs: leading no group, it
/// is never counted as a second copy.
pub fn group_leaders_running(tag: &str, text: &str) -> Vec<(u32, String)> {
    tagged_processes(tag)
        .into_iter()
        .filter(|&pid| {
            let pid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
            nix::unistd::getpgid(Some(pid)) == Ok(pid)
        })
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            cmdline.contains(text).then_some((pid, cmdline))
        })
        .collect()
}

pub fn find_service<'a>(status: &'a Status, name: &str) -> Option<&'a ServiceStatus> {
    status.services.iter().find(|s| s.name.as_str() == name)
}

pub fn service<'a>(status: &'a Status, name: &str) -> &'a ServiceStatus {
    find_service(status, name)
        .unwrap_or_else(|| panic!("no service {name:?} in status: {}", pretty(status)))
}

pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("<unserializable: {e}>"))
}

pub fn debug(value: &impl Debug) -> String {
    format!("{value:#?}")
}

/// The state letter of a process (`R`, `S`, `Z`, ...) from `/proc/PID/stat`, if it exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// The process exists and is not a zombie (dead but not yet reaped).
/// The holdfast cgroup directories `pid` is in, one per hierarchy (none without cgroups).
pub fn holdfast_cgroups(pid: u32) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let controller = parts.nth(1)?.split(',').next()?.to_owned();
            let path = parts.next()?.trim_start_matches('/');
            let dir = Path::new("/sys/fs/cgroup").join(controller).join(path);
            (path.contains("holdfast") && dir.is_dir()).then_some(dir)
        })
        .collect();
    dirs.dedup();
    dirs
}

/// SIGKILL to `pid`.
pub fn kill_9(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
}

pub fn is_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

pub fn is_zombie(pid: u32) -> bool {
    process_state(pid) == Some('Z')
}

/// Direct children of `pid` (all its threads' children).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `pid` and all its descendants.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// The index of the first line of `text` containing `needle`, for ordering assertions.
pub fn line_index(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|line| line.contains(needle))
}

/// The unprivileged user of tests that run services or clients as someone else
/// (scripts/install-deps creates it too).
pub const TEST_USER: &str = "holdfast-test";

/// `(uid, gid)` of [`TEST_USER`], creating the user once if needed.
pub fn test_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        let id = |flag: &str| {
            let out = Command::new("id")
                .args([flag, TEST_USER])
                .output()
                .expect("failed to run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        };
        if id("-u").is_none() {
            // A parallel test binary may create it meanwhile: only `id` decides.
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", TEST_USER])
                .status();
        }
        (
            id("-u").expect("the test user exists"),
            id("-g").expect("the test user has a primary group"),
        )
    })
}

/// The event records of `holdfast events --json` output, one per line.
pub fn event_records(output: &Output) -> Vec<holdfast::control::protocol::EventRecord> {
    stdout(output)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not an event record: {line:?}: {e}"))
        })
        .collect()
}

/// A copy of the holdfast binary in a fresh 0755 directory any user can run it from.
pub fn holdfast_for_anyone(daemon: &Daemon) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("holdfast-bin-{}", daemon.tag()));
    fs::create_dir_all(&dir).expect("failed to create the binary's directory");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .expect("failed to open up the binary's directory");
    let bin = dir.join("holdfast");
    fs::copy(holdfast_bin(), &bin).expect("failed to copy holdfast");
    bin
}

/// `PROGRAM ARGS` as uid/gid 65534 (nobody/nogroup), without root's groups.
pub fn as_nobody(daemon: &Daemon, program: &Path, args: &[&str]) -> Output {
    as_nobody_in(daemon, &[], program, args)
}

/// Like [`as_nobody`], with the supplementary groups `groups`.
pub fn as_nobody_in(daemon: &Daemon, groups: &[u32], program: &Path, args: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", list.join(","))
    };
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", &groups, "--"])
        .arg(program)
        .args(args)
        .env(TAG_VAR, daemon.tag());
    run(cmd)
}
