#!/usr/bin/env python3
"""holdfast against real peers, side by side in one run (issue 5).

Runs every scenario in SCENARIOS for holdfast and for every peer found on this machine
(supervisord, runit, daemontools, s6), prints one table and writes
target/bench/results.json. Standard library only; driven by scripts/bench, which
installs the peers and builds the release binaries first.

A scenario is one function `scenario(bench, peer) -> dict` registered in SCENARIOS with
its table columns; a later scenario (upgrade under load, probe storms) is one more
function and one more entry.

Bounded: every wait has a deadline; every process a run starts lives under one unique
temp dir (the "tag": in its command line or its cwd), and whatever still carries the tag
when a run ends, normally or not, is SIGKILLed; the temp dir is removed.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Skip(Exception):
    """A scenario that cannot run for a peer: the message says why."""


class BenchError(Exception):
    """A deadline missed or a peer misbehaving: the scenario fails for that peer."""


def mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def wait_for(what, deadline_s, check, every=0.02):
    """Polls check() until it returns a truthy value, or raises after deadline_s."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise BenchError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every)


def run(argv, timeout=60, check=True, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check, **kw)


# ---------------------------------------------------------------- /proc accounting


def procs():
    """pid -> (ppid, cmdline, cwd) for every live process (races are skipped)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
        except (OSError, ValueError):
            continue
        out[pid] = (ppid, cmd, cwd)
    return out


def tree(root, table=None):
    """root and all its descendants."""
    table = table or procs()
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def tagged(tag, table=None):
    table = table or procs()
    me = os.getpid()
    return [p for p, (_, cmd, cwd) in table.items() if p != me and (tag in cmd or cwd.startswith(tag))]


def count_cmd(needle, table=None):
    table = table or procs()
    return sum(1 for _, cmd, _ in table.values() if cmd.startswith(needle))


class Cost:
    def __init__(self, cpu_ms, run_ms, switches, rss_mb, pss_mb):
        self.cpu_ms, self.run_ms, self.switches = cpu_ms, run_ms, switches
        self.rss_mb, self.pss_mb = rss_mb, pss_mb


def cost(pids):
    """What pids use: utime+stime (10 ms ticks), on-CPU time from schedstat (ns, the
    precise figure for near-idle processes), context switches (voluntary+nonvoluntary)
    summed over threads, RSS and PSS in MiB. RSS summed over many small processes counts
    shared pages (libc) once per process; PSS divides them among the sharers."""
    ticks = switches = rss = pss = run_ns = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            rss += int(fields[21]) * PAGE  # rss pages (field 24)
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    run_ns += int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return Cost(ticks * 1000 / CLK_TCK, run_ns / 1e6, switches, rss / 2**20, pss / 2**20)


def kill_tagged(tag, deadline_s=10):
    """SIGKILLs everything carrying the tag until nothing does (bounded)."""
    end = time.monotonic() + deadline_s
    while True:
        left = tagged(tag)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > end:
            print(f"warning: {len(left)} tagged processes survived SIGKILL", file=sys.stderr)
            return
        time.sleep(0.05)


def stats_ms(samples_ns):
    xs = sorted(samples_ns)
    if not xs:
        return {"n": 0}

    def pct(p):
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] / 1e6

    return {"n": len(xs), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": xs[-1] / 1e6}


# ---------------------------------------------------------------- services and peers


class Svc:
    """One supervised program: argv, whether its output is captured to a log."""

    def __init__(self, name, argv, log=False):
        self.name, self.argv, self.log = name, argv, log


class Instance:
    """A running supervisor: its root process and how to ask it things."""

    def __init__(self, peer, proc, dirpath, svcs):
        self.peer, self.proc, self.dir, self.svcs = peer, proc, dirpath, svcs

    def supervisor_pids(self, exclude_prefixes):
        """The processes that make up the supervisor: the root and its descendants,
        minus the services themselves (argv[0] in exclude_prefixes)."""
        table = procs()
        return [p for p in tree(self.proc.pid, table) if not table[p][1].startswith(tuple(exclude_prefixes))]

    def stop(self):
        """Graceful stop-all (the peer's own way), then the root is reaped."""
        self.peer.stop_all(self)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Peer:
    name = "?"
    throttle = ""
    logger = ""
    only = None  # scenario keys this peer takes part in; None: all

    def __init__(self, bench):
        self.bench = bench

    def missing(self):
        """None when usable, else the reason it is skipped."""
        return None

    def spawn_root(self, argv, dirpath, env=None):
        with open(os.path.join(dirpath, "supervisor.out"), "wb") as out:
            launched = mono_ns()
            proc = subprocess.Popen(
                argv, cwd=dirpath, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )
        proc.launched_ns = launched  # scale's clock starts here, after config files exist
        return proc


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


class Holdfast(Peer):
    name = "holdfast"
    throttle = "none (restart_sec=0)"
    logger = "built-in capture (timestamps every line)"

    def bin(self):
        return os.path.join(self.bench.target, "release", "holdfast")

    def missing(self):
        return None if os.access(self.bin(), os.X_OK) else f"{self.bin()} not built"

    def config(self, dirpath, svcs, extra=None):
        lines = [
            "[holdfast]",
            f'control = "{dirpath}/control.sock"',
            f'state_dir = "{dirpath}/state"',
            f'log_dir = "{dirpath}/logs"',
        ]
        for svc in svcs:
            lines += [
                "",
                f"[service.{svc.name}]",
                "command = [" + ", ".join(json.dumps(a) for a in svc.argv) + "]",
                f'working_dir = "{dirpath}"',
                'restart = "always"',
                'restart_sec = "0s"',
                'start_secs = "0s"',
                'start_limit = { interval = "1s", burst = 1000000 }',
                'stop = { signal = "TERM", timeout = "5s" }',
                'log = { max_size = "64MiB", keep = 10 }',
            ]
            lines += (extra or {}).get(svc.name, [])
        path = os.path.join(dirpath, "holdfast.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def accepts(self, dirpath, svcs, extra):
        """Whether this holdfast build accepts the config (feature detection)."""
        path = self.config(dirpath, svcs, extra)
        return run([self.bin(), "check", path], check=False).returncode == 0

    def start(self, dirpath, svcs, extra=None):
        path = self.config(dirpath, svcs, extra)
        proc = self.spawn_root([self.bin(), "up", "-c", path], dirpath)
        sock = os.path.join(dirpath, "control.sock")
        wait_for("the holdfast control socket", 20, lambda: os.path.exists(sock) or proc.poll() is not None)
        if proc.poll() is not None:
            raise BenchError(f"holdfast exited early: {tail(dirpath)}")
        return Instance(self, proc, dirpath, svcs)

    def status_argv(self, inst):
        return [self.bin(), "status", "--socket", os.path.join(inst.dir, "control.sock"), "--json"]

    def count_running(self, out):
        return sum(1 for s in json.loads(out)["services"] if s["state"] == "running")

    def stop_all(self, inst):
        run([self.bin(), "shutdown", "--socket", os.path.join(inst.dir, "control.sock")], timeout=60, check=False)

    def log_files(self, inst, svc):
        return os.path.join(inst.dir, "logs"), f"{svc}.log"


class Supervisord(Peer):
    name = "supervisord"
    throttle = "1 s main-loop tick (poll timeout); no restart delay with startsecs=0"
    logger = "stdout_logfile"

    def bin(self, tool="supervisord"):
        return os.path.join(ROOT, ".venv", "bin", tool)

    def missing(self):
        return None if os.access(self.bin(), os.X_OK) else ".venv/bin/supervisord missing (scripts/install-deps)"

    def start(self, dirpath, svcs, extra=None):
        conf = os.path.join(dirpath, "supervisord.conf")
        lines = [
            "[unix_http_server]", f"file={dirpath}/supervisor.sock",
            "[supervisord]", f"logfile={dirpath}/supervisord.log", f"pidfile={dirpath}/supervisord.pid",
            f"childlogdir={dirpath}/childlogs", "nodaemon=true", "minfds=4096", "minprocs=4096",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]", f"serverurl=unix://{dirpath}/supervisor.sock",
        ]
        os.makedirs(f"{dirpath}/childlogs", exist_ok=True)
        os.makedirs(f"{dirpath}/logs", exist_ok=True)
        for svc in svcs:
            lines += [
                f"[program:{svc.name}]",
                "command=" + " ".join(sh_quote(a) for a in svc.argv),
                f"directory={dirpath}", "autostart=true", "autorestart=true", "startsecs=0",
                "startretries=1000000", "stopsignal=TERM", "stopwaitsecs=5",
            ]
            if svc.log:
                lines += [f"stdout_logfile={dirpath}/logs/{svc.name}.log",
                          "stdout_logfile_maxbytes=64MB", "stdout_logfile_backups=10"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = self.spawn_root([self.bin(), "-n", "-c", conf], dirpath)
        return Instance(self, proc, dirpath, svcs)

    def ctl(self, inst, *args):
        return [self.bin("supervisorctl"), "-c", os.path.join(inst.dir, "supervisord.conf"), *args]

    def status_argv(self, inst):
        return self.ctl(inst, "status")

    def count_running(self, out):
        return sum(1 for line in out.splitlines() if " RUNNING " in line)

    def stop_all(self, inst):
        run(self.ctl(inst, "shutdown"), timeout=60, check=False)

    def log_files(self, inst, svc):
        return os.path.join(inst.dir, "logs"), f"{svc}.log"


class ScanDir(Peer):
    """The daemontools family: one service directory per service, a `run` script
    (`#!/bin/sh` + `exec`, the idiomatic form: one extra sh exec per start), an optional
    `log/run` piped from the service, and a scanner that starts one supervisor each."""

    tools = ()
    package = ""

    def missing(self):
        lost = [t for t in self.tools if shutil.which(t) is None]
        return f"not installed ({', '.join(lost)}; Debian package {self.package})" if lost else None

    def log_run(self, logdir):
        raise NotImplementedError

    def scanner(self, scandir):
        raise NotImplementedError

    def start(self, dirpath, svcs, extra=None):
        scandir = os.path.join(dirpath, "scan")
        for svc in svcs:
            sdir = os.path.join(scandir, svc.name)
            os.makedirs(sdir)
            write_exec(os.path.join(sdir, "run"), "exec " + " ".join(sh_quote(a) for a in svc.argv) + " 2>&1")
            if svc.log:
                logdir = os.path.join(dirpath, "logs", svc.name)
                os.makedirs(logdir)
                os.makedirs(os.path.join(sdir, "log"))
                write_exec(os.path.join(sdir, "log", "run"), self.log_run(logdir))
        proc = self.spawn_root(self.scanner(scandir), dirpath)
        return Instance(self, proc, dirpath, svcs)

    def service_dirs(self, inst):
        return [os.path.join(inst.dir, "scan", s.name) for s in inst.svcs]

    def log_files(self, inst, svc):
        return os.path.join(inst.dir, "logs", svc), "current"


def write_exec(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


class Runit(ScanDir):
    name = "runit"
    throttle = "runsv waits 1 s before restarting a service that ran < 1 s"
    logger = "svlogd"
    tools = ("runsvdir", "runsv", "sv", "svlogd")
    package = "runit"

    def log_run(self, logdir):
        with open(os.path.join(logdir, "config"), "w") as f:
            f.write("s67108864\nn10\n")
        return f"exec svlogd {sh_quote(logdir)}"

    def scanner(self, scandir):
        return ["runsvdir", "-P", scandir]

    def status_argv(self, inst):
        return ["sv", "status", *self.service_dirs(inst)]

    def count_running(self, out):
        return sum(1 for line in out.splitlines() if line.startswith("run:"))

    def stop_all(self, inst):
        # runsvdir on SIGHUP sends TERM to every runsv, which stops its service and exits.
        inst.proc.send_signal(signal.SIGHUP)


class Daemontools(ScanDir):
    name = "daemontools"
    throttle = "supervise pauses 1 s after each start of ./run"
    logger = "multilog"
    tools = ("svscan", "supervise", "svc", "svstat", "multilog")
    package = "daemontools"

    def log_run(self, logdir):
        return f"exec multilog s16777215 n20 {sh_quote(logdir)}"  # multilog's largest size

    def scanner(self, scandir):
        return ["svscan", scandir]

    def status_argv(self, inst):
        return ["svstat", *self.service_dirs(inst)]

    def count_running(self, out):
        return sum(1 for line in out.splitlines() if ": up " in line)

    def stop_all(self, inst):
        run(["svc", "-dx", *self.service_dirs(inst)], timeout=60, check=False)
        inst.proc.send_signal(signal.SIGTERM)  # svscan has no stop-all; it just exits


class S6(ScanDir):
    name = "s6"
    throttle = "s6-supervise waits 1 s between two starts of ./run"
    logger = "s6-log"
    tools = ("s6-svscan", "s6-supervise", "s6-svc", "s6-svstat", "s6-svscanctl", "s6-log")
    package = "s6"

    def log_run(self, logdir):
        return f"exec s6-log n10 s67108864 {sh_quote(logdir)}"

    def scanner(self, scandir):
        return ["s6-svscan", "-c", "4096", scandir]  # the default maximum is 500 services

    def status_argv(self, inst):
        # s6-svstat takes one service directory: one process per service.
        loop = " ".join(sh_quote(d) for d in self.service_dirs(inst))
        return ["sh", "-c", f"for d in {loop}; do s6-svstat \"$d\"; done"]

    def count_running(self, out):
        return sum(1 for line in out.splitlines() if line.startswith("up "))

    def stop_all(self, inst):
        # -t: s6-svscan sends SIGTERM to every s6-supervise (service down, then exit).
        run(["s6-svscanctl", "-t", os.path.join(inst.dir, "scan")], timeout=30, check=False)


class Floor(Peer):
    """Not a supervisor: the machine's floor for respawn latency. The bench itself waits
    for the child and starts the next one at once (Python's subprocess: vfork + exec)."""

    name = "floor (bare wait+spawn loop)"
    throttle = "none: no supervisor, measures fork/exec/exit on this machine"
    only = {"respawn"}


PEERS = [Holdfast, Supervisord, Runit, Daemontools, S6]


def tail(dirpath, n=400):
    try:
        with open(os.path.join(dirpath, "supervisor.out"), "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return "(no output)"


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, quick, target):
        self.quick, self.target = quick, target
        self.base = tempfile.mkdtemp(prefix="hfbench-")
        self.sleeper = os.path.join(self.base, "bin", "hfbench-sleeper")
        os.makedirs(os.path.dirname(self.sleeper))
        os.symlink(shutil.which("sleep"), self.sleeper)
        self.demo_app = os.path.join(target, "release", "demo-app")
        self.seq = 0

    def size(self, full, quick):
        return quick if self.quick else full

    def workdir(self):
        self.seq += 1
        path = os.path.join(self.base, f"run{self.seq}")
        os.makedirs(path)
        return path

    def sleepers(self, n):
        return [Svc(f"s{i:04d}", [self.sleeper, "1000000"]) for i in range(n)]

    def with_instance(self, peer, svcs, body, extra=None):
        """Starts peer with svcs, runs body(inst), always tears everything down."""
        dirpath = self.workdir()
        inst = None
        try:
            inst = peer.start(dirpath, svcs, extra) if extra else peer.start(dirpath, svcs)
            return body(inst)
        finally:
            if inst is not None:
                inst.kill()
            kill_tagged(dirpath)
            shutil.rmtree(dirpath, ignore_errors=True)

    def wait_sleepers(self, n, deadline_s, inst):
        def enough():
            if inst.proc.poll() is not None:
                raise BenchError(f"{inst.peer.name} exited: {tail(inst.dir)}")
            return count_cmd(self.sleeper) >= n

        wait_for(f"{n} services running", deadline_s, enough)

    def cleanup(self):
        kill_tagged(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------- scenarios


def respawn(bench, peer):
    """Exit -> exec of the replacement, from demo-app's own CLOCK_MONOTONIC stamps."""
    want = bench.size(200, 50)
    budget = bench.size(30.0, 4.0)  # seconds per peer; 1 s-throttled peers get fewer samples
    stamps = os.path.join(bench.base, f"stamps-{peer.name}")
    svc = Svc("flap", [bench.demo_app, "--exit-immediately", "--exit-code", "1",
                       "--timestamp-file", stamps, "--timestamp-exit"])

    def parse():
        try:
            with open(stamps) as f:
                lines = [line.split() for line in f.read().splitlines()]
        except FileNotFoundError:
            return []
        samples, last_exit = [], None
        for fields in lines:
            if len(fields) == 3:
                last_exit = int(fields[0])
            elif len(fields) == 2 and last_exit is not None:
                samples.append(int(fields[0]) - last_exit)
                last_exit = None
        return samples

    def body(inst):
        end = time.monotonic() + budget
        while time.monotonic() < end and len(parse()) < want:
            if inst.proc.poll() is not None:
                raise BenchError(f"{peer.name} exited: {tail(inst.dir)}")
            time.sleep(0.05)
        return parse()[:want]

    if isinstance(peer, Floor):
        end = time.monotonic() + budget
        while time.monotonic() < end and len(parse()) < want:
            subprocess.run(svc.argv, timeout=10, check=False)
        samples = parse()[:want]
    else:
        samples = bench.with_instance(peer, [svc], body)
    if not samples:
        raise BenchError("no restart observed")
    result = stats_ms(samples)
    result["capped"] = len(samples) < want
    return result


def idle(bench, peer):
    """100 idle services; the supervisor's CPU, context switches and RSS over a window."""
    n, window = 100, bench.size(30.0, 5.0)

    def body(inst):
        bench.wait_sleepers(n, 60, inst)
        time.sleep(1.0)  # let start-up work settle before the window opens
        pids = inst.supervisor_pids([bench.sleeper])
        before = cost(pids)
        time.sleep(window)
        after = cost(pids)
        return {
            "processes": len(pids),
            "cpu_ms": after.run_ms - before.run_ms,
            "utime_stime_ms": after.cpu_ms - before.cpu_ms,
            "wakeups_per_s": (after.switches - before.switches) / window,
            "rss_mb": after.rss_mb,
            "pss_mb": after.pss_mb,
            "window_s": window,
        }

    return bench.with_instance(peer, bench.sleepers(n), body)


def scale(bench, peer):
    """N sleeping services: launch -> all exec'd, status latency, RSS, stop -> none left."""
    n = bench.size(1000, 200)

    def status():
        started = mono_ns()
        out = run(peer.status_argv(inst_box[0]), timeout=60, check=False).stdout
        return (mono_ns() - started) / 1e6, out

    inst_box = []

    def body(inst):
        inst_box.append(inst)
        bench.wait_sleepers(n, 120, inst)
        started_s = (mono_ns() - inst.proc.launched_ns) / 1e9
        wait_for("status to report every service running", 60,
                 lambda: peer.count_running(status()[1]) >= n, every=0.2)
        latencies = sorted(status()[0] for _ in range(5))
        use = cost(inst.supervisor_pids([bench.sleeper]))
        stop_at = mono_ns()
        peer.stop_all(inst)
        wait_for("every service stopped", 120, lambda: count_cmd(bench.sleeper) == 0)
        return {
            "services": n,
            "all_running_s": started_s,
            "status_ms": latencies[len(latencies) // 2],
            "rss_mb": use.rss_mb,
            "pss_mb": use.pss_mb,
            "stop_all_s": (mono_ns() - stop_at) / 1e9,
        }

    return bench.with_instance(peer, bench.sleepers(n), body)


HEALTH_SERVER = r"""
import asyncio, sys
async def serve(reader, writer):
    try:
        while await reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    finally:
        writer.close()
async def main():
    for port in sys.argv[1:]:
        await asyncio.start_server(serve, "127.0.0.1", int(port))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def health(bench, peer):
    """N services probed over HTTP every 1 s for a window: CPU of the prober."""
    n, window = bench.size(200, 50), bench.size(30.0, 5.0)
    if isinstance(peer, Supervisord) or isinstance(peer, ScanDir):
        raise Skip(f"n/a: {peer.name} has no health probes (see the curl-loop watcher row)")
    ports = free_ports(n)
    server_dir = bench.workdir()
    server = subprocess.Popen([sys.executable, "-c", HEALTH_SERVER, *map(str, ports)], cwd=server_dir,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        if server.stdout.readline().strip() != b"ready":
            raise BenchError("the health target server did not start")
        return peer_health(bench, peer, ports, window)
    finally:
        server.kill()
        server.wait(timeout=5)
        kill_tagged(server_dir)


def peer_health(bench, peer, ports, window):
    if isinstance(peer, Watcher):
        return peer.run(bench, ports, window)
    svcs = bench.sleepers(len(ports))
    extra = {
        s.name: [f"[service.{s.name}.health]", f'http = "http://127.0.0.1:{port}/health"', 'interval = "1s"']
        for s, port in zip(svcs, ports)
    }
    if not peer.accepts(bench.workdir(), svcs[:1], {svcs[0].name: extra[svcs[0].name]}):
        raise Skip("n/a (health probes not yet merged: `holdfast check` rejects [service.X.health])")

    def body(inst):
        bench.wait_sleepers(len(svcs), 60, inst)
        time.sleep(1.0)
        pids = inst.supervisor_pids([bench.sleeper])
        before = cost(pids)
        time.sleep(window)
        after = cost(pids)
        cpu_ms = after.cpu_ms - before.cpu_ms
        # The probes really ran: holdfast's own count of results and failures per service.
        services = json.loads(run(peer.status_argv(inst)).stdout)["services"]
        healths = [s.get("health") or {} for s in services]
        return {"probes_per_s": len(ports), "cpu_ms": cpu_ms, "cpu_pct": cpu_ms / 10 / window,
                "rss_mb": after.rss_mb, "probes_run": sum(h.get("probes", 0) for h in healths),
                "failed_probes": sum(h.get("failures_unhealthy_window", 0) for h in healths)}

    return bench.with_instance(peer, svcs, body, extra)


class Watcher(Peer):
    """The common baseline where the supervisor has no probes: one shell loop per
    service running curl every second (its CPU: the loops, curl and sleep processes)."""

    name = "curl-loop watcher"
    only = {"health"}

    def missing(self):
        return None if shutil.which("curl") else "curl not installed"

    def run(self, bench, ports, window):
        dirpath = bench.workdir()
        script = os.path.join(dirpath, "watch.sh")
        with open(script, "w") as f:
            f.write(
                "end=$(( $(date +%s) + $1 )); shift\n"
                "for port in \"$@\"; do\n"
                "  ( while [ \"$(date +%s)\" -lt \"$end\" ]; do\n"
                "      curl -fs -m 1 -o /dev/null \"http://127.0.0.1:$port/health\" || echo unhealthy $port\n"
                "      sleep 1\n"
                "    done ) &\n"
                "done\nwait\n"
            )
        started = time.monotonic()
        failures = os.path.join(dirpath, "failures")
        with open(failures, "wb") as out:
            proc = subprocess.Popen(["bash", script, str(int(window)), *map(str, ports)], cwd=dirpath,
                                    start_new_session=True, stdout=out, stderr=subprocess.DEVNULL)
        try:
            # wait4 reports the CPU of the whole tree: every level waits for its children.
            end = time.monotonic() + window + 30
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > end:
                    raise BenchError("the watcher did not finish in time")
                time.sleep(0.05)
            proc.returncode = status
            elapsed = time.monotonic() - started
            cpu = usage.ru_utime + usage.ru_stime
            with open(failures) as f:
                failed = sum(1 for _ in f)
            return {"probes_per_s": len(ports), "cpu_ms": cpu * 1000, "cpu_pct": cpu / elapsed * 100,
                    "rss_mb": None, "failed_probes": failed}
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_tagged(dirpath)


WRITER = r"""
import json, os, signal, sys, time
total, result = int(sys.argv[1]), sys.argv[2]
line = b"hfbench-payload " + b"x" * 83 + b"\n"            # 100 bytes
block = line * 655                                          # 65500 bytes per write()
writes, worst, slow = 0, 0, 0
start = time.monotonic_ns()
written = 0
while written < total:
    t = time.monotonic_ns()
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
    d = time.monotonic_ns() - t
    worst, slow, writes = max(worst, d), slow + (d > 10_000_000), writes + 1
    written += len(block)
os.write(1, b"HFBENCH-END\n")
end = time.monotonic_ns()
with open(result + ".tmp", "w") as f:
    json.dump({"bytes": written, "lines": written // 100, "start_ns": start, "end_ns": end,
               "max_write_ns": worst, "writes_over_10ms": slow, "writes": writes}, f)
os.rename(result + ".tmp", result)
signal.pause()
"""


def logs(bench, peer):
    """A service writes N MB of 100-byte lines as fast as it can, 65500 bytes per write()."""
    total = bench.size(200, 20) * 10**6
    result = os.path.join(bench.base, f"writer-{peer.name}.json")
    writer = os.path.join(bench.base, "writer.py")
    with open(writer, "w") as f:
        f.write(WRITER)
    svc = Svc("writer", [sys.executable, writer, str(total), result], log=True)

    def body(inst):
        logdir, current = peer.log_files(inst, "writer")

        def ended():
            if inst.proc.poll() is not None:
                raise BenchError(f"{peer.name} exited: {tail(inst.dir)}")
            try:
                with open(os.path.join(logdir, current), "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                    return b"HFBENCH-END" in f.read()
            except OSError:
                return False

        wait_for("the writer's last line in the log", bench.size(300, 60), ended, every=0.01)
        logged_ns = mono_ns()
        got = json.load(open(wait_for("the writer's result", 10, lambda: os.path.exists(result) and result)))
        delivered = 0
        for name in os.listdir(logdir):
            with open(os.path.join(logdir, name), "rb") as f:
                while chunk := f.read(1 << 24):
                    delivered += chunk.count(b"hfbench-payload")
        return {
            "mb": got["bytes"] / 1e6,
            "writer_s": (got["end_ns"] - got["start_ns"]) / 1e9,
            "logged_s": (logged_ns - got["start_ns"]) / 1e9,
            "mb_per_s": got["bytes"] / 1e6 / ((logged_ns - got["start_ns"]) / 1e9),
            "max_write_ms": got["max_write_ns"] / 1e6,
            "writes_over_10ms": got["writes_over_10ms"],
            "lines_logged_pct": 100 * delivered / got["lines"],
        }

    return bench.with_instance(peer, [svc], body)


def f1(x):
    return "-" if x is None else f"{x:.1f}"


def f2(x):
    return "-" if x is None else f"{x:.2f}"


# Each scenario: (key, title, function, columns); a column is (header, format(result)).
SCENARIOS = [
    ("respawn", "Respawn latency: demo-app's exit stamp -> its replacement's start stamp "
     "(CLOCK_MONOTONIC, both written by the program)", respawn, [
        ("samples", lambda r: f"{r['n']}" + (" (capped)" if r["capped"] else "")),
        ("p50 ms", lambda r: f2(r["p50_ms"])),
        ("p99 ms", lambda r: f2(r["p99_ms"])),
        ("max ms", lambda r: f2(r["max_ms"])),
    ]),
    ("idle", "Idle cost: 100 sleeping services; supervisor processes only; CPU = on-CPU "
     "time from /proc/PID/task/*/schedstat (utime+stime, 10 ms ticks, in results.json); "
     "wakeups = voluntary+nonvoluntary context switches summed over threads; RSS, PSS summed",
     idle, [
        ("procs", lambda r: str(r["processes"])),
        ("CPU ms/window", lambda r: f2(r["cpu_ms"])),
        ("wakeups/s", lambda r: f2(r["wakeups_per_s"])),
        ("RSS MB", lambda r: f1(r["rss_mb"])),
        ("PSS MB", lambda r: f1(r["pss_mb"])),
    ]),
    ("scale", "Scale: N sleeping services from launching the supervisor to N exec'd "
     "(seen in /proc), status latency (median of 5), RSS, stop-all until none left", scale, [
        ("N", lambda r: str(r["services"])),
        ("all running s", lambda r: f2(r["all_running_s"])),
        ("status ms", lambda r: f1(r["status_ms"])),
        ("RSS MB", lambda r: f1(r["rss_mb"])),
        ("PSS MB", lambda r: f1(r["pss_mb"])),
        ("stop all s", lambda r: f2(r["stop_all_s"])),
    ]),
    ("health", "Health probing: N HTTP checks at 1 s to a local server; CPU of the prober",
     health, [
        ("probes/s", lambda r: str(r["probes_per_s"])),
        ("CPU ms/window", lambda r: f1(r["cpu_ms"])),
        ("CPU %", lambda r: f2(r["cpu_pct"])),
        ("RSS MB", lambda r: f1(r["rss_mb"])),
        ("failed probes", lambda r: str(r.get("failed_probes", "-"))),
    ]),
    ("logs", "Log throughput: one service writes 100-byte lines, 65500 B per write(); "
     "until its last line is in the log file", logs, [
        ("MB", lambda r: f"{r['mb']:.0f}"),
        ("writer s", lambda r: f2(r["writer_s"])),
        ("in log s", lambda r: f2(r["logged_s"])),
        ("MB/s", lambda r: f"{r['mb_per_s']:.0f}"),
        ("max write ms", lambda r: f2(r["max_write_ms"])),
        ("writes>10ms", lambda r: str(r["writes_over_10ms"])),
        ("lines kept %", lambda r: f1(r["lines_logged_pct"])),
    ]),
]


def render(results, peers):
    out = []
    for key, title, _, columns in SCENARIOS:
        if key not in results:
            continue
        out.append(f"\n### {key}: {title}\n")
        headers = ["peer", *[c[0] for c in columns], "note"]
        rows = []
        for peer in peers:
            r = results[key].get(peer.name)
            if r is None:
                continue
            if "error" in r or "skipped" in r:
                reason = f"ERROR: {r['error']}" if "error" in r else r["skipped"]
                rows.append([peer.name, *["-"] * len(columns), reason])
            else:
                note = peer.throttle if key == "respawn" else (peer.logger if key == "logs" else "")
                rows.append([peer.name, *[fmt(r) for _, fmt in columns], note])
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" for _ in headers) + "|")
        out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown cpu")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": model, "nproc": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "load_at_start": os.getloadavg()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, under 2 minutes")
    parser.add_argument("--only", help="comma-separated scenario keys")
    parser.add_argument("--peers", help="comma-separated peer names")
    parser.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    args = parser.parse_args()

    bench = Bench(args.quick, os.path.abspath(args.target))
    peers = [cls(bench) for cls in PEERS] + [Watcher(bench), Floor(bench)]
    if args.peers:
        peers = [p for p in peers if p.name in args.peers.split(",")]
    scenarios = [s for s in SCENARIOS if not args.only or s[0] in args.only.split(",")]
    info = machine()
    print(f"holdfast bench ({'quick' if args.quick else 'full'}): {info['cpu']}, {info['nproc']} cpus, "
          f"{info['mem_gib']} GiB, Linux {info['kernel']}, load {info['load_at_start']}")
    usable = []
    for peer in peers:
        reason = peer.missing()
        if reason:
            print(f"skip {peer.name}: {reason}")
        else:
            usable.append(peer)

    results = {key: {} for key, *_ in scenarios}
    started = time.monotonic()
    try:
        for key, _, fn, _ in scenarios:
            for peer in usable:
                if peer.only is not None and key not in peer.only:
                    continue
                t = time.monotonic()
                try:
                    r = fn(bench, peer)
                    msg = "ok"
                except Skip as skip:
                    r = {"skipped": str(skip)}
                    msg = f"skipped: {skip}"
                except (BenchError, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
                    # A peer failing a scenario is a result; a bug in the bench itself
                    # (any other exception) crashes the run, so scripts/test notices.
                    r = {"error": f"{type(e).__name__}: {e}"}
                    msg = f"FAILED: {r['error']}"
                results[key][peer.name] = r
                print(f"  {key:8} {peer.name:18} {time.monotonic() - t:6.1f} s  {msg}", flush=True)
    finally:
        bench.cleanup()
    info["load_at_end"] = os.getloadavg()
    info["duration_s"] = round(time.monotonic() - started, 1)
    table = render(results, usable)
    print(table)
    print(f"\nload average at start {info['load_at_start']}, at end {info['load_at_end']}; "
          f"{info['duration_s']} s")
    outdir = os.path.join(ROOT, "target", "bench")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"quick": args.quick, "machine": info, "results": results,
                   "throttles": {p.name: p.throttle for p in usable}}, f, indent=2)
    print(f"wrote {os.path.relpath(os.path.join(outdir, 'results.json'), ROOT)}")


if __name__ == "__main__":
    main()
