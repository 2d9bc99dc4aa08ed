#!/usr/bin/env python3
"""Sums a `perf trace` event log of a faas daemon and its sandbox children by syscall.

usage: trace.py TRACE_FILE DAEMON_TIDS REQUESTS SEQ_JSON OUT_JSON
       trace.py --spans TRACE_FILE OUT_JSON   (a log of `perf trace -e clone3,execve`)
  TRACE_FILE   `perf trace -o` output (one line per syscall, with durations)
  DAEMON_TIDS  file with the daemon's own thread ids, one per line
  REQUESTS     how many requests the traced window held
  SEQ_JSON     timing.py's output for the same requests (for setup p50 under tracing)
Rows: who = daemon | sandbox (child before exec, execve included) | handler (after exec).
Standard library only.
"""

import json
import re
import sys
from collections import defaultdict

# Calls that wait for work rather than do it: not a cost of the request.
WAITS = {"epoll_wait", "epoll_pwait", "futex", "accept4", "poll", "ppoll", "nanosleep", "clock_nanosleep", "rt_sigtimedwait"}

LINE = re.compile(r"^\s*([\d.]+|\?) \(\s*(?:([\d.]+) ms)?\s*\): (.+?)/(\d+) +(?:\.\.\. \[continued\]: )?(\w+)\((.*)$")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else None


def clone_spans(path, out):
    """A `perf trace -e clone3,execve` log: how long the daemon's clone3 lasts for each sandbox
    (with CLONE_VFORK: until the child's execve has released the address space), and each
    execve. Only clone3 calls whose child went on to execve count (not thread starts)."""
    clone = {}  # child pid -> duration of the daemon's clone3 that made it
    execs = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m or m.group(2) is None:
                continue
            _ts, dur, _comm, tid, name, rest = m.groups()
            ret = re.search(r"= (-?\d+)\s*$", rest)
            if name == "clone3" and ret and int(ret.group(1)) > 0:
                clone[int(ret.group(1))] = float(dur)
            elif name == "execve" and ret and ret.group(1) == "0":
                execs[int(tid)] = float(dur)
    c = [d for pid, d in clone.items() if pid in execs]
    e = list(execs.values())
    summary = lambda v: {"n": len(v), "min": min(v) if v else None, "p10": pct(v, 10), "p50": pct(v, 50), "p90": pct(v, 90)}
    with open(out, "w") as f:
        json.dump({"clone3_until_exec": summary(c), "execve": summary(e)}, f, indent=1)


def main():
    if sys.argv[1] == "--spans":
        return clone_spans(sys.argv[2], sys.argv[3])
    path, tids_path, requests, seq_path, out = sys.argv[1:6]
    requests = int(requests)
    daemon = {int(x) for x in open(tids_path).read().split()}
    totals = defaultdict(lambda: [0, 0.0, 0.0])  # (who, syscall) -> calls, ms, max
    execd = set()
    first_seen = {}
    exec_at = {}
    with open(path, errors="replace") as f:
        lines = f.readlines()
    # Shutdown (removing the sandbox roots) is not a request's cost: stop at the daemon's first
    # unlinkat/rmdir after the last handler's exit_group.
    last_exit = max((i for i, l in enumerate(lines) if " exit_group(" in l), default=len(lines))
    for i, line in enumerate(lines):
        if i > last_exit and re.search(r" (unlinkat|rmdir)\(", line):
            break
        m = LINE.match(line)
        if not m:
            continue
        ts, dur, _comm, tid, name, rest = m.groups()
        tid = int(tid)
        if ts == "?":
            continue
        t = float(ts)
        if tid not in daemon and tid not in first_seen:
            first_seen[tid] = t
        if dur is None:
            # the start of a call that another line continues, with the duration
            if tid not in daemon and name == "execve" and tid not in exec_at:
                exec_at[tid] = t
            continue
        d = float(dur)
        if d > 60_000:
            # perf trace prints an underflowed duration now and then
            continue
        if tid in daemon:
            who = "daemon"
        elif tid in execd:
            who = "handler"
        else:
            who = "sandbox"
        if who == "sandbox" and name == "execve":
            execd.add(tid)
            exec_at.setdefault(tid, t)
        if who == "daemon" and name in WAITS:
            continue
        row = totals[(who, name)]
        row[0] += 1
        row[1] += d
        row[2] = max(row[2], d)
    rows = []
    for (who, name), (calls, ms, mx) in totals.items():
        rows.append({"who": who, "syscall": name, "calls": calls / requests, "ms": ms / requests, "max": mx})
    order = {"sandbox": 0, "daemon": 1, "handler": 2}
    rows.sort(key=lambda r: (-r["ms"]))
    by_who = defaultdict(float)
    for r in rows:
        by_who[r["who"]] += r["ms"]
    spans = sorted(exec_at[t] - first_seen[t] for t in exec_at if t in first_seen)
    seq = json.load(open(seq_path))
    result = {
        "requests": requests,
        "setup_p50_traced": (seq.get("setup") or {}).get("p50"),
        "children": len(first_seen),
        "child_span_ms_p50": spans[len(spans) // 2] if spans else None,
        "ms_per_request_by_who": dict(sorted(by_who.items(), key=lambda kv: order.get(kv[0], 9))),
        "rows": [r for r in rows if r["who"] != "handler"] + [{"who": "handler", "syscall": "(every syscall after exec)", "calls": sum(r["calls"] for r in rows if r["who"] == "handler"), "ms": by_who.get("handler", 0.0), "max": max([r["max"] for r in rows if r["who"] == "handler"] or [0.0])}],
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
