#!/usr/bin/env bash
# Three faas hosts behind HAProxy, on one machine: each faas in a network namespace of its own,
# HAProxy in a fourth, linked by veth pairs with addresses from 198.18.0.0/15 (RFC 2544's
# benchmarking range), which exist only inside these namespaces. Nothing here touches the
# host's own network: clients reach HAProxy on 127.0.0.1 inside its namespace.
#
#   lb namespace: HAProxy on 127.0.0.1:8080 (and :8443 with TLS) ── 198.18.N.1 ─┐
#   instance N:   faas --listen lb=198.18.N.2:8080 (PROXY protocol v2)  ◀───────┘ N = 1, 2, 3
#
# HAProxy checks GET /_/ready on each; faas answers 503 from SIGTERM on and keeps serving for
# drain_delay, so a rolling restart takes each host out before it stops accepting.
#
# usage (as root):
#   cluster.sh up            namespaces, links, three faas, HAProxy; returns once all are UP
#   cluster.sh ship DIR      copy DIR/*.toml to every host's functions directory (one command,
#                            the way config management does it: write, then rename)
#   cluster.sh restart N     SIGTERM faas N, wait until HAProxy has it DOWN, wait for it to
#                            exit, start it again, wait until it is UP; prints timings as JSON
#   cluster.sh roll          restart 1, 2 and 3 in turn
#   cluster.sh curl PATH [ARGS…]   a request through HAProxy, from its namespace
#   cluster.sh status        HAProxy's view of the three
#   cluster.sh down          stop what `up` started (by pid) and delete the namespaces
#   cluster.sh test          up, ship, a rolling restart under load, down; prints a JSON summary
#
# environment: FAAS (the binary; default: faas in PATH), CLUSTER (a name of at most 10
# characters for the namespaces and links; default faascl), CLUSTER_DIR (state; default
# /run/faas-cluster-$CLUSTER), LOAD_WORKERS (4), LOAD_MAX_SECONDS (120).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${CLUSTER:-faascl}
DIR=${CLUSTER_DIR:-/run/faas-cluster-$CLUSTER}
FAAS=${FAAS:-$(command -v faas || echo "$REPO/target/release/faas")}
WRAPPERS=${WRAPPERS:-$REPO/wrappers}
PY=/usr/bin/python3
LB=$CLUSTER-lb
N_ALL="1 2 3"
# How long each faas keeps serving after SIGTERM with /_/ready at 503: many times what HAProxy
# needs to see it (fall 2 checks, 250 ms apart).
DRAIN_DELAY=${DRAIN_DELAY:-4s}

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }
now_ms() { date +%s%3N; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, and faas builds sandboxes)"
[ ${#CLUSTER} -le 10 ] || die "CLUSTER=$CLUSTER: at most 10 characters (link names are 15 at most)"

# One command to HAProxy's stats socket; its answer on stdout.
hap() {
    "$PY" - "$DIR/haproxy.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
EOF
}

# HAProxy's status of server fN: UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up), MAINT.
server_status() {
    hap "show stat" 2>/dev/null | awk -F, -v s="f$1" '$1 == "faas" && $2 == s { print $18 }'
}

# Waits (at most $3 seconds) until server fN's status is exactly $2.
wait_status() {
    local n=$1 want=$2 until=$(( $(date +%s) + $3 ))
    while [ "$(server_status "$n")" != "$want" ]; do
        [ "$(date +%s)" -lt "$until" ] || die "f$n is not $want within $3 s (it is '$(server_status "$n")'); logs in $DIR"
        sleep 0.05
    done
}

# Whether pid $1 still runs (not gone, not a zombie: nothing here reaps a daemon we left).
running() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

start_instance() {
    local n=$1 d=$DIR/n$1
    # nsenter itself, not a function around it, so that $! is the daemon (nsenter execs it).
    nsenter --net="/run/netns/$CLUSTER-$n" "$FAAS" --config "$d/faas.toml" serve \
        --listen "lb=198.18.$n.2:8080" --listen admin=127.0.0.1:9090 </dev/null >>"$d/log" 2>&1 &
    echo $! >"$d/pid"
}

write_instance_config() {
    local n=$1 d=$DIR/n$1
    mkdir -p "$d/functions"
    cat >"$d/faas.toml" <<EOF
# faas on host $n of the example cluster.
functions_dir = "functions"
state_dir = "state"
wrappers_dir = "$WRAPPERS"
# A uid range of its own (any would do: uids are locked per uid across faas processes).
uid_base = $(( 0x70000000 + 0x800000 + n * 1024 ))
uid_count = 1024
drain_delay = "$DRAIN_DELAY"
drain_grace = "10s"

[proxy]
trusted = ["198.18.$n.1"]                 # HAProxy's address on this link
protocol_listeners = ["lb"]               # --listen lb=…: every connection starts with PROXY v2
EOF
}

write_haproxy_config() {
    local tls=""
    if command -v openssl >/dev/null; then
        # A self-signed certificate for the example; a real site gets one from its CA.
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=faas.example" \
            -keyout "$DIR/site.key" -out "$DIR/site.crt" >/dev/null 2>&1
        cat "$DIR/site.crt" "$DIR/site.key" >"$DIR/site.pem"
        tls="    bind 127.0.0.1:8443 ssl crt $DIR/site.pem alpn http/1.1"
    fi
    cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 1000
    stats socket $DIR/haproxy.sock mode 600 level admin
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    option dontlog-normal           # only errors and retried requests reach the log
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # A request that never reached a handler (the connection was refused, or closed idle by
    # a draining faas) goes to another host; never one that may have run.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend web
    bind 127.0.0.1:8080
$tls
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    default_backend faas

backend faas
    balance roundrobin
    option httpchk GET /_/ready
    http-check expect status 200
    http-response set-header X-Served-By %[srv_name]
    # PROXY v2 to faas, health checks included: faas learns the client's address from it.
    default-server check inter 250ms fall 2 rise 2 send-proxy-v2 check-send-proxy
    server f1 198.18.1.2:8080
    server f2 198.18.2.2:8080
    server f3 198.18.3.2:8080
EOF
}

cmd_up() {
    command -v haproxy >/dev/null || die "haproxy not found: apt-get install haproxy"
    [ -x "$FAAS" ] || die "no faas binary at $FAAS: build it (cargo build --release) or set FAAS="
    [ ! -e "/run/netns/$LB" ] || die "namespace $LB exists: cluster.sh down first, or pick another CLUSTER="
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    ip netns add "$LB"
    in_ns "$LB" ip link set lo up
    for n in $N_ALL; do
        local ns=$CLUSTER-$n
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        # Made inside the lb namespace, one end moved to the host's: never in the host's own.
        in_ns "$LB" ip link add "${CLUSTER}l$n" type veth peer name "${CLUSTER}i$n" netns "$ns"
        in_ns "$LB" ip addr add "198.18.$n.1/24" dev "${CLUSTER}l$n"
        in_ns "$LB" ip link set "${CLUSTER}l$n" up
        in_ns "$ns" ip addr add "198.18.$n.2/24" dev "${CLUSTER}i$n"
        in_ns "$ns" ip link set "${CLUSTER}i$n" up
        write_instance_config "$n"
        start_instance "$n"
    done
    write_haproxy_config
    nsenter --net="/run/netns/$LB" haproxy -db -f "$DIR/haproxy.cfg" </dev/null >>"$DIR/haproxy.log" 2>&1 &
    echo $! >"$DIR/haproxy.pid"
    local until=$(( $(date +%s) + 20 ))
    until [ -S "$DIR/haproxy.sock" ]; do
        [ "$(date +%s)" -lt "$until" ] || die "haproxy did not start: $(tail -5 "$DIR/haproxy.log")"
        sleep 0.05
    done
    for n in $N_ALL; do wait_status "$n" UP 30; done
    log "up: HAProxy on 127.0.0.1:8080 in namespace $LB, f1-f3 UP; state in $DIR"
}

cmd_ship() {
    local src=${1:?usage: cluster.sh ship DIR}
    local files=("$src"/*.toml)
    [ -e "${files[0]}" ] || die "no *.toml in $src"
    for n in $N_ALL; do
        for f in "${files[@]}"; do
            # Write beside, then rename: a lookup never sees half a file.
            install -m 0644 "$f" "$DIR/n$n/functions/.$(basename "$f").tmp"
            mv "$DIR/n$n/functions/.$(basename "$f").tmp" "$DIR/n$n/functions/$(basename "$f")"
        done
    done
    log "shipped ${#files[@]} function file(s) to f1-f3"
}

cmd_restart() {
    local n=${1:?usage: cluster.sh restart N} d=$DIR/n${1:-}
    local pid t0 t_down t_exit t_up closed_first=false
    pid=$(cat "$d/pid")
    running "$pid" || die "faas $n (pid $pid) is not running"
    t0=$(now_ms)
    kill -TERM "$pid"
    wait_status "$n" DOWN 10
    t_down=$(now_ms)
    # Taken out by HAProxy while it still accepted: the point of drain_delay.
    grep -q "no new connections" "$d/log" && closed_first=true
    local until=$(( $(date +%s) + 30 ))
    while running "$pid"; do
        [ "$(date +%s)" -lt "$until" ] || die "faas $n did not exit within 30 s of SIGTERM"
        sleep 0.05
    done
    t_exit=$(now_ms)
    start_instance "$n"
    wait_status "$n" UP 30
    t_up=$(now_ms)
    printf '{"instance": %s, "down_ms": %s, "exit_ms": %s, "up_ms": %s, "closed_before_down": %s}\n' \
        "$n" $((t_down - t0)) $((t_exit - t0)) $((t_up - t0)) "$closed_first"
}

cmd_roll() {
    for n in $N_ALL; do cmd_restart "$n"; done
}

cmd_curl() {
    local path=${1:?usage: cluster.sh curl PATH [ARGS…]}
    shift
    in_ns "$LB" curl -sS "$@" "http://127.0.0.1:8080$path"
}

cmd_status() {
    for n in $N_ALL; do echo "f$n $(server_status "$n")"; done
}

# Stops pid $1 (SIGTERM, then SIGKILL after 15 s).
stop_pid() {
    running "$1" || return 0
    kill -TERM "$1" 2>/dev/null || true
    local until=$(( $(date +%s) + 15 ))
    while running "$1" && [ "$(date +%s)" -lt "$until" ]; do sleep 0.05; done
    if running "$1"; then kill -KILL "$1" 2>/dev/null || true; fi
}

cmd_down() {
    local pids=()
    for p in "$DIR"/haproxy.pid "$DIR"/n*/pid; do
        [ -e "$p" ] && pids+=("$(cat "$p")")
        rm -f "$p"
    done
    # And whatever else still runs in our namespaces (a load generator cut short): processes
    # this script started, found by the namespace they were started in.
    for ns in "$LB" "$CLUSTER-1" "$CLUSTER-2" "$CLUSTER-3"; do
        [ -e "/run/netns/$ns" ] && pids+=($(ip netns pids "$ns"))
    done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
    for ns in "$LB" "$CLUSTER-1" "$CLUSTER-2" "$CLUSTER-3"; do
        if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
    done
    log "down"
}

cmd_test() {
    trap cmd_down EXIT
    cmd_up
    cmd_ship "$HERE/functions"
    # The shipped function answers on every host, with the client's address (PROXY v2).
    local seen=""
    for _ in 1 2 3 4 5 6; do
        seen+=$(cmd_curl /hello -o /dev/null -w '%{http_code}:%header{x-served-by} ')
    done
    local tls=absent
    if [ -e "$DIR/site.crt" ]; then
        tls=$(in_ns "$LB" curl -sS --cacert "$DIR/site.crt" --resolve faas.example:8443:127.0.0.1 \
            https://faas.example:8443/hello)
    fi
    rm -f "$DIR/stop"
    in_ns "$LB" "$PY" "$HERE/loadgen.py" http://127.0.0.1:8080/hello "$DIR/stop" \
        --workers "${LOAD_WORKERS:-4}" --max-seconds "${LOAD_MAX_SECONDS:-120}" \
        --expect "hello from 127.0.0.1" >"$DIR/load.json" &
    local load=$!
    # Load before, during and after the roll.
    sleep 2
    cmd_roll >"$DIR/roll.jsonl"
    sleep 2
    touch "$DIR/stop"
    wait "$load"
    local retries
    retries=$(hap "show stat" | awk -F, '$1 == "faas" && $2 == "BACKEND" { print $16 + 0 }')
    "$PY" - "$DIR/load.json" "$DIR/roll.jsonl" "$seen" "$tls" "$retries" <<'EOF'
import json, sys
load = json.load(open(sys.argv[1]))
roll = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print(json.dumps({"load": load, "restarts": roll, "shipped": sys.argv[3].split(),
                  "tls": sys.argv[4].strip(), "haproxy_retries": int(sys.argv[5] or 0)}, sort_keys=True))
EOF
}

case "${1:-}" in
    up) cmd_up ;;
    ship) shift; cmd_ship "$@" ;;
    restart) shift; cmd_restart "$@" ;;
    roll) cmd_roll ;;
    curl) shift; cmd_curl "$@" ;;
    status) cmd_status ;;
    down) cmd_down ;;
    test) cmd_test ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
