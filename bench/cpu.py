#!/usr/bin/env python3
"""CPU time per request, by syscall, from `perf script -F comm,tid,ip,sym` of a call-graph
recording (`perf record -g -F HZ -p SERVER_PID`) taken while REQUESTS requests ran.

usage: cpu.py SCRIPT_TXT HZ REQUESTS OUT_JSON [SERVER_TIDS]
Each sample is charged to the syscall it is in (the frame just inside do_syscall_64), or to
page faults, interrupts or user space. Samples are split by process name: `tokio-rt-worker`
is the server and, until execve renames it, the child it forks (for faas: the whole sandbox
set-up); `sh` is the handler after exec. With SERVER_TIDS (the server's thread ids, one per
line) the samples are also split by thread into "by_part": `server` (those threads), `child`
(any other thread before exec: for faas the sandbox set-up from clone3 to execve, for the
baseline its fork to exec) and `handler` (`sh`). Standard library only.
"""

import collections
import json
import re
import sys

TRIM = re.compile(r"^(__x64_sys_|__do_sys_|__se_sys_|__sys_|do_|ksys_)")
SUFFIX = re.compile(r"\.(isra|constprop|part)\..*$")
NOT_A_CALL = {"syscall_exit_to_user_mode", "exit_to_user_mode_loop", "_raw_spin_unlock_irq", "finish_task_switch", "syscall_64", "x64_sys_call"}


def samples(path):
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    yield cur
                cur = None
                continue
            if not line[0].isspace():
                head = line.split()
                cur = (head[0], int(head[1]) if len(head) > 1 and head[1].isdigit() else None, [])
            elif cur is not None:
                parts = line.split(None, 1)
                if len(parts) > 1:
                    cur[2].append(parts[1].strip())
    if cur:
        yield cur


def classify(stack):
    if "do_syscall_64" in stack:
        i = stack.index("do_syscall_64")
        if i == 0:
            return "(syscall entry/exit)"
        name = SUFFIX.sub("", TRIM.sub("", stack[i - 1]))
        return "(syscall entry/exit)" if name in NOT_A_CALL else name
    if any("asm_exc_page_fault" in f for f in stack):
        return "(page faults)"
    if any("asm_sysvec" in f or "asm_common_interrupt" in f for f in stack):
        return "(interrupts)"
    return "(user space)"


def table(counter, ms, rows=20):
    total = sum(counter.values())
    return {
        "ms_per_request": total * ms,
        "samples": total,
        "rows": [{"what": k, "ms": v * ms, "share": v / total, "samples": v} for k, v in counter.most_common(rows)],
    }


def main():
    path, hz, requests, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    server = None
    if len(sys.argv) > 5:
        with open(sys.argv[5]) as f:
            server = {int(x) for x in f.read().split()}
    per = collections.defaultdict(collections.Counter)
    parts = collections.defaultdict(collections.Counter)
    for comm, tid, stack in samples(path):
        what = classify(stack)
        per[comm][what] += 1
        if server is not None:
            part = "server" if tid in server else "handler" if comm == "sh" else "child"
            parts[part][what] += 1
    ms = 1e3 / hz / requests  # one sample, in ms per request
    result = {"requests": requests, "hz": hz, "by_comm": {}}
    for comm, counter in sorted(per.items(), key=lambda kv: -sum(kv[1].values())):
        result["by_comm"][comm] = table(counter, ms)
    if server is not None:
        result["by_part"] = {part: table(parts[part], ms, rows=40) for part in ("server", "child", "handler")}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
