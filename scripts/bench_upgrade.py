"""The upgrade scenario of scripts/bench.py: a new build rolled out under HTTP load.

For each way of keeping the port open (handover, reuseport, proxy) and for the naive
way (`holdfast restart` of a service that binds its port itself: stop, then start),
demo-app build A serves under wrk load; the `current` symlink flips to build B (the
naive row flips, then restarts by hand). Measured in the same run: from the flip until
build B takes traffic (the old run is told to drain; for the naive restart: B started),
until the old run is gone, and what wrk counted: requests, failed requests (socket
errors and non-2xx) and responses per build.
"""

import json
import os
import subprocess
import threading
import time

# Bench helpers are passed in by bench.py (`setup`), so this module imports nothing of it
# and bench.py stays the one entry point.
H = None

MODES = ["restart", "handover", "reuseport", "proxy"]
LOAD_S = 6.0
FLIP_AT_S = 1.5

WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) builds = {} end
function response(status, headers, body)
  local b = headers["X-Build-Id"] or headers["x-build-id"] or "?"
  builds[b] = (builds[b] or 0) + 1
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("builds")) do agg[k] = (agg[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'HFBENCH {"requests": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "p99_us": %d, "builds": {%s}}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99), table.concat(parts, ", ")))
end
"""


def setup(helpers):
    global H
    H = helpers


def write_build(dirpath, build, demo_app, extra):
    path = os.path.join(dirpath, "builds", build)
    os.makedirs(path, exist_ok=True)
    server = os.path.join(path, "server")
    args = " ".join(H.sh_quote(a) for a in [demo_app, "--build-id", build, *extra])
    H.write_exec(server, f'exec {args} "$@"')
    return server


def flip(link, target):
    """An atomic `ln -sfn`: a new link under a temp name renamed over the old one."""
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def service_lines(mode, dirpath, port):
    current = os.path.join(dirpath, "current", "server")
    listen_self = ["--listen", f"127.0.0.1:{port}"]
    argv = {
        "restart": [current, *listen_self],
        "handover": [current],
        "reuseport": [current, *listen_self, "--reuseport"],
        "proxy": [current, "--listen", "127.0.0.1:{port}"],
    }[mode]
    lines = [
        "command = [" + ", ".join(json.dumps(a) for a in argv) + "]",
        f'working_dir = "{dirpath}"',
        'ready = "notify"',
        'stop = { signal = "TERM", timeout = "10s" }',
    ]
    if mode in ("handover", "proxy"):
        lines.append(f'listen = ["tcp://127.0.0.1:{port}"]')
    if mode != "restart":
        lines += [
            "[service.web.upgrade]",
            f'mode = "{mode}"',
            f'watch = "{os.path.join(dirpath, "current")}"',
            'drain = "10s"',
            'bake = "1s"',
        ]
    return lines


def config(holdfast, dirpath, mode, port):
    lines = [
        "[holdfast]",
        f'control = "{dirpath}/control.sock"',
        f'state_dir = "{dirpath}/state"',
        f'log_dir = "{dirpath}/logs"',
        "",
        "[service.web]",
        *service_lines(mode, dirpath, port),
    ]
    path = os.path.join(dirpath, "holdfast.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Events:
    """`holdfast events -f --json` in the background: each record with its arrival time."""

    def __init__(self, holdfast, sock):
        self.proc = subprocess.Popen([holdfast, "events", "-f", "--json", "--socket", sock],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.records, self.lock = [], threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.records.append((H.mono_ns(), record))

    def first(self, kind, after_ns):
        with self.lock:
            return next((t for t, r in self.records if r["kind"] == kind and t >= after_ns), None)

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=5)


def wrk(url, seconds, lua, close):
    argv = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", "-s", lua]
    if close:
        argv += ["-H", "Connection: close"]
    return subprocess.Popen([*argv, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc):
    out, _ = proc.communicate(timeout=LOAD_S + 30)
    line = next((l for l in out.splitlines() if l.startswith("HFBENCH ")), None)
    if line is None:
        raise H.BenchError(f"wrk printed no result: {out[-400:]!r}")
    return json.loads(line[len("HFBENCH "):])


def one_mode(bench, peer, mode, close):
    dirpath = bench.workdir()
    port = H.free_ports(1)[0]
    for build in ("A", "B"):
        write_build(dirpath, build, bench.demo_app, [])
    link = os.path.join(dirpath, "current")
    flip(link, os.path.join(dirpath, "builds", "A"))
    path = config(peer.bin(), dirpath, mode, port)
    if H.run([peer.bin(), "check", path], check=False).returncode != 0:
        raise H.Skip(f"n/a: holdfast check rejects mode {mode}")
    sock = os.path.join(dirpath, "control.sock")
    proc = peer.spawn_root([peer.bin(), "up", "-c", path], dirpath)
    events = None
    try:
        H.wait_for("the control socket", 20, lambda: os.path.exists(sock) or proc.poll() is not None)
        events = Events(peer.bin(), sock)
        H.run([peer.bin(), "start", "web", "--socket", sock], timeout=30, check=False)
        H.wait_for("web running", 30, lambda: json.loads(
            H.run([peer.bin(), "status", "--json", "--socket", sock]).stdout)["services"][0]["state"] == "running")
        lua = os.path.join(dirpath, "count.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA)
        load = wrk(f"http://127.0.0.1:{port}/", int(LOAD_S), lua, close)
        time.sleep(FLIP_AT_S)
        flipped = H.mono_ns()
        flip(link, os.path.join(dirpath, "builds", "B"))
        if mode == "restart":
            H.run([peer.bin(), "restart", "web", "--socket", sock], timeout=30, check=False)
            switched = events.first("started", flipped)
            gone = switched
        else:
            H.wait_for("the old run drained", 20, lambda: events.first("baking", flipped))
            switched = events.first("draining", flipped)
            gone = events.first("baking", flipped)
        counted = wrk_result(load)
    finally:
        if events:
            events.close()
        proc.kill()
        proc.wait(timeout=5)
        H.kill_tagged(dirpath)
    failed = sum(counted[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    ms = lambda t: None if t is None else (t - flipped) / 1e6  # noqa: E731
    return {"switch_ms": ms(switched), "done_ms": ms(gone), "requests": counted["requests"],
            "failed": failed, "p99_ms": counted["p99_us"] / 1000, "builds": counted["builds"],
            "errors": {k: counted[k] for k in ("non2xx", "connect", "read", "write", "timeout")}}


def upgrade(bench, peer):
    results = {}
    for mode in MODES:
        # --quick (run by scripts/test) measures the keep-alive runs only.
        for close in (False,) if bench.quick else (False, True):
            key = f"{mode}{' (new conn)' if close else ''}"
            try:
                results[key] = one_mode(bench, peer, mode, close)
            except H.Skip as e:
                results[key] = {"skipped": str(e)}
            except (H.BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
                results[key] = {"error": f"{type(e).__name__}: {e}"}
    return results


def render_upgrade(results, peers):
    r = results.get("holdfast") or {}
    rows = []
    for key, one in r.items():
        if not H.ok(one):
            rows.append([key, "-", "-", "-", "-", "-", "-", H.why(one)])
            continue
        builds = ", ".join(f"{b}: {n}" for b, n in sorted(one["builds"].items()))
        rows.append([key, H.f1(one["switch_ms"]), H.f1(one["done_ms"]), str(one["requests"]),
                     str(one["failed"]), H.f2(one["p99_ms"]), builds, ""])
    return ["", "wrk -t2 -c16 for 6 s (keep-alive, or `Connection: close`: a new connection per "
            "request); `current` flips from build A to B at 1.5 s", "",
            *H.table(["mode", "switch ms", "old gone ms", "requests", "failed", "p99 ms", "responses by build",
                      "note"], rows)]
