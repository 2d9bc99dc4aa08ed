"""faas Python zygote: a warm interpreter that forks one fresh sandbox per request.

The daemon starts it, in a sandbox of its own (src/sandbox/zygote.rs says which layers and
why), as

    /usr/bin/python3 -I -B /faas/zygote.py

with a SOCK_SEQPACKET control socket on fd 0 and its log on fd 2. It imports only trusted code:
the standard library, python.py beside it, the modules the function file lists in `preload`,
and the function's own module only if the function file says `preload_handler = true`. It never
runs a request itself.

Protocol (one JSON object per datagram):
- daemon -> zygote, once: the init message (steps, mounts, filter, ...) with two fds: the
  function version's template mount namespace and a pidfd of the daemon. The zygote answers
  {"ready": ...} or {"error": ...} on fd 0.
- daemon -> zygote, per request: {"uid", "envp", "rlimits", ...} with the request's fds: the
  reply socket, stdin, stdout, stderr, the error pipe, the seccomp socket, then the cgroup
  directory, network namespace and Landlock ruleset when the request has them.
- zygote -> daemon on the reply socket: b"pid N" with a pidfd of the child, or b"fail ERRNO";
  then b"exit STATUS" (a wait status) once the child is reaped.

The child repeats spawn.rs's child_main steps in the same order, by raw syscalls, and reports a
failed step on the error pipe in the same 12-byte record; closing the error pipe is its "exec".
"""

import ctypes
import errno as errno_module
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys

# x86_64 kernel ABI (faas builds for x86_64 only). A unit test in src/sandbox/zygote.rs checks
# each of these against libc's value.
SYS_clone3 = 435
SYS_setns = 308
SYS_unshare = 272
SYS_mount = 165
SYS_mount_setattr = 442
SYS_sethostname = 170
SYS_setgroups = 116
SYS_setresgid = 119
SYS_setresuid = 117
SYS_capset = 126
SYS_prctl = 157
SYS_landlock_add_rule = 445
SYS_landlock_restrict_self = 446
SYS_seccomp = 317
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_PIDFD = 0x00001000
CLONE_INTO_CGROUP = 0x200000000
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME = 15
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
LANDLOCK_RULE_PATH_BENEATH = 1
MOUNT_ATTR_RDONLY_NOSUID_NODEV = 0x7
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
O_PATH = 0o10000000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.sbrk.restype = ctypes.c_void_p
# clone3 through the Python-API flavour of the same function: it keeps the GIL across the call,
# as os.fork does between PyOS_BeforeFork and PyOS_AfterFork_*.
pysyscall = ctypes.PyDLL(None, use_errno=True).syscall
pysyscall.restype = ctypes.c_long


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


class MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class PrctlMmMap(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack", "arg_start",
        "arg_end", "env_start", "env_end", "auxv")] + [("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


def log(message):
    sys.stderr.write(f"faas zygote: {message}\n")
    sys.stderr.flush()


def cstr(s):
    return None if s is None else s.encode()


class Child:
    """One request's process between clone3 and the handler: every failure is one record on the
    error pipe and exit 127, as in spawn.rs."""

    def __init__(self, init, err):
        self.steps = init["steps"]
        self.err = err

    def fail(self, step, index, errno):
        try:
            # After the "exec" the error pipe is closed, and its number may be another file's.
            if self.err is not None:
                os.write(self.err, struct.pack("=IIi", self.steps[step], index, errno))
        finally:
            os._exit(127)

    def exec(self):
        """What a cold child's execve is to the daemon: EOF on the error pipe, every layer on."""
        os.close(self.err)
        self.err = None

    def sys(self, step, index, nr, *args):
        # syscall(2) reads every argument as a long: an int passed as a C int would leave the
        # register's upper half undefined, and prctl refuses non-zero unused arguments.
        args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        if libc.syscall(ctypes.c_long(nr), *args) < 0:
            self.fail(step, index, ctypes.get_errno())

    def do(self, step, index, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            self.fail(step, index, e.errno or 5)


def child(init, req, fds, template, daemon_pidfd, filter_buf):
    """The request's process: applies every layer, then runs the wrapper. Never returns."""
    reply, stdin, stdout, stderr, err, notify = fds[:6]
    extra = list(fds[6:])
    cgroup = extra.pop(0) if req["cgroup"] else None
    netns = extra.pop(0) if req["netns"] else None
    ruleset = extra.pop(0) if req["landlock"] else None
    c = Child(init, err)
    for target, fd in enumerate((stdin, stdout, stderr)):
        c.do("Stdio", target, os.dup2, fd, target)
    # What the zygote changed goes back to what a fresh interpreter has (SIGPIPE stays ignored and
    # SIGINT raises KeyboardInterrupt, as CPython sets them at start-up).
    c.do("Signals", 0, signal.set_wakeup_fd, -1)
    c.do("Signals", 1, signal.signal, signal.SIGCHLD, signal.SIG_DFL)
    c.do("Signals", 2, signal.pthread_sigmask, signal.SIG_SETMASK, set())
    c.do("Session", 0, os.setsid)
    if netns is not None:
        c.sys("NetNs", 0, SYS_setns, netns, CLONE_NEWNET)
    host = init["hostname"].encode()
    c.sys("Hostname", 0, SYS_sethostname, host, ctypes.c_size_t(len(host)))
    c.sys("MountNs", 0, SYS_setns, template, CLONE_NEWNS)
    c.sys("MountNs", 1, SYS_unshare, CLONE_NEWNS)
    for i, op in enumerate(init["mounts"]):
        if "read_only_tree" in op:
            attr = MountAttr(MOUNT_ATTR_RDONLY_NOSUID_NODEV, 0, 0, 0)
            c.sys("Mount", i, SYS_mount_setattr, AT_FDCWD, cstr(op["read_only_tree"]), AT_RECURSIVE,
                  ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        else:
            c.sys("Mount", i, SYS_mount, cstr(op["source"]), cstr(op["target"]), cstr(op["fstype"]),
                  ctypes.c_ulong(op["flags"]), cstr(op["data"]))
    c.do("Chdir", 0, os.chdir, "/code")
    for i, (path, value) in enumerate(init["ipc_limits"]):
        def write(path=path, value=value):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                if os.write(fd, value.encode()) != len(value):
                    raise OSError(5, "short write")
            finally:
                os.close(fd)
        c.do("IpcLimits", i, write)
    # The zygote's bounding set holds only the capabilities it kept (BOUNDING, read at start):
    # dropping those empties it, without 41 calls for the ones already gone.
    for cap in BOUNDING:
        c.sys("CapBound", cap, SYS_prctl, PR_CAPBSET_DROP, ctypes.c_ulong(cap))
    c.sys("Groups", 0, SYS_setgroups, 0, None)
    c.sys("Gid", 0, SYS_setresgid, req["gid"], req["gid"], req["gid"])
    c.sys("Uid", 0, SYS_setresuid, req["uid"], req["uid"], req["uid"])
    header = struct.pack("=Ii", 0x20080522, 0)
    data = bytes(24)
    c.sys("Caps", 0, SYS_capset, header, data)
    c.sys("Caps", 1, SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    # Our parent is the zygote, whose death takes this pid namespace along anyway; the daemon's
    # pidfd says whether anyone is left to supervise us.
    c.sys("ParentDeath", 0, SYS_prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
    poller = select.poll()
    poller.register(daemon_pidfd, select.POLLIN)
    if c.do("ParentDeath", 1, poller.poll, 0):
        os._exit(127)
    del poller
    c.sys("NoNewPrivs", 0, SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if ruleset is not None:
        for i, (path, access) in enumerate((("/tmp", init["landlock"][0]), ("/proc", init["landlock"][1]))):
            fd = c.do("Landlock", i, os.open, path, O_PATH | os.O_CLOEXEC)
            attr = PathBeneath(access, fd)
            c.sys("Landlock", i, SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(attr), 0)
            os.close(fd)
        c.sys("Landlock", 2, SYS_landlock_restrict_self, ruleset, 0)
    # Nothing of the zygote's stays open: not its control socket, not another request's reply
    # socket. Python objects that still name those numbers are never closed (os._exit at the end).
    keep = sorted({0, 1, 2, err, notify})
    for lo, hi in zip(keep, keep[1:] + [1 << 20]):
        if hi > lo + 1:
            os.closerange(lo + 1, hi)
    prog = SockFprog(len(filter_buf) // 8, ctypes.addressof(filter_buf))
    listener = libc.syscall(ctypes.c_long(SYS_seccomp), SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                            ctypes.byref(prog))
    if listener < 0:
        c.fail("Seccomp", 0, ctypes.get_errno())
    sock = socket.socket(fileno=notify)
    c.do("SendListener", 0, socket.send_fds, sock, [b"\0"], [listener])
    os.close(listener)
    for i, (res, value) in enumerate(req["rlimits"]):
        c.do("Rlimit", i, resource.setrlimit, res, (value, value))
    argv = ["python.py", init["code_dir"], init["handler"]]
    reseed()
    if req["spare"]:
        # The "exec" comes first for a spare: every layer is on. It imports the handler's module
        # now, seeing the function's own environment (req["envp"]: its env, secrets, proxy), as
        # a Lambda function's init code does, then waits for its request, named faas-spare
        # meanwhile (ps, and the tests' leak checks, tell it from a request).
        c.exec()
        c.sys("Exec", 1, SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0)
        set_environment(c, req["envp"])
        out, handler = WRAPPER.load(argv)
        sys.stderr.flush()
        libc.prctl(PR_SET_NAME, b"faas-spare", 0, 0, 0)
        msg = sock.recv(1 << 20)
        if not msg:
            os._exit(0)  # the daemon let go of it unused
        libc.prctl(PR_SET_NAME, COMM, 0, 0, 0)
        sock.close()
        environ_block = set_environment(c, json.loads(msg)["envp"])
    else:
        sock.close()
        environ_block = set_environment(c, req["envp"])
        # The uid switch left the process not dumpable, which gives its /proc/self files to
        # root (environ unreadable to the handler, unlike after a cold start's execve).
        c.sys("Exec", 1, SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0)
        # The "exec": every layer is on. EOF on the error pipe tells the daemon so.
        c.exec()
        out, handler = WRAPPER.load(argv)
    code = 2
    try:
        code = handler if out is None else WRAPPER.serve(out, handler)
    finally:
        try:
            sys.stderr.flush()
        finally:
            del environ_block
            os._exit(code)


def reseed():
    """Generators seeded when their module was imported, in the zygote, would draw the same
    numbers in every child: each child seeds them again from the kernel. (random's own at-fork
    hook does so too; numpy registers none.)"""
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()


def set_environment(c, envp):
    """os.environ, and what /proc/self/environ shows (execve sets both for a cold start): the
    zygote's start-up environment until PR_SET_MM_MAP (with the rest of the layout as it is, no
    capability needed) points it at this block, which the caller keeps until os._exit."""
    os.environb.clear()
    for entry in envp:
        name, _, value = bytes.fromhex(entry).partition(b"=")
        os.environb[name] = value
    environ = b"".join(bytes.fromhex(entry) + b"\0" for entry in envp)
    block = ctypes.create_string_buffer(environ, len(environ))
    mm = PrctlMmMap.from_buffer_copy(LAYOUT)
    mm.brk = libc.sbrk(ctypes.c_ssize_t(0))
    mm.env_start = ctypes.addressof(block)
    mm.env_end = mm.env_start + len(environ)
    c.sys("Exec", 0, SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(mm), ctypes.sizeof(mm), 0)
    return block


WRAPPER = None


def load_wrapper():
    """python.py, beside this file, as a module: -I keeps the script's directory off sys.path."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python.py")
    spec = importlib.util.spec_from_file_location("faas_wrapper", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


BOUNDING = ()
# Our process name (python3), which a spare takes back once its request comes.
with open("/proc/self/comm", "rb") as f:
    COMM = f.read().strip()


LAYOUT = None


def memory_layout():
    """This process's code, data, heap, stack and argument bounds (proc(5) stat fields 26-28 and
    45-49), which its children keep: PR_SET_MM_MAP sets them all at once."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    field = lambda n: int(fields[n - 3])  # noqa: E731 (fields[0] is field 3, the state)
    return PrctlMmMap(start_code=field(26), end_code=field(27), start_stack=field(28), start_data=field(45),
                      end_data=field(46), start_brk=field(47), arg_start=field(48), arg_end=field(49),
                      exe_fd=0xFFFFFFFF)


def start(init):
    """Imports what the zygote keeps warm; returns a reason it cannot serve, or None."""
    global WRAPPER, BOUNDING, LAYOUT
    LAYOUT = memory_layout()
    BOUNDING = tuple(cap for cap in range(init["cap_last"] + 1)
                     if libc.syscall(ctypes.c_long(SYS_prctl), PR_CAPBSET_READ, ctypes.c_ulong(cap)) == 1)
    WRAPPER = load_wrapper()
    # The wrapper imports these on first use; warm, every child would import them again.
    import asyncio  # noqa: F401
    import traceback  # noqa: F401
    import importlib
    for name in init["preload"]:
        try:
            importlib.import_module(name)
        except BaseException as e:
            return f"cannot preload {name!r}: {type(e).__name__}: {e}"
    if init["preload_handler"]:
        try:
            sys.path.insert(0, init["code_dir"])
            WRAPPER.load_handler(init["code_dir"], init["handler"])
        except BaseException as e:
            return f"cannot import the handler {init['handler']!r}: {type(e).__name__}: {e}"
    # fork copies only this thread: a module that started threads (a BLAS pool, say) would leave
    # each child with their locks held and their work missing.
    if threads() != 1:
        return f"{threads()} threads after the preloads; a zygote must stay single-threaded"
    # Children would otherwise touch (and copy) every preloaded object on their first collection.
    gc.freeze()
    return None


def main():
    ctl = socket.socket(fileno=0)
    msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 2)
    if not msg or len(fds) != 2:
        log("no init message")
        return 2
    init = json.loads(msg)
    template, daemon_pidfd = fds
    filter_bytes = bytes.fromhex(init["filter"])
    filter_buf = ctypes.create_string_buffer(filter_bytes, len(filter_bytes))
    why = start(init)
    if why is not None:
        log(why)
        ctl.send(json.dumps({"error": why}).encode())
        return 1
    ctl.send(json.dumps({"ready": True, "rss": rss_bytes()}).encode())

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    replies = {}  # child pid -> its reply socket's fd
    served = 0
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    before_fork = ctypes.pythonapi.PyOS_BeforeFork
    after_child = ctypes.pythonapi.PyOS_AfterFork_Child
    after_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                reap(replies)
                continue
            try:
                msg, fds, flags, _ = socket.recv_fds(ctl, 1 << 16, 16)
            except InterruptedError:
                continue
            if not msg:
                # The daemon let go: this zygote is done. Its children die with its pid namespace.
                return 0
            req = json.loads(msg)
            # Which fd is which goes by position: a message cut short (out of fds here) must
            # start nothing.
            want = 6 + req["cgroup"] + req["netns"] + req["landlock"]
            if len(fds) != want or flags & socket.MSG_CTRUNC:
                log(f"a request came with {len(fds)} fds, not {want}; refused")
                if fds:
                    os.write(fds[0], b"fail %d" % errno_module.EMFILE)
                for fd in fds:
                    os.close(fd)
                continue
            args = CloneArgs()
            pidfd = ctypes.c_int(-1)
            flags = init["clone_flags"] | CLONE_PIDFD
            if req["cgroup"]:
                flags |= CLONE_INTO_CGROUP
                args.cgroup = fds[6]
            args.flags = flags
            args.pidfd = ctypes.addressof(pidfd)
            args.exit_signal = signal.SIGCHLD
            sys.stderr.flush()
            before_fork()
            pid = pysyscall(ctypes.c_long(SYS_clone3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
            if pid == 0:
                after_child()
                # The control socket object must never close fd 0 (the request's stdin, soon).
                ctl.detach()
                try:
                    child(init, req, fds, template, daemon_pidfd, filter_buf)
                finally:
                    os._exit(127)
            errno = ctypes.get_errno()
            after_parent()
            reply = fds[0]
            for fd in fds[1:]:
                os.close(fd)
            if pid < 0:
                os.write(reply, b"fail %d" % errno)
                os.close(reply)
                continue
            served += 1
            replies[pid] = reply
            sock = socket.socket(fileno=reply)
            try:
                socket.send_fds(sock, [b"pid %d" % pid], [pidfd.value])
            except OSError:
                pass  # the daemon gave up on it; it is killed through the pidfd it never got
            sock.detach()
            os.close(pidfd.value)


def reap(replies):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply = replies.pop(pid, None)
        if reply is not None:
            try:
                os.write(reply, b"exit %d" % status)
            except OSError:
                pass
            os.close(reply)


if __name__ == "__main__":
    try:
        code = main()
    except BaseException as e:
        log(f"failed: {type(e).__name__}: {e}")
        code = 1
    os._exit(code)
