//! Crash reports end to end: services that panic (Rust, Go), segfault with a core dump
//! through `holdfast core-handler`, or hang and are killed; the report is read back
//! with `holdfast crashes` and `crashes show`, and `status` and `events` name it.
//!
//! Tests that install the core handler change the host's `core_pattern`: they are in
//! the `core-pattern` test group (one at a time, see `.config/nextest.toml`) and put the
//! previous value back even when they fail (a drop guard).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use holdfast::control::protocol::{CrashReport, CrashSummary};
use support::Daemon;

/// The reports of `name`, newest first (`crashes NAME --json`).
fn crashes(d: &Daemon, name: &str) -> Vec<CrashSummary> {
    let out = d.cli_ok(&["crashes", name, "--json"]);
    serde_json::from_slice(&out.stdout).expect("crashes --json parses")
}

/// Waits for the first report of `name` (and `ready` of it) and reads it in full.
/// Waits for its event too: the report is listed once its files are written, and the
/// daemon takes it in (status's "last crash", the event) only after that.
fn wait_report(d: &Daemon, name: &str, ready: impl Fn(&CrashReport) -> bool) -> CrashReport {
    let mut found = None;
    d.wait_until(&format!("a crash report of {name}"), |d| {
        let Some(first) = crashes(d, name).into_iter().next() else {
            return false;
        };
        let report = show(d, &first.id);
        let events = support::stdout(&d.cli_ok(&["events", name]));
        let done = ready(&report) && events.contains(&format!("(report {})", report.id));
        found = Some(report);
        done
    });
    found.expect("found")
}

fn show(d: &Daemon, id: &str) -> CrashReport {
    let out = d.cli_ok(&["crashes", "show", id, "--json"]);
    serde_json::from_slice(&out.stdout).expect("crashes show --json parses")
}

fn text(lines: &[String]) -> String {
    lines.join("\n")
}

#[test]
fn a_demo_app_panicking_in_nested_calls_leaves_a_report_with_message_frames_and_last_lines() {
    let d = Daemon::start(
        r#"
[service.app]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--panic-after", "300ms", "--panic-depth", "3"]
env = { RUST_BACKTRACE = "1" }
restart = "no"
"#,
    );
    let report = wait_report(&d, "app", |_| true);
    assert_eq!(report.kind, "rust_panic", "{report:#?}");
    assert_eq!(report.code, Some(101));
    assert!(
        report
            .summary
            .starts_with("panic: deliberate nested panic requested by --panic-after at "),
        "{}",
        report.summary
    );
    let stack = text(&report.stack);
    assert!(stack.contains("demo_app::chaos::nested"), "{stack}");
    assert!(stack.contains("stack backtrace:"), "{stack}");
    let log = text(&report.log);
    assert!(
        log.contains("descending: depth 1"),
        "the lines before it:\n{log}"
    );
    assert!(
        report
            .binary
            .as_deref()
            .is_some_and(|b| b.ends_with("demo-app")),
        "{report:#?}"
    );

    // The files: JSON and text, private.
    let dir = d.dir().join("state/crashes");
    for ext in ["json", "txt"] {
        let path = dir.join(format!("{}.{ext}", report.id));
        let mode = fs::metadata(&path).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let shown = support::stdout(&d.cli_ok(&["crashes", "show", &report.id]));
    assert!(shown.contains("rust_panic stack:"), "{shown}");

    // status names the latest crash; events has it.
    let status = support::stdout(&d.cli(&["status"]));
    assert!(
        status.contains("last crash: panic: deliberate nested panic"),
        "{status}"
    );
    let events = support::stdout(&d.cli_ok(&["events", "app"]));
    assert!(
        events.contains(&format!("(report {})", report.id)),
        "{events}"
    );
}

#[test]
fn a_clean_exit_and_a_stop_asked_for_leave_no_report() {
    let d = Daemon::start(
        r#"
[service.quits]
command = ["sh", "-c", "echo done"]
restart = "no"

[service.stopped]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0"]
"#,
    );
    d.wait_for_service("quits", "exited", |s| {
        s.state == "stopped" && s.last_exit.is_some()
    });
    d.cli_ok(&["stop", "stopped"]);
    let all = support::stdout(&d.cli_ok(&["crashes"]));
    assert_eq!(all, "no crash reports\n");
}

/// Builds `tests/go/crasher.go` once per test process; `None` (the test skips) with the
/// reason printed when it cannot.
fn go_crasher() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| support::go_build("crasher")).clone();
    built.map_err(|why| eprintln!("skipped: {why}")).ok()
}

#[test]
fn a_go_program_panicking_in_a_nested_call_leaves_its_goroutine_trace() {
    let Some(crasher) = go_crasher() else {
        return;
    };
    let d = Daemon::start(&format!(
        r#"
[service.goapp]
command = ["{}", "panic"]
restart = "no"
"#,
        crasher.display()
    ));
    let report = wait_report(&d, "goapp", |_| true);
    assert_eq!(report.kind, "go_panic", "{report:#?}");
    assert_eq!(report.code, Some(2));
    assert!(
        report.summary.starts_with(
            "panic: runtime error: index out of range [5] with length 3 at crasher.go:"
        ),
        "{}",
        report.summary
    );
    let stack = text(&report.stack);
    assert!(stack.contains("goroutine 1 [running]:"), "{stack}");
    assert!(stack.contains("main.lookup("), "{stack}");
    assert!(stack.contains("main.handle("), "{stack}");
    assert!(text(&report.log).contains("handling request 5"));
}

/// Installs holdfast's core handler for the daemon's state directory and puts the
/// host's previous `core_pattern` back when dropped, even when the test fails.
struct CorePattern {
    previous: String,
    /// A short path to the state directory: the kernel keeps 127 bytes of pattern.
    link: PathBuf,
}

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

impl CorePattern {
    /// `None` (with the reason printed) when this host's core_pattern cannot be set.
    fn install(d: &Daemon, max_size: &str) -> Option<CorePattern> {
        let previous = fs::read_to_string(CORE_PATTERN).ok()?.trim_end().to_owned();
        if fs::write(CORE_PATTERN, format!("{previous}\n")).is_err() {
            eprintln!("skipped: {CORE_PATTERN} is not writable here");
            return None;
        }
        let link = std::env::temp_dir().join(format!("hfc-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(d.dir().join("state"), &link).expect("link");
        let guard = CorePattern { previous, link };
        let link = guard.link.display().to_string();
        core_pattern(&["install", "--state-dir", &link, "--max-size", max_size]);
        let now = fs::read_to_string(CORE_PATTERN).expect("read");
        assert!(now.contains(" core-handler --state-dir "), "{now}");
        Some(guard)
    }

    fn uninstall(&self) {
        let link = self.link.display().to_string();
        core_pattern(&["uninstall", "--state-dir", &link]);
    }
}

/// `holdfast core-pattern ARGS`, which must succeed.
fn core_pattern(args: &[&str]) {
    let mut cmd = support::holdfast();
    cmd.arg("core-pattern").args(args);
    let out = support::run(cmd);
    assert!(out.status.success(), "{}", support::describe(&out));
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = fs::write(CORE_PATTERN, format!("{}\n", self.previous));
        let _ = fs::remove_file(&self.link);
    }
}

const SEGFAULTING: &str = r#"
[service.native]
command = ["{DEMO_APP}", "--listen", "127.0.0.1:0", "--segfault-after", "300ms"]
limits = { core = "infinity" }
restart = "no"
autostart = false
"#;

#[test]
fn with_the_core_handler_installed_a_segfault_leaves_a_compressed_core_and_a_gdb_backtrace() {
    let d = Daemon::start(SEGFAULTING);
    let Some(pattern) = CorePattern::install(&d, "1GiB") else {
        return;
    };
    d.cli_ok(&["start", "--no-block", "native"]);
    let report = wait_report(&d, "native", |r| r.core.is_some());
    assert_eq!(report.signal.as_deref(), Some("SIGSEGV"), "{report:#?}");
    assert!(report.core_dumped);
    let core = report.core.as_ref().expect("joined");
    assert!(!core.truncated, "{core:#?}");
    assert_eq!(core.backtrace_error, None, "{core:#?}");
    let backtrace = text(&core.backtrace);
    assert!(
        backtrace.contains("demo_app::chaos::segfault"),
        "{backtrace}"
    );
    assert_eq!(
        report.summary, "killed by SIGSEGV (core dumped) in demo_app::chaos::segfault",
        "the function gdb found the signalled thread in"
    );
    let stored = PathBuf::from(core.path.as_deref().expect("stored"));
    assert!(stored.ends_with(format!("{}-{}.core.gz", core.pid, core.time)));
    assert!(
        fs::metadata(&stored).expect("on disk").len() < core.size,
        "compressed"
    );
    d.wait_until("the core_dumped event", |d| {
        support::stdout(&d.cli_ok(&["events", "native"])).contains("core dump of pid")
    });
    let shown = support::stdout(&d.cli_ok(&["crashes", "show", &report.id]));
    assert!(shown.contains("gdb backtrace:"), "{shown}");

    pattern.uninstall();
    let restored = fs::read_to_string(CORE_PATTERN).expect("read");
    assert_eq!(
        restored.trim_end(),
        pattern.previous,
        "uninstall restores it"
    );
}

#[test]
fn with_the_core_handler_installed_a_core_over_the_cap_is_truncated_and_the_report_says_so() {
    let d = Daemon::start(SEGFAULTING);
    let Some(_pattern) = CorePattern::install(&d, "64KiB") else {
        return;
    };
    d.cli_ok(&["start", "--no-block", "native"]);
    let report = wait_report(&d, "native", |r| r.core.is_some());
    let core = report.core.as_ref().expect("joined");
    assert!(core.truncated, "{core:#?}");
    assert!(core.size > 64 * 1024, "{core:#?}");
    // What this core left on disk: its compressed copy and its record (the kernel's
    // setting is global: other processes' cores may land beside it).
    let cores = d.dir().join("state/crashes/cores");
    let stem = format!("{}-{}.", core.pid, core.time);
    let on_disk: u64 = fs::read_dir(&cores)
        .expect("cores")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    assert!(
        on_disk > 0 && on_disk < 64 * 1024 + 16 * 1024,
        "{on_disk} bytes of {stem}*"
    );
    let shown = support::stdout(&d.cli_ok(&["crashes", "show", &report.id]));
    assert!(shown.contains("TRUNCATED at the size cap"), "{shown}");
}

#[test]
fn a_hung_go_service_killed_for_failing_health_leaves_the_goroutine_stacks_of_its_dump_signal() {
    let Some(crasher) = go_crasher() else {
        return;
    };
    let d = Daemon::start(&format!(
        r#"
[service.stuck]
command = ["{}", "hang"]
restart = "no"
dump_signal = "QUIT"
dump_wait = "5s"

[service.stuck.health]
exec = ["false"]
interval = "200ms"
timeout = "150ms"
unhealthy = {{ failures = 2, within = "10s", action = "restart" }}
"#,
        crasher.display()
    ));
    let report = wait_report(&d, "stuck", |_| true);
    assert_eq!(report.cause, "unhealthy", "{report:#?}");
    assert_eq!(report.kind, "go_dump", "{report:#?}");
    assert!(
        report.summary.starts_with("unhealthy: SIGQUIT"),
        "{}",
        report.summary
    );
    let stack = text(&report.stack);
    assert!(stack.contains("main.stuck("), "{stack}");
    assert!(stack.contains("main.worker("), "{stack}");
    let events = support::stdout(&d.cli_ok(&["events", "stuck"]));
    assert!(
        events.contains("hung: SIGQUIT for a stack dump"),
        "{events}"
    );
}

#[test]
fn a_captured_go_panic_transcript_goes_through_the_capture_path_into_the_report() {
    // The same check as with a real Go program, for hosts without a Go toolchain: a
    // transcript of Go 1.19's panic, printed by a service, unfinished last line and all.
    let transcript = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/panic.txt");
    let d = Daemon::start(&format!(
        r#"
[service.replay]
command = ["sh", "-c", "echo serving; cat {} >&2; printf 'exit status 2' >&2; exit 2"]
restart = "no"
"#,
        transcript.display()
    ));
    let report = wait_report(&d, "replay", |_| true);
    assert_eq!(report.kind, "go_panic", "{report:#?}");
    assert_eq!(
        report.summary,
        "panic: runtime error: index out of range [5] with length 3 at crasher.go:16"
    );
    let stack = text(&report.stack);
    assert!(stack.contains("main.handle(0x5)"), "{stack}");
    let log = text(&report.log);
    assert!(
        log.contains("exit status 2 [no newline]"),
        "the unfinished last line:\n{log}"
    );
}
