#!/usr/bin/env bash
# Runs wrappers/python.py and wrappers/node.js directly, with no daemon and no sandbox: sets the
# CGI/1.1 meta-variables the daemon would set, pipes a body to stdin, and checks the CGI response
# on stdout and the log on stderr. Also runs the example functions in config/functions/.
#
#   bash tests/wrappers/run-standalone.sh           from the repository root
#   FAAS_TEST_SKIP=node bash tests/wrappers/...     to leave a runtime out (python, node)
#
# Uses /usr/bin/python3 and /usr/bin/node, the interpreters the sandbox runs, never a PATH shim.
# Every wrapper run is bounded by `timeout 30`: a hung wrapper is a failed check, not a hung
# harness. "one write per chunk" needs strace (FAAS_TEST_SKIP=strace leaves it out).
# Prints every failed check, then "N passed, M failed" (and what was skipped); exits 1 if any
# check failed.

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$PWD
PY=/usr/bin/python3
NODE=/usr/bin/node
SKIP=",${FAAS_TEST_SKIP:-},"
# Wrapper runs are stamped with bash's own clock, not a `date` fork per line.
[ -n "${EPOCHREALTIME-}" ] || { echo "bash 5 or newer is needed (EPOCHREALTIME)" >&2; exit 2; }
if [[ $SKIP != *",strace,"* ]] && ! command -v strace >/dev/null; then
  echo "strace not found: install it or set FAAS_TEST_SKIP=strace" >&2
  exit 2
fi

for runtime in python node; do
  bin=$PY; [ "$runtime" = node ] && bin=$NODE
  if [[ $SKIP != *",$runtime,"* ]] && [ ! -x "$bin" ]; then
    echo "$bin not found: install it or set FAAS_TEST_SKIP=$runtime" >&2
    exit 2
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/faas-wrappers.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
CASE=""

# ---------------------------------------------------------------------------------------------
# Running a wrapper

# wrapper_cmd RUNTIME CODE_DIR HANDLER: sets $CMD to the command the daemon would run.
wrapper_cmd() {
  case $1 in
    python) CMD=("$PY" -I -B "$ROOT/wrappers/python.py" "$2" "$3") ;;
    node) CMD=("$NODE" "$ROOT/wrappers/node.js" "$2" "$3") ;;
    sh) CMD=(/bin/sh "$2/$3") ;;
    exec) CMD=("$2/$3") ;;
  esac
}

# invoke RUNTIME CODE_DIR HANDLER [NAME=value...]: runs the wrapper in CODE_DIR with a clean
# CGI environment plus the given variables, $BODY on stdin. Leaves $RC, $HEAD (the header
# lines) and the files $TMP/out (all of stdout), $TMP/body (after the blank line), $TMP/err.
invoke() {
  local runtime=$1 dir=$2 handler=$3
  shift 3
  wrapper_cmd "$runtime" "$dir" "$handler"
  run_in "$dir" "$@" -- "${CMD[@]}"
}

# run_in DIR [NAME=value...] -- COMMAND...: what invoke does, for any command line.
run_in() {
  local dir=$1 vars=()
  shift
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  # stdin, stdout and stderr are pipes, as the daemon gives them.
  printf '%s' "${BODY-}" | (
    (
      cd "$dir" && exec timeout -k 5 30 env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
        GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1 SERVER_NAME=localhost SERVER_PORT=8080 \
        SERVER_SOFTWARE=faas REMOTE_ADDR=127.0.0.1 SCRIPT_NAME=/test REQUEST_METHOD=GET \
        PATH_INFO= QUERY_STRING= FAAS_FUNCTION=test FAAS_INVOCATION_ID=inv-0001 \
        FAAS_DEADLINE_MS=$(($(date +%s%3N) + 30000)) "${vars[@]}" "$@"
    ) | cat >"$TMP/out"
    exit "${PIPESTATUS[0]}"
  ) 2>&1 | cat >"$TMP/err"
  RC=${PIPESTATUS[1]}
  split_response
  check_not_hung
}

# Sets $HEAD and $TMP/body from $TMP/out.
split_response() {
  local n
  n=$(sed '/^$/q' "$TMP/out" | wc -c)
  HEAD=$(head -c "$n" "$TMP/out")
  tail -c +$((n + 1)) "$TMP/out" >"$TMP/body"
}

# timeout exits 124 (137 after -k): the wrapper hung for 30 s.
check_not_hung() {
  if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then fail "the wrapper hung: killed by timeout after 30 s"; fi
}

# ---------------------------------------------------------------------------------------------
# Checks: each one counts as a pass or a failure; a failure shows what was seen.

pass() { passed=$((passed + 1)); }
fail() {
  failed=$((failed + 1))
  echo "FAIL [$CASE] $1"
  echo "  --- stdout (rc=$RC):"; head -c 600 "$TMP/out" | sed 's/^/  | /'; echo
  echo "  --- stderr:"; head -c 600 "$TMP/err" | sed 's/^/  | /'
}

expect_status() { # expect_status 200 → the first line is "Status: 200 <reason>"
  local first=${HEAD%%$'\n'*}
  [[ $first == "Status: $1 "* ]] && pass || fail "status $1 expected, got '$first'"
}
expect_header() { # expect_header "Content-Type: text/plain" → that exact header line
  grep -qxF -- "$1" <<<"$HEAD" && pass || fail "header '$1' expected"
}
expect_no_header() { # expect_no_header Content-Type → no such header, in any case
  grep -qi -- "^$1:" <<<"$HEAD" && fail "no $1 header expected" || pass
}
expect_header_count() { # expect_header_count Content-Type 1 → that many such headers, in any case
  local n
  n=$(grep -ci -- "^$1:" <<<"$HEAD")
  [ "$n" -eq "$2" ] && pass || fail "$2 $1 header(s) expected, got $n"
}
expect_body() { # expect_body TEXT → the body is exactly TEXT
  cmp -s "$TMP/body" <(printf '%s' "$1") && pass || fail "body '$1' expected, got '$(head -c 200 "$TMP/body")'"
}
expect_body_bytes() { # expect_body_bytes '\x00\xff' → the body is exactly these bytes (printf escapes)
  # shellcheck disable=SC2059
  cmp -s "$TMP/body" <(printf "$1") && pass || fail "body bytes $1 expected, got $(od -An -tx1 "$TMP/body" | head -2)"
}
expect_json() { # expect_json 'PYTHON EXPRESSION over d' → the body is JSON and the expression holds
  "$PY" -I -c 'import json, sys; d = json.load(open(sys.argv[1], "rb")); sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$TMP/body" "$1" 2>/dev/null && pass || fail "JSON body does not satisfy: $1"
}
expect_stdout_lacks() { grep -qF -- "$1" "$TMP/out" && fail "stdout must not contain '$1'" || pass; }
expect_stderr_has() { grep -qF -- "$1" "$TMP/err" && pass || fail "stderr should contain '$1'"; }
expect_stderr_lacks() { grep -qF -- "$1" "$TMP/err" && fail "stderr must not contain '$1'" || pass; }
expect_rc() { [ "$RC" -eq "$1" ] && pass || fail "exit status $1 expected, got $RC"; }
expect_lf_only() { # CGI lines end in \n, never \r\n
  grep -q $'\r' <<<"$HEAD" && fail "header lines contain CR" || pass
}
expect_problem() { # expect_problem STATUS TYPE → a whole RFC 9457 problem response
  expect_status "$1"
  expect_header "Content-Type: application/problem+json"
  expect_json "d['type'] == 'urn:faas:problem:$2' and d['status'] == $1"
}

HANDLER_ERROR='{"type":"urn:faas:problem:handler-error","title":"handler raised an exception","status":500}'

# stream_gap RUNTIME DIR HANDLER: runs a handler that yields "first", sleeps 1 s, yields
# "second", and stamps each line (in µs) as it arrives on the pipe; checks the first chunk was
# not held back until the end, and that the wrapper exited 0.
stream_gap() {
  wrapper_cmd "$1" "$2" "$3"
  (cd "$2" && exec timeout -k 5 30 env -i PATH=/usr/bin:/bin LANG=C.UTF-8 REQUEST_METHOD=GET "${CMD[@]}" </dev/null 2>"$TMP/err") |
    while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME//[!0-9]/}" "$line"; done >"$TMP/timed"
  RC=${PIPESTATUS[0]}
  cp "$TMP/timed" "$TMP/out"
  check_not_hung
  expect_rc 0
  local t_status t_first t_second
  t_status=$(awk '$2 == "Status:" { print $1; exit }' "$TMP/timed")
  t_first=$(awk '$2 == "first" { print $1; exit }' "$TMP/timed")
  t_second=$(awk '$2 == "second" { print $1; exit }' "$TMP/timed")
  if [ -z "$t_status" ] || [ -z "$t_first" ] || [ -z "$t_second" ]; then
    fail "stream lines missing"
  elif [ $((t_second - t_first)) -lt 700000 ] || [ $((t_first - t_status)) -gt 500000 ]; then
    fail "chunks were not flushed as produced (µs): status@$t_status first@$t_first second@$t_second"
  else
    pass
  fi
}

# nonblocking RUNTIME DIR HANDLER: runs the wrapper with stdout and stderr pipes left
# O_NONBLOCK and readers that start 0.5 s late, so both pipes fill up. Leaves what invoke does.
nonblocking() {
  wrapper_cmd "$1" "$2" "$3"
  (cd "$2" && exec timeout -k 5 30 env -i PATH=/usr/bin:/bin LANG=C.UTF-8 REQUEST_METHOD=GET \
    "$PY" -I -c "$NONBLOCKING_DRIVER" "$TMP/out" "$TMP/err" "${CMD[@]}" </dev/null)
  RC=$?
  split_response
  check_not_hung
}

NONBLOCKING_DRIVER='
import os, subprocess, sys, threading, time
out_path, err_path, *cmd = sys.argv[1:]
pipes = [os.pipe() for _ in range(2)]
for _, w in pipes:
    os.set_blocking(w, False)
child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=pipes[0][1], stderr=pipes[1][1])
for _, w in pipes:
    os.close(w)
def drain(fd, path):
    time.sleep(0.5)
    with open(path, "wb") as f:
        while chunk := os.read(fd, 65536):
            f.write(chunk)
threads = [threading.Thread(target=drain, args=(r, p)) for (r, _), p in zip(pipes, (out_path, err_path))]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.exit(child.wait())
'

# write_sizes RUNTIME DIR HANDLER: runs the wrapper under strace (its main thread; stdout and
# stderr are pipes) and sets $SIZES to "asked=written" for each write(2) on the response's fd.
write_sizes() {
  wrapper_cmd "$1" "$2" "$3"
  { (cd "$2" && exec timeout -k 5 30 env -i PATH=/usr/bin:/bin LANG=C.UTF-8 REQUEST_METHOD=GET \
    strace -qq -e trace=write -e signal=none -s 8 -o "$TMP/strace" "${CMD[@]}" </dev/null) 2>&1 >&3 |
    cat >"$TMP/err"; } 3>&1 | cat >"$TMP/out"
  RC=${PIPESTATUS[0]}
  split_response
  check_not_hung
  local fd
  fd=$(sed -nE 's/^write\(([0-9]+), "Status: .*/\1/p' "$TMP/strace" | head -1)
  SIZES=$(sed -nE "s/^write\\(${fd:-none}, .*, ([0-9]+)\\) += ([0-9]+)\$/\\1=\\2/p" "$TMP/strace" | tr '\n' ' ')
  SIZES=${SIZES% }
}

# ---------------------------------------------------------------------------------------------
# Handlers: the same set in both languages

mkdir -p "$TMP/python/pkg" "$TMP/node/pkg" "$TMP/inline"

cat >"$TMP/python/h.py" <<'EOF'
import os, sys, time

def as_dict(r): return {"hello": r.query.get("name", "world"), "list": [1, 2.5, True, None]}
def as_text(r): return "h\u00e9llo\n"
def as_bytes(r): return b"\x00\x01\xfe\xff"
def as_tuple(r): return (201, {"X-Thing": "yes", "Set-Cookie": ["a=1", "b=2"]}, "created")
def as_tuple_json(r): return (202, [("Location", "/jobs/7")], {"job": 7})
def as_pair(r): return (418, "short and stout")
def as_none(r): return None
def as_empty_tuple(r): return (200, {"X-Empty": "1"}, None)
def as_own_type(r): return (200, {"content-type": "text/csv"}, "a,b\n")
def as_int(r): return 42
def stream(r):
    yield "first\n"
    time.sleep(1)
    yield "second\n"
def stream_bytes(r):
    yield b"\x00"
    yield "\u00e9"
def stream_typed(r): return (200, {"Content-Type": "text/event-stream"}, (f"data: {i}\n\n" for i in range(3)))
async def astream(r):
    yield "a"
    yield "b"
def stream_fails_late(r):
    yield "partial"
    raise RuntimeError("stream broke")
def stream_fails_early(r):
    raise RuntimeError("before the first chunk")
    yield "never"
def forever(r):
    try:
        while True:
            yield "x\n"
            time.sleep(0.02)
    finally:
        sys.stderr.write("finally ran\n")
def chunks(r):
    yield "a" * 100000
    yield "b" * 3
    yield "c" * 70000
def loud_big(r):
    print("e" * 300000)
    return "x" * (1 << 20)
def boom(r): return {"ratio": 1 / 0}
async def aboom(r): raise KeyError("async-secret")
async def as_async(r): return {"async": True}
def noisy(r):
    print("stray-print")
    os.write(1, b"stray-fd1\n")
    os.system("echo stray-child")
    return "clean"
def query(r): return {"first": r.query, "all": r.query_all, "raw": r.query_string}
def headers(r):
    h = r.headers
    return {"ct": h["content-type"], "cl": h.get("CONTENT-LENGTH"), "x": h["X-Custom-Thing"],
            "x2": h.get("x-custom-thing"), "has": "X-CUSTOM-THING" in h, "missing": h.get("nope", "-"),
            "names": sorted(h), "whole": h}
def echo_json(r): return {"echo": r.json()}
def echo_body(r): return r.body
def echo_text(r): return r.text
def meta(r):
    left = r.remaining_ms()
    return {"method": r.method, "path": r.path, "id": r.invocation_id, "fn": r.function_name,
            "remote": r.remote_addr, "deadline": r.deadline_ms, "left_ok": 0 < left <= 30000,
            "env": r.env.get("SERVER_NAME")}
def inject(r): return (200, {"X-Bad": "a\r\nSet-Cookie: evil=1"}, "x")
def non_ascii(r): return (200, {"X-Name": "Jos\u00e9"}, "x")
def bad_name(r): return (200, {"Bad Name": "x"}, "x")
def bad_status(r): return (99, {}, "x")
def no_content_body(r): return (204, {}, "body")
def bad_return(r): return object()
def bad_length(r): return (200, {"Content-Length": "99"}, "short")
def not_a_function(r): pass
answer = 42
EOF
cat >"$TMP/python/syntax.py" <<'EOF'
def handle(r) return "x"
EOF
cat >"$TMP/python/loud.py" <<'EOF'
print("printed-at-import")
def handle(r): return "quiet"
EOF
cat >"$TMP/python/broken_dep.py" <<'EOF'
import module_that_does_not_exist
def handle(r): return "x"
EOF
cat >"$TMP/python/pkg/__init__.py" </dev/null
cat >"$TMP/python/pkg/mod.py" <<'EOF'
def handle(r): return "dotted"
EOF

cat >"$TMP/node/h.js" <<'EOF'
'use strict';
const { setTimeout: sleep } = require('timers/promises');

exports.as_dict = (r) => ({ hello: r.query.name ?? 'world', list: [1, 2.5, true, null] });
exports.as_text = () => 'h\u00e9llo\n';
exports.as_bytes = () => Buffer.from([0x00, 0x01, 0xfe, 0xff]);
exports.as_uint8 = () => new Uint8Array([0x00, 0x01, 0xfe, 0xff]);
exports.as_tuple = () => ({ status: 201, headers: { 'X-Thing': 'yes', 'Set-Cookie': ['a=1', 'b=2'] }, body: 'created' });
exports.as_tuple_json = () => ({ status: 202, headers: [['Location', '/jobs/7']], body: { job: 7 } });
exports.as_not_response = () => ({ status: 'ok', body: 'this is JSON, not a response' });
exports.as_none = () => undefined;
exports.as_null = () => null;
exports.as_empty_tuple = () => ({ status: 200, headers: { 'X-Empty': '1' } });
exports.as_own_type = () => ({ status: 200, headers: { 'content-type': 'text/csv' }, body: 'a,b\n' });
exports.as_int = () => 42;
exports.as_web = () => new Response('from fetch', { status: 203, headers: { 'X-Web': 'yes' } });
exports.stream = async function* () { yield 'first\n'; await sleep(1000); yield 'second\n'; };
exports.stream_bytes = function* () { yield Buffer.from([0]); yield '\u00e9'; };
exports.stream_typed = () => ({
  status: 200,
  headers: { 'Content-Type': 'text/event-stream' },
  body: (function* () { for (let i = 0; i < 3; i++) yield `data: ${i}\n\n`; })(),
});
exports.astream = async function* () { yield 'a'; yield 'b'; };
exports.stream_fails_late = async function* () { yield 'partial'; throw new Error('stream broke'); };
exports.stream_fails_early = async function* () { throw new Error('before the first chunk'); };
exports.forever = async function* () {
  try { for (;;) { yield 'x\n'; await sleep(20); } } finally { process.stderr.write('finally ran\n'); }
};
exports.chunks = function* () { yield 'a'.repeat(100000); yield 'b'.repeat(3); yield 'c'.repeat(70000); };
exports.loud_big = () => { console.log('e'.repeat(300000)); return 'x'.repeat(1 << 20); };
exports.boom = () => ({ ratio: null.x });
exports.aboom = async () => { throw new Error('async-secret'); };
exports.as_async = async () => { await sleep(10); return { async: true }; };
exports.noisy = () => {
  console.log('stray-print');
  process.stdout.write('stray-fd1\n');
  require('child_process').execSync('echo stray-child', { stdio: 'inherit' });
  return 'clean';
};
exports.noisy_no_child = () => { console.log('stray-print'); process.stdout.write('stray-fd1\n'); return 'clean'; };
exports.query = (r) => ({ first: r.query, all: r.queryAll, raw: r.queryString });
exports.headers = (r) => {
  const h = r.headers;
  return { ct: h['content-type'], cl: h['CONTENT-LENGTH'], x: h['X-Custom-Thing'], x2: h['x-custom-thing'],
    has: 'X-CUSTOM-THING' in h, missing: h.nope ?? '-', names: Object.keys(h).sort(), whole: h };
};
exports.echo_json = (r) => ({ echo: r.json() });
exports.echo_body = (r) => r.body;
exports.echo_text = (r) => r.text;
exports.meta = (r) => {
  const left = r.remainingMs();
  return { method: r.method, path: r.path, id: r.invocationId, fn: r.functionName, remote: r.remoteAddr,
    deadline: r.deadlineMs, left_ok: left > 0 && left <= 30000, env: r.env.SERVER_NAME };
};
exports.inject = () => ({ status: 200, headers: { 'X-Bad': 'a\r\nSet-Cookie: evil=1' }, body: 'x' });
exports.non_ascii = () => ({ status: 200, headers: { 'X-Name': 'Jos\u00e9' }, body: 'x' });
exports.bad_name = () => ({ status: 200, headers: { 'Bad Name': 'x' }, body: 'x' });
exports.bad_status = () => ({ status: 99, body: 'x' });
exports.no_content_body = () => ({ status: 204, body: 'body' });
exports.bad_return = () => Symbol('nope');
exports.bad_length = () => ({ status: 200, headers: { 'Content-Length': '99' }, body: 'short' });
exports.never = () => new Promise(() => {});
exports.stray_throw = () => {
  setTimeout(() => { throw new Error('thrown from a timer'); }, 10);
  return sleep(300).then(() => 'too late');
};
exports.answer = 42;
EOF
cat >"$TMP/node/syntax.js" <<'EOF'
exports.handle = (r) => { return 'x' ;
EOF
cat >"$TMP/node/loud.js" <<'EOF'
console.log('printed-at-import');
exports.handle = () => 'quiet';
EOF
cat >"$TMP/node/broken_dep.js" <<'EOF'
require('module_that_does_not_exist');
exports.handle = () => 'x';
EOF
cat >"$TMP/node/pkg/mod.js" <<'EOF'
exports.handle = () => 'dotted';
EOF
cat >"$TMP/node/esm.mjs" <<'EOF'
export async function handle(r) { return { esm: true, method: r.method }; }
EOF

# ---------------------------------------------------------------------------------------------
# The same cases for both wrappers

run_common() {
  local rt=$1 d=$TMP/$1
  BODY=""

  CASE="$rt: dict → JSON"
  invoke "$rt" "$d" h.as_dict QUERY_STRING=name=ada
  expect_status 200; expect_header "Content-Type: application/json"
  expect_body '{"hello":"ada","list":[1,2.5,true,null]}'
  expect_header "Content-Length: 40"; expect_lf_only; expect_rc 0

  CASE="$rt: int → JSON"
  invoke "$rt" "$d" h.as_int
  expect_status 200; expect_header "Content-Type: application/json"; expect_body '42'

  CASE="$rt: str → text/plain"
  invoke "$rt" "$d" h.as_text
  expect_status 200; expect_header "Content-Type: text/plain; charset=utf-8"
  expect_body $'h\u00e9llo\n'; expect_header "Content-Length: 7"

  CASE="$rt: bytes → octet-stream"
  invoke "$rt" "$d" h.as_bytes
  expect_status 200; expect_header "Content-Type: application/octet-stream"
  expect_body_bytes '\x00\x01\xfe\xff'; expect_header "Content-Length: 4"

  CASE="$rt: (status, headers, body)"
  invoke "$rt" "$d" h.as_tuple
  expect_status 201; expect_header "Status: 201 Created"; expect_header "X-Thing: yes"
  expect_header "Set-Cookie: a=1"; expect_header "Set-Cookie: b=2"
  expect_header "Content-Type: text/plain; charset=utf-8"; expect_body "created"

  CASE="$rt: response with JSON body and header pairs"
  invoke "$rt" "$d" h.as_tuple_json
  expect_status 202; expect_header "Location: /jobs/7"; expect_header "Content-Type: application/json"
  expect_body '{"job":7}'

  CASE="$rt: response with no body"
  invoke "$rt" "$d" h.as_empty_tuple
  expect_status 200; expect_header "X-Empty: 1"; expect_no_header Content-Type; expect_body ""

  CASE="$rt: handler's Content-Type wins"
  invoke "$rt" "$d" h.as_own_type
  expect_header "content-type: text/csv"; expect_header_count Content-Type 1; expect_body $'a,b\n'

  CASE="$rt: None → 204"
  invoke "$rt" "$d" h.as_none
  expect_status 204; expect_header "Status: 204 No Content"; expect_no_header Content-Type
  expect_no_header Content-Length; expect_body ""; expect_rc 0

  CASE="$rt: generator streams as produced"
  stream_gap "$rt" "$d" h.stream

  CASE="$rt: stream default type from first chunk"
  invoke "$rt" "$d" h.stream_bytes
  expect_status 200; expect_header "Content-Type: application/octet-stream"; expect_no_header Content-Length
  expect_header_count Status 1; expect_body_bytes '\x00\xc3\xa9'

  CASE="$rt: stream with own type (SSE)"
  invoke "$rt" "$d" h.stream_typed
  expect_header "Content-Type: text/event-stream"; expect_body $'data: 0\n\ndata: 1\n\ndata: 2\n\n'

  CASE="$rt: async generator streams"
  invoke "$rt" "$d" h.astream
  expect_status 200; expect_header "Content-Type: text/plain; charset=utf-8"; expect_body "ab"

  CASE="$rt: stream failing after the headers is cut short"
  invoke "$rt" "$d" h.stream_fails_late
  expect_status 200; expect_body "partial"; expect_rc 1; expect_stderr_has "stream broke"

  CASE="$rt: stream failing before its first chunk → 500"
  invoke "$rt" "$d" h.stream_fails_early
  expect_problem 500 handler-error; expect_stderr_has "before the first chunk"; expect_rc 0

  CASE="$rt: exception → 500, traceback only in the log"
  invoke "$rt" "$d" h.boom
  expect_status 500; expect_header "Content-Type: application/problem+json"; expect_body "$HANDLER_ERROR"
  expect_stdout_lacks "Traceback"; expect_stdout_lacks "h.py"; expect_stdout_lacks "h.js"
  expect_stdout_lacks "ZeroDivision"; expect_stdout_lacks "TypeError"
  if [ "$rt" = python ]; then
    expect_stderr_has "Traceback"; expect_stderr_has "ZeroDivisionError"; expect_stderr_has "h.py"
    expect_stderr_lacks "wrappers/python.py"
  else
    expect_stderr_has "TypeError"; expect_stderr_has "h.js"; expect_stderr_lacks "wrappers/node.js"
  fi
  expect_rc 0

  CASE="$rt: async exception → 500"
  invoke "$rt" "$d" h.aboom
  expect_body "$HANDLER_ERROR"; expect_stdout_lacks "async-secret"; expect_stderr_has "async-secret"

  CASE="$rt: async handler"
  invoke "$rt" "$d" h.as_async
  expect_status 200; expect_body '{"async":true}'

  CASE="$rt: missing function → handler-not-found"
  invoke "$rt" "$d" h.nope
  expect_problem 500 handler-not-found; expect_body '{"type":"urn:faas:problem:handler-not-found","title":"handler not found","status":500}'
  expect_stderr_has "nope"; expect_rc 0

  CASE="$rt: not a function → handler-not-found"
  invoke "$rt" "$d" h.answer
  expect_problem 500 handler-not-found

  CASE="$rt: missing module → handler-not-found"
  invoke "$rt" "$d" nosuchmodule.handle
  expect_problem 500 handler-not-found; expect_stderr_has "nosuchmodule"

  CASE="$rt: syntax error → handler-not-found, details in the log"
  invoke "$rt" "$d" syntax.handle
  expect_problem 500 handler-not-found; expect_stderr_has "SyntaxError"; expect_stdout_lacks "SyntaxError"

  CASE="$rt: failing import inside the module → handler-not-found"
  invoke "$rt" "$d" broken_dep.handle
  expect_problem 500 handler-not-found; expect_stderr_has "module_that_does_not_exist"

  CASE="$rt: HANDLER without a dot → handler-not-found"
  invoke "$rt" "$d" handle
  expect_problem 500 handler-not-found

  CASE="$rt: dotted module"
  invoke "$rt" "$d" pkg.mod.handle
  expect_status 200; expect_body "dotted"

  CASE="$rt: stray output goes to the log"
  invoke "$rt" "$d" h.noisy
  expect_status 200; expect_body "clean"
  expect_stdout_lacks "stray-print"; expect_stdout_lacks "stray-fd1"; expect_stdout_lacks "stray-child"
  expect_stderr_has "stray-print"; expect_stderr_has "stray-fd1"; expect_stderr_has "stray-child"

  CASE="$rt: output at import goes to the log"
  invoke "$rt" "$d" loud.handle
  expect_status 200; expect_body "quiet"; expect_stdout_lacks "printed-at-import"
  expect_stderr_has "printed-at-import"

  CASE="$rt: query, multi-value and percent-decoding"
  invoke "$rt" "$d" h.query 'QUERY_STRING=a=1&a=2&b=x+y&c=%C3%A9%26&empty=&flag&=v'
  expect_json 'd["first"] == {"a": "1", "b": "x y", "c": "\u00e9&", "empty": "", "flag": "", "": "v"}'
  expect_json 'd["all"]["a"] == ["1", "2"] and d["all"]["flag"] == [""]'
  expect_json 'd["raw"] == "a=1&a=2&b=x+y&c=%C3%A9%26&empty=&flag&=v"'

  CASE="$rt: headers are case-insensitive"
  BODY="hello"
  invoke "$rt" "$d" h.headers REQUEST_METHOD=POST CONTENT_TYPE=text/plain CONTENT_LENGTH=5 HTTP_X_CUSTOM_THING=v1
  BODY=""
  expect_json 'd["ct"] == "text/plain" and d["cl"] == "5" and d["x"] == "v1" and d["x2"] == "v1"'
  expect_json 'd["has"] is True and d["missing"] == "-"'
  if [ "$rt" = python ]; then
    expect_json 'd["names"] == ["Content-Length", "Content-Type", "X-Custom-Thing"]'
    expect_json 'd["whole"] == {"Content-Type": "text/plain", "Content-Length": "5", "X-Custom-Thing": "v1"}'
  else
    expect_json 'd["names"] == ["content-length", "content-type", "x-custom-thing"]'
    expect_json 'd["whole"] == {"content-type": "text/plain", "content-length": "5", "x-custom-thing": "v1"}'
  fi

  CASE="$rt: JSON body"
  BODY='{"a":[1,2],"b":"\u00e9"}'
  invoke "$rt" "$d" h.echo_json REQUEST_METHOD=POST CONTENT_TYPE=application/json CONTENT_LENGTH=${#BODY}
  expect_status 200; expect_json 'd == {"echo": {"a": [1, 2], "b": "\u00e9"}}'

  CASE="$rt: malformed JSON body → 400"
  BODY='{"a":'
  invoke "$rt" "$d" h.echo_json REQUEST_METHOD=POST CONTENT_LENGTH=5
  expect_problem 400 bad-request; expect_json 'd["title"] == "request body is not valid JSON" and d["detail"]'
  expect_stderr_has "bad request"; expect_rc 0

  CASE="$rt: empty JSON body → 400"
  BODY=""
  invoke "$rt" "$d" h.echo_json REQUEST_METHOD=POST CONTENT_LENGTH=0
  expect_problem 400 bad-request

  CASE="$rt: body is exactly CONTENT_LENGTH bytes"
  BODY="0123456789"
  invoke "$rt" "$d" h.echo_body REQUEST_METHOD=POST CONTENT_LENGTH=4
  expect_body "0123"

  CASE="$rt: body without CONTENT_LENGTH is read to EOF"
  BODY="to the end"
  invoke "$rt" "$d" h.echo_body REQUEST_METHOD=POST
  expect_body "to the end"

  CASE="$rt: text follows the charset"
  BODY=$'\xe9t\xe9'
  invoke "$rt" "$d" h.echo_text REQUEST_METHOD=POST "CONTENT_TYPE=text/plain; charset=iso-8859-1" CONTENT_LENGTH=3
  expect_status 200; expect_body $'\u00e9t\u00e9'

  CASE="$rt: text that is not UTF-8 → 400"
  invoke "$rt" "$d" h.echo_text REQUEST_METHOD=POST CONTENT_TYPE=text/plain CONTENT_LENGTH=3
  expect_problem 400 bad-request
  BODY=""

  CASE="$rt: request metadata"
  invoke "$rt" "$d" h.meta REQUEST_METHOD=delete PATH_INFO=/a/b FAAS_FUNCTION=meta
  expect_json 'd["method"] == "DELETE" and d["path"] == "/a/b" and d["id"] == "inv-0001"'
  expect_json 'd["fn"] == "meta" and d["remote"] == "127.0.0.1" and isinstance(d["deadline"], int)'
  expect_json 'd["left_ok"] is True and d["env"] == "localhost"'

  CASE="$rt: empty PATH_INFO is /"
  invoke "$rt" "$d" h.meta
  expect_json 'd["path"] == "/" and d["method"] == "GET"'

  CASE="$rt: CR/LF in a header value → 500, nothing injected"
  invoke "$rt" "$d" h.inject
  expect_body "$HANDLER_ERROR"; expect_stdout_lacks "evil"; expect_stderr_has "X-Bad"

  CASE="$rt: non-ASCII header value → 500"
  invoke "$rt" "$d" h.non_ascii
  expect_body "$HANDLER_ERROR"; expect_stderr_has "non-ASCII"

  CASE="$rt: invalid header name → 500"
  invoke "$rt" "$d" h.bad_name
  expect_body "$HANDLER_ERROR"

  CASE="$rt: invalid status → 500"
  invoke "$rt" "$d" h.bad_status
  expect_body "$HANDLER_ERROR"

  CASE="$rt: 204 with a body → 500"
  invoke "$rt" "$d" h.no_content_body
  expect_body "$HANDLER_ERROR"

  CASE="$rt: unsendable return value → 500"
  invoke "$rt" "$d" h.bad_return
  expect_body "$HANDLER_ERROR"; expect_stderr_has "invalid response"

  CASE="$rt: wrong Content-Length → 500"
  invoke "$rt" "$d" h.bad_length
  expect_body "$HANDLER_ERROR"

  CASE="$rt: wrong arguments → a 500 still written, exit status 2"
  wrapper_cmd "$rt" "$d" unused
  run_in "$d" -- "${CMD[@]:0:${#CMD[@]}-1}"
  expect_problem 500 handler-not-found; expect_rc 2; expect_stderr_has "faas: usage"

  CASE="$rt: the wrapper's own log lines start with 'faas: '"
  invoke "$rt" "$d" h.boom
  expect_stderr_has "faas: handler raised an exception"

  CASE="$rt: a closed stdout closes the generator: finally runs, exit status 1"
  wrapper_cmd "$rt" "$d" h.forever
  (cd "$d" && exec timeout -k 5 30 env -i PATH=/usr/bin:/bin LANG=C.UTF-8 REQUEST_METHOD=GET "${CMD[@]}" </dev/null 2>"$TMP/err") |
    head -c 1 >"$TMP/out"
  RC=${PIPESTATUS[0]}
  check_not_hung
  expect_rc 1; expect_stderr_has "finally ran"; expect_stderr_has "faas: the reader closed stdout"

  CASE="$rt: stdout and stderr pipes left non-blocking"
  nonblocking "$rt" "$d" h.loud_big
  expect_rc 0; expect_status 200; expect_header "Content-Length: 1048576"
  [ "$(wc -c <"$TMP/body")" -eq 1048576 ] && pass || fail "a body of $(wc -c <"$TMP/body") bytes, not 1048576"
  [ "$(wc -c <"$TMP/err")" -ge 300000 ] && pass || fail "only $(wc -c <"$TMP/err") bytes of log, not 300000"

  if [[ $SKIP != *",strace,"* ]]; then
    CASE="$rt: one write per chunk"
    write_sizes "$rt" "$d" h.chunks
    expect_rc 0; expect_body "$(head -c 100000 /dev/zero | tr '\0' a)bbb$(head -c 70000 /dev/zero | tr '\0' c)"
    local first
    first=$(($(wc -c <"$TMP/out") - 70003))
    [ "$SIZES" = "$first=$first 3=3 70000=70000" ] && pass || fail "writes on the response fd (asked=written): '$SIZES', not '$first=$first 3=3 70000=70000'"
  fi
}

run_python_only() {
  local d=$TMP/python
  CASE="python: (status, body) pair"
  invoke python "$d" h.as_pair
  expect_status 418; expect_header "Status: 418 I'm a teapot"; expect_body "short and stout"
}

run_node_only() {
  local d=$TMP/node
  CASE="node: Uint8Array → octet-stream"
  invoke node "$d" h.as_uint8
  expect_header "Content-Type: application/octet-stream"; expect_body_bytes '\x00\x01\xfe\xff'

  CASE="node: null → 204"
  invoke node "$d" h.as_null
  expect_status 204

  CASE="node: an object with other keys is JSON, not a response"
  invoke node "$d" h.as_not_response
  expect_status 200; expect_json 'd == {"status": "ok", "body": "this is JSON, not a response"}'

  CASE="node: fetch Response"
  invoke node "$d" h.as_web
  expect_status 203; expect_header "x-web: yes"; expect_body "from fetch"

  CASE="node: ES module handler"
  invoke node "$d" esm.handle REQUEST_METHOD=PUT
  expect_status 200; expect_body '{"esm":true,"method":"PUT"}'

  # Without pipes the wrapper cannot move fd 1, so only console and process.stdout are redirected.
  CASE="node: stdout and stderr are files, not pipes"
  (cd "$d" && exec timeout -k 5 30 env -i REQUEST_METHOD=GET "$NODE" "$ROOT/wrappers/node.js" "$d" h.noisy_no_child </dev/null >"$TMP/out" 2>"$TMP/err")
  RC=$?
  check_not_hung
  HEAD=$(sed '/^$/q' "$TMP/out")
  expect_status 200; expect_stdout_lacks "stray-print"; expect_stdout_lacks "stray-fd1"
  expect_stderr_has "stray-print"; expect_stderr_has "stray-fd1"; expect_rc 0

  CASE="node: a promise that never settles → 500"
  invoke node "$d" h.never
  expect_body "$HANDLER_ERROR"; expect_stderr_has "never settle"

  CASE="node: an exception thrown from a timer → 500"
  invoke node "$d" h.stray_throw
  expect_body "$HANDLER_ERROR"; expect_stderr_has "thrown from a timer"; expect_stdout_lacks "too late"
}

# ---------------------------------------------------------------------------------------------
# The example functions in config/functions

run_examples() {
  local f=$ROOT/config/functions

  CASE="examples: every function file parses and points at real files"
  if "$PY" -I - "$f" <<'EOF'
import os, sys, tomllib
base, bad = sys.argv[1], []
for name in sorted(os.listdir(base)):
    if not name.endswith(".toml"):
        continue
    with open(os.path.join(base, name), "rb") as fh:
        d = tomllib.load(fh)
    if "source" in d:
        continue
    code = os.path.join(base, d["code"])
    target = d["handler"] if d["runtime"] in ("sh", "exec") else d["handler"].rsplit(".", 1)[0].replace(".", "/")
    exts = ("",) if d["runtime"] in ("sh", "exec") else (".py",) if d["runtime"] == "python" else (".js", ".cjs", ".mjs")
    if not any(os.path.isfile(os.path.join(code, target + e)) for e in exts):
        bad.append(f"{name}: no handler file for {d['handler']} in {code}")
    if d["runtime"] == "exec" and not os.access(os.path.join(code, target), os.X_OK):
        bad.append(f"{name}: {target} is not executable")
print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  then pass; else fail "function files"; fi

  if [[ $SKIP != *",python,"* ]]; then
    CASE="examples: hello GET"
    invoke python "$f/hello" main.handle QUERY_STRING=name=ada FAAS_INVOCATION_ID=inv-hello
    expect_status 200; expect_header "Content-Type: application/json"; expect_body '{"hello":"ada"}'
    expect_stderr_has "hello 'ada': GET / invocation inv-hello"; expect_stdout_lacks "invocation"

    CASE="examples: hello GET without a name"
    invoke python "$f/hello" main.handle
    expect_body '{"hello":"world"}'

    CASE="examples: hello POST echoes JSON"
    BODY='{"x":[1,2,{"y":null}]}'
    invoke python "$f/hello" main.handle REQUEST_METHOD=POST CONTENT_TYPE=application/json CONTENT_LENGTH=${#BODY}
    expect_status 200; expect_body '{"hello":"world","echo":{"x":[1,2,{"y":null}]}}'

    CASE="examples: hello POST with a bad body → 400"
    BODY='not json'
    invoke python "$f/hello" main.handle REQUEST_METHOD=POST CONTENT_LENGTH=${#BODY}
    expect_problem 400 bad-request
    BODY=""

    CASE="examples: inline source"
    "$PY" -I -c 'import sys, tomllib; open(sys.argv[2], "w").write(tomllib.load(open(sys.argv[1], "rb"))["source"])' \
      "$f/inline.toml" "$TMP/inline/main.py"
    invoke python "$TMP/inline" main.handle QUERY_STRING=name=bo
    expect_status 200; expect_header "Content-Type: text/plain; charset=utf-8"
    expect_body $'hello from an inline handler, bo\n'
  fi

  if [[ $SKIP != *",node,"* ]]; then
    CASE="examples: echo-node"
    BODY='ping'
    invoke node "$f/echo-node" main.handle REQUEST_METHOD=PUT PATH_INFO=/x/y 'QUERY_STRING=a=1&a=2' \
      CONTENT_TYPE=text/plain CONTENT_LENGTH=4 HTTP_X_TRACE=t-1
    BODY=""
    expect_status 200; expect_header "Content-Type: application/json"
    expect_json 'd["method"] == "PUT" and d["path"] == "/x/y" and d["query"] == {"a": ["1", "2"]}'
    expect_json 'd["headers"]["x-trace"] == "t-1" and d["headers"]["content-type"] == "text/plain"'
    expect_json 'd["body"] == "ping"'
    expect_stderr_has "echo PUT /x/y (4 bytes)"
  fi

  CASE="examples: env-sh"
  invoke sh "$f/env-sh" env.sh 'QUERY_STRING=a=1' HTTP_X_A=1 GREETING=not-cgi
  expect_header "Content-Type: text/plain; charset=utf-8"
  grep -qx 'REQUEST_METHOD=GET' "$TMP/body" && pass || fail "REQUEST_METHOD in body"
  grep -qx 'HTTP_X_A=1' "$TMP/body" && pass || fail "HTTP_X_A in body"
  grep -qx 'QUERY_STRING=a=1' "$TMP/body" && pass || fail "QUERY_STRING in body"
  grep -qx 'FAAS_FUNCTION=test' "$TMP/body" && pass || fail "FAAS_FUNCTION in body"
  grep -qx 'SERVER_PORT=8080' "$TMP/body" && pass || fail "SERVER_PORT in body"
  grep -qE '^(PATH|HOME|LANG|GREETING|REMOTE_ADDR|SCRIPT_NAME)=' "$TMP/body" && fail "non-CGI variables in body" || pass
  LC_ALL=C sort -c "$TMP/body" 2>/dev/null && pass || fail "body is not sorted"

  CASE="examples: cgi-exec"
  invoke exec "$f/cgi-exec" hello.cgi REQUEST_METHOD=POST PATH_INFO=/z
  expect_status 201; expect_header "Status: 201 Created"; expect_header "X-Example: cgi"
  expect_body $'created by a CGI program: POST /z\n'
}

[[ $SKIP == *",python,"* ]] || { run_common python; run_python_only; }
[[ $SKIP == *",node,"* ]] || { run_common node; run_node_only; }
run_examples

skipped=""
for what in python node strace; do
  [[ $SKIP != *",$what,"* ]] || skipped+="${skipped:+, }$what"
done
echo "$passed passed, $failed failed${skipped:+; skipped: $skipped (FAAS_TEST_SKIP)}"
[ "$failed" -eq 0 ]
