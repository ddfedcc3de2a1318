#!/usr/bin/env python3
"""holdfast against real peers, side by side in one run (issues 5 and 11).

Runs every scenario in SCENARIOS for holdfast and for every peer found on this machine
(supervisord, runit, daemontools, s6) and a no-supervisor floor, prints one table per
scenario and a table of issue 11's targets with a verdict each, and writes
target/bench/results.json. Standard library only (plus `cc`, the linker Rust already
needs, for the idle service: a C program that pauses); driven by scripts/bench, which
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
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # importing bench_report leaves no scripts/__pycache__
from bench_report import (  # noqa: E402
    FLOOR_NAME, SCALE_VARIANTS, f0, f1, f2, f3, ok, render_proxy, render_restart_cpu, render_scale, table, targets,
    why)

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


def exe_of(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


class ExecCounter:
    """How many processes have exec'd one binary: /proc/PID/exe (the resolved file, so a
    symlinked `run` and a `#!/bin/sh` script that `exec`s it both count once exec'd, never
    before). The same method for every tool and the floor. A pid seen exec'd is not read
    again (services don't exit while counted); polls are spaced at 3x their own cost, so
    the bench takes at most a quarter of a core from what it measures, at the price of a
    resolution of about 4 polls (recorded as poll_ms)."""

    def __init__(self, exe):
        self.exe, self.seen, self.poll_ms = exe, set(), 0.0

    def count(self):
        started = time.monotonic()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in self.seen and exe_of(entry) == self.exe:
                self.seen.add(int(entry))
        self.poll_ms = max(self.poll_ms, (time.monotonic() - started) * 1000)
        return len(self.seen)

    def wait(self, what, n, deadline_s, alive, stall_s=30):
        """Until n have exec'd; alive() raises when the supervisor died. Gives up early
        when none exec'd for stall_s (a supervisor out of fds or at a service limit)."""
        end = time.monotonic() + deadline_s
        progress, last = time.monotonic(), 0
        while True:
            started = time.monotonic()
            seen = self.count()
            if seen >= n:
                return
            alive()
            if seen > last:
                progress, last = started, seen
            if started - progress > stall_s:
                raise BenchError(f"stalled: {seen} of {n} exec'd, none more for {stall_s} s, waiting for {what}")
            if started > end:
                raise BenchError(f"timed out after {deadline_s:.0f} s waiting for {what} ({seen} of {n} exec'd)")
            time.sleep(max(0.01, 3 * (time.monotonic() - started)))


def count_exec(exe):
    return sum(1 for e in os.listdir("/proc") if e.isdigit() and exe_of(e) == exe)


def cpu_ns(pids):
    """pid -> on-CPU ns summed over its threads (schedstat)."""
    out = {}
    for pid in pids:
        try:
            total = 0
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            out[pid] = total
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_delta_ms(before, after):
    """CPU used between two cpu_ns snapshots by the pids alive at both (a transient
    process would count as negative or not at all)."""
    return sum(after[p] - before[p] for p in before if p in after) / 1e6


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
    """One supervised program: argv, whether its output is captured to a log. `link`:
    argv is one executable that every tool runs as it is (the daemontools family: `run`
    is a symlink to it), not wrapped in a generated run script."""

    def __init__(self, name, argv, log=False, link=False):
        self.name, self.argv, self.log, self.link = name, argv, log, link


class Instance:
    """A running supervisor: its root process and how to ask it things."""

    def __init__(self, peer, proc, dirpath, svcs):
        self.peer, self.proc, self.dir, self.svcs = peer, proc, dirpath, svcs

    def supervisor_pids(self, exclude_exes):
        """The processes that make up the supervisor: the root and its descendants,
        minus the services themselves (running one of exclude_exes: the service binaries
        and /bin/sh of a run script)."""
        exclude = set(exclude_exes)
        return [p for p in tree(self.proc.pid) if exe_of(p) not in exclude]

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
            f"childlogdir={dirpath}/childlogs", "nodaemon=true",
            f"minfds={max(4096, 4 * len(svcs) + 64)}", f"minprocs={max(4096, len(svcs) + 64)}",
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
    (`#!/bin/sh` + `exec`, the idiomatic form: one extra sh exec per start; or a symlink
    to the program for a `link` service), an optional `log/run` piped from the service,
    and a scanner that starts one supervisor each."""

    tools = ()
    package = ""
    max_services = None  # a compile-time limit of the scanner, if any

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
            if svc.link:
                os.symlink(svc.argv[0], os.path.join(sdir, "run"))
            else:
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
    max_services = 1000  # MAXSERVICES in runsvdir.c: "runsvdir: warning: ...: too many services"

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
    max_services = 1000  # SERVICES in svscan.c: "svscan: warning: unable to start ...: running too many services"

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
        # the default maximum is 500 services; a service with a logger counts twice
        return ["s6-svscan", "-c", str(max(4096, 2 * len(os.listdir(scandir)) + 64)), scandir]

    def status_argv(self, inst):
        # s6-svstat takes one service directory: one process per service.
        loop = " ".join(sh_quote(d) for d in self.service_dirs(inst))
        return ["sh", "-c", f"for d in {loop}; do s6-svstat \"$d\"; done"]

    def count_running(self, out):
        return sum(1 for line in out.splitlines() if line.startswith("up "))

    def stop_all(self, inst):
        # -t: s6-svscan sends SIGTERM to every s6-supervise (service down, then exit).
        run(["s6-svscanctl", "-t", os.path.join(inst.dir, "scan")], timeout=30, check=False)


FLOOR = r"""
import os, sys
with open(sys.argv[1]) as f:
    commands = [line.rstrip("\n").split("\t") for line in f if line.strip()]
null = os.open("/dev/null", os.O_RDWR)  # close-on-exec: only 0, 1, 2 reach a child
to_null = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
for argv in commands:
    os.posix_spawn(argv[0], argv, os.environ, file_actions=to_null)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


class Floor(Peer):
    """Not a supervisor: the machine's floor. Respawn: the bench itself waits for the
    child and starts the next one at once (Python's subprocess: vfork + exec). Scale: one
    Python process that reads the N commands from a file, `posix_spawn`s each (stdio to
    /dev/null), then only waits; stop-all is SIGTERM to its process group."""

    name = FLOOR_NAME
    throttle = "none: no supervisor, measures fork/exec/exit on this machine"
    only = {"respawn", "scale"}

    def start(self, dirpath, svcs, extra=None):
        script = os.path.join(dirpath, "floor.py")
        with open(script, "w") as f:
            f.write(FLOOR)
        commands = os.path.join(dirpath, "commands")
        with open(commands, "w") as f:
            f.writelines("\t".join(svc.argv) + "\n" for svc in svcs)
        # -S: no site packages to import; the floor's start-up is the interpreter's alone.
        return Instance(self, self.spawn_root([sys.executable, "-S", script, commands], dirpath), dirpath, svcs)

    status_argv = None

    def stop_all(self, inst):
        os.killpg(inst.proc.pid, signal.SIGTERM)


PEERS = [Holdfast, Supervisord, Runit, Daemontools, S6]


def tail(dirpath, n=400):
    try:
        with open(os.path.join(dirpath, "supervisor.out"), "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return "(no output)"


# ---------------------------------------------------------------- the bench


SLEEPER_C = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"


class Bench:
    def __init__(self, quick, target):
        self.quick, self.target = quick, target
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="hfbench-"))
        self.sleeper = os.path.join(self.base, "bin", "hfbench-sleeper")
        os.makedirs(os.path.dirname(self.sleeper))
        self.sleep_argv = self.build_sleeper()
        # The peers' idiom, the same file for every tool in scale's "script" variant.
        self.run_script = os.path.join(self.base, "bin", "hfbench-run")
        write_exec(self.run_script, "exec " + " ".join(sh_quote(a) for a in self.sleep_argv))
        self.sh = os.path.realpath(shutil.which("sh"))
        self.demo_app = os.path.realpath(os.path.join(target, "release", "demo-app"))
        self.seq = 0

    def build_sleeper(self):
        """The idle service of every scenario: its own binary, so /proc/PID/exe tells
        the bench's services from any other process. A C program that pauses forever and
        needs no argument (so a daemontools `run` can be a symlink to it), compiled with
        the C compiler Rust links with; without one, a copy of sleep(1)."""
        src = self.sleeper + ".c"
        with open(src, "w") as f:
            f.write(SLEEPER_C)
        try:
            run(["cc", "-O2", "-o", self.sleeper, src], timeout=60)
            return [self.sleeper]
        except (OSError, subprocess.SubprocessError):
            shutil.copy(shutil.which("sleep"), self.sleeper)
            return [self.sleeper, "1000000"]

    def size(self, full, quick):
        return quick if self.quick else full

    def workdir(self):
        self.seq += 1
        path = os.path.join(self.base, f"run{self.seq}")
        os.makedirs(path)
        return path

    def sleepers(self, n, variant=None):
        """n idle services. variant None: the program itself for holdfast and
        supervisord, a generated run script for the daemontools family (as in issue 5);
        "direct": the program itself for every tool; "script": the same `#!/bin/sh` run
        script that `exec`s it for every tool."""
        if variant is None:
            return [Svc(f"s{i:04d}", self.sleep_argv) for i in range(n)]
        argv = self.sleep_argv if variant == "direct" else [self.run_script]
        return [Svc(f"s{i:04d}", argv, link=True) for i in range(n)]

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
        """Until n sleepers have exec'd; the ExecCounter (its poll_ms is the resolution)."""
        def alive():
            if inst.proc.poll() is not None:
                raise BenchError(f"{inst.peer.name} exited: {tail(inst.dir)}")

        counter = ExecCounter(self.sleeper)
        try:
            counter.wait(f"{n} services running", n, deadline_s, alive)
        except BenchError as e:
            raise BenchError(f"{e}; {inst.peer.name} said: {tail(inst.dir, 200)!r}") from None
        return counter

    def service_exes(self):
        """What a service process runs (excluded from a supervisor's own cost)."""
        return [self.sleeper, self.demo_app, self.sh]

    def cleanup(self):
        kill_tagged(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------- scenarios


def respawn(bench, peer):
    """Exit -> exec of the replacement, from demo-app's own CLOCK_MONOTONIC stamps; and
    the supervisor's CPU per restart (schedstat of its processes, from the first restart
    seen to the last sample, divided by the restarts in between)."""
    want = bench.size(200, 50)
    budget = bench.size(30.0, 2.0)  # seconds per peer; 1 s-throttled peers get fewer samples
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

        def alive():
            if inst.proc.poll() is not None:
                raise BenchError(f"{peer.name} exited: {tail(inst.dir)}")

        while time.monotonic() < end and not parse():
            alive()
            time.sleep(0.01)
        pids = inst.supervisor_pids(bench.service_exes())
        first, before = len(parse()), cpu_ns(pids)
        # The CPU window lasts at least 1-2 s even when the samples come sooner.
        cpu_until = time.monotonic() + bench.size(2.0, 1.0)
        while time.monotonic() < end and (len(parse()) < want or time.monotonic() < cpu_until):
            alive()
            time.sleep(0.05)
        after, last = cpu_ns(pids), len(parse())
        restarts = last - first
        cpu.append(cpu_delta_ms(before, after) * 1000 / restarts if restarts else None)
        return parse()[:want]

    cpu = []

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
    result["cpu_us_per_restart"] = cpu[0] if cpu else None
    return result


def idle(bench, peer):
    """100 idle services; the supervisor's CPU, context switches and RSS over a window."""
    n, window = 100, bench.size(30.0, 2.0)

    def body(inst):
        bench.wait_sleepers(n, 60, inst)
        time.sleep(1.0)  # let start-up work settle before the window opens
        pids = inst.supervisor_pids(bench.service_exes())
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


LARGE_RUN_BUDGET_S = 60  # a peer's run above the detail N, estimated linearly from it


def scale_sizes(bench):
    """(every N, the N with status/RSS/stop-all): the growth curve's points."""
    return ((100, 1000, 5000), 1000) if not bench.quick else ((20, 100), 100)


def scale(bench, peer):
    """N sleeping services, N on a growth curve, two variants: the program exec'd
    directly, and the same `#!/bin/sh` run script exec'ing it for every tool. Launch ->
    all N exec'd (/proc/PID/exe); at the detail N also status latency, RSS and stop-all
    until none is left. Every run is a result of its own (an error or skip too)."""
    sizes, detail = scale_sizes(bench)
    out = {"detail_n": detail, "variants": {}}
    for variant in SCALE_VARIANTS:
        runs = out["variants"][variant] = {}
        for n in sizes:
            reason = scale_skip(bench, peer, variant, n, runs.get(str(detail)))
            if reason:
                runs[str(n)] = {"skipped": reason}
                continue
            t = time.monotonic()
            try:
                runs[str(n)] = scale_run(bench, peer, variant, n, n == detail)
                msg = f"{runs[str(n)]['all_running_s']:.2f} s to all exec'd"
            except (BenchError, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
                runs[str(n)] = {"error": f"{type(e).__name__}: {e}"}
                msg = f"FAILED: {runs[str(n)]['error']}"
            print(f"    scale {peer.name} {variant} N={n}: {msg} ({time.monotonic() - t:.1f} s)", flush=True)
    return out


def scale_skip(bench, peer, variant, n, at_detail):
    """Why a scale run does not take place, or None."""
    if variant == "direct" and isinstance(peer, ScanDir) and len(bench.sleep_argv) > 1:
        return "no C compiler for an argument-less sleeper: `run` cannot be the program itself"
    if isinstance(peer, ScanDir) and peer.max_services and n > peer.max_services:
        return f"n/a: {peer.name}'s scanner is limited to {peer.max_services} services at compile time"
    if isinstance(peer, (Holdfast, Floor)):
        return None
    sizes, detail = scale_sizes(bench)
    if n < detail and bench.quick:
        return f"quick run: peers at N={detail} only"
    if n > detail:
        if not at_detail or "all_running_s" not in at_detail:
            return f"no result at N={detail} to size this run from"
        estimate = at_detail["all_running_s"] * n / detail
        if estimate > LARGE_RUN_BUDGET_S:
            return (f"skipped: {at_detail['all_running_s']:.1f} s at N={detail}, so about {estimate:.0f} s "
                    f"(linearly) at N={n}, over the {LARGE_RUN_BUDGET_S} s budget of one run")
    return None


def start_deadline_s(n):
    """Generous (the targets are seconds), but bounded: a run that misses it is an error
    saying how many had exec'd, and the full run stays within its time."""
    return min(240, 60 + 0.06 * n)


def scale_run(bench, peer, variant, n, detail):
    def body(inst):
        counter = bench.wait_sleepers(n, start_deadline_s(n), inst)
        started_s = (mono_ns() - inst.proc.launched_ns) / 1e9
        result = {"services": n, "all_running_s": started_s, "us_per_service": started_s * 1e6 / n,
                  "poll_ms": counter.poll_ms}
        if detail:
            result.update(scale_detail(bench, peer, inst, n))
        return result

    return bench.with_instance(peer, bench.sleepers(n, variant), body)


def scale_detail(bench, peer, inst, n):
    """status latency (median of 5, once status reports all running), RSS and PSS of
    the supervisor processes, stop-all until no service is left."""
    def status():
        started = mono_ns()
        out = run(peer.status_argv(inst), timeout=60, check=False).stdout
        return (mono_ns() - started) / 1e6, out

    result = {"status_ms": None}
    if peer.status_argv is not None:
        wait_for("status to report every service running", 60,
                 lambda: peer.count_running(status()[1]) >= n, every=0.2)
        latencies = sorted(status()[0] for _ in range(5))
        result["status_ms"] = latencies[len(latencies) // 2]
    use = cost(inst.supervisor_pids(bench.service_exes()))
    stop_at = mono_ns()
    peer.stop_all(inst)
    wait_for("every service stopped", 120, lambda: count_exec(bench.sleeper) == 0, every=0.05)
    result.update({"rss_mb": use.rss_mb, "pss_mb": use.pss_mb, "stop_all_s": (mono_ns() - stop_at) / 1e9})
    return result


def restart_cpu(bench, peer):
    """holdfast's CPU per restart with one crash-looping service (demo-app exiting at
    once, restart_sec=0) among N-1 idle sleepers, at N = 1 and N = 1000: schedstat of the
    daemon over windows after all sleepers run, divided by the starts the crash-looper
    stamped in the same window. Several windows per N: their spread is the noise."""
    ns = (1, bench.size(1000, 100))
    windows, window_s = bench.size(3, 2), bench.size(4.0, 1.5)
    out = {}
    for n in ns:
        stamps = os.path.join(bench.base, f"restart-cpu-{n}")
        flap = Svc("flap", [bench.demo_app, "--exit-immediately", "--timestamp-file", stamps])

        def starts():
            try:
                with open(stamps, "rb") as f:
                    return f.read().count(b"\n")
            except FileNotFoundError:
                return 0

        def body(inst):
            bench.wait_sleepers(n - 1, start_deadline_s(n), inst)
            wait_for("the crash-looper's first start", 20, starts)
            time.sleep(1.0)
            pids = inst.supervisor_pids(bench.service_exes())
            per = []
            for _ in range(windows):
                before, first = cpu_ns(pids), starts()
                time.sleep(window_s)
                after, last = cpu_ns(pids), starts()
                if last > first:
                    per.append({"restarts": last - first, "cpu_ms": cpu_delta_ms(before, after)})
            if not per:
                raise BenchError("the crash-looper did not restart")
            us = sorted(w["cpu_ms"] * 1000 / w["restarts"] for w in per)
            return {"services": n, "windows": per, "window_s": window_s,
                    "restarts_per_s": statistics.median(w["restarts"] for w in per) / window_s,
                    "us_per_restart": statistics.median(us), "us_min": us[0], "us_max": us[-1]}

        out[str(n)] = bench.with_instance(peer, [flap, *bench.sleepers(n - 1)], body)
    return out


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
    n, window = bench.size(200, 50), bench.size(30.0, 3.0)
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

    def healths():
        services = json.loads(run(peer.status_argv(inst_box[0])).stdout)["services"]
        return [s.get("health") or {} for s in services]

    inst_box = []

    def body(inst):
        inst_box.append(inst)
        bench.wait_sleepers(len(svcs), 60, inst)
        time.sleep(1.0)
        pids = inst.supervisor_pids(bench.service_exes())
        # The probes really ran: holdfast's own count of results and failures per service,
        # read just outside the CPU window (a status costs the daemon little next to it).
        probes_before = sum(h.get("probes", 0) for h in healths())
        before, ticks_before = cpu_ns(pids), cost(pids)
        time.sleep(window)
        after, ticks_after = cpu_ns(pids), cost(pids)
        cpu_ms = cpu_delta_ms(before, after)
        final = healths()
        probes = sum(h.get("probes", 0) for h in final) - probes_before
        if probes <= 0:  # a build that does not count its probes: the configured rate
            probes = len(ports) * window
        return {"probes_per_s": len(ports), "cpu_ms": cpu_ms, "cpu_pct": cpu_ms / 10 / window,
                "utime_stime_ms": ticks_after.cpu_ms - ticks_before.cpu_ms,
                "rss_mb": ticks_after.rss_mb, "probes_in_window": probes,
                "cpu_ms_per_probe": cpu_ms / probes, "probes_per_core_s": probes / cpu_ms * 1000 if cpu_ms else None,
                "failed_probes": sum(h.get("failures_unhealthy_window", 0) for h in final)}

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
            probes = len(ports) * window
            return {"probes_per_s": len(ports), "cpu_ms": cpu * 1000, "cpu_pct": cpu / elapsed * 100,
                    "rss_mb": None, "probes_in_window": probes, "cpu_ms_per_probe": cpu * 1000 / probes,
                    "probes_per_core_s": probes / cpu if cpu else None, "failed_probes": failed}
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


WRK_LINE = {"Requests/sec:": "rps"}


def wrk(url, seconds, connections, close):
    """One wrk run (2 threads); requests/s, p99 latency and every failed request
    (socket errors and non-2xx answers)."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = run(argv, timeout=seconds + 60).stdout
    r = {"requests": 0, "failed": 0}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Requests/sec:":
            r["rps"] = float(words[1])
        elif words[0] == "99%":
            r["p99_ms"] = wrk_ms(words[1])
        elif "requests in" in line:
            r["requests"] = int(words[0])
        elif words[0] == "Socket":  # Socket errors: connect 0, read 0, write 0, timeout 0
            r["failed"] += sum(int(w.strip(",")) for w in words[3::2])
        elif line.startswith("  Non-2xx"):
            r["failed"] += int(words[-1])
    if "rps" not in r:
        raise BenchError(f"wrk printed no rate: {out[-300:]!r}")
    return r


def wrk_ms(text):
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"wrk latency {text!r}")


def proxy(bench, peer):
    """Proxy mode's cost: wrk against demo-app's private port directly and through
    holdfast's HTTP proxy (same run, same window length), keep-alive and a new
    connection per request."""
    if shutil.which("wrk") is None:
        raise Skip("wrk is not installed")
    seconds, conns = bench.size(10, 3), 50
    public = free_ports(1)[0]
    svc = Svc("web", [bench.demo_app, "--listen", "127.0.0.1:{port}"])
    extra = {"web": [f'listen = ["tcp://127.0.0.1:{public}"]', 'ready = { tcp = "127.0.0.1:{port}" }',
                     "[service.web.upgrade]", 'mode = "proxy"', 'proxy = "http"']}
    if not peer.accepts(bench.workdir(), [svc], extra):
        raise Skip("n/a (proxy mode not merged: `holdfast check` rejects [service.X.upgrade])")

    def body(inst):
        def pid():
            # `status` exits 3 while a service is not running yet.
            services = json.loads(run(peer.status_argv(inst), check=False).stdout or "{}").get("services", [])
            return next((s.get("pid") for s in services if s["state"] == "running"), None)

        run_pid = wait_for("web running", 20, pid)
        with open(f"/proc/{run_pid}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
        private = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
        # The proxy listens from the run's spawn on: no wait for it.
        out = {}
        for variant, close in (("keepalive", False), ("new_conn", True)):
            for path, port in (("direct", private), ("proxy", public)):
                out[f"{variant}_{path}"] = wrk(f"http://127.0.0.1:{port}/", seconds, conns, close)
        out["seconds"], out["connections"] = seconds, conns
        return out

    return bench.with_instance(peer, [svc], body, extra)


# Each scenario: (key, title, function, columns); a column is (header, format(result)),
# or columns is a function (results by peer name, peers) -> lines of its own tables.
SCENARIOS = [
    ("respawn", "Respawn latency: demo-app's exit stamp -> its replacement's start stamp "
     "(CLOCK_MONOTONIC, both written by the program); supervisor CPU per restart (schedstat "
     "of the supervisor processes over the sampling / restarts in it)", respawn, [
        ("samples", lambda r: f"{r['n']}" + (" (capped)" if r["capped"] else "")),
        ("p50 ms", lambda r: f2(r["p50_ms"])),
        ("p99 ms", lambda r: f2(r["p99_ms"])),
        ("max ms", lambda r: f2(r["max_ms"])),
        ("CPU µs/restart", lambda r: f1(r.get("cpu_us_per_restart"))),
    ]),
    ("restart_cpu", "Restart cost in the core: holdfast's CPU per restart of one crash-looping "
     "service among N-1 idle ones (schedstat of the daemon / starts stamped, per window)",
     restart_cpu, render_restart_cpu),
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
     "(/proc/PID/exe), two variants, a growth curve over N", scale, render_scale),
    ("health", "Health probing: N HTTP checks at 1 s to a local server; CPU of the prober "
     "(holdfast: schedstat of the daemon; watcher: wait4 of the loops), per probe and as "
     "probes per second one core could run", health, [
        ("probes/s", lambda r: str(r["probes_per_s"])),
        ("CPU ms/window", lambda r: f1(r["cpu_ms"])),
        ("CPU %", lambda r: f2(r["cpu_pct"])),
        ("CPU ms/probe", lambda r: f3(r.get("cpu_ms_per_probe"))),
        ("probes/s per core", lambda r: f0(r.get("probes_per_core_s"))),
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
    ("proxy", "Proxy mode's cost: wrk (2 threads, 50 connections) against demo-app's private "
     "port directly and through holdfast's HTTP proxy, same run; keep-alive and a new "
     "connection per request (`Connection: close`)", proxy, render_proxy),
]
import bench_upgrade  # noqa: E402

bench_upgrade.setup(sys.modules[__name__])
SCENARIOS.append(("upgrade", "Zero-downtime upgrade under HTTP load: each way of keeping the "
                  "port open, next to a naive stop/start restart", bench_upgrade.upgrade,
                  bench_upgrade.render_upgrade))
# Scenarios only some tools take part in (others have nothing to measure there).
SCENARIO_PEERS = {"restart_cpu": {"holdfast"}, "proxy": {"holdfast"}, "upgrade": {"holdfast"}}


def render(results, peers):
    out = []
    for key, title, _, columns in SCENARIOS:
        if key not in results:
            continue
        out.append(f"\n### {key}: {title}\n")
        if callable(columns):
            out += columns(results[key], peers)
            continue
        rows = []
        for peer in peers:
            r = results[key].get(peer.name)
            if r is None:
                continue
            if not ok(r):
                rows.append([peer.name, *["-"] * len(columns), why(r)])
            else:
                note = peer.throttle if key == "respawn" else (peer.logger if key == "logs" else "")
                rows.append([peer.name, *[fmt(r) for _, fmt in columns], note])
        out += table(["peer", *[c[0] for c in columns], "note"], rows)
    out += ["", "### targets: issue 11, computed from this run", ""]
    out += table(["target", "this run", "holds?"], targets(results))
    return "\n".join(out)


def raise_nofile_hard():
    """Raises the hard RLIMIT_NOFILE every supervisor inherits to fs.nr_open (root only;
    soft limit unchanged): a supervisor holding a few fds per service (holdfast today:
    5, supervisord: its minfds) cannot run 5000 services under a hard limit of 20000,
    and that environment limit is not what the scale run measures. Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
        if hard != resource.RLIM_INFINITY and hard < ceiling:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, ceiling))
    except (OSError, ValueError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown cpu")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": model, "nproc": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "load_at_start": os.getloadavg(), "nofile": raise_nofile_hard()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, under 2 minutes")
    parser.add_argument("--only", help="comma-separated scenario keys: " + ",".join(k for k, *_ in SCENARIOS))
    parser.add_argument("--peers", help="comma-separated peer names, e.g. 'holdfast,floor (no supervisor)'")
    parser.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    args = parser.parse_args()

    # Killed or interrupted (even as a background job, where SIGINT starts ignored), the
    # run still ends through its `finally`: everything it started is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench = Bench(args.quick, os.path.abspath(args.target))
    peers = [cls(bench) for cls in PEERS] + [Watcher(bench), Floor(bench)]
    if args.peers:
        peers = [p for p in peers if p.name in args.peers.split(",")]
    scenarios = [s for s in SCENARIOS if not args.only or s[0] in args.only.split(",")]
    info = machine()
    print(f"holdfast bench ({'quick' if args.quick else 'full'}): {info['cpu']}, {info['nproc']} cpus, "
          f"{info['mem_gib']} GiB, Linux {info['kernel']}, load {info['load_at_start']}, "
          f"RLIMIT_NOFILE soft/hard {info['nofile'][0]}/{info['nofile'][1]}")
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
                if key in SCENARIO_PEERS and peer.name not in SCENARIO_PEERS[key]:
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
    # Written before the tables: a run's results outlive a bug in rendering them.
    outdir = os.path.join(ROOT, "target", "bench")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"quick": args.quick, "machine": info, "results": results,
                   "throttles": {p.name: p.throttle for p in usable}}, f, indent=2)
    print(render(results, usable))
    print(f"\nload average at start {info['load_at_start']}, at end {info['load_at_end']}; "
          f"{info['duration_s']} s")
    print(f"wrote {os.path.relpath(os.path.join(outdir, 'results.json'), ROOT)}")


if __name__ == "__main__":
    main()
