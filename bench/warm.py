#!/usr/bin/env python3
"""Warm-interpreter helpers for bench/run.sh (issue 11). Standard library only.

  warm.py ready BASE FUNCTION PATH SECONDS
      GET BASE+PATH once (the first request of a function version is cold and starts its
      zygote), then poll BASE/_/functions until FUNCTION's zygote.state is "ready", at most
      SECONDS. Prints the zygote's entry as JSON; exit 1 (with the last state) on timeout.
  warm.py zygote BASE FUNCTION
      The zygote's entry from /_/functions plus its own /proc/PID/smaps_rollup, as JSON.
  warm.py hold URL PARENT N MARKER_DIR [--nonzero-uid]
      Memory per concurrent request: sends N requests to URL at once (a handler that waits
      for MARKER_DIR/release), waits until PARENT has N child processes (with a uid other than
      0 if --nonzero-uid: a sandbox past its setresuid, so not a zygote; not a spare, which
      is reported apart) whose RSS has stopped changing, reads each child's /proc/PID/smaps_rollup, then creates the marker and waits
      for the N answers. Prints JSON: per-request mean Rss, Pss and USS (Private_Clean +
      Private_Dirty, what the request alone holds) in kB, PARENT's own numbers before and
      while they are held, and the answers' statuses.

  warm.py steps LOG FUNCTION
      Where a warm request's set-up goes, from a daemon's log whose zygote ran as
      bench/zygote_timed.py: its ZT lines joined to the REPORT lines by invocation id. Prints
      JSON: per phase (daemon, zygote before the fork, clone3, the after-fork hooks, each child
      step) p10/p50/p90 in µs and the page faults in it. A request whose REPORT set-up is
      shorter than its child's own set-up took a spare (made ahead): those are counted apart
      and left out of the phases, whose daemon share is only known for forked requests.
  warm.py cow
      What one copy-on-write page fault costs here: a child of a process with 64 MB written
      writes one byte to each of 2,000 of its pages (median of 30 children, ns per page).

All on 127.0.0.1; every wait has a deadline.
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def get(base, path, timeout=30):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def zygote_entry(base, function):
    status, body = get(base, "/_/functions")
    if status != 200:
        raise SystemExit(f"warm.py: /_/functions answered {status}: {body[:200]!r}")
    for f in json.loads(body).get("functions", []):
        if f.get("name") == function:
            return f.get("zygote") or {}
    raise SystemExit(f"warm.py: no function {function!r} in /_/functions")


def rollup(pid):
    """smaps_rollup in kB (Rss, Pss, Private_Clean, Private_Dirty, Shared_*), or None if gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return None
    out["USS"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def children(parent, nonzero_uid, spares=None):
    """Pids whose parent is PARENT (a scan of /proc: no CONFIG_PROC_CHILDREN needed). A spare
    (a sandbox a zygote made ahead, named faas-spare while it waits) goes to SPARES instead."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except (OSError, ValueError):
            continue
        if st.get("PPid", "").strip() != str(parent):
            continue
        if nonzero_uid and st.get("Uid", "0").split()[0] == "0":
            continue
        if st.get("Name", "").strip() == "faas-spare":
            if spares is not None:
                spares.append(int(name))
            continue
        out.append(int(name))
    return sorted(out)


def ready(base, function, path, seconds):
    status, body = get(base, path)
    if status != 200:
        raise SystemExit(f"warm.py: GET {path} answered {status}: {body[:200]!r}")
    deadline = time.monotonic() + seconds
    z = {}
    while time.monotonic() < deadline:
        z = zygote_entry(base, function)
        if z.get("state") == "ready":
            print(json.dumps(z))
            return 0
        time.sleep(0.1)
    print(f"warm.py: {function}'s zygote not ready after {seconds}s: {json.dumps(z)}", file=sys.stderr)
    return 1


def zygote(base, function):
    z = zygote_entry(base, function)
    if z.get("pid"):
        z["smaps_rollup_kb"] = rollup(z["pid"])
    print(json.dumps(z))
    return 0


def hold(url, parent, n, marker_dir, nonzero_uid):
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    base = f"{u.scheme}://{u.netloc}"
    release = os.path.join(marker_dir, "release")
    if os.path.exists(release):
        os.unlink(release)
    statuses = [None] * n

    def one(i):
        try:
            statuses[i] = get(base, path, timeout=40)[0]
        except OSError as e:
            statuses[i] = f"{type(e).__name__}"

    parent_before = rollup(parent)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    out = {"n": n, "url": url, "method": "smaps_rollup of each request process while all are held"}
    try:
        deadline = time.monotonic() + 15
        pids, last = [], None
        while time.monotonic() < deadline:
            pids = children(parent, nonzero_uid)
            if len(pids) >= n:
                now = [(rollup(p) or {}).get("Rss") for p in pids]
                if now == last:
                    break
                last = now
            time.sleep(0.2)
        else:
            out["error"] = f"{len(pids)} of {n} request processes seen (or their RSS kept changing) within 15 s"
        spares = []
        children(parent, nonzero_uid, spares)
        out["spares"] = [rollup(p) for p in spares]
        held = {p: rollup(p) for p in pids}
        held = {p: r for p, r in held.items() if r}
        out["processes"] = len(held)
        if held:
            for k in ("Rss", "Pss", "USS", "Shared_Clean", "Shared_Dirty"):
                out[f"{k.lower()}_kb_per_request"] = sum(r.get(k, 0) for r in held.values()) / len(held)
        out["parent_before_kb"] = parent_before
        out["parent_held_kb"] = rollup(parent)
    finally:
        with open(release, "w"):
            pass
        for t in threads:
            t.join(45)
        os.unlink(release)
    out["statuses"] = statuses
    print(json.dumps(out))
    return 0 if all(s == 200 for s in statuses) and "error" not in out else 1


def percentiles(values):
    v = sorted(values)
    if not v:
        return None
    return {"n": len(v), "p10": v[len(v) // 10], "p50": v[len(v) // 2], "p90": v[min(len(v) - 1, len(v) * 9 // 10)]}


def steps(log, function):
    import re

    report = re.compile(r"<\d>REPORT (\S+) (\S+) .* setup=(\d+)us start=(\w+)")
    zt = re.compile(r"<\d>(\S+)\[(\S+)\]: (Z[TH]) (.*)")
    setups, lines, after = {}, {}, {}
    with open(log, errors="replace") as f:
        for line in f:
            m = report.match(line)
            if m and m.group(1) == function and m.group(4) == "warm":
                setups[m.group(2)] = int(m.group(3))
                continue
            m = zt.match(line)
            if m and m.group(1) == function:
                kv = {}
                for part in m.group(4).split():
                    k, _, v = part.partition("=")
                    kv[k] = v
                (lines if m.group(3) == "ZT" else after)[m.group(2)] = kv
    phases, spare, forked, spare_setups = {}, 0, 0, []
    order = []

    def add(name, us, faults=None):
        if name not in phases:
            phases[name] = {"us": [], "faults": []}
            order.append(name)
        phases[name]["us"].append(us)
        if faults is not None:
            phases[name]["faults"].append(faults)

    for iid, kv in lines.items():
        if iid not in setups or not all(k in kv for k in ("recv", "clone", "c0", "c1", "start", "exec")):
            continue
        t = {k: int(kv[k]) for k in ("recv", "clone", "c0", "c1", "start", "exec")}
        f = {k: int(kv.get(f"f{k}", 0)) for k in ("c0", "c1", "start", "exec")}
        span = (t["exec"] - t["recv"]) / 1e3
        setup = setups[iid]
        if setup < span:
            spare += 1
            spare_setups.append(setup)
            continue
        forked += 1
        add("Server-Timing setup (whole)", setup)
        add("daemon: setup minus the zygote's span", setup - span)
        add("zygote: message in, to clone3", (t["clone"] - t["recv"]) / 1e3)
        add("clone3 and the native steps (Stdio … Rlimit)", (t["c0"] - t["clone"]) / 1e3, f["c0"])
        add("at-fork hooks (PyOS_AfterFork_Child before 2026-12-01)", (t["c1"] - t["c0"]) / 1e3, f["c1"] - f["c0"])
        add("child(): entry", (t["start"] - t["c1"]) / 1e3, f["start"] - f["c1"])
        prev_t, prev_f = t["start"], f["start"]
        for k, v in kv.items():
            if k in ("recv", "clone", "c0", "c1", "start", "exec") or k.startswith("f") and k[1:] in ("c0", "c1", "start", "exec"):
                continue
            ns, _, faults = v.partition("/")
            ns, faults = int(ns), int(faults or 0)
            add(f"step {k}", (ns - prev_t) / 1e3, faults - prev_f)
            prev_t, prev_f = ns, faults
        add("after the last step, until the error pipe closes", (t["exec"] - prev_t) / 1e3, f["exec"] - prev_f)
        add("page faults, clone3 to exec (count)", f["exec"])
    # After the set-up: python.py's load() (import the handler; a spare does it before it
    # waits) and serve() (run it, answer), and before them, for a spare, its request's
    # environment coming in.
    rest = {"spare": {}, "forked": {}}
    for iid, kv in after.items():
        if iid not in setups or not all(k in kv for k in ("exec", "recv", "serve", "end")):
            continue
        t = {k: int(v) for k, v in kv.items() if not k.startswith("f")}
        f = {k[1:]: int(v) for k, v in kv.items() if k.startswith("f")}
        kind = "spare" if t["recv"] > t["exec"] else "forked"
        if kind == "spare":
            points = [("its request's environment in", "recv"), ("serve()", "serve"), ("answered", "end")]
        else:
            points = [("exec", "exec"), ("load()", "load"), ("loaded", "loaded"), ("serve()", "serve"), ("answered", "end")]
        points = [(label, k) for label, k in points if k in t]
        d = rest[kind]
        for (la, ka), (lb, kb) in zip(points, points[1:]):
            name = f"{la} → {lb}"
            d.setdefault(name, {"us": [], "faults": []})
            d[name]["us"].append((t[kb] - t[ka]) / 1e3)
            if ka in f and kb in f:
                d[name]["faults"].append(f[kb] - f[ka])
    out = {"function": function, "forked": forked, "spare": spare, "spare_setup_us": percentiles(spare_setups), "phases": [],
           "after_exec": {kind: [{"phase": name, "us": percentiles(v["us"]), "faults_p50": (percentiles(v["faults"]) or {}).get("p50")} for name, v in d.items()] for kind, d in rest.items()}}
    for name in order:
        d = phases[name]
        row = {"phase": name, "us": percentiles(d["us"])}
        if d["faults"]:
            row["faults_p50"] = percentiles(d["faults"])["p50"]
        out["phases"].append(row)
    print(json.dumps(out))
    return 0 if forked else 1


def cow():
    import statistics

    buf = bytearray(64 << 20)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    pages, per_page = 2000, []
    for _ in range(30):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            t = time.monotonic_ns()
            for i in range(0, pages * 4096, 4096):
                buf[i] = 2
            os.write(w, str((time.monotonic_ns() - t) / pages).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        per_page.append(float(os.read(r, 64)))
        os.close(r)
        os.close(w)
    print(json.dumps({"ns_per_fault_p50": statistics.median(per_page), "ns_per_fault_min": min(per_page), "children": len(per_page)}))
    return 0


def main():
    a = sys.argv[1:]
    if a[:1] == ["ready"] and len(a) == 5:
        return ready(a[1], a[2], a[3], float(a[4]))
    if a[:1] == ["zygote"] and len(a) == 3:
        return zygote(a[1], a[2])
    if a[:1] == ["steps"] and len(a) == 3:
        return steps(a[1], a[2])
    if a[:1] == ["cow"] and len(a) == 1:
        return cow()
    if a[:1] == ["hold"] and len(a) in (5, 6):
        return hold(a[1], int(a[2]), int(a[3]), a[4], a[5:] == ["--nonzero-uid"])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
