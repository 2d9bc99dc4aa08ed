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

# invoke NAME [curl args] — request /NAME, print "STATUS ID" (the invocation id header).
invoke() {
    local name=$1
    shift
    curl -s -o /tmp/body -D /tmp/head --max-time 120 "$@" "http://127.0.0.1:8080/$name" >/dev/null
    local status id
    status=$(awk 'NR==1 {print $2}' /tmp/head)
    id=$(awk 'tolower($1)=="faas-invocation-id:" {print $2}' /tmp/head | tr -d '\r')
    echo "$status $id"
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
    cat >"$FAAS_FUNCS/nap.toml" <<'EOF'
runtime = "sh"
source = '''
sleep 3
printf 'Content-Type: text/plain\n\nrested\n'
'''
[limits]
timeout = "60s"
EOF
    chmod 0644 "$FAAS_FUNCS"/*.toml
    /usr/local/bin/faas check || return 1
    systemd-analyze verify /etc/systemd/system/faas.service /etc/systemd/system/faas.socket /etc/systemd/system/faas-admin.socket
}

faas_doctor() {
    # Informational: what the guest gives (Landlock ABI 2 here, so "partial").
    /usr/local/bin/faas doctor || true
}

faas_socket_activation() {
    systemctl is-active faas.socket || return 1
    local state
    state=$(systemctl is-active faas.service)
    echo "before the first request: faas.service $state"
    [[ $state == inactive ]] || return 1
    read -r status id < <(invoke hello -G --data-urlencode name=vm)
    echo "GET /hello?name=vm → $status ($id): $(cat /tmp/body)"
    [[ $status == 200 ]] && grep -q '"hello": *"vm"' /tmp/body || return 1
    state=$(systemctl is-active faas.service)
    echo "after: faas.service $state"
    [[ $state == active ]]
}

faas_journal_report() {
    read -r status id < <(invoke hello -G --data-urlencode name=journal)
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

faas_memory_limit() {
    read -r status id < <(invoke memhog)
    echo "memhog → $status: $(cat /tmp/body)"
    local r peak
    r=$(report_of "$id") || return 1
    echo "$(field "$r" MESSAGE)"
    [[ $status == 502 ]] && grep -q 'out-of-memory' /tmp/body || return 1
    peak=$(field "$r" FAAS_MEMORY_PEAK)
    # memory.peak near memory.max (64 MiB): at least 56 MiB, at most the limit.
    ((peak >= 56 * 1024 * 1024 && peak <= 64 * 1024 * 1024)) || { echo "memory.peak $peak not near 64 MiB"; return 1; }
}

faas_pids_limit() {
    read -r status id < <(invoke forkbomb)
    local r
    r=$(report_of "$id") || return 1
    echo "forkbomb → $status $(cat /tmp/body); $(field "$r" MESSAGE)"
    [[ $status == 200 ]] || return 1
    # pids = 16: the wrapper and at most 15 children; fork then fails with EAGAIN (11).
    python3 -c 'import json,sys; d=json.load(open("/tmp/body")); sys.exit(0 if d["made"] < 16 and d["errno"] == 11 else 1)' || { echo "pids.max did not hold"; return 1; }
    (($(field "$r" FAAS_PIDS_MAX_HITS) > 0)) || { echo "pids.events max is 0: the cgroup limit was not what stopped it"; return 1; }
}

faas_cpu_limit() {
    read -r status id < <(invoke spinner)
    local r cpu
    r=$(report_of "$id") || return 1
    echo "spinner → $status; $(field "$r" MESSAGE)"
    [[ $status == 200 ]] || return 1
    cpu=$(field "$r" FAAS_CPU_USEC)
    # 3 s of wall clock at cpu = 20%: about 0.6 s of CPU; unthrottled it would be ~3 s.
    [[ $cpu =~ ^[0-9]+$ ]] || { echo "FAAS_CPU_USEC is '$cpu', not a number"; return 1; }
    ((cpu < 1200000)) || { echo "used ${cpu} us of CPU in 3 s: cpu.max did not throttle"; return 1; }
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

faas_no_inv_left() {
    local pids=() i
    for i in $(seq 6); do
        curl -s -o /dev/null --max-time 60 http://127.0.0.1:8080/env-sh &
        pids+=($!)
    done
    curl -s -o /dev/null --max-time 60 http://127.0.0.1:8080/memhog &
    pids+=($!)
    wait "${pids[@]}"
    sleep 1
    local main svc left
    main=$(systemctl show -p MainPID --value faas.service)
    svc=/sys/fs/cgroup$(cut -d: -f3 "/proc/$main/cgroup")
    svc=${svc%/supervisor}
    left=$(find "$svc" -maxdepth 1 -name 'inv-*')
    [[ -z $left ]] && return 0
    echo "left behind: $left"
    # Where things are stuck, for the log: the cgroup's processes and faas's threads.
    local d t
    for d in $left; do
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

faas_mount_propagation() {
    local main before_host before_svc
    main=$(systemctl show -p MainPID --value faas.service)
    before_host=$(wc -l </proc/self/mountinfo)
    before_svc=$(wc -l <"/proc/$main/mountinfo")
    curl -s -o /dev/null --max-time 60 http://127.0.0.1:8080/nap &
    local bg=$!
    sleep 1.5
    echo "mounts: host $before_host → $(wc -l </proc/self/mountinfo), faas $before_svc → $(wc -l <"/proc/$main/mountinfo") (during a request)"
    [[ $(wc -l </proc/self/mountinfo) == "$before_host" && $(wc -l <"/proc/$main/mountinfo") == "$before_svc" ]] || return 1
    wait $bg
    [[ $(wc -l </proc/self/mountinfo) == "$before_host" && $(wc -l <"/proc/$main/mountinfo") == "$before_svc" ]]
}

faas_landlock_required() {
    read -r status id < <(invoke strict)
    echo "strict (landlock = \"required\") → $status: $(cat /tmp/body)"
    # The guest kernel has Landlock ABI 2: not every rule can be enforced.
    [[ $status == 503 ]] && grep -q 'requires landlock' /tmp/body
}

faas_restart_under_load() {
    local out=/tmp/restart-load codes
    : >"$out"
    (
        for _ in $(seq 60); do
            curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 http://127.0.0.1:8080/env-sh >>"$out"
        done
    ) &
    local loader=$!
    sleep 2
    systemctl restart faas.service
    echo "restarted; faas.service $(systemctl is-active faas.service)"
    wait $loader
    codes=$(sort "$out" | uniq -c)
    echo "$codes"
    [[ $(wc -l <"$out") == 60 ]] && ! grep -qv '^200$' "$out"
}

faas_idle_exit() {
    cp /etc/faas/faas.toml /tmp/faas.toml.orig
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
    journalctl -q -u faas.service -o cat | grep -q 'stopping (idle)' || return 1
    cp /tmp/faas.toml.orig /etc/faas/faas.toml
    systemctl restart faas.service
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

faas_security_score() {
    systemd-analyze security --no-pager faas.service | tail -n 25
}

