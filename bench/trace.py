#!/usr/bin/env python3
"""Sums a `perf trace` event log of a faas daemon and its sandbox children by syscall.

usage: trace.py TRACE_FILE DAEMON_TIDS REQUESTS SEQ_JSON OUT_JSON
       trace.py --spans TRACE_FILE OUT_JSON [SEQUENTIAL]
                    (a log of `perf trace -e clone3,execve`, or `-e clone3,execve,setns`: then
                    children are split by whether they joined a pooled network namespace;
                    SEQUENTIAL: the first that many children were sequential requests, the
                    rest a concurrent burst)
  TRACE_FILE   `perf trace -o` output (one line per syscall, with durations)
  DAEMON_TIDS  file with the daemon's own thread ids, one per line
  REQUESTS     how many requests the traced window held
  SEQ_JSON     timing.py's output for the same requests (for setup p50 under tracing)
Rows: who = daemon | sandbox (child before exec, execve included) | handler (after exec).
"steps" sorts the sandbox's calls into the set-up steps they belong to (STEPS below).
Standard library only.
"""

import json
import re
import sys
from collections import defaultdict

# Calls that wait for work rather than do it: not a cost of the request.
WAITS = {"epoll_wait", "epoll_pwait", "futex", "accept4", "poll", "ppoll", "nanosleep", "clock_nanosleep", "rt_sigtimedwait"}

# setns(2)'s nstype for a network namespace (CLONE_NEWNET), as perf trace prints it.
NEWNET = "flags: 1073741824"

# The sandbox child's set-up steps that can be told apart by syscall and arguments (perf trace
# prints no strings here, only flags); the rest of the child's calls are "other set-up".
STEPS = [
    "mount /tmp and /proc",
    "mask /proc files (bind /dev/null)",
    "setsid",
    "empty the bounding set (PR_CAPBSET_DROP)",
    "parent-death signal + daemon check (PR_SET_PDEATHSIG, poll)",
    "join the network namespace (setns)",
    "SysV IPC sysctls (open, write, close)",
    "other set-up, execve included",
]


def step_of(name, rest, tid, sysctl_fds):
    """Which set-up step a call of the sandbox child (before exec) belongs to."""
    if name == "mount":
        return STEPS[1] if "flags: BIND" in rest else STEPS[0]
    if name == "setsid":
        return STEPS[2]
    if name == "prctl" and "option: CAPBSET_DROP" in rest:
        return STEPS[3]
    if (name == "prctl" and "option: SET_PDEATHSIG" in rest) or name == "poll":
        return STEPS[4]
    if name == "setns" and NEWNET in rest:
        return STEPS[5]
    # The sysctls are the only files the child opens for writing; the Landlock rules open O_PATH.
    if name == "openat" and "WRONLY" in rest:
        ret = re.search(r"= (\d+)", rest)
        if ret:
            sysctl_fds.add((tid, ret.group(1)))
        return STEPS[6]
    if name in ("write", "close"):
        fd = re.search(r"fd: (\d+)", rest)
        if fd and (tid, fd.group(1)) in sysctl_fds:
            if name == "close":
                sysctl_fds.discard((tid, fd.group(1)))
            return STEPS[6]
    return STEPS[7]


LINE = re.compile(r"^\s*([\d.]+|\?) \(\s*(?:([\d.]+) ms)?\s*\): (.+?)/(\d+) +(?:\.\.\. \[continued\]: )?(\w+)\((.*)$")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else None


def clone_spans(path, out, sequential=None):
    """A `perf trace -e clone3,execve` log: how long the daemon's clone3 lasts for each sandbox
    (with CLONE_VFORK: until the child's execve has released the address space), and each
    execve. Only clone3 calls whose child went on to execve count (not thread starts).
    With setns traced too, a child that joined a network namespace (setns CLONE_NEWNET) took
    one from the pool; one that did not got a fresh one from clone3 (a pool miss)."""
    clone = {}  # child pid -> duration of the daemon's clone3 that made it (in order made)
    execs = {}
    joined = set()
    setns_seen = False
    pending = {}  # tid -> arguments of a call whose end comes on a later line
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            _ts, dur, _comm, tid, name, rest = m.groups()
            if dur is None:
                pending[tid] = rest
                continue
            if "[continued]" in line and tid in pending:
                rest = pending.pop(tid) + " " + rest
            ret = re.search(r"= (-?\d+)\s*$", rest)
            if name == "clone3" and ret and int(ret.group(1)) > 0:
                clone[int(ret.group(1))] = float(dur)
            elif name == "execve" and ret and ret.group(1) == "0":
                execs[int(tid)] = float(dur)
            elif name == "setns":
                setns_seen = True
                if NEWNET in rest:
                    joined.add(int(tid))
    c = [d for pid, d in clone.items() if pid in execs]
    e = list(execs.values())
    summary = lambda v: {"n": len(v), "min": min(v) if v else None, "p10": pct(v, 10), "p50": pct(v, 50), "p90": pct(v, 90)}
    result = {"clone3_until_exec": summary(c), "execve": summary(e)}
    if setns_seen and sequential is not None:
        children = [pid for pid in clone if pid in execs]
        seq, burst = children[:sequential], children[sequential:]
        result["sequential"] = summary([clone[p] for p in seq])
        result["sequential_pool_misses"] = sum(1 for p in seq if p not in joined)
        result["burst_pool_hit"] = summary([clone[p] for p in burst if p in joined])
        result["burst_pool_miss"] = summary([clone[p] for p in burst if p not in joined])
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def main():
    if sys.argv[1] == "--spans":
        return clone_spans(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
    path, tids_path, requests, seq_path, out = sys.argv[1:6]
    requests = int(requests)
    daemon = {int(x) for x in open(tids_path).read().split()}
    totals = defaultdict(lambda: [0, 0.0, 0.0])  # (who, syscall) -> calls, ms, max
    steps = defaultdict(lambda: [0, 0.0])  # step -> calls, ms
    sysctl_fds = set()
    pending = {}  # tid -> arguments of a call whose end comes on a later line
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
            pending[tid] = rest
            continue
        if "[continued]" in line and tid in pending:
            # the arguments are on the line that started the call, the result on this one
            rest = pending.pop(tid) + " " + rest
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
        if who == "sandbox":
            step = steps[step_of(name, rest, tid, sysctl_fds)]
            step[0] += 1
            step[1] += d
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
        "steps": [{"step": k, "calls": steps[k][0] / requests, "ms": steps[k][1] / requests} for k in STEPS],
        "rows": [r for r in rows if r["who"] != "handler"] + [{"who": "handler", "syscall": "(every syscall after exec)", "calls": sum(r["calls"] for r in rows if r["who"] == "handler"), "ms": by_who.get("handler", 0.0), "max": max([r["max"] for r in rows if r["who"] == "handler"] or [0.0])}],
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
