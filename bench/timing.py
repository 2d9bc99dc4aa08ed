#!/usr/bin/env python3
"""Sequential requests on one keep-alive connection; collects faas's Server-Timing values.

usage: timing.py HOST PORT PATH N [--samples]  ->  JSON on stdout:
  {"n": N, "errors": E, "setup": {...}, "handler": {...}, "client": {...}}
where each {...} holds p50/p90/p99/mean/min/max in milliseconds. "client" is the whole
request as this client saw it. --samples adds every value ("samples": {"setup": [...], ...}),
so that runs cut into rounds can be pooled:
       timing.py --merge CHUNK_JSON...  ->  the same JSON for all chunks' requests together.
Standard library only.
"""

import http.client
import json
import re
import sys
import time

TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


def summary(values):
    if not values:
        return None
    v = sorted(values)

    def pct(p):
        # nearest-rank percentile
        k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
        return v[k]

    return {
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "mean": sum(v) / len(v),
        "min": v[0],
        "max": v[-1],
    }


def merge(paths):
    """Pools chunks written with --samples: percentiles over every request of every chunk."""
    n, errors, pooled = 0, 0, {"setup": [], "handler": [], "client": []}
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        n += d["n"]
        errors += d["errors"]
        for k in pooled:
            pooled[k] += d["samples"][k]
    out = {"n": n, "errors": errors, "chunks": len(paths)}
    out.update({k: summary(v) for k, v in pooled.items()})
    print(json.dumps(out))


def main():
    if sys.argv[1] == "--merge":
        return merge(sys.argv[2:])
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    keep = "--samples" in sys.argv[5:]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    setup, handler, client = [], [], []
    errors = 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = resp_obj = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            continue
        client.append((time.perf_counter() - t0) * 1e3)
        if resp_obj.status != 200:
            errors += 1
        st = dict((k, float(v)) for k, v in TIMING.findall(resp_obj.getheader("server-timing") or ""))
        if "setup" in st:
            setup.append(st["setup"])
        if "handler" in st:
            handler.append(st["handler"])
    out = {"n": n, "errors": errors, "setup": summary(setup), "handler": summary(handler), "client": summary(client)}
    if keep:
        out["samples"] = {"setup": setup, "handler": handler, "client": client}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
