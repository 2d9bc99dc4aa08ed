"""A stand-in for wrappers/zygote.py that runs it unchanged, with timestamps: for the profile of
a warm request's set-up (bench/run.sh with BENCH_PROFILE=1; never for a real daemon).

run.sh copies the wrappers directory, renames zygote.py to zygote_real.py and puts this file in
its place. This loads zygote_real.py as a module, wraps a few of its names, and runs its main()
as its own __main__ block would. Nothing in zygote.py is edited, so the profile follows the
lead's changes to it; a name this needs and no longer finds only loses that mark.

What it records, in the child, with CLOCK_MONOTONIC and the child's minor page faults
(getrusage: every copy-on-write fault is one):
  recv     the zygote read the request's message (faas_serve, native: Plan.received_ns)
  clone    just before clone3 (native: Plan.cloned_ns; the child has its copy of the plan)
  c0, c1   in the child: faas_serve returned (clone3 and the native steps, Stdio to Rlimit,
           done); PyOS_AfterFork_Child returned
  start    child() entered
  STEP     after each Child.prctl call (Child.sys/Child.do in older zygote.py), under its
           step name (the last call of a step ends it; raw calls between two steps count in
           the next one)
  exec     the error pipe closed: the daemon's "exec" (set-up over)
and, once the error pipe is closed (so outside the set-up it measures), writes one line
  ZT recv=NS clone=NS c0=NS c1=NS start=NS exec=NS f0=.. f1=.. fstart=.. fexec=.. STEP=NS/FAULTS ...
to the request's stderr, which the daemon logs as the function's output. A spare closes its
error pipe before it waits for its request, so its line times its set-up made ahead. Once the
answer is written, a second line
  ZH exec=NS load=NS loaded=NS serve=NS end=NS fexec=.. fload=.. ...
times the rest: for a spare, recv is when its request's environment came (it takes its
process name back just after); load/loaded bracket python.py's load() (import the handler; a spare does
it before it waits), serve/end its serve() (run the handler, answer). An older python.py
with only main() gives load=serve (main's start) and end.
"""

import ctypes
import importlib.util
import os
import resource
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("zygote_real", os.path.join(_here, "zygote_real.py"))
z = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(z)

mono = time.monotonic_ns


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


T = {}  # name -> (ns, faults); copied into each child by the fork
STEPS = []  # (step, ns, faults) in the child
ERR = [None]  # the child's error pipe


def mark(name):
    T[name] = (mono(), faults())


class OsProxy:
    """os as zygote.py uses it; close(err) marks the "exec" and then writes the line."""

    def __getattr__(self, name):
        return getattr(os, name)

    def close(self, fd):
        if ERR[0] is not None and fd == ERR[0]:
            ERR[0] = None
            mark("exec")
            os.close(fd)
            report()
            return
        os.close(fd)


def report():
    parts = [f"{k}={T[k][0]}" for k in ("recv", "clone", "c0", "c1", "start", "exec") if k in T]
    parts += [f"f{k}={T[k][1]}" for k in ("c0", "c1", "start", "exec") if k in T]
    parts += [f"{s}={ns}/{f}" for s, ns, f in STEPS]
    try:
        os.write(2, ("ZT " + " ".join(parts) + "\n").encode())
    except OSError:
        pass


MARKS = ("exec", "recv", "load", "loaded", "serve", "end")


def write_zh():
    parts = [f"{k}={T[k][0]}" for k in MARKS if k in T]
    parts += [f"f{k}={T[k][1]}" for k in MARKS if k in T]
    try:
        os.write(2, ("ZH " + " ".join(parts) + "\n").encode())
    except OSError:
        pass


def bracket(fn, before, after, last=False):
    def wrapped(*a, **k):
        mark(before)
        try:
            return fn(*a, **k)
        finally:
            mark(after)
            if last:
                write_zh()

    return wrapped


def wrap_wrapper(module):
    """python.py's load() and serve() (or an older main()), bracketed; the ZH line at the end."""
    if hasattr(module, "load") and hasattr(module, "serve"):
        module.load = bracket(module.load, "load", "loaded")
        module.serve = bracket(module.serve, "serve", "end", last=True)
    elif hasattr(module, "main"):
        real = module.main

        def main(argv):
            mark("load")
            T["serve"] = T["load"]
            return bracket(real, "main", "end", last=True)(argv)

        module.main = main
    return module


def wrap_step(method):
    def wrapped(self, step, index, *args):
        try:
            return method(self, step, index, *args)
        finally:
            ns, f = mono(), faults()
            if STEPS and STEPS[-1][0] == step:
                STEPS[-1] = (step, ns, f)
            else:
                STEPS.append((step, ns, f))

    return wrapped


def prctl_timed(option, arg2, *args):
    """zygote.py's PRCTL; a spare taking its name back marks its request's arrival."""
    if arg2 == getattr(z, "COMM_NAME", None):
        mark("recv")
    return REAL_PRCTL(option, arg2, *args)


REAL_PRCTL = getattr(z, "PRCTL", None)


def install():
    z.os = OsProxy()
    if REAL_PRCTL is not None:
        z.PRCTL = prctl_timed
    if hasattr(z, "child"):
        # Entered once per child, with its error pipe in the plan (the Child it uses is made
        # once, in the zygote).
        real_child = z.child

        def child_timed(*a, **k):
            mark("start")
            ERR[0] = z.PLAN.err
            return real_child(*a, **k)

        z.child = child_timed
    if hasattr(z, "Child"):
        # The Python-level steps, each a Child method taking (step, index, ...).
        for name in ("sys", "do", "prctl"):
            if hasattr(z.Child, name):
                setattr(z.Child, name, wrap_step(getattr(z.Child, name)))
    if hasattr(z, "load_native"):
        load_native = z.load_native

        def load_native_timed(fd):
            got = load_native(fd)
            serve = z.SERVE

            def serve_timed(*args):
                rc = serve(*args)
                if rc == 0:
                    mark("c0")
                    if not hasattr(z, "after_fork_child"):
                        T["c1"] = T["c0"]  # no PyOS_AfterFork_Child: its phase is empty
                    T["recv"] = (z.PLAN.received_ns, 0)
                    T["clone"] = (z.PLAN.cloned_ns, 0)
                return rc

            z.SERVE = serve_timed
            return got

        z.load_native = load_native_timed
    if hasattr(z, "load_wrapper"):
        load = z.load_wrapper
        z.load_wrapper = lambda: wrap_wrapper(load())
    if hasattr(z, "after_fork_child"):
        after = z.after_fork_child

        def after_child():
            after()
            mark("c1")

        z.after_fork_child = after_child


if __name__ == "__main__":
    try:
        install()
        # As zygote.py's own __main__: its compile mode too (the compile sandbox runs this).
        code = z.compile_tree(sys.argv[2]) if sys.argv[1:2] == ["--compile"] else z.main()
    except BaseException as e:
        z.log(f"failed: {type(e).__name__}: {e}")
        code = 1
    os._exit(code)
