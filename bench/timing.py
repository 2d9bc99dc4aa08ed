#!/usr/bin/env python3
"""Sequential requests on one keep-alive connection; collects faas's Server-Timing values.

usage: timing.py HOST PORT PATH N  ->  JSON on stdout:
  {"n": N, "errors": E, "setup": {...}, "handler": {...}, "client": {...}}
where each {...} holds p50/p90/p99/mean/min/max in milliseconds. "client" is the whole
request as this client saw it. Standard library only.
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


def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
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
    print(json.dumps({"n": n, "errors": errors, "setup": summary(setup), "handler": summary(handler), "client": summary(client)}))


if __name__ == "__main__":
    main()
