//! HTTP load from a real load generator (`wrk`), running in the background while a test
//! acts on the service (start, act, finish), counting every request and connection
//! error and which build (`X-Build-Id`) answered.
//!
//! - A Lua script counts responses per build and per status in each wrk thread and
//!   remembers the build of each thread's last response; wrk's `done()` merges them
//!   (the threads are kept in `setup()`, read with `thread:get`) into one JSON line.
//! - Each thread also reports on stderr when the build answering it changes, so a test
//!   can wait until the load has really reached a build ([`Load::wait_all_on`]) instead
//!   of sleeping.
//! - wrk runs for at most [`MAX_RUN`]; a test ends it with [`Load::finish`] (SIGINT:
//!   wrk stops, reports and runs `done()`), so the load lasts as long as the test's
//!   conditions take, no longer.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::wait_until;

/// The load generator; `scripts/install-deps` installs it.
pub const WRK: &str = "/usr/bin/wrk";
/// How long wrk runs if nobody finishes it: a bound for a test that fails midway.
const MAX_RUN: Duration = Duration::from_secs(120);
/// Generous, so a slow machine shows up as latency, not as timeouts.
const TIMEOUT: &str = "10s";
const THREADS: usize = 2;
const CONNECTIONS: usize = 8;
/// How long wrk gets to exit after a SIGINT before it gets another one.
const RESEND: Duration = Duration::from_secs(1);
/// The prefix of the line with the results on wrk's stdout.
const RESULT: &str = "load-result: ";
/// The prefix of a thread's "now answered by" line on wrk's stderr.
const SWITCH: &str = "load-build: ";

const SCRIPT: &str = r#"
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function init(args)
  by_build = {}
  by_status = {}
  last_build = ""
end

function response(status, headers, body)
  local build = headers["x-build-id"] or headers["X-Build-Id"] or "none"
  by_build[build] = (by_build[build] or 0) + 1
  by_status[status] = (by_status[status] or 0) + 1
  if build ~= last_build then
    last_build = build
    io.stderr:write("load-build: " .. id .. " " .. build .. "\n")
    io.stderr:flush()
  end
end

local function quote(text)
  return '"' .. tostring(text):gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function object(counts)
  local fields = {}
  for key, count in pairs(counts) do
    table.insert(fields, quote(key) .. ":" .. string.format("%d", count))
  end
  return "{" .. table.concat(fields, ",") .. "}"
end

function done(summary, latency, requests)
  local by_build, by_status, last = {}, {}, {}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("by_build")) do
      by_build[key] = (by_build[key] or 0) + count
    end
    for key, count in pairs(thread:get("by_status")) do
      by_status[key] = (by_status[key] or 0) + count
    end
    table.insert(last, quote(thread:get("last_build")))
  end
  local e = summary.errors
  io.write(string.format(
    'load-result: {"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"by_build":%s,"by_status":%s,"last_builds":[%s]}\n',
    summary.requests, e.connect, e.read, e.write, e.timeout,
    object(by_build), object(by_status), table.concat(last, ",")))
end
"#;

/// How the load generator uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A few connections kept alive for many requests each (what browsers and proxies do).
    KeepAlive,
    /// A new connection for every request (`Connection: close`).
    NewPerRequest,
}

/// Connection errors as wrk counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// What a finished load saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Responses received.
    pub requests: u64,
    /// Responses with a status outside 200-299.
    pub non_2xx: u64,
    pub errors: Errors,
    /// Responses per `X-Build-Id` ("none" without the header).
    pub by_build: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Per wrk thread, the build of its last response.
    pub last_builds: Vec<String>,
}

impl LoadReport {
    /// Requests that did not get a 2xx answer: connection errors and other statuses.
    pub fn failed(&self) -> u64 {
        self.errors.total() + self.non_2xx
    }

    /// Panics with the whole report unless every request got a 2xx answer.
    pub fn assert_no_failures(&self, what: &str) {
        assert!(
            self.requests > 0 && self.failed() == 0,
            "{what}: {} of {} requests failed: {self:#?}",
            self.failed(),
            self.requests
        );
    }
}

#[derive(serde::Deserialize)]
struct Raw {
    requests: u64,
    #[serde(flatten)]
    errors: Errors,
    by_build: BTreeMap<String, u64>,
    by_status: BTreeMap<u16, u64>,
    last_builds: Vec<String>,
}

/// A wrk run in progress. Dropping it kills wrk.
pub struct Load {
    child: Child,
    script: PathBuf,
    /// Per wrk thread id, the build that answered it last.
    builds: Arc<Mutex<HashMap<u32, String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    finished: bool,
}

impl Load {
    /// Starts loading `http://ADDR/` (`addr` is `host:port`).
    pub fn start(addr: &str, connections: Connections) -> Load {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let script = std::env::temp_dir().join(format!(
            "holdfast-load-{}-{}.lua",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&script, SCRIPT).expect("the load script is written");
        let mut command = Command::new(WRK);
        command
            .arg(format!("--threads={THREADS}"))
            .arg(format!("--connections={CONNECTIONS}"))
            .arg(format!("--duration={}s", MAX_RUN.as_secs()))
            .arg(format!("--timeout={TIMEOUT}"))
            .arg("--script")
            .arg(&script);
        if connections == Connections::NewPerRequest {
            command.args(["--header", "Connection: close"]);
        }
        let mut child = command
            .arg(format!("http://{addr}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("failed to run {WRK}: {e} (scripts/install-deps installs it)")
            });
        let builds = Arc::new(Mutex::new(HashMap::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let (builds_in, stderr_in) = (Arc::clone(&builds), Arc::clone(&stderr));
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                match line.strip_prefix(SWITCH).and_then(|l| l.split_once(' ')) {
                    Some((id, build)) if id.parse::<u32>().is_ok() => {
                        let id = id.parse().expect("checked just above");
                        lock(&builds_in).insert(id, build.to_owned());
                    }
                    _ => lock(&stderr_in).push(line),
                }
            }
        });
        Load {
            child,
            script,
            builds,
            stderr,
            finished: false,
        }
    }

    /// Waits until the last response of every wrk thread came from `build`.
    pub fn wait_all_on(&self, build: &str) {
        wait_until(
            &format!("every load thread is answered by build {build}"),
            || {
                let builds = lock(&self.builds);
                builds.len() == THREADS && builds.values().all(|b| b == build)
            },
        );
    }

    /// The build that answered each thread last, by thread id (for messages).
    pub fn current_builds(&self) -> HashMap<u32, String> {
        lock(&self.builds).clone()
    }

    /// Stops the load (SIGINT: wrk reports what it counted) and returns its report.
    pub fn finish(mut self) -> LoadReport {
        let out = self.interrupt();
        let status = self.child.wait().expect("wrk is our child");
        self.finished = true;
        let line = out
            .lines()
            .find_map(|line| line.strip_prefix(RESULT))
            .unwrap_or_else(|| {
                panic!(
                    "wrk ({status}) printed no result line; stdout:\n{out}\nstderr:\n{}",
                    lock(&self.stderr).join("\n")
                )
            });
        let raw: Raw = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad wrk result line {line:?}: {e}"));
        let non_2xx = raw
            .by_status
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, count)| count)
            .sum();
        LoadReport {
            requests: raw.requests,
            non_2xx,
            errors: raw.errors,
            by_build: raw.by_build,
            by_status: raw.by_status,
            last_builds: raw.last_builds,
        }
    }
}

impl Load {
    /// SIGINTs wrk until it exits and returns its stdout. Once: wrk's main thread
    /// sleeps for the run's duration, and a SIGINT that the kernel hands to one of its
    /// worker threads stops the workers but not that sleep. Once the workers are
    /// gone, the next SIGINT can only reach the main thread.
    fn interrupt(&mut self) -> String {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text);
            let _ = tx.send(text);
        });
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            // ESRCH: it already exited, and its output is on its way.
            let _ = kill(pid, Signal::SIGINT);
            match rx.recv_timeout(RESEND) {
                Ok(text) => return text,
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "wrk did not stop on SIGINT within {:?}",
                    super::DEADLINE
                ),
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.script);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
