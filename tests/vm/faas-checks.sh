# faas checks for the VM tier: sourced by guest-test.sh (systemd as PID 1, root, Debian
# bookworm, kernel 6.1 with Landlock ABI 2). Each function is one check; guest-test.sh runs
# them in order with `check NAME function` — later ones rely on the install.

FAAS_FUNCS=/etc/faas/functions

# curl_status URL — prints the HTTP status of one request (000 if refused).
curl_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$@"
}

# report_of ID — the REPORT entry of one invocation, as journal JSON.
report_of() {
    local id=$1 i
    for i in $(seq 50); do
        journalctl --sync
        if journalctl -q -o json "FAAS_INVOCATION_ID=$id" -t faas | grep -q '"FAAS_OUTCOME"'; then
            journalctl -q -o json "FAAS_INVOCATION_ID=$id" -t faas | grep '"FAAS_OUTCOME"' | tail -n 1
            return 0
        fi
        sleep 0.2
    done
    echo "no REPORT for invocation $id"
    return 1
}

# field JSON NAME — one field of a journal JSON entry.
field() {
    python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"
}

# invoke NAME [curl args] — request /NAME; sets `status` and `id` (the Faas-Invocation-Id
# header) for the caller, with the head in /tmp/head and the body in /tmp/body. Fails when
# curl does (refused, cut short, timed out), and clears both files first: curl writes them
# only once data arrives, and a failed request must not read an earlier one's.
invoke() {
    local name=$1 rc=0
    shift
    status='' id=''
    rm -f /tmp/head /tmp/body
    curl -s -o /tmp/body -D /tmp/head --max-time 120 "$@" "http://127.0.0.1:8080/$name" >/dev/null || rc=$?
    if ((rc)); then
        echo "curl /$name failed (exit $rc)"
        return 1
    fi
    status=$(awk 'NR==1 {print $2}' /tmp/head)
    id=$(awk 'tolower($1)=="faas-invocation-id:" {print $2}' /tmp/head | tr -d '\r')
}

# expect_problem STATUS TYPE [BODY] — the last response (`status`, /tmp/body or BODY) is the
# problem+json STATUS with type urn:faas:problem:TYPE.
expect_problem() {
    local want_status=$1 want_type=urn:faas:problem:$2 body=${3:-/tmp/body} got
    got=$(jq -r '.type' "$body" 2>/dev/null)
    if [[ $status != "$want_status" || $got != "$want_type" ]]; then
        echo "expected $want_status $want_type, got $status ${got:-(no problem type)}: $(head -c 300 "$body")"
        return 1
    fi
}

# faas_main_pid — faas.service's main pid; fails when it is not running.
faas_main_pid() {
    local main
    main=$(systemctl show -p MainPID --value faas.service)
    [[ $main =~ ^[1-9][0-9]*$ ]] || { echo "faas.service has no main process (MainPID=$main)" >&2; return 1; }
    echo "$main"
}

# faas_service_cgroup — faas.service's cgroup directory, where the inv-* cgroups are made.
faas_service_cgroup() {
    local main cg
    main=$(faas_main_pid) || return 1
    cg=$(cut -d: -f3 "/proc/$main/cgroup")
    [[ $cg == */supervisor ]] || { echo "faas (pid $main) is in $cg, not in a supervisor leaf" >&2; return 1; }
    echo "/sys/fs/cgroup${cg%/supervisor}"
}

# wait_for_handler COMM SECONDS — waits until a process named COMM runs in one of faas's
# inv-* cgroups (so that request's sandbox is fully built and its handler running), and
# prints "CGROUP PID". Builtins only in the loop: every fork costs ~0.1 s here.
wait_for_handler() {
    local comm=$1 deadline=$((SECONDS + $2)) svc procs p c d
    svc=$(faas_service_cgroup) || return 1
    while ((SECONDS < deadline)); do
        for d in "$svc"/inv-*/; do
            [[ -e ${d}cgroup.procs ]] || continue
            mapfile -t procs 2>/dev/null <"${d}cgroup.procs" || continue
            for p in "${procs[@]}"; do
                read -r c 2>/dev/null <"/proc/$p/comm" || continue
                if [[ $c == "$comm" ]]; then
                    echo "${d%/} $p"
                    return 0
                fi
            done
        done
        sleep 0.1
    done
    echo "no '$comm' in any inv-* cgroup of $svc within $2 s" >&2
    return 1
}

faas_install() {
    cd "$REPO" || return 1
    # The README's install command. The binary was built on the host; make sees no sources
    # here and installs it as it is.
    make install CARGO=false || return 1
    # Software emulation makes every exec 40-100x slower than on the host (tests/vm/README.md):
    # give the examples room.
    sed -i 's/^timeout = "[^"]*"/timeout = "60s"/' "$FAAS_FUNCS"/*.toml /etc/faas/faas.toml
    # The test functions, beside the examples.
    cat >"$FAAS_FUNCS/memhog.toml" <<'EOF'
runtime = "python"
source = '''
def handle(request):
    hoard = []
    for _ in range(64):
        hoard.append(bytearray(8 << 20))
    return "survived %d MiB" % (8 * len(hoard))
'''
[limits]
memory = "64M"
timeout = "60s"
EOF
    cat >"$FAAS_FUNCS/forkbomb.toml" <<'EOF'
runtime = "python"
source = '''
import os, time

def handle(request):
    made, err = 0, 0
    for _ in range(64):
        try:
            pid = os.fork()
        except OSError as e:
            err = e.errno
            break
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        made += 1
    return {"made": made, "errno": err}
'''
[limits]
pids = 16
timeout = "60s"
EOF
    cat >"$FAAS_FUNCS/spinner.toml" <<'EOF'
runtime = "sh"
source = '''
end=$(( $(date +%s) + 3 ))
while [ "$(date +%s)" -lt "$end" ]; do :; done
printf 'Content-Type: text/plain\n\nspun\n'
'''
[limits]
cpu = "20%"
timeout = "60s"
EOF
    cat >"$FAAS_FUNCS/strict.toml" <<'EOF'
runtime = "sh"
source = "printf 'Content-Type: text/plain\\n\\nok\\n'"
[sandbox]
landlock = "required"
EOF
    # Long enough to be caught in flight (wait_for_handler) and to outlast a restart's SIGTERM;
    # short of drain_grace (10 s).
    cat >"$FAAS_FUNCS/nap.toml" <<'EOF'
runtime = "sh"
source = '''
sleep 5
printf 'Content-Type: text/plain\n\nrested\n'
'''
[limits]
timeout = "60s"
EOF
    chmod 0644 "$FAAS_FUNCS"/*.toml
    local f missing=()
    for f in /usr/local/share/man/man1/faas.1 /usr/local/share/man/man1/faas-invoke.1 \
        /usr/local/share/man/man5/faas.toml.5 /usr/local/share/man/man5/faas-function.5 \
        /usr/local/share/bash-completion/completions/faas /usr/local/share/zsh/site-functions/_faas \
        /usr/local/share/fish/vendor_completions.d/faas.fish; do
        [[ -s $f ]] || missing+=("$f")
    done
    ((${#missing[@]} == 0)) || { echo "make install did not install: ${missing[*]}"; return 1; }
    /usr/local/bin/faas check || return 1
    systemd-analyze verify /etc/systemd/system/faas.service /etc/systemd/system/faas.socket /etc/systemd/system/faas-admin.socket
}

# layer_state DOCTOR_OUTPUT LAYER — the state doctor gives LAYER, from its layer list (the
# lines after the first blank one: "  NAME  STATE[: why]").
layer_state() {
    awk -v n="$2" 'seen && $1 == n { sub(/:$/, "", $2); print $2; exit } /^$/ { seen = 1 }' <<<"$1"
}

# README: doctor prints each layer as enforced, partial or missing (with a hint), and exits 1
# unless all are enforced. This guest has Landlock ABI 2, so: namespaces, uid, network and
# seccomp enforced, landlock partial with its hint, exit 1.
faas_doctor() {
    local out rc=0 pair want got bad=0
    out=$(/usr/local/bin/faas doctor 2>&1) || rc=$?
    sed -n '/^$/,$p' <<<"$out"
    echo "exit $rc"
    for pair in namespaces=enforced uid=enforced network=enforced seccomp=enforced landlock=partial; do
        want=${pair#*=}
        got=$(layer_state "$out" "${pair%%=*}")
        [[ $got == "$want" ]] || { echo "layer ${pair%%=*}: expected $want, doctor says '${got:-nothing}'"; bad=1; }
    done
    grep -q '^  landlock ABI: *2$' <<<"$out" || { echo "doctor does not report landlock ABI 2"; bad=1; }
    # The line after a layer that is not enforced is its hint.
    grep -A1 -E '^  landlock +partial' <<<"$out" | grep -q '^ \+hint: .' || { echo "no hint under landlock partial"; bad=1; }
    ((rc == 1)) || { echo "expected exit 1 (landlock is partial), got $rc"; bad=1; }
    # This shell's cgroup (faas-vm-test.service's) is not delegated, so its cgroup line says
    # nothing fixed; in a Delegate=yes unit, as faas.service runs, it must be enforced.
    # shellcheck disable=SC2016 # expanded by the sh inside the unit
    out=$(systemd-run --wait --pipe --quiet -p Delegate=yes sh -c '/usr/local/bin/faas doctor; echo "exit $?"' 2>&1)
    got=$(layer_state "$out" cgroup)
    echo "under Delegate=yes: cgroup $got, $(tail -n 1 <<<"$out")"
    [[ $got == enforced ]] || { echo "cgroup under Delegate=yes: expected enforced"; sed -n '/^$/,$p' <<<"$out"; bad=1; }
    [[ $(tail -n 1 <<<"$out") == "exit 1" ]] || { echo "under Delegate=yes: expected exit 1 (landlock is partial)"; bad=1; }
    ((bad == 0))
}

faas_socket_activation() {
    systemctl is-active faas.socket || return 1
    local state
    state=$(systemctl is-active faas.service)
    echo "before the first request: faas.service $state"
    [[ $state == inactive ]] || return 1
    local status id
    invoke hello -G --data-urlencode name=vm || return 1
    echo "GET /hello?name=vm → $status ($id): $(cat /tmp/body)"
    [[ $status == 200 ]] && grep -q '"hello": *"vm"' /tmp/body || return 1
    state=$(systemctl is-active faas.service)
    echo "after: faas.service $state"
    [[ $state == active ]]
}

# A schedule under systemd as PID 1: a function file with `*:*:0/2` runs through the same
# sandbox, with a REPORT marked trigger=schedule in faas.service's journal; once the file is
# gone, no run follows.
faas_schedule() {
    printf '%s\n' 'runtime = "sh"' "source = \"printf 'Content-Type: text/plain\\\\n\\\\ntick\\\\n'\"" \
        '[[schedule]]' 'calendar = "*:*:0/2"' >"$FAAS_FUNCS/tick.toml"
    cat "$FAAS_FUNCS/tick.toml"
    # The daemon may be idle-stopped: a request starts it through the socket.
    curl -fsS -o /dev/null http://127.0.0.1:8080/_/health || { echo "faas does not answer"; rm -f "$FAAS_FUNCS/tick.toml"; return 1; }
    local since i n=0
    since=$(date '+%Y-%m-%d %H:%M:%S')
    for i in $(seq 60); do
        journalctl --sync
        n=$(journalctl -q -o json -u faas --since "$since" FAAS_FUNCTION=tick FAAS_TRIGGER=schedule | grep -c '"FAAS_OUTCOME":"ok"' || true)
        ((n >= 2)) && break
        sleep 0.5
    done
    echo "scheduled runs of tick with outcome ok within 30 s: $n"
    rm -f "$FAAS_FUNCS/tick.toml"
    ((n >= 2)) || return 1
    # Removed: within a second the loop sees it; after that no run may follow.
    sleep 2
    journalctl --sync
    since=$(date '+%Y-%m-%d %H:%M:%S')
    sleep 5
    journalctl --sync
    n=$(journalctl -q -o json -u faas --since "$since" FAAS_FUNCTION=tick FAAS_TRIGGER=schedule | grep -c '"FAAS_OUTCOME"' || true)
    echo "runs in the 5 s after the file was removed: $n"
    ((n == 0))
}

faas_journal_report() {
    local status id
    invoke hello -G --data-urlencode name=journal || return 1
    [[ $status == 200 ]] || { echo "status $status"; return 1; }
    local r
    r=$(report_of "$id") || return 1
    local f
    for f in FAAS_FUNCTION FAAS_INVOCATION_ID FAAS_OUTCOME FAAS_STATUS FAAS_DURATION_MS FAAS_SETUP_US FAAS_CPU_USEC FAAS_MEMORY_PEAK FAAS_LAYERS; do
        echo "$f=$(field "$r" "$f")"
        [[ -n $(field "$r" "$f") ]] || { echo "REPORT lacks $f"; return 1; }
    done
    [[ $(field "$r" FAAS_OUTCOME) == ok && $(field "$r" FAAS_FUNCTION) == hello ]] || return 1
    [[ $(field "$r" FAAS_MEMORY_PEAK) =~ ^[0-9]+$ ]] || { echo "no memory.peak: cgroups not in use"; return 1; }
    echo "MESSAGE: $(field "$r" MESSAGE)"
    journalctl -q -t hello "FAAS_INVOCATION_ID=$id" -o cat | tee /dev/stderr | grep -q "journal"
}

# hello is Python, so warm (issue 11): its first request starts the zygote; once it is ready a
# request is forked from it, under systemd's own seccomp options and the delegated cgroup: into
# an inv-* cgroup of its own (memory.peak in the REPORT), while the zygote sits in zygote-hello-*
# as uid 0 with exactly its five capabilities, no_new_privs and a filter.
faas_warm() {
    local status id r i start="" svc zpid caps
    for i in $(seq 80); do
        invoke hello -G --data-urlencode name=warm || return 1
        [[ $status == 200 ]] || { echo "hello → $status"; return 1; }
        r=$(report_of "$id") || return 1
        start=$(field "$r" FAAS_START)
        [[ $start == warm ]] && break
        sleep 0.25
    done
    echo "REPORT: $(field "$r" MESSAGE)"
    [[ $start == warm ]] || { echo "no warm request within 20 s (last start=$start)"; journalctl -q -u faas -n 20 -o cat; return 1; }
    grep -i '^server-timing:.*desc=warm' /tmp/head || { echo "Server-Timing does not say warm"; return 1; }
    [[ $(field "$r" FAAS_MEMORY_PEAK) =~ ^[0-9]+$ ]] || { echo "no memory.peak: the warm request had no cgroup"; return 1; }
    svc=$(faas_service_cgroup) || return 1
    ls -d "$svc"/zygote-hello-* || { echo "no zygote-hello-* cgroup under $svc"; return 1; }
    zpid=$(head -n 1 "$(ls -d "$svc"/zygote-hello-* | head -n 1)/cgroup.procs")
    [[ -n $zpid ]] || { echo "the zygote cgroup is empty"; return 1; }
    tr '\0' ' ' <"/proc/$zpid/cmdline"; echo
    grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$zpid/status"
    caps=$(awk '/^CapEff:/ {print $2}' "/proc/$zpid/status")
    # CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_SYS_CHROOT, CAP_SYS_ADMIN: 6, 7, 8, 18, 21.
    [[ $caps == 00000000002401c0 ]] || { echo "the zygote holds capabilities $caps"; return 1; }
    grep -q '^NoNewPrivs:.*1' "/proc/$zpid/status" && grep -q '^Seccomp:.*2' "/proc/$zpid/status" || return 1
    tr '\0' '\n' <"/proc/$zpid/environ" | grep -qx 'FAAS_ZYGOTE=hello [0-9]*' || { echo "no FAAS_ZYGOTE"; return 1; }
    # The function's modules compiled in a sandbox of their own under the unit's hardening
    # (src/bytecode.rs), not left to each request.
    journalctl -q -u faas -o cat | grep -m 1 'compiled its code for the zygote' ||
        { echo "the zygote started without compiled code:"; journalctl -q -u faas -o cat | grep 'without compiled code'; return 1; }
    # Its Python objects in transparent huge pages (zygote/src/arenas.rs, MADV_COLLAPSE), or
    # the reason there are none, under this kernel's THP setting.
    echo "transparent_hugepage: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
    journalctl -q -u faas -o cat | grep -m 1 -E 'zygote ready: .*(KiB in huge pages|no huge pages: )' ||
        { echo "the zygote's ready line says nothing of huge pages"; journalctl -q -u faas -o cat | grep 'zygote ready'; return 1; }
}

faas_memory_limit() {
    local status id r peak
    invoke memhog || return 1
    echo "memhog → $status: $(cat /tmp/body)"
    r=$(report_of "$id") || return 1
    field "$r" MESSAGE
    expect_problem 502 out-of-memory || return 1
    [[ $(field "$r" FAAS_OUTCOME) == out-of-memory ]] || { echo "REPORT outcome is '$(field "$r" FAAS_OUTCOME)'"; return 1; }
    peak=$(field "$r" FAAS_MEMORY_PEAK)
    # memory.peak near memory.max (64 MiB): at least 56 MiB, at most the limit.
    ((peak >= 56 * 1024 * 1024 && peak <= 64 * 1024 * 1024)) || { echo "memory.peak $peak not near 64 MiB"; return 1; }
}

faas_pids_limit() {
    local status id r
    invoke forkbomb || return 1
    r=$(report_of "$id") || return 1
    echo "forkbomb → $status $(cat /tmp/body); $(field "$r" MESSAGE)"
    [[ $status == 200 ]] || return 1
    # pids = 16: the wrapper and at most 15 children; fork then fails with EAGAIN (11).
    python3 -c 'import json,sys; d=json.load(open("/tmp/body")); sys.exit(0 if d["made"] < 16 and d["errno"] == 11 else 1)' || { echo "pids.max did not hold"; return 1; }
    (($(field "$r" FAAS_PIDS_MAX_HITS) > 0)) || { echo "pids.events max is 0: the cgroup limit was not what stopped it"; return 1; }
}

faas_cpu_limit() {
    local status id r cpu
    invoke spinner || return 1
    r=$(report_of "$id") || return 1
    echo "spinner → $status; $(field "$r" MESSAGE)"
    [[ $status == 200 ]] || return 1
    cpu=$(field "$r" FAAS_CPU_USEC)
    # At cpu = 20% the spinner gets about a fifth of its wall clock; unthrottled it would get
    # all of it. The bound is taken from its own duration, which a slow (emulated, loaded)
    # guest stretches: 35% of it leaves room for accounting, never for an unthrottled spin.
    [[ $cpu =~ ^[0-9]+$ ]] || { echo "FAAS_CPU_USEC is '$cpu', not a number"; return 1; }
    local dur_ms
    dur_ms=$(grep -o 'duration=[0-9]*' <<<"$(field "$r" MESSAGE)" | cut -d= -f2)
    [[ $dur_ms =~ ^[0-9]+$ ]] || { echo "no duration in the REPORT"; return 1; }
    ((cpu < dur_ms * 350)) || { echo "used ${cpu} us of CPU in ${dur_ms} ms: cpu.max did not throttle"; return 1; }
    grep -q 'throttled=[1-9]' <<<"$(field "$r" MESSAGE)"
}

faas_cgroup_layout() {
    local main cg
    main=$(systemctl show -p MainPID --value faas.service)
    cg=$(cut -d: -f3 "/proc/$main/cgroup")
    echo "faas (pid $main) runs in $cg"
    [[ $cg == */faas.service/supervisor ]] || return 1
    local svc=/sys/fs/cgroup${cg%/supervisor}
    echo "subtree_control: $(cat "$svc/cgroup.subtree_control")"
    grep -qw memory "$svc/cgroup.subtree_control" && grep -qw pids "$svc/cgroup.subtree_control"
}

# Six env-sh (200) and one memhog (502 out-of-memory) at once; then every inv-* cgroup goes.
# Teardown finishes after the last response byte, so its end is polled for.
faas_no_inv_left() {
    local dir=/tmp/no-inv-left pids=() i svc left=() code bad=0
    rm -rf "$dir"
    mkdir -p "$dir"
    svc=$(faas_service_cgroup) || return 1
    for i in 1 2 3 4 5 6; do
        curl -s -o "$dir/body.$i" -w '%{http_code}' --max-time 60 http://127.0.0.1:8080/env-sh >"$dir/code.$i" &
        pids+=($!)
    done
    curl -s -o "$dir/body.oom" -w '%{http_code}' --max-time 60 http://127.0.0.1:8080/memhog >"$dir/code.oom" &
    pids+=($!)
    for i in "${pids[@]}"; do wait "$i"; done
    for i in 1 2 3 4 5 6; do
        code=$(cat "$dir/code.$i")
        [[ $code == 200 ]] || { echo "env-sh #$i → $code: $(head -c 200 "$dir/body.$i")"; bad=1; }
    done
    status=$(cat "$dir/code.oom")
    expect_problem 502 out-of-memory "$dir/body.oom" || bad=1
    echo "responses: env-sh $(for i in 1 2 3 4 5 6; do printf '%s ' "$(cat "$dir/code.$i")"; done)memhog $status"
    ((bad == 0)) || return 1
    local deadline=$((SECONDS + 20))
    shopt -s nullglob
    while :; do
        left=("$svc"/inv-*)
        ((${#left[@]} == 0 || SECONDS >= deadline)) && break
        sleep 0.2
    done
    shopt -u nullglob
    ((${#left[@]} == 0)) && return 0
    echo "left behind after 20 s: ${left[*]}"
    # Where things are stuck, for the log: the cgroup's processes and faas's threads.
    local d t main
    main=$(faas_main_pid)
    for d in "${left[@]}"; do
        echo "$d: procs $(tr '\n' ' ' <"$d/cgroup.procs") events $(tr '\n' ' ' <"$d/cgroup.events")"
        for t in $(cat "$d/cgroup.procs"); do
            echo "  pid $t: $(tr '\0' ' ' <"/proc/$t/cmdline") state $(awk '/^State/ {print $2}' "/proc/$t/status") wchan $(cat "/proc/$t/wchan")"
            sed 's/^/    /' "/proc/$t/stack" 2>/dev/null | head -12
        done
    done
    for t in /proc/"$main"/task/*; do
        echo "faas thread ${t##*/} ($(cat "$t/comm")): wchan $(cat "$t/wchan")"
        sed 's/^/    /' "$t/stack" 2>/dev/null | head -8
    done
    return 1
}

# Building a sandbox mounts nothing where the host or faas's own mount namespace sees it: the
# mount tables are the same, line for line, while a handler runs and after it.
faas_mount_propagation() {
    local main host_before faas_before bg at code
    main=$(faas_main_pid) || return 1
    host_before=$(cat /proc/self/mountinfo)
    faas_before=$(cat "/proc/$main/mountinfo")
    rm -f /tmp/nap.body /tmp/nap.code
    curl -s -o /tmp/nap.body -w '%{http_code}' --max-time 60 http://127.0.0.1:8080/nap >/tmp/nap.code &
    bg=$!
    at=$(wait_for_handler sleep 60) || return 1
    echo "nap's handler runs: $at"
    same_mounts "during the request" "$host_before" "$faas_before" "$main" || return 1
    wait $bg
    code=$(cat /tmp/nap.code)
    echo "nap → $code: $(cat /tmp/nap.body)"
    [[ $code == 200 ]] && grep -qx rested /tmp/nap.body || return 1
    same_mounts "after the request" "$host_before" "$faas_before" "$main"
}

# same_mounts WHEN HOST_MOUNTINFO FAAS_MOUNTINFO FAAS_PID — both mount tables unchanged.
same_mounts() {
    local when=$1 host_now faas_now
    host_now=$(cat /proc/self/mountinfo)
    faas_now=$(cat "/proc/$4/mountinfo")
    if [[ $host_now != "$2" ]]; then
        echo "the host's mounts changed $when:"
        diff <(echo "$2") <(echo "$host_now") | head -n 10
        return 1
    fi
    if [[ $faas_now != "$3" ]]; then
        echo "faas's mounts changed $when:"
        diff <(echo "$3") <(echo "$faas_now") | head -n 10
        return 1
    fi
    echo "$when: host ($(wc -l <<<"$host_now") mounts) and faas ($(wc -l <<<"$faas_now")) unchanged"
}

faas_landlock_required() {
    local status id
    invoke strict || return 1
    echo "strict (landlock = \"required\") → $status: $(cat /tmp/body)"
    # The guest kernel has Landlock ABI 2: not every rule can be enforced, so it never runs.
    expect_problem 503 sandbox-unavailable || return 1
    jq -r .detail /tmp/body | grep -q 'requires landlock'
}

# systemctl restart while a nap request is provably in flight (its handler runs in an inv-*
# cgroup) and while env-sh requests keep coming: faas drains on SIGTERM (drain_grace 10 s >
# nap's 5 s), so the old process answers the nap after it began stopping, and systemd holds
# the socket's backlog for the new one: every request gets a 200.
faas_restart_under_load() {
    local out=/tmp/restart-load old new at nap loader nap_id r stop_ts nap_ts code
    : >"$out"
    rm -f /tmp/nap.body /tmp/nap.head /tmp/nap.code
    old=$(faas_main_pid) || return 1
    curl -s -o /tmp/nap.body -D /tmp/nap.head -w '%{http_code}' --max-time 60 http://127.0.0.1:8080/nap >/tmp/nap.code &
    nap=$!
    (
        for _ in $(seq 30); do
            curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 http://127.0.0.1:8080/env-sh >>"$out"
        done
    ) &
    loader=$!
    at=$(wait_for_handler sleep 60) || return 1
    echo "nap in flight ($at); restarting faas.service (pid $old)"
    systemctl restart faas.service || return 1
    new=$(faas_main_pid) || return 1
    echo "restarted: faas.service $(systemctl is-active faas.service), pid $old → $new"
    [[ $new != "$old" ]] || { echo "the main pid did not change"; return 1; }
    wait $nap
    code=$(cat /tmp/nap.code)
    echo "nap → $code: $(cat /tmp/nap.body)"
    [[ $code == 200 ]] && grep -qx rested /tmp/nap.body || return 1
    wait $loader
    echo "env-sh under load: $(sort "$out" | uniq -c | tr -s ' \n' ' ')"
    [[ $(wc -l <"$out") == 30 ]] && ! grep -qv '^200$' "$out" || return 1
    # The old process answered the nap, after it began stopping: the REPORT comes from it and
    # follows its "stopping (SIGTERM)" line.
    nap_id=$(awk 'tolower($1)=="faas-invocation-id:" {print $2}' /tmp/nap.head | tr -d '\r')
    r=$(report_of "$nap_id") || return 1
    [[ $(field "$r" _PID) == "$old" && $(field "$r" FAAS_OUTCOME) == ok ]] || { echo "nap's REPORT: pid $(field "$r" _PID), outcome $(field "$r" FAAS_OUTCOME)"; return 1; }
    stop_ts=$(journalctl -q -o json -t faas "_PID=$old" | grep -m 1 'stopping (SIGTERM)') || { echo "no 'stopping (SIGTERM)' from pid $old"; return 1; }
    echo "pid $old: $(field "$stop_ts" MESSAGE)"
    stop_ts=$(field "$stop_ts" __MONOTONIC_TIMESTAMP)
    nap_ts=$(field "$r" __MONOTONIC_TIMESTAMP)
    ((nap_ts > stop_ts)) || { echo "nap's REPORT ($nap_ts) came before the stop ($stop_ts): it was not in flight at the restart"; return 1; }
}

# The unit's watchdog under systemd: WatchdogSec=30s reaches faas, which keeps systemd fed.
# To see that without waiting a minute, a runtime drop-in shortens it to 6 s; the service must
# stay up, same pid, no automatic restart, well past two intervals, with keep-alives arriving.
WATCHDOG_DROPIN=/run/systemd/system/faas.service.d/50-vm-watchdog.conf

faas_watchdog() {
    local usec rc=0 main
    usec=$(systemctl show -p WatchdogUSec --value faas.service)
    echo "shipped unit: WatchdogUSec=$usec"
    [[ -n $usec && $usec != 0 && $usec != infinity ]] || return 1
    mkdir -p "${WATCHDOG_DROPIN%/*}"
    printf '[Service]\nWatchdogSec=6s\n' >"$WATCHDOG_DROPIN"
    systemctl daemon-reload
    watchdog_kept_fed || rc=$?
    rm -f "$WATCHDOG_DROPIN"
    rmdir "${WATCHDOG_DROPIN%/*}" 2>/dev/null
    systemctl daemon-reload
    ((rc == 0)) || return 1
    systemctl restart faas.service || return 1
    main=$(faas_main_pid) || return 1
    echo "drop-in removed: WatchdogUSec=$(systemctl show -p WatchdogUSec --value faas.service)"
    tr '\0' '\n' <"/proc/$main/environ" | grep -qx 'WATCHDOG_USEC=30000000'
}

watchdog_kept_fed() {
    local main restarts stamps=() t end
    systemctl restart faas.service || return 1
    main=$(faas_main_pid) || return 1
    restarts=$(systemctl show -p NRestarts --value faas.service)
    tr '\0' '\n' <"/proc/$main/environ" | grep -qx 'WATCHDOG_USEC=6000000' || { echo "faas (pid $main) was not given WATCHDOG_USEC=6000000"; return 1; }
    end=$((SECONDS + 14))
    while ((SECONDS < end)); do
        t=$(systemctl show -p WatchdogTimestampMonotonic --value faas.service)
        if ((${#stamps[@]} == 0)) || [[ ${stamps[-1]} != "$t" ]]; then stamps+=("$t"); fi
        sleep 1
    done
    echo "14 s at WatchdogSec=6s: faas.service $(systemctl is-active faas.service), pid $main → $(systemctl show -p MainPID --value faas.service), NRestarts $restarts → $(systemctl show -p NRestarts --value faas.service), ${#stamps[@]} distinct keep-alive times"
    [[ $(systemctl is-active faas.service) == active ]] || return 1
    [[ $(systemctl show -p MainPID --value faas.service) == "$main" ]] || return 1
    [[ $(systemctl show -p NRestarts --value faas.service) == "$restarts" ]] || return 1
    ((${#stamps[@]} >= 3)) || { echo "keep-alive times: ${stamps[*]}"; return 1; }
    ! journalctl -q -u faas.service -o cat | grep -i 'watchdog timeout'
}

faas_admin_socket() {
    local sock=/run/faas/admin.sock
    stat -c '%a %U %n' "$sock"
    [[ $(stat -c %a "$sock") == 600 ]] || return 1
    [[ $(curl_status --unix-socket "$sock" http://localhost/_/metrics) == 200 ]] || return 1
    curl -s --unix-socket "$sock" http://localhost/_/metrics | grep -m 3 '^faas_invocations_total'
    [[ $(curl_status --unix-socket "$sock" http://localhost/_/functions) == 200 ]] || return 1
    [[ $(curl_status http://127.0.0.1:8080/_/metrics) == 404 ]] || return 1
    [[ $(curl_status http://127.0.0.1:8080/_/functions) == 404 ]]
}

# idle_exit = "3s": faas exits when idle, the socket stays, and the next request starts it.
# faas.toml is put back whatever happens, for the checks after this one.
faas_idle_exit() {
    local rc=0
    cp /etc/faas/faas.toml /tmp/faas.toml.orig
    idle_exit_3s || rc=$?
    cp /tmp/faas.toml.orig /etc/faas/faas.toml
    systemctl restart faas.service || return 1
    return "$rc"
}

idle_exit_3s() {
    sed -i 's/^idle_exit = .*/idle_exit = "3s"/' /etc/faas/faas.toml
    grep -q '^idle_exit = "3s"' /etc/faas/faas.toml || return 1
    systemctl restart faas.service
    [[ $(curl_status http://127.0.0.1:8080/env-sh) == 200 ]] || return 1
    local i state
    for i in $(seq 30); do
        state=$(systemctl is-active faas.service)
        [[ $state == inactive ]] && break
        sleep 1
    done
    echo "after idling: faas.service $state, faas.socket $(systemctl is-active faas.socket)"
    [[ $state == inactive ]] || return 1
    systemctl is-active faas.socket || return 1
    [[ $(curl_status http://127.0.0.1:8080/env-sh) == 200 ]] || return 1
    echo "the next request started it again: faas.service $(systemctl is-active faas.service)"
    journalctl -q -u faas.service -o cat | grep -q 'stopping (idle)'
}

# README: systemd-analyze security scores faas.service N.N (measured here); it must not get
# worse than the README says.
faas_security_score() {
    local out readme score
    readme=$(grep -o 'scores it \*\*[0-9.]*' "$REPO/README.md" | grep -o '[0-9.]*$')
    [[ $readme =~ ^[0-9]+\.[0-9]+$ ]] || { echo "README.md has no 'scores it **N.N'"; return 1; }
    out=$(systemd-analyze security --no-pager faas.service 2>&1)
    tail -n 1 <<<"$out"
    score=$(grep -o 'Overall exposure level for faas.service: [0-9.]*' <<<"$out" | grep -o '[0-9.]*$')
    [[ $score =~ ^[0-9]+\.[0-9]+$ ]] || { echo "no overall exposure level in:"; tail -n 5 <<<"$out"; return 1; }
    awk -v s="$score" -v r="$readme" 'BEGIN { exit !(s + 0 <= r + 0) }' || { echo "exposure $score is worse than the README's $readme"; return 1; }
    echo "exposure $score, README $readme"
}

# make install again over an installed, edited tree: faas.toml, the examples and other
# function files stay as they are (README: the Makefile's `[ -e ] ||` and `cp -rn`).
faas_reinstall_keeps_config() {
    local marker="# edited in the VM tier $$" f
    for f in /etc/faas/faas.toml "$FAAS_FUNCS/hello.toml" "$FAAS_FUNCS/hello/main.py"; do
        [[ -f $f ]] || { echo "$f missing before the reinstall"; return 1; }
        echo "$marker" >>"$f"
    done
    cp "$FAAS_FUNCS/memhog.toml" /tmp/memhog.toml.before
    make -C "$REPO" install CARGO=false >/tmp/reinstall.log 2>&1 || { tail -n 20 /tmp/reinstall.log; return 1; }
    for f in /etc/faas/faas.toml "$FAAS_FUNCS/hello.toml" "$FAAS_FUNCS/hello/main.py"; do
        [[ $(tail -n 1 "$f") == "$marker" ]] || { echo "make install replaced $f"; return 1; }
    done
    grep -q '^timeout = "60s"' /etc/faas/faas.toml || { echo "make install undid the timeout edit in faas.toml"; return 1; }
    cmp /tmp/memhog.toml.before "$FAAS_FUNCS/memhog.toml" || return 1
    echo "faas.toml, hello.toml, hello/main.py and memhog.toml kept"
    local status id
    invoke hello -G --data-urlencode name=again || return 1
    [[ $status == 200 ]] || { echo "hello after the reinstall → $status"; return 1; }
}

# make uninstall: everything but /etc/faas goes; nothing listens, nothing is left running.
faas_uninstall() {
    local f u left=() state
    make -C "$REPO" uninstall >/tmp/uninstall.log 2>&1 || { tail -n 20 /tmp/uninstall.log; return 1; }
    for f in /usr/local/bin/faas /usr/local/lib/faas /usr/local/share/doc/faas \
        /etc/systemd/system/faas.service /etc/systemd/system/faas.socket /etc/systemd/system/faas-admin.socket \
        /etc/systemd/system/sockets.target.wants/faas.socket /etc/systemd/system/sockets.target.wants/faas-admin.socket \
        /usr/local/share/man/man1/faas.1 /usr/local/share/man/man1/faas-serve.1 /usr/local/share/man/man1/faas-check.1 \
        /usr/local/share/man/man1/faas-invoke.1 /usr/local/share/man/man1/faas-doctor.1 \
        /usr/local/share/man/man5/faas.toml.5 /usr/local/share/man/man5/faas-function.5 \
        /usr/local/share/bash-completion/completions/faas /usr/local/share/zsh/site-functions/_faas \
        /usr/local/share/fish/vendor_completions.d/faas.fish \
        /run/faas; do
        [[ -e $f || -L $f ]] && left+=("$f")
    done
    ((${#left[@]} == 0)) || { echo "left behind: ${left[*]}"; ls -la /run/faas 2>/dev/null | head; return 1; }
    for u in faas.service faas.socket faas-admin.socket; do
        state=$(systemctl show -p LoadState,ActiveState --value "$u" | tr '\n' ' ')
        echo "$u: $state"
        [[ $state == "not-found inactive " ]] || return 1
    done
    [[ $(curl_status http://127.0.0.1:8080/hello) == 000 ]] || { echo "something still answers on 8080"; return 1; }
    # No process of a sandbox uid (uid_base 1879048192 upwards) is left.
    [[ -z $(ps -eo uid= | awk '$1 >= 1879048192') ]] || { echo "sandbox processes left:"; ps -eo pid,uid,comm | awk '$2 >= 1879048192'; return 1; }
    for f in /etc/faas/faas.toml "$FAAS_FUNCS/hello.toml" "$FAAS_FUNCS/memhog.toml"; do
        [[ -f $f ]] || { echo "make uninstall removed $f"; return 1; }
    done
    echo "removed all but /etc/faas: $(ls /etc/faas/functions | wc -l) files in /etc/faas/functions kept"
}
