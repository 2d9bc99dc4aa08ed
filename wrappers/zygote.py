"""faas Python zygote: a warm interpreter that forks one fresh sandbox per request.

The daemon starts it, in a sandbox of its own (src/sandbox/zygote.rs says which layers and
why), as

    /usr/bin/python3 -I -B /faas/zygote.py

with a SOCK_SEQPACKET control socket on fd 0 and its log on fd 2. It imports only trusted code:
the standard library, python.py beside it, the modules the function file lists in `preload`,
and the function's own module only if the function file says `preload_handler = true`. It never
runs a request itself.

Protocol (one datagram each; the init message and its answer are JSON, the rest binary):
- daemon -> zygote, once: the init message (steps, mounts, filter, ...) with three fds: the
  function version's template mount namespace, a pidfd of the daemon and the native child
  steps, libfaas_zygote.so (read-only). The zygote answers {"ready": ...} or {"error": ...} on
  fd 0.
- daemon -> zygote, per request: a binary head (`Request`: uid, gid, flags, rlimits), then the
  environment block, with the request's fds: the reply socket, stdin, stdout, stderr, the error
  pipe, the seccomp socket, then the cgroup directory, network namespace and Landlock ruleset
  when the flags say so.
- zygote -> daemon on the reply socket: b"pid N" with a pidfd of the child, or b"fail ERRNO";
  then b"exit STATUS" (a wait status) once the child is reaped.

After its start the zygote runs no Python: its request loop is native (zygote/src/lib.rs,
`faas_serve`), so that the objects every child shares stay as they are; a Python loop wrote
refcounts and dicts on shared pages, and each such page was a copy-on-write fault in the
zygote and again in the next child. The child repeats spawn.rs's child_main steps in the same
order, in the same native call, reports a failed step on the error pipe in the same 12-byte
record, and returns into Python here with every layer on; closing the error pipe is its "exec".
The plan the steps read (`Plan`) is built here once; the loop fills in each request's part.
"""

import os

# Every at-fork hook registered from here on (by the modules the zygote imports), recorded for
# its children as well as registered: child() runs those that are not moot (CHILD_HOOKS), each
# after_in_child with the `before` registered in the same call (a lock taken before the fork
# and released after it), as (before or None, after_in_child).
AT_FORK_CHILD = []
_register_at_fork = os.register_at_fork


def _record_at_fork(**hooks):
    if hooks.get("after_in_child") is not None:
        AT_FORK_CHILD.append((hooks.get("before"), hooks["after_in_child"]))
    _register_at_fork(**hooks)


os.register_at_fork = _record_at_fork

import ctypes  # noqa: E402 (after the recorder: any of these may register a hook)
import gc  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

# x86_64 kernel ABI (faas builds for x86_64 only). A unit test in src/sandbox/zygote.rs checks
# each of these against libc's value.
PR_CAPBSET_READ = 23
PR_SET_DUMPABLE = 4
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_SET_NAME = 15
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_COLLAPSE = 25
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
PR_SET_VMA = 0x53564D41
PR_SET_VMA_ANON_NAME = 0

libc = ctypes.CDLL(None, use_errno=True)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
# prctl(2) with its arguments as the kernel reads them (unsigned longs: an int passed as a C int
# would leave the register's upper half undefined, and prctl refuses non-zero unused ones),
# converted by the prototype rather than by ctypes objects made in each child. Strings go as
# the addresses of buffers kept alive.
PRCTL = libc.prctl
PRCTL.restype = ctypes.c_int
PRCTL.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]


# The native steps' plan (zygote/src/lib.rs): same names, same layout, checked at load
# (`layout_mismatch`).
class MountOp(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("source", ctypes.c_char_p), ("target", ctypes.c_char_p), ("fstype", ctypes.c_char_p),
                ("data", ctypes.c_char_p)]


class IpcLimit(ctypes.Structure):
    _fields_ = [("path", ctypes.c_char_p), ("value", ctypes.c_char_p), ("len", ctypes.c_size_t)]


class Rlimit(ctypes.Structure):
    _fields_ = [("resource", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("value", ctypes.c_uint64)]


MAX_RLIMITS = 8
REQ_SPARE = 8


class Request(ctypes.Structure):
    _fields_ = [("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("rlimits_len", ctypes.c_uint32), ("rlimits", Rlimit * MAX_RLIMITS)]


class Plan(ctypes.Structure):
    _fields_ = [
        ("stdio", ctypes.c_int * 3), ("err", ctypes.c_int), ("notify", ctypes.c_int), ("netns", ctypes.c_int),
        ("ruleset", ctypes.c_int), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("pad", ctypes.c_uint32),
        ("rlimits", ctypes.POINTER(Rlimit)), ("rlimits_len", ctypes.c_size_t),
        ("template", ctypes.c_int), ("daemon_pidfd", ctypes.c_int),
        ("hostname", ctypes.c_char_p), ("hostname_len", ctypes.c_size_t),
        ("mounts", ctypes.POINTER(MountOp)), ("mounts_len", ctypes.c_size_t),
        ("ipc_limits", ctypes.POINTER(IpcLimit)), ("ipc_limits_len", ctypes.c_size_t),
        ("caps", ctypes.POINTER(ctypes.c_uint32)), ("caps_len", ctypes.c_size_t),
        ("landlock_tmp", ctypes.c_uint64), ("landlock_proc", ctypes.c_uint64),
        ("filter", ctypes.c_void_p), ("filter_len", ctypes.c_size_t),
        ("received_ns", ctypes.c_uint64), ("cloned_ns", ctypes.c_uint64),
    ]


def layout_mismatch(native):
    """What differs between our structures and the library's (None if nothing): each size and
    field offset, by name, both ways."""
    native.faas_layout.restype = ctypes.c_char_p
    native.faas_layout.argtypes = [ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    theirs = {}
    value = ctypes.c_size_t()
    while (name := native.faas_layout(len(theirs), ctypes.byref(value))) is not None:
        theirs[name.decode()] = value.value
    ours = {}
    for struct_type in (Plan, MountOp, IpcLimit, Rlimit, Request):
        ours[struct_type.__name__] = ctypes.sizeof(struct_type)
        for field, _ in struct_type._fields_:
            ours[f"{struct_type.__name__}.{field}"] = getattr(struct_type, field).offset
    if ours == theirs:
        return None
    return ", ".join(f"{k}: {ours.get(k)} here, {theirs.get(k)} there"
                     for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k))


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
    """One request's process between the native steps and the handler: every failure is one
    record on the error pipe and exit 127, as in spawn.rs."""

    def __init__(self, steps):
        self.steps = steps
        self.err = None

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

    def prctl(self, step, index, option, arg2, arg3=0, arg4=0):
        if PRCTL(option, arg2, arg3, arg4, 0) < 0:
            self.fail(step, index, ctypes.get_errno())


def child(init, length):
    """The request's process, every layer on (faas_serve ran the steps), its request in BUF.
    Runs the wrapper; never returns."""
    # faas_serve forked without CPython's own after-fork work (PyOS_AfterFork_Child), which
    # re-creates the locks other threads might have held and the thread states they left, and
    # runs the modules' at-fork hooks: the zygote has one thread (start() checks) and waited
    # in native code, holding no lock but the GIL, which this thread keeps. Of the hooks,
    # threading's and logging's only re-create locks, and random's reseeds, which reseed()
    # does; a preloaded module's run here (CHILD_HOOKS). Measured: the two moot ones and
    # PyOS_AfterFork_Child cost a child ~200 copy-on-write faults and ~0.5 ms.
    for before, after in CHILD_HOOKS:
        try:
            if before is not None:
                before()
            after()
        except BaseException as e:  # as CPython: reported, not fatal
            log(f"an at-fork hook failed: {type(e).__name__}: {e}")
    c = CHILD
    c.err = PLAN.err
    reseed()
    if REQUEST_FLAGS[0] & REQ_SPARE:
        # The "exec" comes first for a spare: every layer is on. It imports the handler's module
        # now, seeing the function's own environment (the function's env, secrets, proxy), as
        # a Lambda function's init code does, then waits for its request, named faas-spare
        # meanwhile (ps, and the tests' leak checks, tell it from a request).
        c.exec()
        c.prctl("Exec", 1, PR_SET_DUMPABLE, 1)
        set_environment(c, HEAD, length)
        out, handler = WRAPPER.load(ARGV)
        sys.stderr.flush()
        PRCTL(PR_SET_NAME, SPARE_NAME, 0, 0, 0)
        # The request's environment block, in place of the function's: one datagram, read
        # without a socket object (whose making ran socket.py's code in every spare).
        length = os.readv(PLAN.notify, [BUF])
        if not length:
            os._exit(0)  # the daemon let go of it unused
        PRCTL(PR_SET_NAME, COMM_NAME, 0, 0, 0)
        os.close(PLAN.notify)
        set_environment(c, 0, length)
    else:
        os.close(PLAN.notify)
        set_environment(c, HEAD, length)
        # The uid switch left the process not dumpable, which gives its /proc/self files to
        # root (environ unreadable to the handler, unlike after a cold start's execve).
        c.prctl("Exec", 1, PR_SET_DUMPABLE, 1)
        # The "exec": every layer is on. EOF on the error pipe tells the daemon so.
        c.exec()
        out, handler = WRAPPER.load(ARGV)
    code = 2
    try:
        code = handler if out is None else WRAPPER.serve(out, handler)
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def moot_hook(hook):
    """Whether an at-fork hook has nothing to do in a child of a single-threaded zygote that
    reseed()s: see child()."""
    known = [getattr(sys.modules.get(module), name, None) for module, name in (
        ("threading", "_after_fork"), ("logging", "_after_at_fork_child_reinit_locks"))]
    rng = getattr(sys.modules.get("random"), "_inst", None)
    return any(hook is k for k in known if k is not None) or (rng is not None and hook == rng.seed)


def reseed():
    """Generators seeded in the zygote would draw the same numbers in every child: each child
    seeds them again from the kernel. random's and numpy's global generators; OpenSSL's, whose
    fork check compares pids (zygote and child are both pid 1 of their namespaces, so it never
    fires: a preload that made an SSLContext gave every child the same TLS randoms); and
    tempfile's name generator (the same pid check)."""
    random = sys.modules.get("random")
    if random is not None and (RANDOM_STATE is None or MT19937_FILL(*RANDOM_STATE) != 0):
        random.seed()
    # numpy's state written in place too: set_state() ran numpy's Python and Cython in each
    # child, copying the pages of every object it touched.
    if NUMPY_STATE is not None:
        if MT19937_FILL(NUMPY_STATE, NUMPY_STATE + 2496) != 0:
            sys.modules["numpy.random"].seed()
    elif NUMPY_KEY is not None:
        # What seed() ends with, without the SeedSequence it seeds through, which cost each
        # child 210 faults and 0.66 ms (15% of a warm numpy request's CPU): an MT19937 state
        # of 623 words from the kernel after a first word of 0x80000000 (seed()'s guard
        # against an all-zero state), position 624 (the next draw mixes it first), no cached
        # Gaussian. Filled through a memoryview: a numpy call less to make in each child.
        words = memoryview(NUMPY_KEY).cast("B")
        words[:] = os.urandom(len(words))
        words.cast("I")[0] = 0x80000000
        words.release()
        sys.modules["numpy.random"].set_state(("MT19937", NUMPY_KEY, 624, 0, 0.0))
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        ssl.RAND_add(os.urandom(48), 48.0)
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None


def random_state_address(random):
    """The addresses of the state and position of random's global generator (CPython's
    `RandomObject`: PyObject_HEAD, int index, uint32_t state[624]) if the bytes there are what
    its getstate() says and it has no cached Gaussian; else None, and reseed() calls seed().
    Checked by reading only, as numpy_state_address()."""
    try:
        generator = random._inst
        # The module's functions are methods of the generator made at import: a preload that
        # replaced random._inst left them on the old one, which is the one to reseed.
        if getattr(random.random, "__self__", None) is not generator:
            return None
        version, words, gauss = generator.getstate()
        if version != 3 or len(words) != 625 or gauss is not None:
            return None
        head = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
        pos, key = id(generator) + head, id(generator) + head + 4
        state = struct.pack("<i", words[624]) + struct.pack("<624I", *words[:624])
        return (key, pos) if ctypes.string_at(pos, len(state)) == state else None
    except Exception:
        return None


def numpy_state_address(numpy):
    """The address of numpy's global MT19937 state (`mt19937_state`: uint32 key[624], int pos)
    if the global generator is an MT19937 and the bytes there are the state get_state() reads;
    else None, and reseed() goes through set_state(). Checked by reading only: written to on a
    guess, another generator's smaller state would take its neighbours with it."""
    try:
        bit_generator = numpy.random.mtrand._rand._bit_generator
        if not isinstance(bit_generator, numpy.random.MT19937):
            return None
        address = bit_generator.ctypes.state_address
        _, key, pos, _, _ = numpy.random.get_state(legacy=True)
        state = key.astype("<u4").tobytes() + struct.pack("<i", pos)
        return address if len(state) == 2500 and ctypes.string_at(address, 2500) == state else None
    except Exception:
        return None


def set_environment(c, start, end):
    """os.environ, libc's environ and what /proc/self/environ shows (execve sets all three for
    a cold start), from the environment block BUF[start:end] (`NAME=value\\0` each), which stays
    in BUF until os._exit: the zygote's start-up environment until then.
    os.environ's dict is filled directly and libc's environ pointed at an array of the entries
    in place (as execve leaves them), PR_SET_MM_MAP (with the rest of the layout as it is, no
    capability needed) points /proc/self/environ at the block. Going through os.environ's
    setters instead (a putenv and three Python calls per variable, twice for a spare) was 8% of
    a warm request's CPU (A/B, c=1 and c=8). Later changes go through glibc's setenv, which
    copies the array before it grows it."""
    global ENVP
    address = OWN + start
    entries = ctypes.string_at(address, end - start).split(b"\0")[:-1]
    data = os.environb._data  # os.environ's too
    data.clear()
    # A bytearray, not a ctypes array: a ctypes array of a length new to the process is a new
    # type, made in every child.
    envp = bytearray(8 * (len(entries) + 1))
    pointers = memoryview(envp).cast("Q")
    for i, entry in enumerate(entries):
        name, _, value = entry.partition(b"=")
        data[name] = value
        pointers[i] = address
        address += len(entry) + 1
    pointers.release()
    ENVIRON.value = ctypes.addressof(ctypes.c_char.from_buffer(envp))
    ENVP = envp  # only now may the array environ pointed at go
    mm = LAYOUT  # the child's own copy
    mm.brk = libc.sbrk(0)
    mm.env_start = OWN + start
    mm.env_end = OWN + end
    c.prctl("Exec", 0, PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(mm), ctypes.sizeof(mm))


WRAPPER = None
# The array reseed() fills with numpy's new generator state, made once (start()).
NUMPY_KEY = None
# Or, where it checked out (numpy_state_address), the address of that state itself.
NUMPY_STATE = None
# random's global generator (random._inst), as (key, pos) addresses for MT19937_FILL, if
# random_state_address() found them.
RANDOM_STATE = None
# libfaas_zygote.so's faas_mt19937_fill(key, pos): a fresh MT19937 state from the kernel, in place.
MT19937_FILL = None
# Why the zygote has no huge pages (collapse_huge_pages()), or None.
NO_HUGE_PAGES = None
NO_HUGE_TEXT = None
# libc's environ, and the array set_environment points it at (NULL-terminated).
ENVIRON = ctypes.c_void_p.in_dll(libc, "environ")
ENVP = None


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


def proc_kib(path, name):
    """A `NAME: N kB` line of a /proc file of ours, in bytes (0 if it has none)."""
    with open(path) as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes():
    return proc_kib("/proc/self/status", "VmRSS:")


def huge_page_bytes():
    return proc_kib("/proc/self/smaps_rollup", "AnonHugePages:")


# Our process name (python3), which a spare takes back once its request comes.
with open("/proc/self/comm", "rb") as f:
    COMM = f.read().strip()
# The names a spare takes and gives back (PR_SET_NAME), as addresses for PRCTL.
NAMES = [ctypes.create_string_buffer(b"faas-spare"), ctypes.create_string_buffer(COMM)]
SPARE_NAME, COMM_NAME = (ctypes.addressof(name) for name in NAMES)


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


def anonymous(size):
    """A fresh private read-write mapping of `size` bytes: its address, or OSError."""
    address = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    if address in (None, ctypes.c_void_p(-1).value):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return address


def own_mapping(size):
    """Memory for what the zygote itself writes while it serves (the plan, the request buffer):
    a mapping of its own, never in a huge page (MADV_NOHUGEPAGE; collapse_huge_pages() takes
    only other mappings). A zygote's write to a huge page its children share splits its
    mapping of that page, and the next forks copy 512 entries for it again."""
    address = anonymous(size)
    libc.madvise(address, size, MADV_NOHUGEPAGE)
    return address


SERVE = None
# Each request as faas_serve receives it: a datagram on a unix socket is at most its send
# buffer (~208 KiB by default), so a larger one never comes. The plan after it.
BUF_SIZE = 1 << 18
OWN = own_mapping(BUF_SIZE + ctypes.sizeof(Plan))
BUF = (ctypes.c_char * BUF_SIZE).from_address(OWN)
PLAN = Plan.from_address(OWN + BUF_SIZE)
# What a child reads of its request's head, read without ctypes objects made in the child (a
# ctypes structure from BUF, and its field, copied ~20 pages in each).
HEAD = ctypes.sizeof(Request)
REQUEST_FLAGS = memoryview(BUF).cast("B")[Request.flags.offset:Request.flags.offset + 4].cast("I")
CHILD_HOOKS = []
CHILD = None
ARGV = None
# What PLAN's pointers point into: kept as long as the zygote lives.
KEEP = []


def load_native(fd):
    """The native steps from the library the daemon sent (opened read-only by the daemon, which
    found it beside its executable or in its lib/faas); returns a reason it cannot serve, or
    None. Through /proc/self/fd: the zygote has a /proc of its own."""
    global SERVE
    path = f"/proc/self/fd/{fd}"
    try:
        if not os.path.exists(path):
            return "no /proc in the zygote's mount namespace: cannot load libfaas_zygote.so"
        native = ctypes.PyDLL(path)
    except OSError as e:
        return f"cannot load libfaas_zygote.so: {e}"
    finally:
        os.close(fd)
    why = layout_mismatch(native)
    if why is not None:
        return f"libfaas_zygote.so does not match zygote.py (another build?): {why}"
    SERVE = native.faas_serve
    global MT19937_FILL
    MT19937_FILL = native.faas_mt19937_fill
    MT19937_FILL.restype = ctypes.c_int
    MT19937_FILL.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    install_arenas(native)
    SERVE.restype = ctypes.c_int
    SERVE.argtypes = [ctypes.c_int, ctypes.POINTER(Plan), ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t,
                      ctypes.POINTER(ctypes.c_size_t)]
    return None


def install_arenas(native):
    """From here on CPython's arenas come from the native library's 2 MiB-aligned chunks
    (zygote/src/arenas.rs), which collapse_huge_pages() makes huge pages once the imports are
    done: a fork then copies, and an exit frees, one page table entry for each 2 MiB of them
    instead of 512."""
    previous, ours = native.faas_arenas_previous, native.faas_arenas_allocator
    previous.restype = ours.restype = ctypes.c_void_p
    get, put = ctypes.pythonapi.PyObject_GetArenaAllocator, ctypes.pythonapi.PyObject_SetArenaAllocator
    get.argtypes = put.argtypes = [ctypes.c_void_p]
    get.restype = put.restype = None
    get(previous())
    put(ours())


# A transparent huge page on x86-64.
HUGE = 2 << 20


def huge_stretches(start, end):
    """The 2 MiB-aligned addresses a whole huge page fits at in [start, end)."""
    return range((start + HUGE - 1) & ~(HUGE - 1), end - HUGE + 1, HUGE)


def collapse_huge_pages(init):
    """Makes each 2 MiB-aligned stretch of the zygote's anonymous memory (the arenas' chunks,
    the malloc heap) that is at least half resident a transparent huge page (MADV_COLLAPSE,
    Linux 6.1, which fills the rest with zeros). Returns why none is, or None: such a zygote
    serves the same, only slower."""
    if not init.get("huge_pages", True):
        return "transparent huge pages are off on this host (never)"
    # The heap's last 2 MiB stretch, if the heap fills half of it: the rest of it taken too
    # (malloc goes on from the new end), so that it can be a huge page.
    top = libc.sbrk(0)
    last = top & ~(HUGE - 1)
    if top - last >= HUGE // 2 and LAYOUT.start_brk <= last:
        libc.sbrk(last + HUGE - top)
    with open("/proc/self/maps") as f:
        rows = f.read().splitlines()
    resident = ctypes.create_string_buffer(HUGE // 4096)
    first_errno, tried = 0, 0
    for row in rows:
        fields = row.split()
        if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= OWN < end:
            continue
        for at in huge_stretches(start, end):
            if libc.mincore(at, HUGE, resident) == 0 and sum(b & 1 for b in resident.raw) >= HUGE // 8192:
                tried += 1
                if libc.madvise(at, HUGE, MADV_COLLAPSE) != 0 and not first_errno:
                    first_errno = ctypes.get_errno()
    if tried and first_errno and huge_page_bytes() == 0:
        return f"MADV_COLLAPSE: {os.strerror(first_errno)}"
    return None


def text_in_huge_page():
    """Moves the interpreter's code into anonymous memory at the same address, each aligned
    2 MiB of it a transparent huge page; returns why it did not, or None. A fork copies the page
    table entries of anonymous memory, and never those of a file's pages: each child mapped
    python3's text again, fault by fault (≈ 36 faults and 600 page table entries a request,
    each undone at its exit). Now a child inherits one entry for the 2 MiB, and takes no fault
    for the code it runs. The code's bytes stay what they were; it is never writable where it
    is executable.

    The first 2 MiB of python3.11 (non-PIE, at 0x400000) holds the ELF header segment (headers,
    symbol and relocation tables) and the start of the text, which are one mapping only if they
    share their protection: that segment becomes executable too. That adds no code anyone jumps
    to (its bytes are tables), and gives nothing to a child, which runs arbitrary Python anyway.
    Profilers lose python3's symbols in a zygote and its children: its text is no longer a
    file's mapping."""
    with open("/proc/self/maps") as f:
        rows = [row.split() for row in f.read().splitlines()]
    exe = os.path.realpath(sys.executable)
    # The executable's mappings from its start through its text: [r--p,] r-xp.
    mine = [r for r in rows if len(r) > 5 and r[5] == exe]
    if not mine:
        return f"{exe} is not in the zygote's mappings"
    text = next((i for i, r in enumerate(mine) if r[1] == "r-xp"), None)
    if text is None or text > 1:
        return f"no text mapping at the start of {exe}"
    span = [[int(x, 16) for x in r[0].split("-")] for r in mine[:text + 1]]
    if any(a[1] != b[0] for a, b in zip(span, span[1:])):
        return f"{exe}'s header and text are not adjacent"
    start, end = span[0][0], span[-1][1]
    if not huge_stretches(start, end):
        return f"{exe}'s text ({start:#x}-{end:#x}) holds no aligned 2 MiB"
    size = end - start
    # The copy is made 2 MiB-aligned as its final address is (start's offset in 2 MiB kept),
    # so that the kernel can give it huge pages before it moves.
    try:
        raw = anonymous(size + HUGE)
    except OSError as e:
        return f"mmap: {e.strerror}"
    copy = raw + ((start - raw) & (HUGE - 1))
    if copy > raw:
        libc.munmap(raw, copy - raw)
    if raw + size + HUGE > copy + size:
        libc.munmap(copy + size, raw + size + HUGE - (copy + size))
    libc.madvise(copy, size, MADV_HUGEPAGE)
    ctypes.memmove(copy, start, size)
    # Collapsed while still writable (older kernels collapse no read-only memory); the huge
    # page moves with the mapping, whose 2 MiB boundaries stay 2 MiB boundaries.
    failed = 0
    for at in huge_stretches(copy, copy + size):
        if libc.madvise(at, HUGE, MADV_COLLAPSE) != 0:
            failed = ctypes.get_errno()
    # PROT_READ|PROT_EXEC; then in place of the file's mappings: this thread returns from
    # mremap into the same bytes at the same addresses (the zygote has one thread). The kernel
    # unmaps the target before it moves the copy there: should the move itself then fail (out
    # of memory for the mapping), the zygote dies before it is ready, and serves nothing.
    if libc.mprotect(copy, size, 5) != 0:
        why = f"mprotect: {os.strerror(ctypes.get_errno())}"
        libc.munmap(copy, size)
        return why
    if libc.mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, start) != start:
        why = f"mremap: {os.strerror(ctypes.get_errno())}"
        libc.munmap(copy, size)
        return why
    # For whoever reads /proc/PID/maps; a kernel without CONFIG_ANON_VMA_NAME leaves it unnamed.
    name = ctypes.create_string_buffer(f"{os.path.basename(exe)} text".encode())
    PRCTL(PR_SET_VMA, PR_SET_VMA_ANON_NAME, start, size, ctypes.addressof(name))
    if failed:
        return f"MADV_COLLAPSE of {exe}'s text: {os.strerror(failed)}"
    return None


def init_plan(init, template, daemon_pidfd):
    """The part of PLAN every child of this zygote shares; returns a reason it cannot serve, or None."""
    plan = PLAN
    plan.template = template
    plan.daemon_pidfd = daemon_pidfd
    host = init["hostname"].encode()
    plan.hostname = host
    plan.hostname_len = len(host)
    mounts = (MountOp * len(init["mounts"]))()
    for m, op in zip(mounts, init["mounts"]):
        if "read_only_tree" in op:
            m.kind = 1
            m.target = cstr(op["read_only_tree"])
        else:
            m.kind = 0
            m.flags = op["flags"]
            m.source, m.target, m.fstype, m.data = (cstr(op[k]) for k in ("source", "target", "fstype", "data"))
    plan.mounts = ctypes.cast(mounts, ctypes.POINTER(MountOp))
    plan.mounts_len = len(mounts)
    limits = (IpcLimit * len(init["ipc_limits"]))()
    for limit, (path, value) in zip(limits, init["ipc_limits"]):
        limit.path = path.encode()
        limit.value = value.encode()
        limit.len = len(value.encode())
    plan.ipc_limits = ctypes.cast(limits, ctypes.POINTER(IpcLimit))
    plan.ipc_limits_len = len(limits)
    # The zygote's bounding set holds only the capabilities it kept: dropping those empties it,
    # without 41 calls for the ones already gone.
    bounding = [cap for cap in range(init["cap_last"] + 1)
                if PRCTL(PR_CAPBSET_READ, cap, 0, 0, 0) == 1]
    caps = (ctypes.c_uint32 * len(bounding))(*bounding)
    plan.caps = ctypes.cast(caps, ctypes.POINTER(ctypes.c_uint32))
    plan.caps_len = len(caps)
    plan.landlock_tmp, plan.landlock_proc = init["landlock"]
    filter_bytes = bytes.fromhex(init["filter"])
    filter_buf = ctypes.create_string_buffer(filter_bytes, len(filter_bytes))
    plan.filter = ctypes.addressof(filter_buf)
    plan.filter_len = len(filter_bytes) // 8
    # The arrays own their elements' strings (ctypes keeps them in the arrays' _objects).
    KEEP.extend([host, mounts, limits, caps, filter_buf])
    return None


def looks_async(code_dir, handler):
    """Whether the handler's module has an `async def` in its source: read as bytes, never
    parsed or run here. A miss (async code in another module) costs each request the import."""
    module = handler.rpartition(".")[0].replace(".", "/")
    for path in (f"{code_dir}/{module}.py", f"{code_dir}/{module}/__init__.py"):
        try:
            with open(path, "rb") as f:
                return b"async def" in f.read()
        except OSError:
            continue
    return False


def start(init, bytecode_fd):
    """Imports what the zygote keeps warm; returns a reason it cannot serve, or None."""
    global WRAPPER, LAYOUT
    LAYOUT = memory_layout()
    WRAPPER = load_wrapper()
    # The wrapper imports these on first use; warm, every child would import them again.
    # asyncio only for a handler that looks async: it is half the zygote's memory (5 of 11 MB
    # of its own pages), whose page tables every fork copies and every exit frees (without it,
    # a sync handler served 6% more requests at c=8).
    import traceback  # noqa: F401
    if looks_async(init["code_dir"], init["handler"]):
        import asyncio  # noqa: F401
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
    CHILD_HOOKS.extend(pair for pair in AT_FORK_CHILD if not moot_hook(pair[1]))
    global NUMPY_KEY, NUMPY_STATE, RANDOM_STATE
    if "random" in sys.modules:
        RANDOM_STATE = random_state_address(sys.modules["random"])
        if RANDOM_STATE is None:
            log("random's global generator is not the one its functions use, or not laid out as "
                "expected: each child reseeds it with seed()")
    if "numpy.random" in sys.modules:
        # The key reseed() fills in each child. And an integer seed here, which drops the
        # SeedSequence numpy seeded its global generator with at import: no child can spawn
        # the same streams from it. Every child replaces this state before anything runs.
        numpy = sys.modules["numpy"]
        NUMPY_STATE = numpy_state_address(numpy)
        numpy.random.seed(0)
        if NUMPY_STATE is None:
            log("numpy's global generator is not an MT19937 laid out as expected: each child "
                "reseeds it with set_state()")
            NUMPY_KEY = numpy.zeros(624, dtype=numpy.uint32)
    # The import system's finder for /code, with its listing of the directory (names only):
    # made here once rather than in every request (zipimport tried first, then the FileFinder
    # and its listdir; +5% req/s at c=1, A/B). A request still sees a change: the finder lists
    # the directory again when its mtime differs.
    import importlib.machinery
    finder = importlib.machinery.PathFinder._path_importer_cache(init["code_dir"])
    if finder is not None:
        finder.find_spec("__faas_no_such_module__")
    # Last: the zygote itself never imports from it.
    if bytecode_fd is not None:
        install_bytecode(bytecode_fd)
    # Children would otherwise touch (and copy) every preloaded object on their first collection.
    gc.freeze()
    global NO_HUGE_PAGES, NO_HUGE_TEXT
    NO_HUGE_PAGES = collapse_huge_pages(init)
    NO_HUGE_TEXT = NO_HUGE_PAGES or text_in_huge_page()
    return None


# The function's code as its compile sandbox compiled it (src/bytecode.rs): "/code/..." -> the
# bytes of a checked hash-based pyc (PEP 552). Kept, never read, here: a request's import
# unmarshals them in its own sandbox.
BYTECODE = {}
# What a module's __cached__ says when its code came from BYTECODE: no file holds it.
BYTECODE_PREFIX = "faas-bytecode:"


def install_bytecode(fd):
    """Makes each request's import of a module under /code take its pyc from BYTECODE, where
    a cold start would find none (/code is read-only, and -B): the import still reads the
    source and checks the pyc's hash against it, so an edit in place is never served stale, and
    a module missing from BYTECODE is compiled as before. The daemon checked the records'
    framing; the import system's own cache_from_source and get_data are wrapped for it (3.11's
    _bootstrap_external; a Python without them imports as before)."""
    with open(fd, "rb") as f:
        f.seek(0)  # the daemon's writes left the offset at the end
        data = memoryview(f.read())
    while data:
        n = int.from_bytes(data[:4], "little")
        path = bytes(data[4:4 + n]).decode()
        m = int.from_bytes(data[4 + n:8 + n], "little")
        BYTECODE[path] = bytes(data[8 + n:8 + n + m])
        data = data[8 + n + m:]
    import _frozen_importlib_external as external
    cache_from_source = getattr(external, "cache_from_source", None)
    get_data = getattr(external.SourceFileLoader, "get_data", None)
    if cache_from_source is None or get_data is None:
        log("this Python's import system has no cache_from_source: requests compile their modules")
        return

    def cached(path, debug_override=None, *, optimization=None):
        if optimization is None and debug_override is None and path in BYTECODE:
            return BYTECODE_PREFIX + path
        return cache_from_source(path, debug_override, optimization=optimization)

    def read(self, path):
        if isinstance(path, str) and path.startswith(BYTECODE_PREFIX):
            pyc = BYTECODE.get(path[len(BYTECODE_PREFIX):])
            if pyc is not None:
                return pyc
        return get_data(self, path)

    external.cache_from_source = cached
    external.SourceFileLoader.get_data = read


def compile_tree(root):
    """`zygote.py --compile /code`, in a sandbox of its own (src/bytecode.rs): every .py under
    root compiled, to stdout, as records of a u32 length and the path, a u32 length and a
    checked hash-based pyc. A file that does not compile is left out (its import reports the
    error, as without this); so is whatever would not fit the daemon's limits."""
    import _imp
    import importlib._bootstrap_external as external
    out = sys.stdout.buffer
    total, modules = 0, 0
    try:
        for top, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(top, name)
                try:
                    with open(path, "rb") as f:
                        source = f.read()
                    code = compile(source, path, "exec", dont_inherit=True)
                except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, OSError...
                    continue
                source_hash = _imp.source_hash(external._RAW_MAGIC_NUMBER, source)
                pyc = bytes(external._code_to_hash_pyc(code, source_hash, checked=True))
                record = (len(path.encode()).to_bytes(4, "little") + path.encode()
                          + len(pyc).to_bytes(4, "little") + pyc)
                if total + len(record) > COMPILE_MAX_BYTES or modules + 1 > COMPILE_MAX_MODULES:
                    return 0
                out.write(record)
                total += len(record)
                modules += 1
    finally:
        # Every return too: os._exit, which ends this process, flushes nothing.
        out.flush()
    return 0


# src/bytecode.rs: MAX_BYTES and MAX_MODULES.
COMPILE_MAX_BYTES = 8 << 20
COMPILE_MAX_MODULES = 4096


def main():
    ctl = socket.socket(fileno=0)
    msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 4)
    if not msg or len(fds) not in (3, 4):
        log("no init message")
        return 2
    init = json.loads(msg)
    template, daemon_pidfd, native_fd = fds[:3]
    bytecode_fd = fds[3] if len(fds) == 4 else None
    why = load_native(native_fd)
    if why is None:
        why = init_plan(init, template, daemon_pidfd)
    if why is None:
        why = start(init, bytecode_fd)
    if why is not None:
        log(why)
        ctl.send(json.dumps({"error": why}).encode())
        return 1
    # What every child starts from, made here rather than in each.
    global CHILD, ARGV
    CHILD = Child(init["steps"])
    ARGV = ["python.py", init["code_dir"], init["handler"]]
    ctl.send(json.dumps({"ready": True, "rss": rss_bytes(), "huge_pages": huge_page_bytes(),
                         "no_huge_pages": NO_HUGE_PAGES, "no_huge_text": NO_HUGE_TEXT}).encode())

    got = ctypes.c_size_t()
    rc = SERVE(0, ctypes.byref(PLAN), init["clone_flags"], BUF, len(BUF), ctypes.byref(got))
    if rc == 0:
        # The control socket object must never close fd 0 (the request's stdin now).
        ctl.detach()
        try:
            child(init, got.value)
        finally:
            os._exit(127)
    # The daemon let go (1): this zygote is done; its children die with its pid namespace.
    return 0 if rc == 1 else 1


if __name__ == "__main__":
    try:
        code = compile_tree(sys.argv[2]) if sys.argv[1:2] == ["--compile"] else main()
    except BaseException as e:
        log(f"failed: {type(e).__name__}: {e}")
        code = 1
    os._exit(code)
