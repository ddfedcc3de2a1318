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
fn the_unit_for_holdfast_with_spaces_and_percent_in_its_paths_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let scratch = Scratch::new("self spaced");
    let dir = scratch.path("fast state 100%");
    let text = format!(
        "[holdfast]\ncontrol = \"{d}/run dir/control.sock\"\nstate_dir = \"{d}/state\"\n\
         log_dir = \"{d}/log 50%\"\n\n[service.db]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
        d = dir.display()
    );
    let config = scratch.path("holdfast config.toml");
    fs::write(&config, text).expect("write the config");
    let unit = gen_unit(&scratch, &config, &["--self"], "holdfast.service");
    assert_verified(&unit);
    let text = fs::read_to_string(&unit).unwrap();
    for setting in ["ExecStartPre=+", "ExecStopPost=+", "TimeoutStartSec="] {
        assert!(
            text.lines().any(|l| l.starts_with(setting)),
            "no `{setting}` in:\n{text}"
        );
    }
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

/// A supervisord.conf as people write them: several programs, exit codes, group kill,
/// numprocs, environment, and what holdfast cannot take over.
const REALISTIC_CONF: &str = r#"; supervisord.conf of a small site
[unix_http_server]
file=/tmp/supervisor.sock   ; the socket

[supervisord]
logfile=/tmp/supervisord.log

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:db]
command=/bin/sleep 1000
priority=10
autorestart=true
stopsignal=INT
stopwaitsecs=30
stopasgroup=true
killasgroup=true

[program:web]
command=/bin/sh -c "exec sleep 1000" ; comment
directory=/tmp
priority=20
environment=GREETING="hello, world",
    NAME=%(program_name)s,RATIO="50%%"
exitcodes=0,3
startsecs=5
startretries=2
stdout_logfile=/var/log/web.out
stdout_logfile_maxbytes=1MB
stdout_logfile_backups=3
redirect_stderr=true
umask=022
stdout_events_enabled=true

[program:worker]
command=/bin/sleep 10%(process_num)d
process_name=%(program_name)s_%(process_num)02d
numprocs=3
exitcodes=2
stopasgroup=false
killasgroup=true
user=daemon
Autostart=False
color=blue

[group:backend]
programs=web,worker
priority=999

[include]
files = conf.d/*.conf
"#;

/// `holdfast import supervisord FILE --output OUT --json`, which must succeed: the
/// config written and the report as (section, line, option) triples.
fn import(conf: &Path, out: &Path) -> Vec<(String, u64, Option<String>)> {
    let mut cmd = holdfast();
    cmd.args(["import", "supervisord"])
        .arg(conf)
        .arg("--output")
        .arg(out)
        .arg("--json");
    let output = run(cmd);
    assert!(
        output.status.success(),
        "import failed: {}",
        describe(&output)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(out).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the config may hold the shell's values"
    );
    let findings: serde_json::Value = serde_json::from_slice(&output.stderr)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", describe(&output)));
    findings
        .as_array()
        .expect("the report is an array")
        .iter()
        .map(|f| {
            (
                f["section"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
                f["option"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn check_ok(config: &Path) {
    let mut cmd = holdfast();
    cmd.arg("check").arg(config);
    let output = run(cmd);
    assert!(
        output.status.success(),
        "holdfast check refused the imported config: {}\n--- config ---\n{}",
        describe(&output),
        fs::read_to_string(config).unwrap_or_default()
    );
}

#[test]
fn importing_a_realistic_supervisord_conf_gives_a_config_holdfast_accepts_and_reports_each_unconverted_option()
 {
    let scratch = Scratch::new("import");
    let conf = scratch.path("supervisord.conf");
    fs::write(&conf, REALISTIC_CONF).unwrap();
    let out = scratch.path("imported.toml");
    let report = import(&conf, &out);
    check_ok(&out);
    let s = |x: &str| x.to_owned();
    let expected = vec![
        (s("unix_http_server"), 2, None),
        (s("supervisord"), 6, Some(s("logfile"))),
        (s("rpcinterface:supervisor"), 8, None),
        (s("program:web"), 29, Some(s("stdout_logfile"))),
        (s("program:web"), 34, Some(s("stdout_events_enabled"))),
        (s("program:worker"), 38, Some(s("process_name"))),
        (s("program:worker"), 41, Some(s("stopasgroup"))),
        (s("program:worker"), 45, Some(s("color"))),
        (s("group:backend"), 49, Some(s("priority"))),
        (s("include"), 51, None),
    ];
    assert_eq!(report, expected);
    let config: toml::Table = toml::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let service = |name: &str| config["service"][name].clone();
    assert_eq!(service("db")["stop"]["signal"].as_str(), Some("SIGINT"));
    assert_eq!(service("db")["restart"].as_str(), Some("always"));
    assert_eq!(
        service("web")["after"],
        toml::Value::Array(vec!["db".into()])
    );
    assert_eq!(
        service("web")["env"]["GREETING"].as_str(),
        Some("hello, world")
    );
    assert_eq!(service("web")["env"]["NAME"].as_str(), Some("web"));
    assert_eq!(service("web")["env"]["RATIO"].as_str(), Some("50%"));
    assert_eq!(
        service("web")["exit_codes"]["3"]["action"].as_str(),
        Some("ignore")
    );
    assert_eq!(
        service("web")["command"][2].as_str(),
        Some("exec sleep 1000")
    );
    assert_eq!(service("worker")["instances"].as_integer(), Some(3));
    assert_eq!(
        service("worker")["command"][1].as_str(),
        Some("10{instance}")
    );
    assert_eq!(
        service("worker")["exit_codes"]["0"]["action"].as_str(),
        Some("restart")
    );
    assert_eq!(service("worker")["autostart"].as_bool(), Some(false));
    assert_eq!(service("worker")["service_group"].as_str(), Some("backend"));
}

/// `holdfast gen supervisord NAMES -c CONFIG`: the sections.
fn gen_supervisord(config: &Path, names: &[&str]) -> String {
    let mut cmd = holdfast();
    cmd.args(["gen", "supervisord"])
        .args(names)
        .arg("-c")
        .arg(config);
    let output = run(cmd);
    assert!(
        output.status.success(),
        "gen supervisord failed: {}",
        describe(&output)
    );
    stdout(&output)
}

#[test]
fn import_then_gen_supervisord_then_import_again_gives_the_same_config() {
    let scratch = Scratch::new("roundtrip");
    let conf = scratch.path("supervisord.conf");
    fs::write(&conf, REALISTIC_CONF).unwrap();
    let first = scratch.path("first.toml");
    import(&conf, &first);
    let regenerated = scratch.path("regenerated.conf");
    fs::write(
        &regenerated,
        gen_supervisord(&first, &["db", "web", "worker"]),
    )
    .unwrap();
    let second = scratch.path("second.toml");
    let report = import(&regenerated, &second);
    assert_eq!(report, vec![], "everything gen writes is importable");
    let body = |p: &Path| {
        let text = fs::read_to_string(p).unwrap();
        // The first line names the file imported from.
        text.split_once('\n').unwrap().1.to_owned()
    };
    assert_eq!(body(&first), body(&second));
}

/// A supervisord started by a test, shut down (with its programs) when dropped.
struct Supervisord {
    conf: PathBuf,
    child: std::process::Child,
}

impl Supervisord {
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(venv_tool("supervisorctl"));
        cmd.arg("-c").arg(&self.conf).args(args);
        run(cmd)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = self.ctl(&["shutdown"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_tool(name: &str) -> PathBuf {
    support::workspace_root().join(".venv/bin").join(name)
}

/// A supervisord (`-n`, its files in `scratch`) running `sections`.
fn start_supervisord(scratch: &Scratch, sections: &str) -> Supervisord {
    let sock = scratch.path("supervisor.sock");
    let header = format!(
        "[unix_http_server]\nfile={sock}\n\n[supervisord]\nlogfile={dir}/supervisord.log\npidfile={dir}/supervisord.pid\nchildlogdir={dir}\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{sock}\n\n",
        sock = sock.display(),
        dir = scratch.0.display()
    );
    let conf = scratch.path("supervisord.conf");
    fs::write(&conf, format!("{header}{sections}")).unwrap();
    let child = Command::new(venv_tool("supervisord"))
        .arg("-n")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start supervisord");
    Supervisord { conf, child }
}

/// Waits until supervisord reports each of `names` RUNNING.
fn wait_running(peer: &Supervisord, names: &[&str]) {
    support::wait_until("supervisord reports every program RUNNING", || {
        let status = stdout(&peer.ctl(&["status"]));
        names.iter().all(|n| {
            status
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([*n, "RUNNING"]))
        })
    });
}

/// The argv supervisord gave the program `name` (from /proc/PID/cmdline).
fn argv(peer: &Supervisord, name: &str) -> Vec<String> {
    let pid = stdout(&peer.ctl(&["pid", name])).trim().to_owned();
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    let mut args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    args.pop();
    args
}

fn have_supervisord() -> bool {
    let found = venv_tool("supervisord").exists();
    if !found {
        eprintln!("skipped: .venv/bin/supervisord is missing (scripts/install-deps installs it)");
    }
    found
}

#[test]
fn inline_comments_are_stripped_as_supervisord_strips_them_before_running_the_command() {
    if !have_supervisord() {
        return;
    }
    let scratch = Scratch::new("comments");
    // stopasgroup: the shell's sleep goes with it when supervisord stops.
    let sections = "[program:p]\ncommand=/bin/sh -c \"sleep 1000 && echo a#b #c\" x#y ;note\n\
                    stopasgroup=true\n";
    let peer = start_supervisord(&scratch, sections);
    wait_running(&peer, &["p"]);
    let ran = argv(&peer, "p");
    let conf = scratch.path("program.conf");
    fs::write(&conf, sections).unwrap();
    let out = scratch.path("imported.toml");
    import(&conf, &out);
    let config: toml::Table = toml::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let imported: Vec<String> = config["service"]["p"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ran, ["/bin/sh", "-c", "sleep 1000 && echo a#b #c", "x#y"]);
    assert_eq!(imported, ran);
}

#[test]
fn supervisord_runs_the_programs_gen_supervisord_writes() {
    if !venv_tool("supervisord").exists() {
        eprintln!("skipped: .venv/bin/supervisord is missing (scripts/install-deps installs it)");
        return;
    }
    let scratch = Scratch::new("peer");
    let config = scratch.config(
        r#"
[service.db]
command = ["/bin/sleep", "1000"]
stop = { signal = "INT", timeout = "3s" }
[service.web]
command = ["/bin/sh", "-c", "echo \"50% of $HOME; it's #1\" && exec sleep 1000"]
env = { GREETING = "hello, world", NOTE = "it's 100%" }
after = ["db"]
service_group = "backend"
exit_codes = { 3 = { action = "ignore" } }
[service.worker]
command = ["/bin/sleep", "10{instance}"]
instances = 2
service_group = "backend"
[service.argv]
command = ["/bin/sh", "-c", "sleep 1000; exit 0", "x", "100%", "a;b", "c#d", "it's \"q\" $HOME", ""]
"#,
    );
    let sections = gen_supervisord(&config, &["db", "web", "worker", "argv"]);
    let peer = start_supervisord(&scratch, &sections);
    let names = [
        "db",
        "backend:web",
        "backend:worker@0",
        "backend:worker@1",
        "argv",
    ];
    wait_running(&peer, &names);
    assert_eq!(
        argv(&peer, "argv"),
        [
            "/bin/sh",
            "-c",
            "sleep 1000; exit 0",
            "x",
            "100%",
            "a;b",
            "c#d",
            "it's \"q\" $HOME",
            ""
        ]
    );
    assert_eq!(argv(&peer, "backend:worker@1"), ["/bin/sleep", "101"]);
    let env = fs::read_to_string(format!(
        "/proc/{}/environ",
        stdout(&peer.ctl(&["pid", "backend:web"])).trim()
    ))
    .unwrap_or_default();
    assert!(
        env.split('\0').any(|v| v == "GREETING=hello, world"),
        "{env:?}"
    );
    assert!(env.split('\0').any(|v| v == "NOTE=it's 100%"), "{env:?}");
}

#[test]
fn a_supervisord_conf_supervisord_would_refuse_is_an_error_at_its_line_and_writes_nothing() {
    let scratch = Scratch::new("badconf");
    let conf = scratch.path("supervisord.conf");
    fs::write(
        &conf,
        "[program:web]\ncommand=/bin/sleep 1\nautorestart=sometimes\n",
    )
    .unwrap();
    let out = scratch.path("out.toml");
    let mut cmd = holdfast();
    cmd.args(["import", "supervisord"])
        .arg(&conf)
        .arg("--output")
        .arg(&out);
    let output = run(cmd);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let err = support::stderr(&output);
    assert!(
        err.contains("supervisord.conf:3: autorestart"),
        "{}",
        describe(&output)
    );
    assert!(!out.exists(), "a config was written");
}
