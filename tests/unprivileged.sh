#!/usr/bin/env bash
# Runs tests/http.rs (the tests that need no sandbox) as an unprivileged user, against a daemon
# that is therefore not root: the README promises that it still serves and reports what is
# missing, and that privileged tests fail with their reason rather than pass. CI runs as
# root, so without this script that path would never run there.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${FAAS_UNPRIVILEGED_UID:-65534}
bin=$(cargo test --locked --test http --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "http" and m.get("executable"):
        print(m["executable"])' | tail -1)
[ -n "$bin" ] || { echo "unprivileged: could not find the http test binary" >&2; exit 1; }
run() { setpriv --reuid="$user" --regid="$user" --clear-groups --inh-caps=-all --bounding-set=-all "$@"; }
# The test binary names the faas binary and the repository by absolute path: both must be
# reachable by that user (a checkout under /root is not).
if ! run test -x "$bin" || ! run test -x "$(dirname "$bin")/../faas" || ! run test -r wrappers/python.py; then
    echo "SKIPPED: unprivileged http tests: $bin or the repository is not readable by uid $user (check out the repository where others can read it)"
    exit 0
fi
echo "unprivileged: running $(basename "$bin") as uid $user"
run env HOME=/tmp "$bin" --test-threads 2
