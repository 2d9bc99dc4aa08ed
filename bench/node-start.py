#!/usr/bin/env python3
"""How long a Node start takes, bare and with wrappers/node.js, cold, with V8 flags and from a
startup snapshot (issue 11). No daemon, no sandbox: the process alone, as the baseline runs it.

usage: python3 bench/node-start.py [--runs N] [--node /usr/bin/node] [--only SUBSTRING] [--json]
       python3 bench/node-start.py --phases [--runs N]   where a cold wrapper start spends its time

Every variant runs once per round, rounds interleaved, so machine noise hits all of them alike.
Each run is spawned with posix_spawn, its body on a pipe as stdin and stdout/stderr on pipes (as
the daemon gives them); wall time is spawn -> wait4, CPU is the child's user+sys from wait4.
Wrapper runs must answer `Status: 200`, or the variant is reported as failing. Snapshot blobs are
built in a temporary directory first (each with the same V8 flags as its runs: a blob only loads
under the flags it was built with). Prints a Markdown table (or JSON) on stdout.
Standard library only; bounded: runs x variants processes, each killed after 30 s.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPER = os.path.join(ROOT, "wrappers", "node.js")
CODE = os.path.join(ROOT, "config", "functions", "echo-node")
BODY = b'{"hello": "world"}'
ENV = {
    "PATH": "/usr/bin:/bin",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/echo",
    "QUERY_STRING": "a=1&a=2",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": str(len(BODY)),
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "FAAS_FUNCTION": "echo-node",
}

# Flags that might cut a start: V8's background threads, the JIT tiers, the young generation,
# WebAssembly's guard regions, lazy compilation.
FLAGS = [
    ["--v8-pool-size=0"],
    ["--single-threaded"],
    ["--jitless"],
    ["--no-opt"],
    ["--max-lazy"],
    ["--max-semi-space-size=16"],
    ["--disable-wasm-trap-handler"],
    ["--stack-size=984"],
]

# wrappers/node.js runs its request at load; a snapshot needs it to run from the deserialized
# main function instead. This makes that copy (CommonJS handlers only: a snapshot's import()
# needs vm's USE_MAIN_CONTEXT_DEFAULT_LOADER, see bench/results/NODE.md). Each edit must apply
# once, or the wrapper has changed shape and this script says so.
SNAPSHOT_EDITS = [
    ("const io = takeStdout();\n", "let io;\n"),
    ("const EventEmitter = require('events');\n",
     "const EventEmitter = require('events');\nconst { Console } = require('console');\n"),
    ("globalThis.console = new console.Console({ stdout: sink", "globalThis.console = new Console({ stdout: sink"),
    ("globalThis.console = new console.Console({ stdout: process.stderr",
     "globalThis.console = new Console({ stdout: process.stderr"),
    ("      mod = require(file || base);",
     "      mod = require('module').createRequire(path.join(path.resolve(codeDir), path.sep))(file || base);"),
    ("main(process.argv.slice(2)).catch((err) => {\n  logError('the wrapper failed', err);\n  exit(1);\n});\n",
     """function run(argv) {
  io = takeStdout();
  main(argv).catch((err) => {
    logError('the wrapper failed', err);
    exit(1);
  });
}
if (process.execArgv.includes('--build-snapshot')) {
  // Compile what every request runs, so that the snapshot holds its bytecode.
  for (const r of [{ a: [1] }, 'x', Buffer.alloc(1), undefined, { status: 201, headers: { a: 'b' }, body: 'x' }]) {
    const { status, headers, body, type } = shape(r);
    head(status, type, headers, body.length);
  }
  problem(...HANDLER_ERROR);
  const req = new Request({ QUERY_STRING: 'a=1', HTTP_X: 'y', CONTENT_TYPE: 'text/plain' }, Buffer.from('{}'));
  void [req.headers.X, req.text, req.json()];
  require('v8').startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
} else {
  run(process.argv.slice(2));
}
"""),
]


def snapshot_wrapper(tmp):
    with open(WRAPPER) as f:
        src = f.read()
    for old, new in SNAPSHOT_EDITS:
        if src.count(old) != 1:
            sys.exit(f"node-start: wrappers/node.js changed shape, update SNAPSHOT_EDITS: {old[:60]!r}")
        src = src.replace(old, new)
    path = os.path.join(tmp, "node-snapshot.js")
    with open(path, "w") as f:
        f.write(src)
    return path


def variants(node, tmp):
    """[(name, argv, blob_build_argv or None, checks_status, extra_env)]"""
    w = [WRAPPER, CODE, "main.handle"]
    out = [
        ("floor: /bin/true", ["/bin/true"], None, False, {}),
        ("node -e 0", [node, "-e", "0"], None, False, {}),
        ("node --v8-pool-size=0 --single-threaded -e 0",
         [node, "--v8-pool-size=0", "--single-threaded", "-e", "0"], None, False, {}),
        ("wrapper, cold", [node] + w, None, True, {}),
        ("wrapper, cold, NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt", [node] + w, None, True,
         {"NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt"}),
    ]
    for flags in FLAGS:
        out.append((f"wrapper, cold {' '.join(flags)}", [node] + flags + w, None, True, {}))
    snap = snapshot_wrapper(tmp)
    for flags in ([], ["--v8-pool-size=0", "--disable-wasm-trap-handler"]):
        blob = os.path.join(tmp, f"{len(out)}.blob")
        build = [node] + flags + ["--snapshot-blob", blob, "--build-snapshot", snap]
        out.append((f"wrapper, snapshot {' '.join(flags)}".strip(),
                    [node] + flags + ["--snapshot-blob", blob, CODE, "main.handle"], build, True, {}))
    empty = os.path.join(tmp, "empty.js")
    with open(empty, "w") as f:
        f.write("require('v8').startupSnapshot.setDeserializeMainFunction(() => {});\n")
    blob = os.path.join(tmp, "empty.blob")
    out.append(("empty snapshot (cost of a user blob)", [node, "--snapshot-blob", blob],
                [node, "--snapshot-blob", blob, "--build-snapshot", empty], False, {}))
    return out


def run_once(argv, extra_env):
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    os.write(w0, BODY)
    os.close(w0)
    acts = [(os.POSIX_SPAWN_DUP2, r0, 0), (os.POSIX_SPAWN_DUP2, w1, 1), (os.POSIX_SPAWN_DUP2, w2, 2)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, {**ENV, **extra_env}, file_actions=acts)
    for fd in (r0, w1, w2):
        os.close(fd)
    old = signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(30)
    _, status, ru = os.wait4(pid, 0)
    t1 = time.perf_counter()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    outs = []
    for fd in (r1, r2):
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(fd)
        outs.append(b"".join(chunks))
    return (t1 - t0) * 1000, (ru.ru_utime + ru.ru_stime) * 1000, os.waitstatus_to_exitcode(status), outs


# Loaded with -r before the wrapper: Node's own milestones (performance.nodeTiming, ms since
# the process started), when user code begins, and the exit, on stderr.
PHASES_JS = """
const t0 = performance.now();
process.on('exit', () => {
  const t = performance.nodeTiming;
  require('fs').writeSync(2, `PHASES ${JSON.stringify({
    v8Start: t.v8Start, environment: t.environment, bootstrapComplete: t.bootstrapComplete,
    userCode: t0, exit: performance.now() })}\\n`);
});
"""


def phases(node, runs, tmp):
    pre = os.path.join(tmp, "phases.js")
    with open(pre, "w") as f:
        f.write(PHASES_JS)
    argv = [node, "-r", pre, WRAPPER, CODE, "main.handle"]
    run_once(argv, {})
    got = {}
    for _ in range(runs):
        wall, _, _, (_, err) = run_once(argv, {})
        line = next(ln for ln in err.decode().splitlines() if ln.startswith("PHASES "))
        for k, v in json.loads(line[7:]).items():
            got.setdefault(k, []).append(v)
        got.setdefault("wall (spawn to wait4)", []).append(wall)
    steps = [("process start -> V8 platform up (OpenSSL, ICU, options)", "v8Start"),
             ("-> isolate + context deserialized (Node's built-in snapshot)", "environment"),
             ("-> Node's bootstrap JS, up to the first user code (a -r preload)", "userCode"),
             ("-> exit: load + compile + run the wrapper, the handler, the response", "exit")]
    print("| phase (p50 of each milestone) | at ms | step ms |")
    print("|---|---:|---:|")
    prev = 0.0
    for label, key in steps:
        at = pct(got[key], 50)
        share = 100 * (at - prev) / pct(got["exit"], 50)
        print(f"| {label} | {at:.1f} | {at - prev:.1f} ({share:.0f}%) |")
        prev = at
    print(f"| wall, spawn -> wait4 (includes exec and teardown) | {pct(got['wall (spawn to wait4)'], 50):.1f} | |")


def pct(values, p):
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--node", default="/usr/bin/node")
    ap.add_argument("--only", default="")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--phases", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="node-start-")
    try:
        if args.phases:
            phases(args.node, args.runs, tmp)
            return
        vs = [v for v in variants(args.node, tmp) if args.only in v[0] or v[0] == "wrapper, cold"]
        for name, _, build, _, _ in vs:
            if build:
                subprocess.run(build, check=True, timeout=120, stdout=subprocess.DEVNULL, env=ENV)
        for name, argv, _, _, extra in vs:  # warm the page cache, once each
            run_once(argv, extra)
        res = {v[0]: {"wall": [], "cpu": [], "bad": 0, "why": ""} for v in vs}
        for _ in range(args.runs):
            for name, argv, _, check, extra in vs:
                wall, cpu, code, (out, err) = run_once(argv, extra)
                r = res[name]
                if code != 0 or (check and not out.startswith(b"Status: 200")):
                    r["bad"] += 1
                    r["why"] = f"exit {code}: {(out + err)[:200]!r}"
                    continue
                r["wall"].append(wall)
                r["cpu"].append(cpu)
        base = pct(res["wrapper, cold"]["wall"], 50)
        rows = []
        for name, *_ in vs:
            r = res[name]
            if not r["wall"]:
                rows.append({"variant": name, "failed": r["why"]})
                continue
            p50 = pct(r["wall"], 50)
            rows.append({"variant": name, "n": len(r["wall"]), "bad": r["bad"],
                         "wall_p50": p50, "wall_p90": pct(r["wall"], 90),
                         "cpu_p50": pct(r["cpu"], 50), "vs_cold": base / p50})
        if args.json:
            json.dump({"node": subprocess.check_output([args.node, "--version"], text=True).strip(),
                       "runs": args.runs, "rows": rows}, sys.stdout, indent=1)
            return
        print(f"| variant | wall p50 ms | wall p90 ms | CPU p50 ms | cold/this | bad |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            if "failed" in r:
                print(f"| {r['variant']} | failed: {r['failed']} | | | | |")
            else:
                print(f"| {r['variant']} | {r['wall_p50']:.1f} | {r['wall_p90']:.1f} | {r['cpu_p50']:.1f} "
                      f"| {r['vs_cold']:.2f}x | {r['bad']} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
