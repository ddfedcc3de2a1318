//! `holdfast gen` and `holdfast import`: what other supervisors make of holdfast's
//! conversions, checked by the real tools (`systemd-analyze verify`, supervisord).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{describe, holdfast, run, stdout};

/// A private directory for one test, removed when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("holdfast-interop-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test directory");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a config whose `[holdfast]` directories are inside the scratch directory.
    fn config(&self, services: &str) -> PathBuf {
        let dir = self.0.display();
        let text = format!(
            "[holdfast]\ncontrol = \"{dir}/run/control.sock\"\nstate_dir = \"{dir}/state\"\nlog_dir = \"{dir}/log\"\n\n{services}"
        );
        let path = self.path("holdfast.toml");
        fs::write(&path, text).expect("write the config");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// `systemd-analyze verify` of the unit at `path`: it exits 0 on warnings too, so any
/// output at all is a failure.
fn assert_verified(path: &Path) {
    let mut cmd = Command::new(SYSTEMD_ANALYZE);
    cmd.arg("verify").arg(path);
    let output = run(cmd);
    let text = fs::read_to_string(path).unwrap_or_default();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "systemd-analyze verify {} complained:\n{}\n--- unit ---\n{text}",
        path.display(),
        describe(&output)
    );
}

/// Whether systemd-analyze is here; says why not otherwise (scripts/install-deps
/// installs it).
fn have_systemd_analyze() -> bool {
    let here = Path::new(SYSTEMD_ANALYZE).exists();
    if !here {
        eprintln!("skipped: {SYSTEMD_ANALYZE} is missing (scripts/install-deps installs systemd)");
    }
    here
}

/// `holdfast gen systemd ARGS -c CONFIG --output DIR`, which must succeed; the path of
/// the unit it wrote.
fn gen_unit(scratch: &Scratch, config: &Path, args: &[&str], file: &str) -> PathBuf {
    let out = scratch.path("units");
    fs::create_dir_all(&out).expect("create the output directory");
    let mut cmd = holdfast();
    cmd.args(["gen", "systemd"])
        .args(args)
        .arg("-c")
        .arg(config)
        .arg("--output")
        .arg(&out);
    let output = run(cmd);
    assert!(
        output.status.success(),
        "gen systemd failed: {}",
        describe(&output)
    );
    let unit = out.join(file);
    assert!(
        unit.exists(),
        "{} was not written: {}",
        unit.display(),
        describe(&output)
    );
    unit
}

#[test]
fn the_unit_for_holdfast_itself_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let scratch = Scratch::new("self");
    let config = scratch.config(
        "[service.db]\ncommand = [\"/bin/sleep\", \"1000\"]\nstop = { timeout = \"20s\" }\n\
         [service.api]\ncommand = [\"/bin/sleep\", \"1000\"]\nafter = [\"db\"]\nstop = { timeout = \"30s\" }\n",
    );
    let unit = gen_unit(&scratch, &config, &["--self"], "holdfast.service");
    assert_verified(&unit);
    let text = fs::read_to_string(&unit).unwrap();
    let exe = fs::canonicalize(support::holdfast_bin()).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "KillMode=process",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        // db's 20 s after api's 30 s, and a margin.
        "TimeoutStopSec=65s",
        &format!(
            "ExecStart={} up --config {}",
            exe.display(),
            config.display()
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("WatchdogSec=")),
        "{text}"
    );
}

#[test]
fn a_notify_service_with_a_user_capabilities_limits_affinity_and_memory_gives_a_unit_systemd_accepts()
 {
    if !have_systemd_analyze() {
        return;
    }
    let scratch = Scratch::new("notify");
    let config = scratch.config(
        r#"
[service.db]
command = ["/bin/sleep", "1000"]

[service.api]
command = ["/bin/sleep", "1000"]
after = ["db"]
ready = "notify"
watchdog = "10s"
user = "daemon"
supplementary_groups = ["adm"]
capabilities = ["CAP_NET_BIND_SERVICE"]
limits = { nofile = 65536, core = "infinity", memory = "100MiB", pids = 100, cpu_quota = "50%" }
cpu_affinity = [0]
working_dir = "/tmp"
restart = "always"
stop = { signal = "SIGINT", timeout = "7s" }
start_limit = { interval = "1m", burst = 3 }
health = { exec = ["/bin/true"] }
exit_codes = { 3 = { action = "ignore" } }
"#,
    );
    let unit = gen_unit(&scratch, &config, &["api"], "api.service");
    assert_verified(&unit);
    let text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=10s",
        "User=daemon",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=65536",
        "LimitCORE=infinity",
        "MemoryMax=104857600",
        "TasksMax=100",
        "CPUQuota=50%",
        "CPUAffinity=0",
        "Restart=always",
        "KillSignal=SIGINT",
        "TimeoutStopSec=7s",
        "StartLimitIntervalSec=60s",
        "StartLimitBurst=4",
        "After=db.service",
        "SuccessExitStatus=3",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("#   - health probe every 5s: /bin/true")),
        "the health probe is not listed as unconverted:\n{text}"
    );
}

#[test]
fn an_instanced_service_gives_a_template_unit_systemd_accepts() {
    if !have_systemd_analyze() {
        return;
    }
    let scratch = Scratch::new("instances");
    let config = scratch.config(
        r#"
[service.worker]
command = ["/bin/sleep", "{instance}00"]
env = { WORKER_ID = "worker-{instance}" }
instances = 3
"#,
    );
    let unit = gen_unit(&scratch, &config, &["worker"], "worker@.service");
    assert_verified(&unit);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains("\nExecStart=/bin/sleep %i00\n"), "{text}");
    assert!(
        text.contains("\nEnvironment=\"WORKER_ID=worker-%i\"\n"),
        "{text}"
    );
}

#[test]
fn a_forking_service_with_quotes_spaces_percent_and_dollar_gives_a_unit_systemd_accepts() {
    if !have_systemd_analyze() {
        return;
    }
    let scratch = Scratch::new("forking");
    let pidfile = scratch.path("daemon.pid");
    let config = scratch.config(&format!(
        r#"
[service.legacy]
command = ["/bin/sh", "-c", "echo \"100% $HOME\" 'a b' > /dev/null; sleep 1000 & echo $! > {pid}"]
type = "forking"
pidfile = "{pid}"
env = {{ GREETING = "say \"hi\" to 50% of $USER", "PLAIN" = "x" }}
restart = "no"
"#,
        pid = pidfile.display()
    ));
    let unit = gen_unit(&scratch, &config, &["legacy"], "legacy.service");
    assert_verified(&unit);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains("\nType=forking\n"), "{text}");
    assert!(
        text.contains(r#"ExecStart=/bin/sh -c "echo \"100%% $$HOME\" 'a b' > /dev/null; sleep 1000 & echo $$! > "#),
        "{text}"
    );
    assert!(
        text.contains(r#"Environment="GREETING=say \"hi\" to 50%% of $USER""#),
        "{text}"
    );
}

#[test]
fn a_broken_config_produces_no_unit_but_a_diagnostic() {
    let scratch = Scratch::new("broken");
    let config =
        scratch.config("[service.api]\ncommand = [\"/bin/sleep\", \"1000\"]\nrestart_sec = 5\n");
    let out = scratch.path("units");
    fs::create_dir_all(&out).unwrap();
    let mut cmd = holdfast();
    cmd.args(["gen", "systemd", "api", "-c"])
        .arg(&config)
        .arg("--output")
        .arg(&out);
    let output = run(cmd);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(stdout(&output).is_empty(), "{}", describe(&output));
    assert!(
        support::stderr(&output).contains("restart_sec"),
        "no diagnostic: {}",
        describe(&output)
    );
    let written: Vec<_> = fs::read_dir(&out).unwrap().collect();
    assert!(written.is_empty(), "a unit was written: {written:?}");
}
