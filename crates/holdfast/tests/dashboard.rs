//! The dashboard in a real browser: headless Chromium (Debian's `chromium`), driven over
//! the DevTools protocol by `dashboard/cdp.py` (standard library only; the protocol runs
//! on a pipe). The page must show a crash and the restart live, without a reload; its
//! restart button must be refused without the token and work with it. A screenshot is
//! kept as an artifact (`target/test-artifacts/dashboard.png`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};
use support::Daemon;
use support::web::{self, HTTP_ON};

const WIDTH: u32 = 1440;
const HEIGHT: u32 = 1000;

/// Debian's chromium, or the one `HOLDFAST_CHROMIUM` names.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HOLDFAST_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The driver process and its pipes: one JSON command per line, one answer per line.
struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Browser {
    fn launch(chromium: &std::path::Path) -> Browser {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/cdp.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(chromium)
            .arg(WIDTH.to_string())
            .arg(HEIGHT.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the DevTools driver");
        let commands = child.stdin.take().expect("stdin");
        let answers = BufReader::new(child.stdout.take().expect("stdout"));
        let mut browser = Browser {
            child,
            commands,
            answers,
        };
        let ready = browser.answer();
        assert_eq!(ready["ready"], true, "{ready}");
        browser
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.answers
            .read_line(&mut line)
            .expect("the driver answers");
        assert!(!line.is_empty(), "the DevTools driver exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver answer {line:?}: {e}"))
    }

    fn command(&mut self, command: Value) -> Value {
        writeln!(self.commands, "{command}").expect("the driver reads commands");
        let answer = self.answer();
        assert_eq!(answer["ok"], true, "{command} failed: {answer}");
        answer["value"].clone()
    }

    fn eval(&mut self, js: &str) -> Value {
        self.command(json!({ "eval": js }))
    }

    /// Waits until `js` evaluates to something truthy in the page; returns it.
    fn wait_for(&mut self, what: &str, js: &str) -> Value {
        let mut last = Value::Null;
        support::wait_until(what, || {
            last = self.eval(js);
            !matches!(&last, Value::Null | Value::Bool(false))
                && last != json!("")
                && last != json!(0)
        });
        last
    }

    /// The text of the first element `selector` matches (null when none does).
    fn text(&mut self, selector: &str) -> Value {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); return e ? e.textContent : null; }})()"
        ))
    }

    fn click(&mut self, selector: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; e.click(); return true; }})()"
        ));
        assert_eq!(clicked, true, "nothing to click at {selector}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.commands, "{}", json!({"quit": true}));
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::workspace_root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

fn config(web_port: u16) -> String {
    format!(
        r#"{HTTP_ON}[service.api]
command = ["sh", "-c", "echo api listening; exec sleep 300"]

[service.web]
command = ["{{DEMO_APP}}", "--listen", "127.0.0.1:{web_port}"]

[service.web.health]
http = "http://127.0.0.1:{web_port}/health"
interval = "200ms"
timeout = "150ms"
degraded = {{ failures = 2, within = "10s" }}
unhealthy = {{ failures = 1000, within = "60s" }}
recover = {{ successes = 2 }}

[service.report]
command = ["sh", "-c", "echo generating the nightly report; echo 'error: disk quota exceeded' >&2; exit 3"]
restart = "no"
"#
    )
}

fn pid_cell(service: &str) -> String {
    format!("tr[data-service={service:?}] .pid")
}

#[test]
fn the_dashboard_shows_a_crash_live_and_its_restart_button_works_only_with_the_token() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED: no chromium (scripts/install-deps installs Debian's `chromium`)");
        return;
    };
    let web_port = support::free_port();
    let daemon = Daemon::start(&config(web_port));
    let pid = daemon.running_pid("api");
    let addr = web::addr(&daemon);
    let token = web::token(&daemon);
    let mut browser = Browser::launch(&chromium);
    browser.command(json!({ "navigate": format!("http://{addr}/") }));
    browser.wait_for(
        "the page shows api's pid",
        &format!(
            "document.querySelector({:?})?.textContent === '{pid}'",
            pid_cell("api")
        ),
    );
    // Without the token, logs and crash reports are not shown, and the page says why.
    browser.wait_for(
        "the log and crash panels ask for the token",
        "document.querySelector('#log')?.textContent.includes('enter the token to read logs') \
         && document.querySelector('#crashes')?.textContent.includes('enter the token')",
    );
    // Set on this page load only: still there later means the page was never reloaded.
    browser.eval("window.sameLoad = 'yes'");

    // A crash and the restart arrive live.
    support::kill_9(pid);
    let new_pid = browser.wait_for(
        "the page shows api restarted under a new pid",
        &format!(
            "(() => {{ const p = document.querySelector({:?})?.textContent; \
             const r = document.querySelector('tr[data-service=\"api\"] .restarts')?.textContent; \
             return p && p !== '{pid}' && p !== '—' && r === '1' ? p : null; }})()",
            pid_cell("api")
        ),
    );
    let new_pid: u32 = new_pid
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("a pid");
    assert_eq!(
        daemon.service("api").pid,
        Some(new_pid),
        "the page shows the real pid"
    );
    browser.wait_for(
        "the exit is in the live event list",
        "document.querySelector('#events li[data-kind=\"exited\"][data-service=\"api\"]') !== null",
    );
    assert_eq!(browser.eval("window.sameLoad"), "yes", "no reload happened");

    // Without the token, the restart button is refused by the server and says so.
    browser.click("tr[data-service=\"api\"] button[data-verb=\"restart\"]");
    let refusal = browser.wait_for(
        "the page shows the refusal",
        "(() => { const n = document.querySelector('#notice'); \
         return !n.hidden && n.dataset.kind === 'refused' ? n.textContent : null; })()",
    );
    assert!(
        refusal
            .as_str()
            .is_some_and(|t| t.contains("needs the token")),
        "{refusal}"
    );
    // A later request is answered after the refused one: had it been applied, it shows.
    assert_eq!(web::get(addr, "/api/status").status, 200);
    assert_eq!(
        daemon.service("api").pid,
        Some(new_pid),
        "the pid did not change"
    );
    assert_eq!(browser.text(&pid_cell("api")), new_pid.to_string());

    // With the token (typed into the page once), the same button restarts api.
    browser.eval(&format!(
        "document.querySelector('#token').value = '{token}'; \
         document.querySelector('#token-save').click()"
    ));
    assert_eq!(browser.text("#lock"), "controls enabled");
    // Until the waited answer comes, the page says what it waits for and the button is
    // disabled (read in the click's own turn: the answer cannot have come yet).
    let waiting = browser.eval(
        "(() => { const q = () => document.querySelector('tr[data-service=\"api\"] button[data-verb=\"restart\"]'); \
         q().click(); \
         return { disabled: q().disabled, notice: document.querySelector('#notice').textContent }; })()",
    );
    assert_eq!(waiting["disabled"], true, "{waiting}");
    assert!(
        waiting["notice"]
            .as_str()
            .is_some_and(|t| t.contains("restarting api")),
        "{waiting}"
    );
    let restarted = daemon.wait_for_service("api", "running under a third pid", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != new_pid)
    });
    let third = restarted.pid.expect("a pid");
    browser.wait_for(
        "the page shows the third pid",
        &format!(
            "document.querySelector({:?})?.textContent === '{third}'",
            pid_cell("api")
        ),
    );
    // The answer comes once api counts as started; then the button is enabled again.
    browser.wait_for(
        "the page shows the answer and enables the button again",
        "document.querySelector('#notice').dataset.kind !== 'pending' \
         && !document.querySelector('tr[data-service=\"api\"] button[data-verb=\"restart\"]').disabled",
    );
    assert_eq!(
        browser.eval("document.querySelector('#notice').dataset.kind"),
        "ok"
    );

    // Some health history for the sparkline: web degrades, then recovers.
    web::get(
        format!("127.0.0.1:{web_port}").parse().expect("addr"),
        "/health/fail",
    );
    daemon.wait_for_service("web", "degraded", |s| {
        s.health.as_ref().is_some_and(|h| h.state == "degraded")
    });
    web::get(
        format!("127.0.0.1:{web_port}").parse().expect("addr"),
        "/health/ok",
    );
    browser.wait_for(
        "the sparkline shows web's health going down and back up",
        "document.querySelector('tr[data-service=\"web\"] svg.spark')?.dataset.points === 'ok,degraded,ok'",
    );

    // The crash report with its output, as shown for the screenshot.
    browser.wait_for(
        "report's crash is listed",
        "document.querySelector('#crashes li[data-id^=\"report-\"]') !== null",
    );
    browser.click("#crashes li[data-id^=\"report-\"]");
    browser.wait_for(
        "the crash report shows its last lines",
        "document.querySelector('#crash pre')?.textContent.includes('disk quota exceeded')",
    );
    browser.click("tr[data-service=\"api\"]");
    browser.wait_for(
        "api's log tail is shown",
        "document.querySelector('#log')?.textContent.includes('api listening')",
    );
    let shot = artifacts().join("dashboard.png");
    browser.command(json!({ "screenshot": shot }));
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a real screenshot: {size} bytes");
    println!("dashboard screenshot: {}", shot.display());

    // A bookmarked URL carries the token in its fragment; the page keeps it and takes it
    // out of the address bar.
    browser.eval("sessionStorage.clear()");
    browser.command(json!({ "navigate": "about:blank" }));
    browser.command(json!({ "navigate": format!("http://{addr}/#token={token}") }));
    assert_eq!(browser.text("#lock"), "controls enabled");
    assert_eq!(browser.eval("location.hash"), "");
}
