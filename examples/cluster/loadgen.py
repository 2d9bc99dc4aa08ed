#!/usr/bin/python3
"""Bounded HTTP load for the cluster example: WORKERS threads, each with one keep-alive
connection, GET the URL until the stop file appears, MAX_SECONDS pass or MAX_REQUESTS are
sent. Every request counts: a status other than 200, a reset, a timeout or a body that is not
the expected one is a failure. Prints one JSON line: totals, failures by kind, and how many
answers each backend (HAProxy's X-Served-By) gave, per second of the run.

usage: loadgen.py URL STOP_FILE [--workers N] [--max-seconds S] [--max-requests N] [--expect TEXT]
"""

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("stop_file")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--max-requests", type=int, default=100000)
    p.add_argument("--expect", default=None)
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    path = u.path + ("?" + u.query if u.query else "")
    lock = threading.Lock()
    counts = {"requests": 0, "ok": 0, "failed": 0}
    failures = {}
    served = {}
    timeline = {}
    start = time.monotonic()
    deadline = start + a.max_seconds

    def record(ok, why=None, server=None):
        second = int(time.monotonic() - start)
        with lock:
            counts["requests"] += 1
            counts["ok" if ok else "failed"] += 1
            if not ok:
                failures[why] = failures.get(why, 0) + 1
            if server:
                served[server] = served.get(server, 0) + 1
                timeline.setdefault(second, {}).setdefault(server, 0)
                timeline[second][server] += 1
            return counts["requests"] < a.max_requests

    def worker():
        conn = None
        while time.monotonic() < deadline and not os.path.exists(a.stop_file):
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read().decode(errors="replace")
                server = r.getheader("X-Served-By")
                if r.status != 200:
                    go_on = record(False, f"status {r.status}", server)
                elif a.expect is not None and a.expect not in body:
                    go_on = record(False, "unexpected body", server)
                else:
                    go_on = record(True, server=server)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # every way a request can fail is a failure
                go_on = record(False, type(e).__name__)
                conn.close()
                conn = None
            if not go_on:
                break

    threads = [threading.Thread(target=worker) for _ in range(a.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    out = dict(counts)
    out.update({
        "failures": failures,
        "served_by": served,
        "seconds": round(elapsed, 2),
        "per_second": round(counts["requests"] / elapsed, 1) if elapsed else 0,
        "timeline": {str(k): timeline[k] for k in sorted(timeline)},
    })
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
