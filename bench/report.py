#!/usr/bin/env python3
"""Turns a run's raw results (bench/run.sh writes them to RAW) into LATEST.md and LATEST.json.

usage: report.py RAW OUT_MD OUT_JSON.  Standard library only.
"""

import glob
import json
import os
import re
import sys

TARGETS = {
    # handler: minimum faas/baseline req/s ratio, at which concurrencies it is checked (None:
    # every one), and which faas side: Python's "faas" is warm now, so the sandbox's own 0.9×
    # target is checked on its cold twin.
    "sh": (0.7, [1, 8], "faas"),
    "python": (0.9, None, "cold"),
}
# Issue 11 (warm interpreters): warm req/s over the baseline's, at these concurrencies.
WARM_TARGETS = {"python": (10.0, [1, 8]), "numpy": (20.0, [1, 8])}
WARM_P50_C1_MS = 2.0
WARM_SETUP_P50_MS = 1.0
# A warm request whose set-up took less than this took a spare (a sandbox its zygote made
# ahead); one forked for it takes 2 ms and more here (see the profile section).
SPARE_MS = 0.5
PYTHONS = ("python", "numpy")
SETUP_P50_MS = 1.0
IDLE_RSS_MB = 15.0
CONNECTIONS = 1000


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def oha_numbers(d):
    """req/s counting only 2xx answers, p50/p99 in ms, errors (non-2xx + transport errors)."""
    if not d:
        return None
    s = d.get("summary", {})
    dur = s.get("total") or 0
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    transport = sum((d.get("errorDistribution") or {}).values())
    bad_status = sum(v for k, v in codes.items() if not 200 <= k < 300)
    lat = d.get("latencyPercentiles") or {}

    def ms(key):
        v = lat.get(key)
        return None if v is None else v * 1e3

    return {
        "rps": ok / dur if dur else 0.0,
        "ok": ok,
        "p50": ms("p50"),
        "p99": ms("p99"),
        "errors": transport + bad_status,
        "error_kinds": {**{str(k): v for k, v in codes.items() if not 200 <= k < 300}, **(d.get("errorDistribution") or {})},
        "seconds": dur,
    }


def concs_for(meta, h):
    """The concurrency levels a handler ran at (numpy has its own, fewer: it is slow cold)."""
    if h == "numpy":
        return meta.get("numpy_concurrency", [1, 8])
    return meta.get("concurrency", [1, 2, 8, 64])


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def rounds(raw, h, side, c):
    """The per-round numbers of one setup (files load-H-SIDE-cC-rR.json, or one load-H-SIDE-cC.json)."""
    paths = sorted(glob.glob(os.path.join(raw, f"load-{h}-{side}-c{c}-r*.json")), key=lambda p: int(re.search(r"-r(\d+)\.json$", p).group(1)))
    if not paths:
        paths = [os.path.join(raw, f"load-{h}-{side}-c{c}.json")]
    return [oha_numbers(load(p)) for p in paths]


def combine(rs):
    """All rounds of one setup: req/s over the summed time, median p50/p99, summed errors."""
    rs = [r for r in rs if r]
    if not rs:
        return None
    dur = sum(r["seconds"] for r in rs)
    kinds = {}
    for r in rs:
        for k, v in r["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "rps": sum(r["ok"] for r in rs) / dur if dur else 0.0,
        "ok": sum(r["ok"] for r in rs),
        "p50": median(r["p50"] for r in rs),
        "p99": median(r["p99"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
        "error_kinds": kinds,
        "seconds": dur,
        "rounds": len(rs),
    }


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def errs(n):
    if n is None:
        return "–"
    e = n["errors"]
    if not e:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(n["error_kinds"].items()))
    return f"**{e}** ({kinds})"


# Why ratios above 1 at high concurrency on a busy machine say little about the sandbox.
AUTOGROUP = (
    "**Scheduler autogroups are on** (`kernel.sched_autogroup_enabled=1`) and faas runs in no cpu cgroup: every sandbox calls `setsid()` and so becomes an "
    "autogroup of its own, with a CPU share of its own against the other sessions' work, while the baseline's children (and sandboxes of a faas before "
    "`setsid`) share their server's one autogroup. With other work running, faas therefore gets more of the machine the more sandboxes run at once: "
    "ratios above 1 at c=8 and c=64 measure that, not a cheaper sandbox. c=1 and the set-up times are the fairer comparison."
)


def spread_text(xs):
    return f" ({fmt(min(xs), 2)}–{fmt(max(xs), 2)})" if len(xs) > 1 else ""


def before_after(raw, meta, handlers, concs, seq, mem, L):
    """The BENCH_BEFORE section: the older faas next to this one, from the same interleaved
    rounds. Appends to L; returns the numbers for LATEST.json."""
    old, new = meta.get("before_rev"), meta.get("faas_rev")
    out = {"before_rev": old, "after_rev": new}
    L.append(f"## Before and after: faas {old} → {new}")
    L.append("")
    L.append(
        f"`BENCH_BEFORE` built faas at {old} as well ({meta.get('before_build', '?')}) and ran it as a third server with the same functions and settings (its own wrappers, and a uid range of its own). "
        "Every load round ran all three, each round starting one later (faas, before, baseline; before, baseline, faas; …), and the sequential requests of both faas alternate in chunks, "
        "so a burst of other work on the machine hits before and after alike: the ratios, taken per round, are the fair comparison even on a busy machine; the absolute numbers are not."
        + (" One difference the interleaving cannot remove: if `before` predates `setsid()` in the sandbox, its sandboxes share their daemon's autogroup (see the note under Machine)." if meta.get("autogroup") == "1" else "")
    )
    L.append("")

    # Set-up, request by request.
    L.append("### Set-up per request (Server-Timing `setup`, sequential requests)")
    L.append("")
    L.append("| handler | n before / after | before p50 | before p90 | before p99 | after p50 | after p90 | after p99 | after − before p50 | after − before p90 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    out["setup"] = {}
    for h in handlers:
        a, b = seq.get(h) or {}, seq.get(f"{h}-before") or {}
        sa, sb = a.get("setup") or {}, b.get("setup") or {}
        d50 = sa["p50"] - sb["p50"] if sa.get("p50") is not None and sb.get("p50") is not None else None
        d90 = sa["p90"] - sb["p90"] if sa.get("p90") is not None and sb.get("p90") is not None else None
        out["setup"][h] = {"before": sb, "after": sa, "n_before": b.get("n"), "n_after": a.get("n"), "diff_p50_ms": d50, "diff_p90_ms": d90}
        L.append(
            f"| {h} | {b.get('n', '–')} / {a.get('n', '–')} | {fmt(sb.get('p50'), 3)} | {fmt(sb.get('p90'), 3)} | {fmt(sb.get('p99'), 3)} | "
            f"{fmt(sa.get('p50'), 3)} | {fmt(sa.get('p90'), 3)} | {fmt(sa.get('p99'), 3)} | {'+' if d50 and d50 > 0 else ''}{fmt(d50, 3)} | {'+' if d90 and d90 > 0 else ''}{fmt(d90, 3)} |"
        )
    L.append("")
    L.append("All times in ms.")
    sh_d = (out["setup"].get("sh") or {}).get("diff_p50_ms")
    if sh_d is not None:
        L.append("")
        L.append(f"**sh set-up p50, after − before: {'+' if sh_d > 0 else ''}{fmt(sh_d, 3)} ms per request: {'more' if sh_d > 0.1 else 'not more'} than 0.1 ms.**")
    out["sh_setup_diff_p50_ms"] = sh_d
    L.append("")

    # Throughput.
    L.append("### Throughput: faas/baseline before and after")
    L.append("")
    L.append("req/s counts 2xx answers over all rounds; each ratio is the median of the per-round ratios (range in brackets). after/before compares the two faas directly, round by round.")
    L.append("")
    L.append("| handler | c | baseline req/s | before req/s | after req/s | before/baseline | after/baseline | after/before | errors before / after |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    out["load"] = []
    for h in handlers:
        for c in concs_for(meta, h):
            fr, br, xr = rounds(raw, h, "faas", c), rounds(raw, h, "before", c), rounds(raw, h, "baseline", c)
            f, b, x = combine(fr), combine(br), combine(xr)
            r_after = [p["rps"] / q["rps"] for p, q in zip(fr, xr) if p and q and q["rps"]]
            r_before = [p["rps"] / q["rps"] for p, q in zip(br, xr) if p and q and q["rps"]]
            r_ab = [p["rps"] / q["rps"] for p, q in zip(fr, br) if p and q and q["rps"]]
            row = {"handler": h, "concurrency": c, "baseline": x, "before": b, "after": f,
                   "ratio_before": median(r_before), "ratio_before_rounds": r_before, "ratio_after": median(r_after), "ratio_after_rounds": r_after,
                   "after_over_before": median(r_ab), "after_over_before_rounds": r_ab}
            out["load"].append(row)
            strong = h in ("sh", "python") and c in (1, 8)
            cell = lambda v, xs: (f"**{fmt(v, 2)}**" if strong and v is not None else fmt(v, 2)) + spread_text(xs)
            L.append(
                f"| {h} | {c} | {fmt(x and x['rps'])} | {fmt(b and b['rps'])} | {fmt(f and f['rps'])} | {cell(row['ratio_before'], r_before)} | {cell(row['ratio_after'], r_after)} | "
                f"{fmt(row['after_over_before'], 2)}{spread_text(r_ab)} | {errs(b)} / {errs(f)} |"
            )
    L.append("")

    # Per step: what runs (perf trace call counts) and what it costs (bench/steps.c, untraced).
    tb, ta = load(os.path.join(raw, "trace-before.json")), load(os.path.join(raw, "trace.json"))
    steps = load(os.path.join(raw, "steps.json"))
    if steps or (tb and ta and tb.get("steps") and ta.get("steps")):
        L.append("### Where the difference goes: the set-up steps")
        L.append("")
        L.append(
            "Calls per request: the sandbox child's calls (clone3 to execve) in a full `perf trace` of each faas over 100 sequential sh requests, sorted into steps by syscall and flags "
            "(`mount` with MS_BIND = a `/proc` mask, `prctl(PR_CAPBSET_DROP)`, `setns(CLONE_NEWNET)`, `openat(O_WRONLY)` with its write and close = a SysV sysctl). "
            "Cost: `bench/steps.c` repeats each step as the child does it, in a child with the same namespaces, timed with CLOCK_MONOTONIC and nothing traced "
            f"({(steps or {}).get('n', '–')} children; µs for the whole step, all its calls). "
            "perf trace is no measure of cost here (it adds several µs to every call, more than a `prctl` takes), and neither is `perf record` by thread "
            "(a child's first sample falls one period, 200 µs, after clone3, so its set-up is charged to whatever runs then)."
        )
        L.append("")
        L.append("| step | calls/request before | after | cost p50 µs | p90 µs | max µs |")
        L.append("|---|---:|---:|---:|---:|---:|")
        sb = {x["step"]: x for x in (tb or {}).get("steps", [])}
        sa = {x["step"]: x for x in (ta or {}).get("steps", [])}
        cost = {x["step"]: x for x in (steps or {}).get("steps", [])}
        order = [x["step"] for x in (ta or {}).get("steps", [])] or [x["step"] for x in (steps or {}).get("steps", [])]
        for k in order + [k for k in cost if k not in order]:
            c = cost.get(k) or {}
            cb_, ca_ = (sb.get(k) or {}).get("calls"), (sa.get(k) or {}).get("calls")
            L.append(f"| {k} | {fmt(cb_, 1)} | {fmt(ca_, 1)} | {fmt(c.get('p50'), 1)} | {fmt(c.get('p90'), 1)} | {fmt(c.get('max'), 1)} |")
        out["steps"] = {"calls_before": tb and tb.get("steps"), "calls_after": ta and ta.get("steps"), "cost": steps}
        added = [x for x in (steps or {}).get("steps", []) if x["step"] in (
            "mask /proc files (bind /dev/null)", "setsid", "SysV IPC sysctls (open, write, close)", "empty the bounding set (PR_CAPBSET_DROP)",
            "parent-death signal + daemon check (PR_SET_PDEATHSIG, poll)")]
        if added:
            total = sum(x["p50"] for x in added)
            ex = {x["step"]: x for x in steps["steps"]}
            em, eu = (ex.get("child exit and reap, with the masks") or {}).get("p50"), (ex.get("child exit and reap, without the masks") or {}).get("p50")
            L.append("")
            L.append(
                f"The steps the child gained add up to {fmt(total, 1)} µs at their p50s (a pool hit: joining a network namespace was there before, into one shared namespace)"
                + (f"; the masks add {fmt(em - eu, 1)} µs to the child's exit (p50 {fmt(em, 1)} vs {fmt(eu, 1)} µs)" if em is not None and eu is not None else "")
                + ". " + ", ".join(f"{x['step']} {fmt(x['p50'], 1)}" for x in sorted(added, key=lambda x: -x["p50"])) + " µs."
            )
            out["added_steps_p50_us"] = total
        L.append("")
        if tb and ta:
            L.append(f"Set-up p50 under full tracing: before {fmt(tb.get('setup_p50_traced'), 3)} ms, after {fmt(ta.get('setup_p50_traced'), 3)} ms.")
            L.append("")

    # CPU by thread: the server's own threads are sampled fairly; a sandbox only as a whole.
    cb, ca = load(os.path.join(raw, "cpu-before.json")), load(os.path.join(raw, "cpu-faas.json"))
    if cb and ca and cb.get("by_part") and ca.get("by_part"):
        L.append("### CPU per request (`perf record -g`, 1,000 sequential sh requests each)")
        L.append("")
        L.append(
            "The CPU recording above, done for both faas, split by thread: `server` = the daemon's own threads; `sandbox` = every other thread, the child from clone3 "
            "through its exec and the handler's whole run and exit. The split between set-up and handler is not shown: sampling places a short child's set-up wrongly (see above)."
        )
        L.append("")
        L.append("| | before ms/request | after ms/request | after − before µs |")
        L.append("|---|---:|---:|---:|")
        out["cpu_by_part"] = {}

        def part(cpu, names):
            return sum((cpu["by_part"].get(n) or {}).get("ms_per_request", 0.0) for n in names)

        for label, names in (("server", ["server"]), ("sandbox (child + handler)", ["child", "handler"])):
            vb, va = part(cb, names), part(ca, names)
            out["cpu_by_part"][label] = {"before_ms": vb, "after_ms": va, "diff_us": (va - vb) * 1e3}
            L.append(f"| {label} | {fmt(vb, 3)} | {fmt(va, 3)} | {fmt((va - vb) * 1e3, 1)} |")
        L.append("")

    # clone3 -> exec, and the network namespace pool.
    spb, spa = load(os.path.join(raw, "spans-before.json")), load(os.path.join(raw, "spans.json"))
    if spb and spa:
        L.append("### The sandbox child from clone3 to exec, and the network namespace pool (`perf trace -e clone3,execve,setns`)")
        L.append("")
        L.append(
            "A traced faas of each revision answered 300 sequential sh requests, then a burst of 32 at c=16. Sequential requests always find a free network namespace in the pool; "
            "in the burst, a child that joined none got a fresh one from clone3 (CLONE_NEWNET, a pool miss). Hits and misses in the burst ran under the same load, so their "
            "difference is the price of a miss; the daemon then keeps the namespace, so misses happen only while the pool grows to the peak concurrency."
        )
        L.append("")
        L.append("| daemon clone3 → child exec'd (ms) | n | min | p10 | p50 | p90 |")
        L.append("|---|---:|---:|---:|---:|---:|")

        def span_row(label, d):
            d = d or {}
            L.append(f"| {label} | {d.get('n', '–')} | {fmt(d.get('min'), 3)} | {fmt(d.get('p10'), 3)} | {fmt(d.get('p50'), 3)} | {fmt(d.get('p90'), 3)} |")

        span_row(f"before, sequential", spb.get("sequential") or spb.get("clone3_until_exec"))
        span_row(f"after, sequential (pool misses: {spa.get('sequential_pool_misses', '–')})", spa.get("sequential") or spa.get("clone3_until_exec"))
        span_row("before, burst (one shared namespace)", spb.get("burst_pool_hit"))
        span_row("after, burst, pool hit", spa.get("burst_pool_hit"))
        span_row("after, burst, pool miss (CLONE_NEWNET)", spa.get("burst_pool_miss"))
        sb_, sa_ = spb.get("sequential") or spb.get("clone3_until_exec") or {}, spa.get("sequential") or spa.get("clone3_until_exec") or {}
        if sb_.get("p10") is not None and sa_.get("p10") is not None:
            L.append("")
            L.append(
                f"Sequential, after − before: {fmt((sa_['p10'] - sb_['p10']) * 1e3, 0)} µs at p10, {fmt((sa_['min'] - sb_['min']) * 1e3, 0)} µs at the minimum "
                "(the requests least disturbed by other work; two traced calls per request add a little to both)."
            )
            out["sequential_span_diff_p10_us"] = (sa_["p10"] - sb_["p10"]) * 1e3
        hit, miss = spa.get("burst_pool_hit") or {}, spa.get("burst_pool_miss") or {}
        if hit.get("p10") is not None and miss.get("p10") is not None:
            L.append("")
            L.append(
                f"Miss − hit in the burst: {fmt((miss['p10'] - hit['p10']) * 1e3, 0)} µs at p10, {fmt((miss['p50'] - hit['p50']) * 1e3, 0)} µs at p50 "
                "(16 requests at once on two cores: the p50s mostly measure waiting; `bench/steps.c` above times a fresh namespace alone)."
            )
        out["spans"] = {"before": spb, "after": spa}
        L.append("")

    rb_kb, ra_kb = mem.get("before_idle_rss_kb"), mem.get("idle_rss_kb")
    L.append(f"Idle RSS: before {fmt(rb_kb / 1024 if rb_kb else None)} MB, after {fmt(ra_kb / 1024 if ra_kb else None)} MB.")
    L.append("")
    errors = read(os.path.join(raw, "before-errors.txt"))
    L.append(f"What faas {old} logged: " + ("no warnings or errors." if not (errors and errors.strip()) else ""))
    if errors and errors.strip():
        L.append("")
        L.append("```")
        L.append(errors.rstrip())
        L.append("```")
    L.append("")
    doctor = read(os.path.join(raw, "doctor-before.txt"))
    if doctor:
        L.append(f"`faas doctor` of {old}:")
        L.append("")
        L.append("```")
        L.append(doctor.rstrip())
        L.append("```")
        L.append("")
    return out


def pct(values, p):
    """Nearest-rank percentile, as timing.py takes it."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def reports_of(raw, h, side, c):
    """The REPORT lines a faas logged during one setup's load runs: set-up µs, warm/cold."""
    setup, starts = [], {}
    for path in glob.glob(os.path.join(raw, f"reports-{h}-{side}-c{c}-r*.txt")):
        for line in read(path).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                setup.append(int(parts[0]) / 1e3)
                starts[parts[1]] = starts.get(parts[1], 0) + 1
    return setup, starts


# The three ways a handler runs, as the warm section names them, and the raw side that holds it.
KINDS = [("baseline", "fork+exec, no sandbox"), ("cold", "faas cold"), ("warm", "faas warm")]


def side_of(h, kind):
    if kind == "baseline":
        return "baseline"
    if h in PYTHONS:
        return "faas" if kind == "warm" else "cold"
    return "faas" if kind == "cold" else None


def warm_numbers(raw, meta, handlers, seq):
    """Per handler, concurrency and kind (baseline, cold, warm): req/s, p50, p99, set-up p50
    (REPORT lines), with the per-round ratios warm/baseline, warm/cold, cold/baseline."""
    out = {}
    for h in handlers:
        rows = []
        for c in concs_for(meta, h):
            row = {"concurrency": c}
            per_round = {}
            for kind, _ in KINDS:
                side = side_of(h, kind)
                if side is None:
                    continue
                rs = rounds(raw, h, side, c)
                per_round[kind] = rs
                n = combine(rs)
                if n is None:
                    continue
                if side != "baseline":
                    setup, starts = reports_of(raw, h, side, c)
                    n["setup_p50"] = pct(setup, 50)
                    n["setup_fast"] = sum(1 for x in setup if x < SPARE_MS)
                    n["setup_n"] = len(setup)
                    n["setup_p99"] = pct(setup, 99)
                    n["starts"] = starts
                row[kind] = n
            for a, b in (("warm", "baseline"), ("warm", "cold"), ("cold", "baseline")):
                xs = [x["rps"] / y["rps"] for x, y in zip(per_round.get(a, []), per_round.get(b, [])) if x and y and y["rps"]]
                if xs:
                    row[f"{a}/{b}"] = median(xs)
                    row[f"{a}/{b}_rounds"] = xs
            rows.append(row)
        out[h] = rows
    return out


def warm_verdicts(warm, seq, verdicts):
    for h, (target, cs) in WARM_TARGETS.items():
        for row in warm.get(h, []):
            if row["concurrency"] not in cs:
                continue
            r, xs = row.get("warm/baseline"), row.get("warm/baseline_rounds", [])
            w, b = row.get("warm") or {}, row.get("baseline") or {}
            rng = f", rounds {fmt(min(xs), 1)}–{fmt(max(xs), 1)}" if len(xs) > 1 else ""
            verdicts.append((f"{h} warm req/s ≥ {target:g}× baseline at c={row['concurrency']}", f"{fmt(r, 2)}× ({fmt(w.get('rps'))} vs {fmt(b.get('rps'))} req/s{rng})", r is not None and r >= target))
    for row in warm.get("python", []):
        if row["concurrency"] == 1:
            p50 = (row.get("warm") or {}).get("p50")
            verdicts.append((f"python warm p50 at c=1 ≤ {WARM_P50_C1_MS:g} ms", f"{fmt(p50, 2)} ms", p50 is not None and p50 <= WARM_P50_C1_MS))
    s = (seq.get("python") or {}).get("setup") or {}
    if seq.get("python"):
        verdicts.append((f"python warm set-up p50 ≤ {WARM_SETUP_P50_MS:g} ms (Server-Timing, sequential)", f"{fmt(s.get('p50'), 3)} ms (p90 {fmt(s.get('p90'), 3)})", s.get("p50") is not None and s["p50"] <= WARM_SETUP_P50_MS))


def warm_profile(raw, L):
    """The phases of a forked warm request's set-up (bench/zygote_timed.py, warm.py steps)."""
    seqd, c8 = load(os.path.join(raw, "zt-seq-steps.json")), load(os.path.join(raw, "zt-c8-steps.json"))
    if not seqd and not c8:
        return
    cow = load(os.path.join(raw, "cow.json")) or {}
    L.append("### Where a warm request's set-up goes")
    L.append("")
    L.append(
        "A second faas, whose zygote ran as `bench/zygote_timed.py`: `wrappers/zygote.py` unchanged, loaded as a module, with CLOCK_MONOTONIC marks and the child's minor page "
        "faults (`getrusage`; each copy-on-write fault is one): the zygote's native loop stamps the request's arrival and its clone3 (`Plan.received_ns`, `cloned_ns`); the child "
        "marks its return from the native steps (Stdio … Rlimit, one call), the at-fork hooks it runs (none, unless a preload registered one), `child()`'s entry and the Python-level "
        "steps after it (after the last `Child.prctl` call of a step: Exec), and logs the line once its error pipe is closed. "
        "`daemon` is Server-Timing `setup` minus the zygote's part (message in → error pipe closed): the daemon's own work before it sends the request and after the EOF. "
        "A request whose `setup` is shorter than its child's own set-up took a spare, made ahead; those are counted, and the phases are over the forked ones. "
        "The marks add a few µs each (a dict write and a `getrusage`)."
    )
    L.append("")
    for label, d in (("300 sequential requests", seqd), ("c=8", c8)):
        if d and not d.get("forked") and not d.get("spare"):
            # Every warm request writes a ZT line: none means the stand-in lost its hooks.
            L.append(f"**{label}: no request of the timed zygote wrote its marks**: `bench/zygote_timed.py` no longer "
                     "hooks into `wrappers/zygote.py` (see its docstring), or its zygote failed (`faas-zt.log`); "
                     "this section measured nothing.")
        elif d:
            sp = d.get("spare_setup_us") or {}
            L.append(
                f"{label}: {d.get('forked', 0)} forked, {d.get('spare', 0)} took a spare"
                + (f" (their set-up p50 {fmt(sp.get('p50') / 1e3, 3)} ms)" if sp.get("p50") is not None else "") + "."
            )
    L.append("")
    L.append("| phase (forked requests) | sequential p10 µs | p50 µs | p90 µs | page faults p50 | c=8 p50 µs |")
    L.append("|---|---:|---:|---:|---:|---:|")
    c8p = {r["phase"]: r for r in (c8 or {}).get("phases", [])}
    for r in (seqd or c8 or {}).get("phases", []):
        u = r.get("us") or {}
        o = (c8p.get(r["phase"]) or {}).get("us") or {}
        count = r["phase"].endswith("(count)")
        L.append(
            f"| {r['phase']} | {fmt(u.get('p10'), 0)} | {fmt(u.get('p50'), 0)} | {fmt(u.get('p90'), 0)} | {'' if count else fmt(r.get('faults_p50'))} | {fmt(o.get('p50'), 0)} |"
        )
    L.append("")
    ae = (seqd or {}).get("after_exec") or {}
    if any(ae.values()):
        L.append("After the set-up, until the answer is written (python.py's `load()`: import the handler, which a spare does before it waits; `serve()`: run it, answer), sequential requests:")
        L.append("")
        L.append("| path | phase | p10 µs | p50 µs | p90 µs | page faults p50 |")
        L.append("|---|---|---:|---:|---:|---:|")
        for kind in ("spare", "forked"):
            for r in ae.get(kind) or []:
                u = r.get("us") or {}
                L.append(f"| {kind} | {r['phase']} | {fmt(u.get('p10'), 0)} | {fmt(u.get('p50'), 0)} | {fmt(u.get('p90'), 0)} | {fmt(r.get('faults_p50'))} |")
        L.append("")
    faults = next((r["us"]["p50"] for r in (seqd or {}).get("phases", []) if r["phase"].endswith("(count)")), None)
    if cow.get("ns_per_fault_p50"):
        L.append(
            f"One copy-on-write fault costs {fmt(cow['ns_per_fault_p50'] / 1e3, 2)} µs here (median; {fmt(cow.get('ns_per_fault_min', 0) / 1e3, 2)} µs at best: `warm.py cow`, a child "
            "writing one byte in each of 2,000 pages it shares with its parent)"
            + (f"; a forked warm child takes {faults:.0f} faults from clone3 to its \"exec\", about {fmt(faults * cow['ns_per_fault_p50'] / 1e6, 2)} ms of its set-up." if faults else ".")
        )
        L.append("")


def warm_section(raw, meta, warm, seq, chart_name, L):
    """The issue 11 section: baseline, cold and warm side by side, then memory. Returns the
    memory numbers for LATEST.json."""
    L.append("## Warm interpreters (issue 11): baseline, cold, warm")
    L.append("")
    L.append(f"![req/s and p50 by concurrency: baseline, faas cold, faas warm, per runtime]({chart_name})")
    L.append("")
    L.append(
        "**baseline** = the handler forked and exec'd with no sandbox (`bench/baseline`); **cold** = faas, a fresh interpreter per request "
        "(sh and node always; Python with `[sandbox] warm = false`); **warm** = faas, the request forked from the function's zygote "
        "(Python's default; warmed up before the first load run: one request, then `/_/functions` polled until `zygote.state` is `ready`). "
        "`numpy` is a handler that does `import numpy`: warm with `preload = [\"numpy\"]`, cold and on the baseline it imports numpy in every request. "
        "req/s counts 2xx answers over all rounds; p50/p99 are the median over the rounds of oha's; set-up p50 is over every request of the setup, "
        "from the daemon's REPORT lines (the same number as Server-Timing `setup`: request received → handler's wrapper started; for a warm request, "
        "→ the zygote's child has applied every layer). Ratios are medians of the per-round ratios (range in brackets). "
        "\"warm starts\" counts the REPORT lines that said `start=warm`; \"warm set-up < 0.5 ms\" is the share of them that took a spare (a sandbox the zygote made ahead, every layer on, waiting for its request), "
        "told apart by time: a request forked for when it comes takes 2 ms and more here (see \"Where a warm request's set-up goes\")."
    )
    L.append("")
    L.append("| runtime | c | baseline req/s | cold req/s | warm req/s | warm/baseline | warm/cold | cold/baseline | p50 ms base / cold / warm | p99 ms base / cold / warm | set-up p50 ms cold / warm | warm starts | warm set-up < 0.5 ms | errors base / cold / warm |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---|")
    for h, rows in warm.items():
        for row in rows:
            b, c, w = row.get("baseline") or {}, row.get("cold") or {}, row.get("warm") or {}

            def ratio(k):
                xs = row.get(f"{k}_rounds", [])
                v = row.get(k)
                if v is None:
                    return "–"
                bold = k == "warm/baseline" and h in WARM_TARGETS and row["concurrency"] in WARM_TARGETS[h][1]
                txt = f"{fmt(v, 2)}×"
                return (f"**{txt}**" if bold else txt) + (f" ({fmt(min(xs), 1)}–{fmt(max(xs), 1)})" if len(xs) > 1 else "")

            starts = w.get("starts") or {}
            total = sum(starts.values())
            ws = f"{starts.get('warm', 0)}/{total}" if w else "–"
            fast = f"{100 * w['setup_fast'] / w['setup_n']:.0f}%" if w.get("setup_n") else "–"
            L.append(
                f"| {h} | {row['concurrency']} | {fmt(b.get('rps'))} | {fmt(c.get('rps'))} | {fmt(w.get('rps'))} | {ratio('warm/baseline')} | {ratio('warm/cold')} | {ratio('cold/baseline')} | "
                f"{fmt(b.get('p50'), 2)} / {fmt(c.get('p50'), 2)} / {fmt(w.get('p50'), 2)} | {fmt(b.get('p99'), 2)} / {fmt(c.get('p99'), 2)} / {fmt(w.get('p99'), 2)} | "
                f"{fmt(c.get('setup_p50'), 3)} / {fmt(w.get('setup_p50'), 3)} | {ws} | {fast} | {errs(b or None)} / {errs(c or None)} / {errs(w or None)} |"
            )
    L.append("")
    loads = []
    for line in (read(os.path.join(raw, "loadavg.txt")) or "").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in warm:
            try:
                loads.append(float(parts[4]))
            except ValueError:
                pass
    if loads:
        L.append(
            f"Load average (1 min) at the start of each of these runs: {fmt(min(loads), 2)}–{fmt(max(loads), 2)} (median {fmt(median(loads), 2)}) on {meta.get('nproc', '?')} CPUs; "
            "part of it is this benchmark's own load (oha, the daemon and the sandboxes, up to c processes at once)."
        )
        L.append("")
    for h in PYTHONS:
        d, cd, bd = seq.get(h), seq.get(f"{h}-cold"), seq.get(f"{h}-baseline")
        if d and cd:
            s, cs = d.get("setup") or {}, cd.get("setup") or {}
            hd, ch = d.get("handler") or {}, cd.get("handler") or {}
            L.append(
                f"{h}, {d['n']} sequential requests (Server-Timing): warm set-up p50 {fmt(s.get('p50'), 3)} ms (p90 {fmt(s.get('p90'), 3)}), handler p50 {fmt(hd.get('p50'), 3)} ms, "
                f"whole request p50 {fmt((d.get('client') or {}).get('p50'), 3)} ms; cold set-up p50 {fmt(cs.get('p50'), 3)} ms, handler p50 {fmt(ch.get('p50'), 3)} ms, "
                f"whole request {fmt((cd.get('client') or {}).get('p50'), 3)} ms; baseline whole request {fmt(((bd or {}).get('client') or {}).get('p50'), 3)} ms."
            )
            L.append("")

    warm_profile(raw, L)

    # Memory.
    wm = load(os.path.join(raw, "warm.json")) or {}
    if wm:
        L.append("### Memory: zygotes, and each concurrent request")
        L.append("")
        L.append(
            "A zygote's RSS is `/_/functions` `zygote.rss_bytes` (its VmRSS), once ready and again after all the load; Pss and USS (Private_Clean + Private_Dirty) are from its "
            "`/proc/PID/smaps_rollup`. USS is what the zygote alone holds; the rest of its RSS is shared with the system's libraries and with its children. "
            "\"In huge pages\" is `zygote.huge_page_bytes` (its AnonHugePages), once ready: the part of it a fork copies one page table entry for per 2 MiB."
        )
        L.append("")
        L.append("| zygote | RSS MB ready | in huge pages MB | Pss MB | USS MB | RSS MB after the load | requests served |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")

        def mbk(kb):
            return fmt(kb / 1024 if kb is not None else None)

        for h in PYTHONS:
            z, za = wm.get(h), wm.get(f"{h}-after") or {}
            if not z:
                continue
            sm = z.get("smaps_rollup_kb") or {}
            L.append(
                f"| {h}{' (preload numpy)' if h == 'numpy' else ''} | {fmt((z.get('rss_bytes') or 0) / 2**20 if z.get('rss_bytes') else None)} | {fmt(z['huge_page_bytes'] / 2**20 if 'huge_page_bytes' in z else None)} | {mbk(sm.get('Pss'))} | {mbk(sm.get('USS'))} | "
                f"{fmt((za.get('rss_bytes') or 0) / 2**20 if za.get('rss_bytes') else None)} | {za.get('requests', '–')} |"
            )
        L.append("")
        held = wm.get("held") or {}
        if held:
            peaks_seen = any(v and v != "none" and any(p not in ("none", "unknown") for p in v.split(",")) for k, v in held.items() if k.endswith("-memory-peaks"))
            L.append(
                "Extra memory per concurrent request: N requests to the `hold` handler (Python; it waits for a marker file) held at once, and while they wait, "
                "every request process's `/proc/PID/smaps_rollup` read (warm: the zygote's children; cold: the daemon's children past their setresuid; baseline: the "
                "baseline server's children), summed and divided by N. **USS** (Private_Clean + Private_Dirty: the pages that exist for that request alone; for a warm "
                "request, the zygote's pages it has written to and so copied) is the extra memory per request; Pss also charges each process its share of the pages it "
                "shares (with the zygote, the other requests and the libraries); Rss counts every shared page in full. "
                + ("The REPORT lines' `memory_peak` (the request's cgroup `memory.peak`) is given too." if peaks_seen else
                   "This host runs faas without cgroups (see `faas doctor` above), so there is no per-request `memory.current`/`memory.peak` to compare with.")
            )
            L.append("")
            spare_uss = []
            L.append("| held at once | kind | processes seen | USS MB per request | Pss MB per request | Rss MB per request | zygote USS MB held / before | answers |")
            L.append("|---:|---|---:|---:|---:|---:|---|---|")
            for key, d in held.items():
                if key.endswith("-memory-peaks") or not isinstance(d, dict):
                    continue
                kind, n = key.rsplit("-", 1)
                kind = {"faas": "warm", "cold": "cold", "baseline": "baseline"}.get(kind, kind)
                zb, zh = d.get("parent_before_kb") or {}, d.get("parent_held_kb") or {}
                zcol = f"{mbk(zh.get('USS'))} / {mbk(zb.get('USS'))}" if kind == "warm" else "–"
                sts = d.get("statuses") or []
                ans = "all 200" if sts and all(x == 200 for x in sts) else ", ".join(str(x) for x in sts)
                if d.get("error"):
                    ans += f"; {d['error']}"
                spares = [x for x in d.get("spares") or [] if x]
                if spares and kind == "warm":
                    spare_uss.extend(x.get("USS", 0) for x in spares)
                L.append(
                    f"| {n} | {kind} | {d.get('processes', '–')} | {mbk(d.get('uss_kb_per_request'))} | {mbk(d.get('pss_kb_per_request'))} | {mbk(d.get('rss_kb_per_request'))} | {zcol} | {ans} |"
                )
                peaks = held.get(f"{key}-memory-peaks")
                if peaks_seen and peaks:
                    L.append(f"| | | memory_peak (REPORT) | {peaks} | | | | |")
            L.append("")
            if spare_uss:
                L.append(f"Beside them waited the function's spare (a sandbox made ahead, not counted above): USS {fmt(median(spare_uss) / 1024)} MB.")
                L.append("")
            L.append(
                "The zygote column: the zygote's own USS before and while the requests are held. A page its children share stops counting as private to it "
                "(with a spare waiting, most already are), while the pages a child writes become that child's own copies: the zygote's USS, the spare's and the "
                "held requests' together are the whole warm cost."
            )
            L.append("")
    return wm


def num(v):
    """A chart label: three significant digits, never an exponent."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def svg_chart(path, warm, meta):
    """req/s and p50 by concurrency, per runtime, baseline / cold / warm: a plain SVG, log y."""
    import math

    colors = {"baseline": "#777777", "cold": "#1f77b4", "warm": "#d62728"}
    dash = {"baseline": "5,4", "cold": "", "warm": ""}
    pw, ph, ml, mr, mt, mb = 330, 200, 58, 14, 28, 34
    handlers = [h for h in warm if warm[h]]
    W = 2 * (pw + ml + mr) + 20
    H = 84 + len(handlers) * (ph + mt + mb + 10)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="10" y="18" font-size="14" font-weight="bold">faas: baseline (fork+exec, no sandbox), cold and warm, by concurrency</text>',
           f'<text x="10" y="34" fill="#555">{meta.get("date", "")}, {meta.get("nproc", "?")} CPUs, load average {meta.get("loadavg_start", "?")} before the run; log scales. bench/run.sh, bench/results/LATEST.md</text>',
           f'<text x="10" y="52" fill="#555">targets (issue 11): warm ≥ 10× baseline req/s (python), ≥ 20× (numpy, preload); python p50 at c=1 ≤ 2 ms</text>']
    lx, ly = 10, 70
    for i, (k, label) in enumerate(KINDS):
        x = lx + i * 110
        out.append(f'<line x1="{x}" y1="{ly - 4}" x2="{x + 22}" y2="{ly - 4}" stroke="{colors[k]}" stroke-width="2.5" stroke-dasharray="{dash[k]}"/>')
        out.append(f'<text x="{x + 26}" y="{ly}">{label.replace("fork+exec, no sandbox", "baseline")}</text>')
    x = lx + len(KINDS) * 110
    out.append(f'<line x1="{x}" y1="{ly - 4}" x2="{x + 22}" y2="{ly - 4}" stroke="#d62728" stroke-dasharray="2,2"/>')
    out.append(f'<text x="{x + 26}" y="{ly}">target (warm)</text>')

    def esc(t):
        return str(t).replace("&", "&amp;").replace("<", "&lt;")

    for row_i, h in enumerate(handlers):
        rows = warm[h]
        cs = [r["concurrency"] for r in rows]
        top = 84 + row_i * (ph + mt + mb + 10)
        for col, (metric, title, unit) in enumerate((("rps", "req/s", ""), ("p50", "p50 latency", " ms"))):
            x0 = 10 + col * (pw + ml + mr + 10) + ml
            y0 = top + mt
            vals = [r[k][metric] for r in rows for k, _ in KINDS if r.get(k) and r[k].get(metric)]
            if not vals:
                continue
            lo = 10 ** math.floor(math.log10(min(vals)))
            hi = 10 ** math.ceil(math.log10(max(vals)))
            if hi <= lo:
                hi = lo * 10
            span = math.log10(hi) - math.log10(lo)

            def Y(v):
                return y0 + ph - (math.log10(v) - math.log10(lo)) / span * ph

            def X(i):
                return x0 + (pw * (i + 0.5) / len(cs))

            out.append(f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{esc(h)} — {title}{" (higher is better)" if metric == "rps" else " (lower is better)"}</text>')
            out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
            d = lo
            while d <= hi * 1.0001:
                for m in (1, 2, 5):
                    v = d * m
                    if v < lo * 0.9999 or v > hi * 1.0001:
                        continue
                    y = Y(v)
                    out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="{"#ddd" if m == 1 else "#f0f0f0"}"/>')
                    out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{v:g}{unit}</text>')
                d *= 10
            for i, c in enumerate(cs):
                out.append(f'<text x="{X(i):.1f}" y="{y0 + ph + 14}" text-anchor="middle" fill="#555">c={c}</text>')
            if metric == "p50" and h == "python":
                y = Y(WARM_P50_C1_MS) if lo <= WARM_P50_C1_MS <= hi else None
                if y is not None:
                    out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#d62728" stroke-dasharray="2,3"/>')
                    out.append(f'<text x="{x0 + pw - 4}" y="{y - 3:.1f}" text-anchor="end" fill="#d62728">target at c=1: {WARM_P50_C1_MS:g} ms</text>')
            if metric == "rps" and h in WARM_TARGETS:
                target, tcs = WARM_TARGETS[h]
                for i, r in enumerate(rows):
                    b = (r.get("baseline") or {}).get("rps")
                    if r["concurrency"] in tcs and b and lo <= b * target <= hi:
                        y = Y(b * target)
                        out.append(f'<line x1="{X(i) - 14:.1f}" y1="{y:.1f}" x2="{X(i) + 14:.1f}" y2="{y:.1f}" stroke="#d62728" stroke-dasharray="2,2"><title>target: {target:g}× baseline</title></line>')
            for k, _ in KINDS:
                pts = [(X(i), Y(r[k][metric]), r[k][metric]) for i, r in enumerate(rows) if r.get(k) and r[k].get(metric)]
                if not pts:
                    continue
                if len(pts) > 1:
                    out.append(f'<polyline fill="none" stroke="{colors[k]}" stroke-width="2" stroke-dasharray="{dash[k]}" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts) + '"/>')
                for x, y, v in pts:
                    # Baseline labels below right of their point, cold above left, warm above
                    # right, so points close together keep legible labels.
                    dx, dy, anchor = {"baseline": (5, 13, "start"), "cold": (-5, -5, "end")}.get(k, (5, -5, "start"))
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colors[k]}"><title>{esc(h)} {k}: {num(v)}{unit}</title></circle>')
                    out.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" text-anchor="{anchor}" fill="{colors[k]}" font-size="9">{num(v)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    raw, out_md, out_json = sys.argv[1], sys.argv[2], sys.argv[3]
    meta = load(os.path.join(raw, "meta.json")) or {}
    mem = load(os.path.join(raw, "mem.json")) or {}
    handlers = meta.get("handlers", ["sh", "python", "node"])
    concs = meta.get("concurrency", [1, 2, 8, 64])

    load_rows = []
    verdicts = []
    for h in handlers:
        for side in ("faas", "cold") if h in PYTHONS else ("faas",):
            for c in concs_for(meta, h):
                fr, br = rounds(raw, h, side, c), rounds(raw, h, "baseline", c)
                f, b = combine(fr), combine(br)
                per_round = [x["rps"] / y["rps"] for x, y in zip(fr, br) if x and y and y["rps"]]
                ratio = median(per_round)
                spread = (min(per_round), max(per_round)) if per_round else None
                label = h if h not in PYTHONS else f"{h} {'warm' if side == 'faas' else 'cold'}"
                load_rows.append({"handler": h, "side": side, "label": label, "concurrency": c, "faas": f, "baseline": b, "ratio": ratio, "ratio_rounds": per_round, "ratio_spread": spread})
                t = TARGETS.get(h)
                if t and t[2] == side and (t[1] is None or c in t[1]):
                    ok = ratio is not None and ratio >= t[0]
                    rng = f", rounds {fmt(spread[0], 2)}–{fmt(spread[1], 2)}" if spread and len(per_round) > 1 else ""
                    verdicts.append((f"{label} req/s faas/baseline at c={c} ≥ {t[0]}", f"{fmt(ratio, 2)}× ({fmt(f and f['rps'])} vs {fmt(b and b['rps'])} req/s{rng})", ok))

    seq = {}
    for path in sorted(glob.glob(os.path.join(raw, "seq-*.json"))):
        seq[os.path.basename(path)[4:-5]] = load(path)
    sh_seq = seq.get("sh") or {}
    setup_p50 = (sh_seq.get("setup") or {}).get("p50")
    verdicts.append((f"sandbox set-up p50 ≤ {SETUP_P50_MS} ms (sh, sequential)", f"{fmt(setup_p50, 3)} ms", setup_p50 is not None and setup_p50 <= SETUP_P50_MS))
    idle = mem.get("idle_rss_kb")
    verdicts.append((f"idle RSS ≤ {IDLE_RSS_MB} MB", f"{fmt(idle / 1024 if idle else None)} MB", idle is not None and idle / 1024 <= IDLE_RSS_MB))
    warm = warm_numbers(raw, meta, [h for h in handlers], seq)
    warm_verdicts(warm, seq, verdicts)
    chart_name = "warm.svg"
    svg_chart(os.path.join(os.path.dirname(os.path.abspath(out_md)), chart_name), warm, meta)
    conn_health = oha_numbers(load(os.path.join(raw, "conn-health.json")))
    conn_sh = oha_numbers(load(os.path.join(raw, "conn-sh.json")))
    ok_conn = conn_health is not None and conn_health["errors"] == 0 and conn_health["ok"] > 0
    verdicts.append((f"{CONNECTIONS} keep-alive connections without errors (/_/health)", f"{conn_health['errors'] if conn_health else '–'} errors, {fmt(conn_health and conn_health['rps'], 0)} req/s", ok_conn))

    L = []
    L.append("# faas benchmark — latest run")
    L.append("")
    L.append(f"Written by `bench/run.sh` on {meta.get('date', '?')}. Each setup gets {meta.get('seconds', '?')} s of load per server, in {meta.get('rounds', 1)} round(s); faas and baseline runs are interleaved (faas c=1, baseline c=1, faas c=1, … faas c=2, …) so machine noise hits both. Load generator: {meta.get('loadgen', '?')}, on 127.0.0.1.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, label in [("cpu", "CPU"), ("nproc", "nproc"), ("mem", "memory"), ("kernel", "kernel"), ("loadavg_start", "load average before the run (1/5/15 min)"), ("loadavg_end", "load average after the run"), ("faas_rev", "faas tree"), ("faas_build", "faas build")]:
        L.append(f"| {label} | {meta.get(k, '?')} |")
    if meta.get("before_rev"):
        L.append(f"| faas before (`BENCH_BEFORE`) | {meta['before_rev']}, {meta.get('before_build', '?')} |")
    L.append("")
    def load1(key):
        try:
            return float(str(meta.get(key, "0")).split()[0])
        except (ValueError, IndexError):
            return 0.0

    # Our own load adds about 1-2 to the 1-minute average by the end of the run.
    if load1("loadavg_start") > 0.5 * float(meta.get("nproc", 1)) or load1("loadavg_end") > 2 * float(meta.get("nproc", 1)):
        L.append(
            f"**Other work was running on the machine** (load average {meta.get('loadavg_start')} before and {meta.get('loadavg_end')} after, on {meta.get('nproc')} CPUs): "
            "absolute numbers are low and noisy; the interleaved ratios, and their ranges, are the better guide."
        )
        L.append("")
        if meta.get("autogroup") == "1":
            L.append(AUTOGROUP)
            L.append("")
    L.append("Sandbox layers (`faas doctor`):")
    L.append("")
    L.append("```")
    L.append((read(os.path.join(raw, "doctor.txt")) or "faas doctor output missing").rstrip())
    L.append("```")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, value, ok in verdicts:
        L.append(f"| {name} | {value} | {'yes' if ok else '**NO**'} |")
    L.append("")
    warm_mem = warm_section(raw, meta, warm, seq, chart_name, L)
    L.append("## Throughput and latency")
    L.append("")
    L.append(
        f"Each setup ran {meta.get('rounds', 1)} round(s) of {fmt(meta.get('seconds', 0) / max(1, meta.get('rounds', 1)), 2)} s, faas and baseline alternating. "
        "req/s counts 2xx answers only, over all rounds; p50/p99 are the median over the rounds of oha's percentiles; errors are non-2xx answers plus transport errors, summed. "
        "The ratio is faas/baseline req/s: the median of the per-round ratios, with their range (a wide range means the machine was noisy)."
    )
    L.append("")
    L.append("Python handlers run twice on faas: warm (the default: a zygote forks each request) and cold (`warm = false`); sh and node are always cold.")
    L.append("")
    L.append("| handler | c | faas req/s | baseline req/s | ratio (range) | faas p50 ms | base p50 ms | faas p99 ms | base p99 ms | faas errors | base errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in load_rows:
        f, b = r["faas"] or {}, r["baseline"] or {}
        sp = r.get("ratio_spread")
        rng = f" ({fmt(sp[0], 2)}–{fmt(sp[1], 2)})" if sp and len(r.get("ratio_rounds", [])) > 1 else ""
        L.append(
            f"| {r['label']} | {r['concurrency']} | {fmt(f.get('rps'))} | {fmt(b.get('rps'))} | {fmt(r['ratio'], 2)}{rng} | "
            f"{fmt(f.get('p50'), 2)} | {fmt(b.get('p50'), 2)} | {fmt(f.get('p99'), 2)} | {fmt(b.get('p99'), 2)} | {errs(r['faas'])} | {errs(r['baseline'])} |"
        )
    L.append("")
    L.append("## One sandbox, request by request (Server-Timing)")
    L.append("")
    L.append("Sequential requests on one keep-alive connection, no other load. `setup` = request received → wrapper exec'd; `handler` = exec → response head; `client` = the whole request as the client saw it (to the end of the body).")
    L.append("")
    L.append("| handler | n | errors | setup min | setup p50 | setup p90 | setup p99 | handler p50 | handler p90 | handler p99 | client p50 | client p99 | baseline client p50 | baseline client p99 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for h, d in seq.items():
        if h.endswith("-baseline") or h.endswith("-before") or not d:
            continue
        b = seq.get(f"{h.removesuffix('-cold')}-baseline") or {}
        if h in PYTHONS:
            h = f"{h} (warm)"
        s, hd, cl, bc = d.get("setup") or {}, d.get("handler") or {}, d.get("client") or {}, b.get("client") or {}
        L.append(
            f"| {h} | {d['n']} | {d['errors']} | {fmt(s.get('min'), 3)} | {fmt(s.get('p50'), 3)} | {fmt(s.get('p90'), 3)} | {fmt(s.get('p99'), 3)} | "
            f"{fmt(hd.get('p50'), 3)} | {fmt(hd.get('p90'), 3)} | {fmt(hd.get('p99'), 3)} | {fmt(cl.get('p50'), 3)} | {fmt(cl.get('p99'), 3)} | {fmt(bc.get('p50'), 3)} | {fmt(bc.get('p99'), 3)} |"
        )
    L.append("")
    L.append("All times in ms.")
    L.append("")
    cpu_f, cpu_b = load(os.path.join(raw, "cpu-faas.json")), load(os.path.join(raw, "cpu-baseline.json"))
    if cpu_f and cpu_b:
        def server(cpu):
            """Every process name but the handler's, merged: the server's threads and the child until exec."""
            rows, total = {}, 0.0
            for comm, v in cpu["by_comm"].items():
                if comm == "sh":
                    continue
                total += v["ms_per_request"]
                for r in v["rows"]:
                    rows[r["what"]] = rows.get(r["what"], 0.0) + r["ms"]
            ordered = sorted(rows.items(), key=lambda kv: -kv[1])
            return {"ms_per_request": total, "rows": [{"what": k, "ms": v, "share": v / total if total else 0.0} for k, v in ordered]}

        ff, bb = server(cpu_f), server(cpu_b)
        fh, bh = cpu_f["by_comm"].get("sh", {}), cpu_b["by_comm"].get("sh", {})
        L.append("### CPU time per request (`perf record -g`, sequential sh)")
        L.append("")
        L.append(
            f"`perf record -g -F {int(cpu_f['hz'])} -p PID` on each server while it answered {cpu_f['requests']} sequential sh requests; each sample is charged to the syscall it was in (else page faults, interrupts, user space). "
            "**Server + set-up** is every sample under any name but the handler's (`sh`): the server's threads, and the child, which keeps their name until execve: for faas that is the daemon plus the whole sandbox set-up, for the baseline the server plus its fork/exec. "
            "**Handler** is the child after exec (`sh`), exit included."
        )
        L.append("")
        L.append(f"Totals, ms of CPU per request: server + set-up faas {fmt(ff.get('ms_per_request'), 3)} vs baseline {fmt(bb.get('ms_per_request'), 3)}; handler faas {fmt(fh.get('ms_per_request'), 3)} vs baseline {fmt(bh.get('ms_per_request'), 3)}.")
        L.append("")
        L.append("| server + set-up: where | faas ms/request | share | baseline ms/request |")
        L.append("|---|---:|---:|---:|")
        bmap = {r["what"]: r["ms"] for r in bb.get("rows", [])}
        for r in ff.get("rows", [])[:16]:
            L.append(f"| {r['what']} | {fmt(r['ms'], 3)} | {fmt(100 * r['share'], 1)}% | {fmt(bmap.get(r['what']), 3)} |")
        L.append("")
    spans = load(os.path.join(raw, "spans.json"))
    if spans:
        c, e = spans.get("clone3_until_exec") or {}, spans.get("execve") or {}
        L.append("### The sandbox child, from clone3 to exec (`perf trace -e clone3,execve`)")
        L.append("")
        L.append(
            "Only two syscalls traced, so little tracing overhead: with CLONE_VFORK the daemon's clone3 returns once the child's execve has taken a new address space, so its duration is the child's whole set-up (namespaces, mounts, credentials, Landlock, seccomp) plus the first part of execve."
        )
        L.append("")
        L.append("| | n | min | p10 | p50 | p90 |")
        L.append("|---|---:|---:|---:|---:|---:|")
        L.append(f"| daemon clone3 → child exec'd (ms) | {c.get('n')} | {fmt(c.get('min'), 3)} | {fmt(c.get('p10'), 3)} | {fmt(c.get('p50'), 3)} | {fmt(c.get('p90'), 3)} |")
        L.append(f"| execve in the child (ms) | {e.get('n')} | {fmt(e.get('min'), 3)} | {fmt(e.get('p10'), 3)} | {fmt(e.get('p50'), 3)} | {fmt(e.get('p90'), 3)} |")
        L.append("")
    trace = load(os.path.join(raw, "trace.json"))
    if trace:
        L.append("### Where the set-up time goes (syscalls, `perf trace`)")
        L.append("")
        L.append(
            f"A separate faas instance ran under `perf trace` (every syscall; it follows the sandbox children) for {trace['requests']} sequential `sh` requests. "
            "Time is inside each syscall, summed over the daemon and its children and divided by the number of requests; tracing itself slows every traced call a little, so read the shares more than the absolute numbers. "
            f"Under tracing, setup p50 was {fmt(trace.get('setup_p50_traced'), 3)} ms (vs {fmt(setup_p50, 3)} ms untraced). "
            "`sandbox` = the child from clone3 to execve (execve included), `daemon` = the daemon's own threads (waits such as epoll_wait and futex left out), `handler` = the child after execve. "
            "Where the daemon spawns with CLONE_VFORK, its clone3 lasts until the child's execve and so contains the sandbox rows."
        )
        L.append("")
        L.append("| syscall | who | calls/request | ms/request | max ms |")
        L.append("|---|---|---:|---:|---:|")
        for row in trace["rows"][:25]:
            L.append(f"| {row['syscall']} | {row['who']} | {fmt(row['calls'], 1)} | {fmt(row['ms'], 3)} | {fmt(row['max'], 3)} |")
        L.append("")
    prof = read(os.path.join(raw, "profile-top.txt"))
    if prof:
        L.append("### CPU profile under load (`perf record -a`, sh at c=8)")
        L.append("")
        L.append("Share of all samples on the machine during one faas run; `comm` is the process name at the time of the sample (`tokio-rt-worker` = the daemon and its children before exec, `sh` = the handlers, `oha` = the load generator).")
        L.append("")
        L.append("```")
        L.append(prof.rstrip())
        L.append("```")
        L.append("")
    L.append("## Front-end memory")
    L.append("")
    L.append("| when | VmRSS MB | VmHWM MB |")
    L.append("|---|---:|---:|")

    def mb(kb):
        return fmt(kb / 1024 if kb else None)

    L.append(f"| idle, functions loaded | {mb(mem.get('idle_rss_kb'))} | {mb(mem.get('idle_hwm_kb'))} |")
    for h in handlers:
        m = mem.get(f"c64_{h}")
        if m:
            L.append(f"| during faas {h} at c={max(concs)} (max sampled) | {mb(m.get('max_rss_kb'))} | {mb(m.get('hwm_kb'))} |")
    for k, label in [("conn_health", f"{CONNECTIONS} connections, /_/health"), ("conn_sh", f"{CONNECTIONS} connections, sh")]:
        m = mem.get(k)
        if m:
            L.append(f"| during {label} (max sampled) | {mb(m.get('max_rss_kb'))} | {mb(m.get('hwm_kb'))} |")
    L.append(f"| idle again, after everything | {mb(mem.get('end_rss_kb'))} | {mb(mem.get('end_hwm_kb'))} |")
    L.append("")
    L.append(f"## {CONNECTIONS} concurrent keep-alive connections")
    L.append("")
    L.append("| target | req/s (2xx) | p50 ms | p99 ms | errors |")
    L.append("|---|---:|---:|---:|---|")
    if conn_health:
        L.append(f"| `/_/health` | {fmt(conn_health['rps'])} | {fmt(conn_health['p50'], 2)} | {fmt(conn_health['p99'], 2)} | {errs(conn_health)} |")
    if conn_sh:
        L.append(f"| `sh` function, concurrency = {meta.get('wide_concurrency', '?')} | {fmt(conn_sh['rps'])} | {fmt(conn_sh['p50'], 2)} | {fmt(conn_sh['p99'], 2)} | {errs(conn_sh)} |")
    L.append("")
    before = before_after(raw, meta, handlers, concs, seq, mem, L) if meta.get("before_rev") else None
    errors = read(os.path.join(raw, "faas-errors.txt"))
    L.append("## What faas logged")
    L.append("")
    if errors and errors.strip():
        L.append("Warnings and errors from the daemon's log over the whole run, counted (invocation ids blanked):")
        L.append("")
        L.append("```")
        L.append(errors.rstrip())
        L.append("```")
    else:
        L.append("No warnings or errors.")
    L.append("")
    notes = read(os.path.join(raw, "notes.md"))
    if notes:
        L.append("## Notes")
        L.append("")
        L.append(notes.rstrip())
        L.append("")

    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(out_json, "w") as f:
        json.dump({"meta": meta, "load": load_rows, "sequential": seq, "memory": mem, "connections": {"health": conn_health, "sh": conn_sh},
                   "trace": trace, "cpu": {"faas": cpu_f, "baseline": cpu_b}, "spans": spans, "warm": {"load": warm, "memory": warm_mem, "profile": {"sequential": load(os.path.join(raw, "zt-seq-steps.json")), "c8": load(os.path.join(raw, "zt-c8-steps.json")), "cow": load(os.path.join(raw, "cow.json"))}}, "targets": [{"target": n, "measured": v, "met": ok} for n, v, ok in verdicts],
                   **({"before": before} if before else {})}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
