"""scripts/bench.py's tables: formatting, the scale and restart-cost tables, and issue
11's targets computed from a run's results (a verdict each, with the numbers)."""

FLOOR_NAME = "floor (no supervisor)"
PEER_NAMES = ("supervisord", "runit", "daemontools", "s6")
SCALE_VARIANTS = ("direct", "script")


def f1(x):
    return "-" if x is None else f"{x:.1f}"


def f2(x):
    return "-" if x is None else f"{x:.2f}"


def f3(x):
    return "-" if x is None else f"{x:.3f}"


def f0(x):
    return "-" if x is None else f"{x:.0f}"


def table(headers, rows):
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|",
            *["| " + " | ".join(row) + " |" for row in rows]]


def ok(r):
    """A result that holds numbers: not missing, failed or skipped."""
    return isinstance(r, dict) and bool(r) and "error" not in r and "skipped" not in r


def why(r, limit=160):
    """A failed or skipped run's reason, cut for a table cell (whole in results.json)."""
    text = f"ERROR: {r['error']}" if "error" in r else r["skipped"]
    return text if len(text) <= limit else text[:limit] + "..."


def render_scale(by_peer, peers):
    """The growth curve (every N, both variants) and the detail N's table."""
    shown = [(p, by_peer[p.name]) for p in peers if p.name in by_peer]
    first = next((r for _, r in shown if ok(r)), None)
    if first is None:
        return table(["peer", "note"], [[p.name, why(r)] for p, r in shown])
    sizes = sorted({int(n) for r in shown if ok(r[1]) for v in r[1]["variants"].values() for n in v})
    detail = first["detail_n"]
    floor = by_peer.get(FLOOR_NAME)
    out = [f"Growth: seconds from launch to all N exec'd, and that time per service (µs); "
           f"variant direct = the program itself, script = `#!/bin/sh` + `exec` of it", ""]
    rows = []
    for peer, r in shown:
        if not ok(r):
            rows.append([peer.name, "-", *["-"] * (2 * len(sizes)), why(r)])
            continue
        for variant, runs in r["variants"].items():
            cells, notes = [], []
            for n in sizes:
                run_ = runs.get(str(n), {"skipped": "not run"})
                if ok(run_):
                    cells += [f2(run_["all_running_s"]), f0(run_["us_per_service"])]
                else:
                    cells += ["-", "-"]
                    notes.append(f"N={n}: {why(run_)}")
            rows.append([peer.name, variant, *cells, "; ".join(notes)])
    headers = ["peer", "variant"]
    for n in sizes:
        headers += [f"N={n} s", "µs/svc"]
    out += table([*headers, "note"], rows)
    out += ["", f"N = {detail}: all exec'd, x the floor's time (same variant), `status` latency (median of 5), "
            "RSS/PSS of the supervisor processes, stop-all until no service is left", ""]
    rows = []
    for peer, r in shown:
        if not ok(r):
            continue
        for variant, runs in r["variants"].items():
            d = runs.get(str(detail), {})
            if not ok(d):
                continue
            base = floor["variants"][variant].get(str(detail), {}) if ok(floor) else {}
            x = d["all_running_s"] / base["all_running_s"] if ok(base) else None
            rows.append([peer.name, variant, f2(d["all_running_s"]), "-" if x is None else f"{x:.2f}x",
                         f1(d["status_ms"]), f1(d["rss_mb"]), f1(d["pss_mb"]), f2(d["stop_all_s"])])
    out += table(["peer", "variant", "all running s", "x floor", "status ms", "RSS MB", "PSS MB", "stop all s"], rows)
    return out


def render_proxy(by_peer, peers):
    """Direct and proxied side by side, per connection mode."""
    r = by_peer.get("holdfast")
    if r is None:
        return []
    if not ok(r):
        return [f"holdfast: {why(r)}"]
    rows = []
    for variant, label in (("keepalive", "keep-alive"), ("new_conn", "new connection")):
        direct, proxied = r[f"{variant}_direct"], r[f"{variant}_proxy"]
        for path, x in (("direct", direct), ("through holdfast", proxied)):
            rows.append([label, path, f0(x["rps"]), f2(x.get("p99_ms")), str(x["requests"]), str(x["failed"])])
        rows.append([label, "proxy / direct", f"{proxied['rps'] / direct['rps']:.2f}x",
                     f"{proxied['p99_ms'] / direct['p99_ms']:.2f}x" if direct.get("p99_ms") else "-", "", ""])
    return table(["connections", "path", "requests/s", "p99 ms", "requests", "failed"], rows)


def render_restart_cpu(by_peer, peers):
    out = []
    for peer in peers:
        r = by_peer.get(peer.name)
        if r is None:
            continue
        if not ok(r):
            out += table(["peer", "note"], [[peer.name, why(r)]])
            continue
        one = r.get("1", {}).get("us_per_restart")
        rows = [[peer.name, n, f0(x["restarts_per_s"]), f1(x["us_per_restart"]),
                 f"{x['us_min']:.1f}-{x['us_max']:.1f}",
                 f"{x['us_per_restart'] / one:.2f}x" if one else "-"]
                for n, x in r.items()]
        out += table(["peer", "N", "restarts/s", "CPU µs/restart (median)", "windows min-max", "vs N=1"], rows)
    return out


# ---------------------------------------------------------------- issue 11's targets

NOISE = 1.25  # "the same" / "not growing": within 25%, the spread seen between runs on a shared VM


def dig(results, *path):
    """results[a][b]... or None when any step is missing or a run failed."""
    r = results
    for step in path:
        if not isinstance(r, dict) or step not in r or not ok(r):
            return None
        r = r[step]
    return r


def verdict(holds):
    return "not measured" if holds is None else ("yes" if holds else "**no**")


def targets(results):
    """[target, this run, verdict] for each of issue 11's targets."""
    rows = []
    scale_ = results.get("scale", {})
    hf = scale_.get("holdfast")
    detail = hf.get("detail_n") if ok(hf) else None
    for variant in SCALE_VARIANTS:
        rows.append(target_start(scale_, variant, detail))
    for variant in SCALE_VARIANTS:
        rows.append(target_growth(scale_, variant))
    rows.append(target_restart_cpu(results.get("restart_cpu", {}).get("holdfast")))
    status = [dig(scale_, "holdfast", "variants", v, str(detail), "status_ms") for v in SCALE_VARIANTS]
    status = [x for x in status if x is not None]
    rows.append([f"`status --json` of {detail or 1000} services < 5 ms",
                 f"{max(status):.1f} ms (the slower variant)" if status else "-",
                 verdict(max(status) < 5 if status else None)])
    rss = dig(results, "idle", "holdfast", "rss_mb")
    rows.append(["RSS < 8 MB with 100 services (idle)", f"{rss:.1f} MB" if rss is not None else "-",
                 verdict(None if rss is None else rss < 8)])
    probe = dig(results, "health", "holdfast", "cpu_ms_per_probe")
    per_core = dig(results, "health", "holdfast", "probes_per_core_s")
    rows.append(["HTTP probe <= 0.1 ms holdfast CPU",
                 f"{probe:.3f} ms/probe ({per_core:.0f} probes/s per core)" if probe is not None else "-",
                 verdict(None if probe is None else probe <= 0.1)])
    rows.append(target_logs(results.get("logs", {})))
    rows.append(target_respawn(results.get("respawn", {})))
    return rows


def target_start(scale_, variant, detail):
    def at(name):
        return dig(scale_, name, "variants", variant, str(detail), "all_running_s")

    what = f"{detail or 1000} services ({variant}) <= 1.25x floor and >= 1.5x faster than the fastest peer"
    hf, floor = at("holdfast"), at(FLOOR_NAME)
    peers = [(at(n), n) for n in PEER_NAMES if at(n) is not None]
    if hf is None or floor is None:
        return [what, "-", verdict(None)]
    text = f"holdfast {hf:.2f} s, floor {floor:.2f} s ({hf / floor:.2f}x)"
    holds = hf <= 1.25 * floor
    if peers:
        best, name = min(peers)
        text += f"; fastest peer {name} {best:.2f} s (holdfast {best / hf:.2f}x faster)"
        holds = holds and best >= 1.5 * hf
    else:
        text += "; no peer result"
    return [what, text, verdict(holds)]


def target_growth(scale_, variant):
    def curve(name):
        runs = dig(scale_, name, "variants", variant) or {}
        return sorted((int(n), r["us_per_service"]) for n, r in runs.items() if ok(r))

    def growth(points):
        """The largest rise of the time per service from a smaller N to a larger one."""
        return max((b[1] / a[1] for i, a in enumerate(points) for b in points[i + 1:]), default=None)

    what = f"time per service does not grow with N ({variant}; larger N <= {NOISE}x any smaller N)"
    hf = curve("holdfast")
    failed = sorted(int(n) for n, r in (dig(scale_, "holdfast", "variants", variant) or {}).items() if "error" in r)
    if len(hf) < 2 and not failed:
        return [what, "-", verdict(None)]
    text = ", ".join([f"N={n}: {us:.0f} µs" for n, us in hf] + [f"N={n}: failed" for n in failed])
    floor = curve(FLOOR_NAME)
    if len(hf) >= 2:
        text += f" (growth {growth(hf):.2f}x" + (f"; floor {growth(floor):.2f}x)" if len(floor) >= 2 else ")")
    return [what, text, verdict(not failed and growth(hf) <= NOISE)]


def target_restart_cpu(r):
    what = f"CPU per restart at N=1000 = at N=1 (within {NOISE}x; the windows' spread is the noise)"
    if not ok(r) or len(r) < 2:
        return [what, "-", verdict(None)]
    (n1, one), (nbig, big) = sorted(r.items(), key=lambda kv: int(kv[0]))[:2]
    ratio = big["us_per_restart"] / one["us_per_restart"]
    text = (f"N={n1}: {one['us_per_restart']:.1f} µs ({one['us_min']:.1f}-{one['us_max']:.1f}), "
            f"N={nbig}: {big['us_per_restart']:.1f} µs ({big['us_min']:.1f}-{big['us_max']:.1f}): {ratio:.2f}x")
    return [what.replace("1000", nbig), text, verdict(ratio <= NOISE)]


def target_logs(logs_):
    what = "log MB/s >= supervisord's, every line time-stamped, writer blocked <= 2 ms"
    hf, sd = logs_.get("holdfast"), logs_.get("supervisord")
    if not ok(hf):
        return [what, "-", verdict(None)]
    text = f"holdfast {hf['mb_per_s']:.0f} MB/s, max write {hf['max_write_ms']:.2f} ms"
    holds = hf["max_write_ms"] <= 2
    if ok(sd):
        text += f"; supervisord {sd['mb_per_s']:.0f} MB/s"
        holds = holds and hf["mb_per_s"] >= sd["mb_per_s"]
    else:
        text += "; no supervisord result"
        holds = None
    return [what, text, verdict(holds)]


def target_respawn(respawn_):
    what = "respawn p50 <= 1.5x the floor's, p99 < 5 ms"
    hf, floor = respawn_.get("holdfast"), respawn_.get(FLOOR_NAME)
    if not ok(hf) or not ok(floor):
        return [what, "-", verdict(None)]
    text = (f"p50 {hf['p50_ms']:.2f} ms (floor {floor['p50_ms']:.2f} ms: {hf['p50_ms'] / floor['p50_ms']:.2f}x), "
            f"p99 {hf['p99_ms']:.2f} ms")
    return [what, text, verdict(hf["p50_ms"] <= 1.5 * floor["p50_ms"] and hf["p99_ms"] < 5)]
