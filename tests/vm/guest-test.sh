#!/bin/bash
# Runs inside the VM (systemd as PID 1, Debian bookworm, kernel 6.1), as root, from
# /mnt/faas: the 9p share that tests/vm/run.sh assembled. Layout of the share:
#   guest-test.sh             this file; *-checks.sh beside it, the check libraries it sources
#   expect-binary             the binary's sha256, written by run.sh when it shared one
#   repo/                     the repo's files the guest needs, at their repo paths:
#   repo/target/release/faas    the release binary (absent when run.sh had FAAS_BIN=none)
#   repo/Makefile repo/README.md repo/systemd/ repo/config/ repo/wrappers/ repo/man/
#   deb/faas_VERSION_ARCH.deb the Debian package, with lintian.{txt,rc,version} from the host
#   expect-deb                its sha256 (both absent when run.sh had FAAS_DEB=none)
#   out/                      written by the guest: log (this script's output), rc, timings
#
# Each check is `check NAME command...`, the command a program or any shell function defined
# or sourced here: it prints `ok NAME` or `FAIL NAME` with the command's output indented
# below, runs in a subshell under a time limit (CHECK_TIMEOUT seconds), and the script ends
# with `N passed, M failed` and exits non-zero when anything failed. A check that is planned
# but not written yet is `todo NAME description`: listed, never counted as passed; `note NAME
# command...` prints information (versions, timings) and is not counted either. Checks run
# in order and may depend on earlier ones' effects on the system (install before use).
set -u

SHARE=${SHARE:-/mnt/faas}
REPO=$SHARE/repo
FAAS_BIN=$REPO/target/release/faas
CHECK_TIMEOUT=${CHECK_TIMEOUT:-120}
export SHARE REPO FAAS_BIN

passed=0
failed=0
failed_names=()
todo_names=()

# run_limited OUT command... — run one command in a subshell (so it sees every function and
# variable defined or sourced here, exported or not) in a process group of its own, with its
# output in OUT; the group is killed with everything it started once it runs past
# CHECK_TIMEOUT seconds (then OUT.timeout exists). Returns the command's exit status.
run_limited() {
    local out=$1 pid dog rc
    shift
    set -m   # background jobs get their own process group: the watchdog kills the whole check
    ( "$@" ) >"$out" 2>&1 </dev/null &
    pid=$!
    (
        sleep "$CHECK_TIMEOUT"
        touch "$out.timeout"
        kill -TERM -- "-$pid" 2>/dev/null
        sleep 5
        kill -KILL -- "-$pid" 2>/dev/null
    ) >/dev/null 2>&1 &
    dog=$!
    set +m
    wait "$pid"
    rc=$?
    kill -KILL -- "-$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    return "$rc"
}

# check NAME command... — one pass/fail check: prints `ok NAME` or `FAIL NAME` and the
# command's output indented below.
check() {
    local name=$1 rc=0 start secs out
    shift
    out=$(mktemp)
    start=$(date +%s.%N)
    run_limited "$out" "$@" || rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [[ -e $out.timeout ]]; then
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "FAIL $name (timed out after ${CHECK_TIMEOUT}s)"
    elif ((rc == 0)); then
        passed=$((passed + 1))
        echo "ok $name (${secs}s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "FAIL $name (exit $rc, ${secs}s)"
    fi
    head -n 40 "$out" | sed 's/^/    /'
    rm -f "$out" "$out.timeout"
}

# note NAME command... — information for whoever reads the log (versions, timings): run like
# a check, printed as `note NAME`, counted neither as passed nor as failed. Anything that can
# be wrong is a check, not a note.
note() {
    local name=$1 rc=0 out
    shift
    out=$(mktemp)
    run_limited "$out" "$@" || rc=$?
    if [[ -e $out.timeout ]]; then
        echo "note $name (timed out after ${CHECK_TIMEOUT}s)"
    elif ((rc)); then
        echo "note $name (exit $rc)"
    else
        echo "note $name"
    fi
    head -n 40 "$out" | sed 's/^/    /'
    rm -f "$out" "$out.timeout"
}

# todo NAME DESCRIPTION — a check that is planned but not written: listed, never passed.
todo() {
    todo_names+=("$1")
    echo "todo $1: $2"
}

# ---- helpers used by checks ----

# expect_word WORD TEXT... — TEXT contains WORD as a whole word.
expect_word() {
    local word=$1
    shift
    grep -qw -- "$word" <<<"$*" || { echo "expected '$word' in: $*"; return 1; }
}

# Units that may fail in this guest without saying anything about it or about faas; every
# other failed unit fails the check. Keep it short, each with its reason.
ALLOWED_FAILED_UNITS=()

system_state() {
    local state units u bad=()
    state=$(systemctl is-system-running)
    echo "$state"
    [[ $state == running ]] && return 0
    [[ $state == degraded ]] || return 1
    units=$(systemctl --no-legend --plain list-units --state=failed | awk '{print $1}')
    echo "failed units: $units"
    for u in $units; do
        [[ " ${ALLOWED_FAILED_UNITS[*]} " == *" $u "* ]] || bad+=("$u")
    done
    ((${#bad[@]} == 0)) || { echo "not on the allow-list: ${bad[*]}"; systemctl status --no-pager --lines=5 "${bad[@]}"; return 1; }
}

kernel_release() {
    uname -r
    uname -v
}

cgroup_v2_controllers() {
    local fstype controllers c
    fstype=$(stat -fc %T /sys/fs/cgroup)
    [[ $fstype == cgroup2fs ]] || { echo "/sys/fs/cgroup is $fstype, not cgroup2fs"; return 1; }
    controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
    echo "cgroup.controllers: $controllers"
    echo "cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
    for c in memory pids cpu; do expect_word "$c" "$controllers" || return 1; done
}

# A transient service with Delegate=yes gets memory, pids and cpu delegated, as
# faas.service will.
delegated_cgroup() {
    local out c
    # shellcheck disable=SC2016 # expanded by the sh inside the unit
    out=$(systemd-run --wait --pipe --quiet -p Delegate=yes -p MemoryMax=64M -p TasksMax=32 \
        sh -c 'cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)
               echo "cgroup: $cg"
               echo "controllers: $(cat $cg/cgroup.controllers)"
               echo "memory.max: $(cat $cg/memory.max) pids.max: $(cat $cg/pids.max)"') || return 1
    echo "$out"
    for c in memory pids cpu; do expect_word "$c" "$(grep '^controllers:' <<<"$out")" || return 1; done
    grep -q 'memory.max: 67108864 pids.max: 32' <<<"$out"
}

landlock_abi() {
    echo "lsm: $(cat /sys/kernel/security/lsm)"
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) returns the ABI.
    python3 - <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
if abi < 0:
    print("landlock_create_ruleset:", os.strerror(ctypes.get_errno()))
    sys.exit(1)
print("landlock ABI", abi)
EOF
}

seccomp_available() {
    local actions
    grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status || return 1
    actions=$(cat /proc/sys/kernel/seccomp/actions_avail) || return 1
    echo "actions_avail: $actions"
    expect_word errno "$actions" && expect_word kill_process "$actions"
}

user_namespaces() {
    echo "max_user_namespaces: $(cat /proc/sys/user/max_user_namespaces)"
    # shellcheck disable=SC2016 # expanded by the sh inside the namespaces
    unshare --user --map-root-user --pid --fork --mount-proc sh -c 'echo "in a new user+pid ns: uid $(id -u), pid $$"'
}

python_version() {
    python3 --version
    python3 -c 'import json, sys; print(json.dumps({"ok": sys.version_info >= (3, 11)}))'
}

node_version() {
    node --version
    node -e 'process.stdout.write(JSON.stringify({ok: true}) + "\n")'
}

share_9p() {
    local fstype f
    fstype=$(findmnt -no FSTYPE "$SHARE")
    echo "$SHARE: $fstype ($(findmnt -no OPTIONS "$SHARE"))"
    [[ $fstype == 9p ]] || return 1
    f=$SHARE/out/.roundtrip.$$
    echo "written in the guest" >"$f" && [[ $(cat "$f") == "written in the guest" ]] || return 1
    rm -f "$f"
    ls "$SHARE"
}

journald_works() {
    local tag=faas-vm-smoke-$$ line
    line="hello from the vm tier $RANDOM"
    echo "$line" | systemd-cat -t "$tag"
    journalctl --sync
    journalctl -q -t "$tag" -o cat | tee /dev/stderr | grep -qx "$line"
}

run_mount_options() {
    # Information for the faas checks: /run is noexec (as systemd mounts it), so nothing
    # meant to be executed may be placed there; / is a shared mount.
    findmnt -no TARGET,FSTYPE,OPTIONS /run
    findmnt -no TARGET,PROPAGATION /
    [[ $(findmnt -no PROPAGATION /) == shared ]]
}

# Not a pass/fail criterion: how slow process creation is here (TCG), for sizing timeouts.
fork_exec_rate() {
    local start end
    start=$(date +%s%N)
    for _ in $(seq 200); do /bin/true; done
    end=$(date +%s%N)
    echo "200 fork+exec of /bin/true: $(((end - start) / 1000000)) ms"
}

# run.sh writes expect-binary (the binary's sha256) into the share whenever it put a binary
# there; without it (FAAS_BIN=none) the faas checks are not run.
EXPECT_BINARY=$SHARE/expect-binary

faas_binary() {
    [[ -x $FAAS_BIN ]] || { echo "$FAAS_BIN missing, though run.sh put one in the share ($EXPECT_BINARY): the 9p share is broken"; return 1; }
    local file_info want got
    file_info=$(head -c 4 "$FAAS_BIN" | od -An -c | tr -d ' ')
    [[ $file_info == 177ELF ]] || { echo "$FAAS_BIN is not an ELF file"; return 1; }
    if [[ -e $EXPECT_BINARY ]]; then
        want=$(cat "$EXPECT_BINARY")
        got=$(sha256sum "$FAAS_BIN" | cut -d' ' -f1)
        [[ $got == "$want" ]] || { echo "$FAAS_BIN has sha256 $got, run.sh shared $want"; return 1; }
        echo "sha256 $got, as run.sh shared it"
    fi
    "$FAAS_BIN" --help | head -n 15
}

# ---- the tier itself ----
echo "# VM tier smoke checks"
check system-running system_state
note kernel kernel_release
check cgroup-v2-controllers cgroup_v2_controllers
check delegated-cgroup delegated_cgroup
check landlock landlock_abi
check seccomp seccomp_available
check user-namespaces user_namespaces
check python python_version
check node node_version
note curl curl --version
check 9p-share share_9p
check journald journald_works
check run-and-root-mounts run_mount_options
note fork-exec-rate fork_exec_rate

# ---- faas ----
echo "# faas"
if [[ -e $EXPECT_BINARY || -e $FAAS_BIN ]]; then
    check faas-binary faas_binary
fi
if [[ -x $FAAS_BIN ]]; then
    # shellcheck source=tests/vm/faas-checks.sh
    source "$SHARE/faas-checks.sh"
    check faas-install faas_install
    check faas-doctor faas_doctor
    check socket-activation faas_socket_activation
    check journal-report faas_journal_report
    check warm-zygote faas_warm
    check schedule faas_schedule
    check cgroup-layout faas_cgroup_layout
    check memory-limit faas_memory_limit
    check pids-limit faas_pids_limit
    check cpu-limit faas_cpu_limit
    check no-inv-cgroups-left faas_no_inv_left
    check mount-propagation faas_mount_propagation
    check landlock-required faas_landlock_required
    check admin-socket faas_admin_socket
    check watchdog faas_watchdog
    check restart-under-load faas_restart_under_load
    check idle-exit faas_idle_exit
    check security-score faas_security_score
    check reinstall-keeps-config faas_reinstall_keeps_config
    check uninstall faas_uninstall
elif [[ -e $EXPECT_BINARY ]]; then
    echo "the faas checks cannot run without the binary (faas-binary failed)"
else
    echo "note: no faas binary in the share (run.sh ran with FAAS_BIN=none); faas checks cannot run"
    todo faas "the faas checks in faas-checks.sh need a binary"
fi

# ---- the Debian package ----
echo "# the Debian package"
shopt -s nullglob
shared_debs=("$SHARE"/deb/*.deb)
shopt -u nullglob
if [[ -e $SHARE/expect-deb || ${#shared_debs[@]} -gt 0 ]]; then
    # shellcheck source=tests/vm/faas-checks.sh
    source "$SHARE/faas-checks.sh"
    # shellcheck source=tests/vm/deb-checks.sh
    source "$SHARE/deb-checks.sh"
    check deb-file deb_file
    check deb-lintian deb_lintian
    check deb-install deb_install
    check deb-socket-activation deb_socket_activation
    check deb-journal-report deb_journal_report
    check deb-completion deb_completion
    check deb-remove deb_remove
    check deb-purge deb_purge
else
    echo "note: no package in the share (run.sh ran with FAAS_DEB=none); package checks cannot run"
    todo deb "the package checks in deb-checks.sh need a .deb"
fi

echo
if ((${#todo_names[@]})); then
    echo "not written yet (not counted): ${todo_names[*]}"
fi
if ((failed)); then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
